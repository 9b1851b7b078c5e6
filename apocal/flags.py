"""Bit flags that say why a pixel is masked.

A processed or calibrated frame carries ``flags`` (an unsigned integer image,
one bit per reason) next to its boolean ``mask``. The mask is simply
``flags != 0``; the flags keep the reason so later stages (and users) can
decide what to ignore.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["Flag", "FLAG_DTYPE", "mask_from_flags", "flags_of", "describe_flags"]

#: Data type of flag images (16 bits leave room for later stages).
FLAG_DTYPE = np.uint16


class Flag(enum.IntFlag):
    """Reasons a pixel is not to be trusted."""

    #: A pixel-scale defect: response far from its neighbours' in the master
    #: flat (dead or weak pixel), or a bias level far below its neighbours'.
    BAD_PIXEL = 1
    #: Dark current, or a bias level, far above the neighbouring pixels'.
    HOT = 2
    #: The raw value reached the instrument's saturation level (ADU).
    SATURATED = 4
    #: The raw value was above the instrument's non-linearity level (ADU).
    NONLINEAR = 8
    #: Outside the illuminated part of the slit, or where the flat lamp gave
    #: too little light for the master flat to be a measurement.
    UNILLUMINATED = 16
    #: Hit by a cosmic ray (found by L.A.Cosmic).
    COSMIC_RAY = 32
    #: No valid input: every frame was rejected or masked at this pixel.
    NO_DATA = 64
    #: The master flat could not follow the lamp spectrum here: its value is
    #: not a pixel response (see `apocal.flat_response.response_misfit`).
    BAD_FLAT = 128


def mask_from_flags(flags: np.ndarray) -> np.ndarray:
    """Boolean mask, True where any flag is set."""
    return np.asarray(flags) != 0


def flags_of(ccd, rows: slice = slice(None)) -> np.ndarray:
    """The bit flags of a frame (rows ``rows``): its ``flags``; for a frame
    with only a boolean ``mask``, BAD_PIXEL where it is set; else zeros."""
    flags = getattr(ccd, "flags", None)
    if flags is not None:
        return np.asarray(flags[rows], dtype=FLAG_DTYPE)
    if ccd.mask is not None:
        return np.asarray(ccd.mask[rows], dtype=FLAG_DTYPE) * FLAG_DTYPE(Flag.BAD_PIXEL)
    return np.zeros(np.shape(ccd.data[rows]), dtype=FLAG_DTYPE)


def describe_flags() -> dict[str, str]:
    """FITS header cards (``BIT<n>`` = flag name) describing the flag bits."""
    return {f"BIT{int(flag).bit_length() - 1}": flag.name for flag in Flag}
