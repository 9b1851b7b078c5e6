"""Raw frames as the diagnostics see them: ADU, amplifier by amplifier.

Every measurement of the detector (noise, gain, linearity) is made on raw
frames in ADU, before `Instrument.process` changes anything, so these
helpers only read a frame, resolve its amplifiers without needing the gain
(`Instrument.layout` with ``detector=False``: unknown values are NaN) and
cut out sections.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData

from ..exceptions import FrameError
from ..instrument import AmplifierLayout, FrameLayout, Instrument

__all__ = ["load_raw", "load_raws", "raw_layout", "overscan_level", "data_section",
           "beyond_linear"]


def load_raw(frame: str | os.PathLike | CCDData, instrument: Instrument) -> tuple[CCDData, str]:
    """A raw frame in ADU and a short name for it (the file name).

    Raises
    ------
    FrameError
        If the file is unreadable or the frame is not raw (see
        `Instrument.raw_frame`).
    """
    ccd, name = instrument.raw_frame(frame)
    return ccd, Path(name).name


def load_raws(frames: Sequence[str | os.PathLike | CCDData], instrument: Instrument,
              shape: tuple[int, int] | None = None
              ) -> list[tuple[CCDData, str]]:
    """`load_raw` for several frames, which must all have one shape (``shape``,
    or that of the first frame).

    Raises
    ------
    FrameError
        If a frame is unreadable, not in ADU, or of another shape.
    """
    loaded = [load_raw(frame, instrument) for frame in frames]
    for ccd, name in loaded:
        shape = shape or ccd.shape
        if ccd.shape != tuple(shape):
            raise FrameError(name, f"is {ccd.shape[1]}x{ccd.shape[0]} (columns x rows), "
                                   f"not {shape[1]}x{shape[0]} like the other frames")
    return loaded


def raw_layout(ccd: CCDData, instrument: Instrument,
               source: str | os.PathLike | None = None) -> FrameLayout:
    """The amplifiers of a raw frame; gain and read noise are NaN when unknown."""
    return instrument.layout(fits.Header(ccd.meta), ccd.shape, source, detector=False)


def overscan_level(raw: np.ndarray, amp: AmplifierLayout) -> float:
    """Median of the amplifier's overscan (ADU); 0 for an amplifier without one."""
    if amp.overscan is None:
        return 0.0
    return float(np.median(raw[amp.overscan.slices]))


def data_section(raw: np.ndarray, amp: AmplifierLayout, subtract_overscan: bool = True
                 ) -> np.ndarray:
    """The amplifier's data section as float64 (ADU), less its overscan median."""
    level = overscan_level(raw, amp) if subtract_overscan else 0.0
    return np.asarray(raw[amp.data.slices], dtype=np.float64) - level


def beyond_linear(raw: np.ndarray, instrument: Instrument) -> np.ndarray:
    """True where a raw value (ADU) is saturated, above the non-linearity
    level or not finite: any flag `Instrument.raw_flags` sets."""
    return instrument.raw_flags(np.asarray(raw)) != 0
