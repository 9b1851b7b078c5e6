"""APO 3.5 m DIS: the Dual Imaging Spectrograph, a Blue and a Red camera.

Each camera writes its own file (``name.NNNNb.fits`` / ``name.NNNNr.fits``)
with DATASEC and BIASSEC in the header; the class defaults below are used
only when those cards are missing.
"""

from __future__ import annotations

import re

from astropy.io import fits

from ..instrument import Amplifier, Instrument

__all__ = ["DISRed", "DISBlue", "dis_camera"]

_FILE_CAMERA = re.compile(r"\d+([rb])\.fits(\.gz)?$", re.IGNORECASE)


def dis_camera(header: fits.Header, filename: str | None = None) -> str | None:
    """``"red"`` or ``"blue"`` for a DIS frame: from DETECTOR, else the file name."""
    detector = str(header.get("DETECTOR", "")).strip().lower()
    for camera in ("red", "blue"):
        if camera in detector:
            return camera
    if filename:
        found = _FILE_CAMERA.search(str(filename))
        if found:
            return {"r": "red", "b": "blue"}[found.group(1).lower()]
    return None


class _DIS(Instrument):
    """What both DIS cameras share."""

    camera: str = ""
    raw_shape = (1078, 2098)    # inferred from the overscan box pyvista uses
    saturation = 65535.0        # 16-bit ADC; no published non-linearity level
    nonlinear = None
    dispersion_axis = 1         # wavelength along the columns (x)
    flat_response = "poly"      # the class code fits DIS lamp spectra with a polynomial
    lamp_keys = ()
    config_keys = {"grating": "GRATING", "central_wavelength": "DISPWC"}
    imagetypes = {
        "bias": ("zero", "bias"),
        "dark": ("dark",),
        "flat": ("flat",),
        "arc": ("comp", "arc"),
        "science": ("object",),
    }

    @classmethod
    def matches(cls, header: fits.Header, filename: str | None = None) -> bool:
        instrument = str(header.get("INSTRUME", "")).strip().lower()
        return instrument.startswith("dis") and dis_camera(header, filename) == cls.camera


class DISRed(_DIS):
    """DIS Red camera (e2v CCD42-20): 1.88 e-/ADU, 4.6 e- read noise.

    Wavelength decreases with column. The overscan level varies from frame
    to frame (120-162 ADU), so per-frame overscan subtraction matters.
    """

    name = "dis-red"
    camera = "red"
    amplifiers = (Amplifier("[1:2048,1:1028]", "[2051:2097,1:1028]", gain=1.88, read_noise=4.6),)


class DISBlue(_DIS):
    """DIS Blue camera (Marconi CCD42-20): 1.68 e-/ADU, 4.9 e- read noise.

    Wavelength increases with column; overscan steady near 100 ADU.
    """

    name = "dis-blue"
    camera = "blue"
    amplifiers = (Amplifier("[1:2048,1:1028]", "[2051:2097,1:1028]", gain=1.68, read_noise=4.9),)
