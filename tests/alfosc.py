"""A user-defined instrument: the Nordic Optical Telescope's ALFOSC (CCD14).

Written, like ``kast.py``, from the documentation's "Add your own
instrument" alone; the tests run it on the real frames in
``shared/data/alfosc``. What the frames required:

* the image is in extension 1 behind an empty primary HDU, stored as
  unsigned 32-bit integers (BITPIX 32, BZERO 2**31);
* the frames are a 400-column window of the CCD: the header's BIASSEC
  describes another readout window, so it is not read, and the overscan is
  the parallel one, rows 2069-2102 (unbinned) beyond the last lit row 2064;
* the GAIN (0.16) and RDNOISE (4.3) cards disagree with the photon transfer
  of these frames: 0.1800 +- 0.0004 e-/ADU and 5.72 e- (flats
  ALDc200337-341, biases ALDc210004-013), so no card is trusted for them;
* the ADC reaches far beyond 16 bits: flats peak near 175,000 ADU and arc
  lines clip at about 845,000 ADU.
"""

import apocal


class ALFOSC(apocal.Instrument):
    """ALFOSC long-slit spectra, binned 1x1 or 1x2 (CCDSUM in extension 1)."""

    name = "alfosc"
    data_extension = 1
    amplifiers = (apocal.Amplifier(data_section="[1:400,1:2064]",
                                   overscan_section="[1:400,2069:2102]",
                                   gain=0.180, read_noise=5.72),)
    overscan_section_key = None      # BIASSEC describes another readout window
    gain_keys = ()                   # GAIN and RDNOISE do not match these frames
    read_noise_keys = ()
    saturation = 820000.0            # arc lines clip at 824,000-858,000 ADU
    dispersion_axis = 0              # wavelength along the rows
    config_keys = {"grism": "ALGRNM", "filter": "ALFLTNM", "slit": "ALAPRTNM"}
    imagetypes = {"bias": ("bias",), "flat": ("flat,lamp", "flat"),
                  "arc": ("wave,lamp", "wave"), "science": ("object",)}

    @classmethod
    def matches(cls, header, filename=None):
        return str(header.get("INSTRUME", "")).startswith("ALFOSC")
