"""SBO-style campus cameras: MaxIm DL / ASCOM headers, no overscan."""

from __future__ import annotations

from astropy.io import fits

from ..instrument import Amplifier, Instrument

__all__ = ["SBO", "MAXIM_IMAGETYPES"]

#: IMAGETYP values MaxIm DL writes (short and long forms, by version).
MAXIM_IMAGETYPES = {
    "bias": ("bias", "bias frame"),
    "dark": ("dark", "dark frame"),
    "flat": ("flat", "flat field", "flat frame"),
    "science": ("light", "light frame"),
}


class SBO(Instrument):
    """A small-observatory imaging camera (Sommers-Bausch Observatory style).

    The whole image is data; there is no overscan, so the bias comes from
    bias frames or, without them, from darks of matched exposure time. Gain
    (e-/ADU) and read noise (e-) are read from EGAIN/GAIN and RDNOISE when
    the header has them; otherwise they must be given,
    ``SBO(gain=1.336, read_noise=16.2)``, for example as measured by
    `apocal.diagnostics.photon_transfer` from a pair of biases and flats.
    """

    name = "sbo"
    amplifiers = (Amplifier(),)
    saturation = 65535.0
    nonlinear = None
    dispersion_axis = None
    gain_keys = ("EGAIN", "GAIN")
    read_noise_keys = ("RDNOISE",)
    binning_keys = (("XBINNING", "YBINNING"), "CCDSUM")
    config_keys = {"filter": "FILTER"}
    imagetypes = MAXIM_IMAGETYPES

    @classmethod
    def matches(cls, header: fits.Header) -> bool:
        software = str(header.get("SWCREATE", "")).lower()
        if "maxim" in software:
            return True
        kind = str(header.get("IMAGETYP", "")).strip().lower()
        known = {value for values in MAXIM_IMAGETYPES.values() for value in values}
        return "XBINNING" in header and kind in known
