"""APO 3.5 m KOSMOS: one e2v CCD44-82 read out by two amplifiers."""

from __future__ import annotations

from astropy.io import fits

from ..instrument import Amplifier, Instrument

__all__ = ["KOSMOS"]

_GAIN = 0.6          # e-/ADU, both amplifiers (PypeIt arc_kosmos, pyvista)
_READ_NOISE = 5.0    # e-, both amplifiers
_SATURATION = 262144.0


class KOSMOS(Instrument):
    """KOSMOS long-slit spectrograph on the APO 3.5 m.

    Each amplifier reads 1024 columns of all 4096 rows; the overscan is the
    100 columns to the right of the data, about 50 per amplifier. The boxes
    used are the interior ones PypeIt and pyvista use (columns 2056-2088 and
    2106-2138). Newer headers may carry DSECxy/BSECxy, which then win.
    Wavelength runs along the rows (numpy axis 0).
    """

    name = "kosmos"
    amplifiers = (
        Amplifier("[1:1024,1:4096]", "[2056:2088,1:4096]", gain=_GAIN, read_noise=_READ_NOISE,
                  name="left", data_key="DSEC11", overscan_key="BSEC11"),
        Amplifier("[1025:2048,1:4096]", "[2106:2138,1:4096]", gain=_GAIN, read_noise=_READ_NOISE,
                  name="right", data_key="DSEC12", overscan_key="BSEC12"),
    )
    raw_shape = (4096, 2148)
    saturation = _SATURATION
    nonlinear = 0.86 * _SATURATION
    dispersion_axis = 0
    binning_keys = (("BINX", "BINY"), ("CCDBIN1", "CCDBIN2"))
    lamp_keys = ("KRYPTON", "NEON", "ARGON", "QUARTZ", "HE-TR", "NE-TR", "AR-TR",
                 "BQTZ-TR", "DQTZ-TR")
    arc_lamp_keys = ("KRYPTON", "NEON", "ARGON", "HE-TR", "NE-TR", "AR-TR")
    config_keys = {"disperser": "DISPERSR", "slit": "SLIT",
                   "filter1": "FILTER1", "filter2": "FILTER2"}
    object_key = "OBJNAME"
    imagetypes = {
        "bias": ("bias",),
        "dark": ("dark",),
        "flat": ("flat",),
        "arc": ("comp", "arc"),
        "science": ("object",),
    }

    @classmethod
    def matches(cls, header: fits.Header) -> bool:
        return str(header.get("INSTRUME", "")).strip().lower() == "kosmos"
