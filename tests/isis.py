"""A user-defined instrument: the William Herschel Telescope's ISIS blue arm.

Written from the documentation's "Add your own instrument" alone; the
tests run it on the real frames in ``shared/data/isis-blue``. What the
frames required:

* the image is in extension 1 behind an empty primary HDU;
* its sections are written in binned pixels (CCDSUM '2 1'), so the class
  says ``sections_binned = True`` and copies them as they are: the data are
  TRIMSEC, rows 1-4099; the overscan is a block of rows beyond them (a
  parallel overscan), rows 4105-4200 over every column (the header's
  BIASSEC leaves out columns 1-97, which are just as good);
* column 398 is hot in the overscan (about 11,600 ADU above the bias);
* GAIN (1.2) and READNOIS (5.0) disagree with the photon transfer of these
  frames: 1.1341 +- 0.0005 e-/ADU and 4.47 e- (flats r2324582-589, biases
  r2324594 and r2324596).
"""

import apocal


class ISISBlue(apocal.Instrument):
    """ISIS blue arm long-slit spectra (EEV12 CCD)."""

    name = "isis-blue"
    data_extension = 1
    sections_binned = True            # the sections below count binned pixels
    amplifiers = (apocal.Amplifier(data_section="[1:483,1:4099]",
                                   overscan_section="[1:483,4105:4200]",
                                   gain=1.134, read_noise=4.47),)
    data_section_key = "TRIMSEC"
    overscan_section_key = None
    gain_keys = ()
    read_noise_keys = ()
    saturation = 65535.0
    dispersion_axis = 0               # wavelength along the rows
    config_keys = {"grating": "ISIGRAT", "central_wavelength": "CENWAVE", "slit": "ISISLITW"}

    @classmethod
    def matches(cls, header, filename=None):
        return str(header.get("INSTRUME", "")).strip().lower().startswith("isis blue")
