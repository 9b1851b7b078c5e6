"""Bit flags that say why a pixel is masked.

A processed or calibrated frame carries ``flags`` (an unsigned integer image,
one bit per reason) next to its boolean ``mask``. The mask is simply
``flags != 0``; the flags keep the reason so later stages (and users) can
decide what to ignore.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["Flag", "FLAG_DTYPE", "mask_from_flags", "describe_flags"]

#: Data type of flag images (16 bits leave room for later stages).
FLAG_DTYPE = np.uint16


class Flag(enum.IntFlag):
    """Reasons a pixel is not to be trusted."""

    #: Pixel response far from 1 in the master flat (dead or weak pixel).
    BAD_PIXEL = 1
    #: Dark current far above the rest of the detector.
    HOT = 2
    #: The raw value reached the instrument's saturation level (ADU).
    SATURATED = 4
    #: The raw value was above the instrument's non-linearity level (ADU).
    NONLINEAR = 8
    #: Outside the illuminated part of the slit in the flat.
    UNILLUMINATED = 16
    #: Hit by a cosmic ray (found by L.A.Cosmic).
    COSMIC_RAY = 32
    #: No valid input: every frame was rejected or masked at this pixel.
    NO_DATA = 64


def mask_from_flags(flags: np.ndarray) -> np.ndarray:
    """Boolean mask, True where any flag is set."""
    return np.asarray(flags) != 0


def describe_flags() -> dict[str, str]:
    """FITS header cards (``BIT<n>`` = flag name) describing the flag bits."""
    return {f"BIT{int(flag).bit_length() - 1}": flag.name for flag in Flag}
