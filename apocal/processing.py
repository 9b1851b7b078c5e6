"""A raw frame turned into electrons one block of rows at a time.

`Instrument.prepare` reads a frame's header and overscan and returns a
`ProcessedFrame`; its `~ProcessedFrame.rows` method then computes any block
of rows of the processed image (overscan subtracted, trimmed, assembled,
in electrons, with variance and flags) from the raw rows it needs, read
straight from the file. `Instrument.process` is ``prepare(...).ccd()``, so
whole frames and streamed blocks come from the same arithmetic, and a
combination of many full-size frames never needs them all in memory.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.utils.exceptions import AstropyWarning

from .blocks import map_in_threads
from .flags import FLAG_DTYPE, Flag
from .overscan import estimate_overscan

if TYPE_CHECKING:
    from .instrument import FrameLayout, Instrument
    from .io import RawImage

__all__ = ["ProcessedFrame", "ArrayImage"]

# Rows read at a time while collecting overscan pixels.
_OVERSCAN_CHUNK = 512


class ArrayImage:
    """An in-memory raw frame with the row-reading interface of `apocal.io.RawImage`."""

    def __init__(self, ccd: CCDData) -> None:
        self.data = np.asarray(ccd.data)
        self.mask = None if ccd.mask is None else np.asarray(ccd.mask, dtype=bool)
        self.header = fits.Header(ccd.meta)
        self.shape = self.data.shape
        self.dtype = self.data.dtype if self.data.dtype.kind == "f" else np.dtype(np.float32)

    def rows(self, start: int, stop: int, out: np.ndarray | None = None,
             columns: slice = slice(None)) -> np.ndarray:
        if out is None:
            return self.data[start:stop, columns]
        out[...] = self.data[start:stop, columns]
        return out


class ProcessedFrame:
    """A raw frame ready to be processed, a block of rows at a time.

    Made by `Instrument.prepare`; holds the frame's layout, its overscan
    levels and its processed header, and reads raw rows only when asked.

    Attributes
    ----------
    name : str
        The file (or RAWFILE) for messages.
    header : astropy.io.fits.Header
        The processed header (APGAINn, APRDNn, APOVSCn, APSTAGE...).
    shape : tuple of int
        Shape of the processed (trimmed, assembled) image.
    unit : astropy.units.Unit
        Electrons.
    """

    unit = u.electron

    def __init__(self, instrument: Instrument, source: RawImage | ArrayImage, name: str,
                 layout: FrameLayout, header: fits.Header, photons: bool, overscan: str,
                 window: int, bias: np.ndarray | float | None = None) -> None:
        self.instrument = instrument
        self.name = name
        self.layout = layout
        self.header = header
        self.shape = layout.shape
        self._source = source
        self._photons = photons
        self._bias = None if bias is None else (
            np.float32(bias) if np.ndim(bias) == 0 else np.asarray(bias, dtype=np.float32))
        self._levels = _overscan_levels(source, layout, overscan, window)
        for number, (amp, (level, _)) in enumerate(zip(layout.amplifiers, self._levels), start=1):
            header[f"APGAIN{number}"] = (amp.gain, f"[e-/ADU] gain of {amp.name}")
            header[f"APRDN{number}"] = (amp.read_noise, f"[e-] read noise of {amp.name}")
            header[f"APOVSC{number}"] = (float(np.mean(level)) if np.size(level) else 0.0,
                                         f"[ADU] mean overscan level of {amp.name}")

    def __repr__(self) -> str:
        return f"<ProcessedFrame {self.name} {self.shape[1]}x{self.shape[0]}>"

    @property
    def meta(self) -> fits.Header:
        return self.header

    def rows(self, start: int, stop: int, data: np.ndarray | None = None,
             variance: np.ndarray | None = None, flags: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Processed rows ``start`` to ``stop - 1``: electrons, variance, flags.

        Parameters
        ----------
        start, stop : int
            Row range of the processed image.
        data, variance : numpy.ndarray, optional
            float32 arrays of shape ``(stop - start, columns)`` to fill.
        flags : numpy.ndarray, optional
            `~apocal.flags.FLAG_DTYPE` array of the same shape to fill.

        Returns
        -------
        data : numpy.ndarray
            Signal, electrons (float32).
        variance : numpy.ndarray
            Its variance, electrons**2 (float32): read noise, overscan
            estimate and, for an exposure, photons above ``bias``.
        flags : numpy.ndarray
            `~apocal.flags.Flag` bits of the raw values.
        """
        shape = (stop - start, self.shape[1])
        data = np.empty(shape, np.float32) if data is None else data
        variance = np.empty(shape, np.float32) if variance is None else variance
        flags = np.empty(shape, FLAG_DTYPE) if flags is None else flags
        raw_cache = {}
        for amp, (level, level_var) in zip(self.layout.amplifiers, self._levels):
            out_first = amp.output.y1 - 1
            lo, hi = max(start, out_first), min(stop, amp.output.y2)
            if lo >= hi:
                continue
            raw_first = amp.data.y1 - 1 + lo - out_first
            key = (raw_first, hi - lo)
            if key not in raw_cache:
                raw_cache[key] = self._source.rows(raw_first, raw_first + hi - lo)
            raw = raw_cache[key][:, amp.data.x1 - 1:amp.data.x2]
            cols = slice(amp.output.x1 - 1, amp.output.x2)
            signal = data[lo - start:hi - start, cols]
            signal[...] = raw
            flags[lo - start:hi - start, cols] = self.instrument.raw_flags(signal)
            # A level per row (overscan beside the data), else per column or one.
            lines = slice(lo - out_first, hi - out_first) if level.shape[0] > 1 else slice(None)
            signal -= level[lines]
            signal *= np.float32(amp.gain)
            variance[lo - start:hi - start, cols] = (np.float32(amp.read_noise**2)
                                                     + level_var[lines] * np.float32(amp.gain**2))
            mask = getattr(self._source, "mask", None)
            if mask is not None:
                bad = mask[raw_first:raw_first + hi - lo, amp.data.x1 - 1:amp.data.x2]
                flags[lo - start:hi - start, cols][bad] |= FLAG_DTYPE(Flag.BAD_PIXEL)
        if self._photons:
            photons = np.subtract(data, 0 if self._bias is None else
                                  self._bias if self._bias.ndim == 0 else self._bias[start:stop])
            np.maximum(photons, 0, out=photons)
            variance += photons
        return data, variance, flags

    def ccd(self) -> CCDData:
        """The whole processed frame as `CCDData` (float32, electrons)."""
        data, variance, flags = self.rows(0, self.shape[0])
        np.sqrt(variance, out=variance)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            return CCDData(data, unit=u.electron, meta=self.header.copy(),
                           uncertainty=StdDevUncertainty(variance, copy=False),
                           mask=flags != 0, flags=flags)


def _overscan_levels(source, layout, method, window):
    """Per amplifier: bias level (ADU) and its variance for every data line,
    shaped to broadcast over the amplifier's data rows, as float32."""
    wanted = [amp for amp in layout.amplifiers if amp.overscan is not None]
    pixels = {}
    if wanted:
        first = min(amp.overscan.y1 for amp in wanted) - 1
        last = max(amp.overscan.y2 for amp in wanted)
        x_first = min(amp.overscan.x1 for amp in wanted) - 1
        columns = slice(x_first, max(amp.overscan.x2 for amp in wanted))
        parts = {id(amp): [] for amp in wanted}
        for start in range(first, last, _OVERSCAN_CHUNK):
            stop = min(start + _OVERSCAN_CHUNK, last)
            block = source.rows(start, stop, columns=columns)
            for amp in wanted:
                lo, hi = max(start, amp.overscan.y1 - 1), min(stop, amp.overscan.y2)
                if lo < hi:
                    parts[id(amp)].append(np.array(
                        block[lo - start:hi - start,
                              amp.overscan.x1 - 1 - x_first:amp.overscan.x2 - x_first]))
        pixels = {key: np.concatenate(value) for key, value in parts.items()}
    def level(amp):
        if amp.overscan is None:
            return np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32)
        region = pixels[id(amp)]
        if not amp.overscan_along_rows:
            region = region.T
        level, var = estimate_overscan(region, method, window)
        first, last = amp.overscan_lines
        lines = np.arange(first, last + 1)
        if amp.overscan_along_rows:
            data_lines = np.arange(amp.data.y1 - 1, amp.data.y2)
            shape = (-1, 1)
        else:
            data_lines = np.arange(amp.data.x1 - 1, amp.data.x2)
            shape = (1, -1)
        return (np.interp(data_lines, lines, level).astype(np.float32).reshape(shape),
                np.interp(data_lines, lines, var).astype(np.float32).reshape(shape))

    return map_in_threads(level, layout.amplifiers)
