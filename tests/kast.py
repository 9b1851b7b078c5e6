"""A user-defined instrument: the Lick 3 m Shane Kast red arm (2015 CCD).

This is what a user writes to add a camera apocal does not know; the tests
use it on the real frames in ``shared/data/kast-red`` and the command line
loads it with ``--instrument tests/kast.py:KastRed``.
"""

from astropy.io import fits

import apocal


class KastRed(apocal.Instrument):
    """Kast red: one amplifier, DATASEC in the header, COVER overscan columns.

    Gain and read noise are measured from these frames (three 1 s dome
    flats, three biases) with `apocal.diagnostics.photon_transfer`:
    1.465 +- 0.005 e-/ADU and 8.7 +- 0.2 e-. PypeIt's 1.9 e-/ADU and 3.8 e-
    describe the newer CCD, not this 2015 one. The GAIN card is a DCS gain
    index, not e-/ADU, so no header key is trusted for gain or read noise.
    """

    name = "kast-red"
    amplifiers = (apocal.Amplifier("[1:1200,1:250]", "[1203:1232,1:250]",
                                   gain=1.465, read_noise=8.7),)
    saturation = 65535.0
    nonlinear = 0.76 * 65535.0
    dispersion_axis = 1
    gain_keys = ()
    read_noise_keys = ()
    config_keys = {"grating": "GRATNG_N", "dichroic": "BSPLIT_N", "slit": "SLIT_N"}

    @classmethod
    def matches(cls, header):
        return str(header.get("VERSION", "")).strip() == "kastr"

    def header_sections(self, header, index):
        # The overscan is the last COVER columns; the first two are skipped
        # (column 1201 reads low in biases).
        data, _ = super().header_sections(header, index)
        cover, width = int(header.get("COVER", 0)), int(header["NAXIS1"])
        overscan = f"[{width - cover + 3}:{width},1:{header['NAXIS2']}]" if cover > 2 else None
        return data, overscan

    def classify(self, header: fits.Header, source=None) -> str:
        # OBSTYPE says DARK for biases and OBJECT for everything else; the
        # kind is in OBJECT.
        target = str(header.get("OBJECT", "")).strip().lower()
        if target == "bias":
            return "bias"
        if target == "arc":
            return "arc"
        if "flat" in target:
            return "flat"
        return "science"
