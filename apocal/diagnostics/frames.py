"""Raw frames as the diagnostics see them: ADU, amplifier by amplifier.

Every measurement of the detector (noise, gain, linearity) is made on raw
frames in ADU, before `Instrument.process` changes anything, so these
helpers only read a frame, resolve its amplifiers without needing the gain
(`Instrument.layout` with ``detector=False``: unknown values are NaN) and
cut out sections.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData

from ..exceptions import FrameError
from ..instrument import AmplifierLayout, FrameLayout, Instrument

__all__ = ["load_raw", "load_raws", "raw_layout", "overscan_level", "data_section",
           "beyond_linear"]


def load_raw(frame, instrument: Instrument) -> tuple[CCDData, str]:
    """A raw frame in ADU and a short name for it (the file name).

    Parameters
    ----------
    frame : str, path-like or astropy.nddata.CCDData
        A raw file, or a raw frame in ADU.
    instrument : Instrument
        The camera that wrote it.

    Raises
    ------
    FrameError
        If the file is unreadable or the frame is not in ADU.
    """
    if isinstance(frame, CCDData):
        name = str((frame.meta or {}).get("RAWFILE", "<in-memory frame>"))
        if frame.unit is not None and frame.unit != u.adu:
            raise FrameError(name, f"is in {frame.unit}; detector diagnostics need the raw "
                                   f"frame in ADU")
        return frame, name
    if isinstance(frame, (str, os.PathLike)):
        return instrument.read(frame), Path(frame).name
    raise TypeError(f"expected a path or a CCDData, not {type(frame).__name__}")


def load_raws(frames, instrument: Instrument, shape: tuple[int, int] | None = None
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


def raw_layout(ccd: CCDData, instrument: Instrument, source=None) -> FrameLayout:
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
    """True where a raw value (ADU) is saturated or above the non-linearity level.

    Same rule as the SATURATED and NONLINEAR flags of `Instrument.process`:
    ``raw >= saturation`` or ``raw > nonlinear``; non-finite values count too.
    """
    raw = np.asarray(raw)
    high = (raw >= instrument.saturation) | ~np.isfinite(raw)
    if instrument.nonlinear is not None:
        high |= raw > instrument.nonlinear
    return high
