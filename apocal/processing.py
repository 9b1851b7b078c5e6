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

import re
import warnings
from typing import TYPE_CHECKING

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from .blocks import map_in_threads
from .flags import FLAG_DTYPE, Flag, flags_of
from .overscan import estimate_overscan

if TYPE_CHECKING:
    from .instrument import FrameLayout, Instrument
    from .io import RawImage

__all__ = ["ProcessedFrame", "ArrayImage", "InMemoryFrame", "split_wcs"]

# Rows read at a time while collecting overscan pixels.
_OVERSCAN_CHUNK = 512
# Raw values up to this are exact in float32. Above a camera's saturation
# level a value is flagged, not used, so below this saturation raw rows are
# read in float32 and give the same processed frame as exact float64 ones.
_FLOAT32_EXACT = 2**24


class ArrayImage:
    """An in-memory raw frame with the row-reading interface of `apocal.io.RawImage`."""

    def __init__(self, ccd: CCDData) -> None:
        self.data = np.asarray(ccd.data)
        self.mask = None if ccd.mask is None else np.asarray(ccd.mask, dtype=bool)
        self.header = fits.Header(ccd.meta)
        self.shape = self.data.shape
        self.dtype = self.data.dtype if self.data.dtype.kind == "f" else np.dtype(np.float64)

    def rows(self, start: int, stop: int, out: np.ndarray | None = None,
             columns: slice = slice(None)) -> np.ndarray:
        if out is None:
            return self.data[start:stop, columns]
        out[...] = self.data[start:stop, columns]
        return out


class InMemoryFrame:
    """A `CCDData` in electrons (a combined frame, a master) read by rows
    like a `ProcessedFrame`: data, variance and flags."""

    def __init__(self, ccd: CCDData):
        self.ccd = ccd
        self.shape, self.unit, self.meta = ccd.shape, ccd.unit, ccd.meta
        self.header = fits.Header(ccd.meta)
        self.name = ccd.meta.get("RAWFILE", "<in-memory frame>")
        self.has_uncertainty = isinstance(ccd.uncertainty, StdDevUncertainty)

    def rows(self, start: int, stop: int, data: np.ndarray | None = None,
             variance: np.ndarray | None = None, flags: np.ndarray | None = None):
        shape = (stop - start, self.shape[1])
        data = np.empty(shape, np.float32) if data is None else data
        variance = np.empty(shape, np.float32) if variance is None else variance
        flags = np.empty(shape, FLAG_DTYPE) if flags is None else flags
        data[...] = self.ccd.data[start:stop]
        np.square(self.ccd.uncertainty.array[start:stop], out=variance, casting="same_kind")
        flags[...] = flags_of(self.ccd, slice(start, stop))
        return data, variance, flags


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

    def __init__(self, instrument: Instrument, sources: dict[int | str, RawImage | ArrayImage],
                 name: str, layout: FrameLayout, header: fits.Header, photons: bool,
                 overscan: str, window: int, bias: np.ndarray | float | None = None) -> None:
        self.instrument = instrument
        self.name = name
        self.layout = layout
        self.header = header
        self.shape = layout.shape
        self._sources = sources
        self._photons = photons
        self._bias = None if bias is None else (
            np.float32(bias) if np.ndim(bias) == 0 else np.asarray(bias, dtype=np.float32))
        self._gaps = layout.uncovered
        self._raw_dtype = np.float32 if instrument.saturation <= _FLOAT32_EXACT else np.float64
        self._levels = _overscan_levels(sources, layout, overscan, window)
        for number, (amp, (level, _)) in enumerate(zip(layout.amplifiers, self._levels), start=1):
            _record(header, number, amp, float(np.mean(level)) if np.size(level) else 0.0)

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
            `~apocal.flags.Flag` bits of the raw values; NO_DATA where no
            amplifier's data land (gaps between the CCDs of a mosaic).
        """
        shape = (stop - start, self.shape[1])
        data = np.empty(shape, np.float32) if data is None else data
        variance = np.empty(shape, np.float32) if variance is None else variance
        flags = np.empty(shape, FLAG_DTYPE) if flags is None else flags
        if self._gaps is not None:
            gaps = self._gaps[start:stop]
            data[gaps] = 0.0
            variance[gaps] = 0.0
            flags[gaps] = FLAG_DTYPE(Flag.NO_DATA)
        raw_cache = {}
        for amp, (level, level_var) in zip(self.layout.amplifiers, self._levels):
            out_first = amp.output.y1 - 1
            lo, hi = max(start, out_first), min(stop, amp.output.y2)
            if lo >= hi:
                continue
            # The raw rows (of the data section) that land on output rows lo..hi.
            first = (amp.data.y2 - (hi - out_first)) if amp.flip_y \
                else (amp.data.y1 - 1 + lo - out_first)
            key = (amp.extension, first, hi - lo)
            if key not in raw_cache:
                image = self._sources[amp.extension]
                raw_cache[key] = image.rows(first, first + hi - lo, out=np.empty(
                    (hi - lo, image.shape[1]), self._raw_dtype))
            raw = raw_cache[key][:, amp.data.x1 - 1:amp.data.x2]
            along = slice(None, None, -1) if amp.flip_y else slice(None)
            across = slice(None, None, -1) if amp.flip_x else slice(None)
            out = (slice(lo - start, hi - start), slice(amp.output.x1 - 1, amp.output.x2))
            flags[out] = self.instrument.raw_flags(raw)[along, across]
            signal = data[out]
            signal[...] = raw[along, across]
            # A level per raw row (overscan beside the data), per raw column, or one.
            if level.shape[0] > 1:
                offset = first - (amp.data.y1 - 1)
                lines = slice(offset, offset + hi - lo)
                level, level_var = level[lines][along], level_var[lines][along]
            elif level.shape[1] > 1:
                level, level_var = level[:, across], level_var[:, across]
            signal -= level
            signal *= np.float32(amp.gain)
            variance[out] = (np.float32(amp.read_noise**2)
                             + level_var * np.float32(amp.gain**2))
            mask = getattr(self._sources[amp.extension], "mask", None)
            if mask is not None:
                bad = mask[first:first + hi - lo, amp.data.x1 - 1:amp.data.x2][along, across]
                flags[out][bad] |= FLAG_DTYPE(Flag.BAD_PIXEL)
        if self._photons:
            photons = np.subtract(data, 0 if self._bias is None else
                                  self._bias if self._bias.ndim == 0 else self._bias[start:stop])
            np.maximum(photons, 0, out=photons)
            variance += photons
        return data, variance, flags

    def ccd(self) -> CCDData:
        """The whole processed frame as `CCDData` (float32, electrons), with
        its celestial WCS when the header has one."""
        data, variance, flags = self.rows(0, self.shape[0])
        np.sqrt(variance, out=variance)
        header, wcs = split_wcs(self.header)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            return CCDData(data, unit=u.electron, meta=header, wcs=wcs,
                           uncertainty=StdDevUncertainty(variance, copy=False),
                           mask=flags != 0, flags=flags)


def split_wcs(header: fits.Header) -> tuple[fits.Header, WCS | None]:
    """A header without its celestial WCS cards, and that WCS (None when the
    header has no celestial WCS, and the header is then returned as is).

    The WCS goes to `CCDData.wcs`, where astropy and reproject look for it;
    its cards are taken out of the header so the two cannot disagree
    (`apocal.io.write_frame` writes the WCS back).
    """
    header = header.copy()
    if not any(key.startswith("CTYPE") for key in header):
        return header, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wcs = WCS(header, relax=True)
        except Exception:   # a damaged WCS is left in the header, not fatal
            return header, None
    if not wcs.has_celestial:
        return header, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cards = set(wcs.to_header(relax=True))
    for key in list(header.keys()):
        if key in cards or _WCS_KEY.match(key):
            header.remove(key, ignore_missing=True, remove_all=True)
    return header, wcs


# Keys a celestial WCS may be written with besides those WCS.to_header writes.
_WCS_KEY = re.compile(r"^(CD\d_\d|PC\d_\d|CDELT\d|CROTA\d|CRPIX\d|CRVAL\d|CTYPE\d|CUNIT\d|"
                      r"[AB]P?_(ORDER|\d+_\d+)|PV\d_\d+|LONPOLE|LATPOLE|EQUINOX|RADESYS|WCSAXES)$")


def _record(header: fits.Header, number: int, amp, overscan_level: float) -> None:
    """Cards saying what was used for amplifier ``number`` and where it came from."""
    sources = amp.sources
    header[f"APGAIN{number}"] = (amp.gain, f"[e-/ADU] gain of {amp.name}")
    header[f"APGSRC{number}"] = (sources.get("gain") or "unknown", "source of the gain")
    header[f"APRDN{number}"] = (amp.read_noise, f"[e-] read noise of {amp.name}")
    header[f"APNSRC{number}"] = (sources.get("read_noise") or "unknown",
                                 "source of the read noise")
    header[f"APDSEC{number}"] = (str(amp.data), f"raw data section of {amp.name}")
    header[f"APDSRC{number}"] = (sources.get("data") or "", "source of the data section")
    if amp.overscan is not None:
        header[f"APBSEC{number}"] = (str(amp.overscan), f"raw overscan section of {amp.name}")
        header[f"APBSRC{number}"] = (sources.get("overscan") or "",
                                     "source of the overscan section")
    header[f"APOVSC{number}"] = (overscan_level, f"[ADU] mean overscan level of {amp.name}")


def _overscan_levels(sources, layout, method, window):
    """Per amplifier: bias level (ADU) and its variance for every line of its
    data section, shaped to broadcast over its raw data rows, float32.

    The overscan pixels of the amplifiers that share an HDU are read in one
    pass over its rows; the estimates run on two threads."""
    pixels = {}
    for extension in {amp.extension for amp in layout.amplifiers}:
        wanted = [amp for amp in layout.amplifiers
                  if amp.extension == extension and amp.overscan is not None]
        if not wanted:
            continue
        first = min(amp.overscan.y1 for amp in wanted) - 1
        last = max(amp.overscan.y2 for amp in wanted)
        x_first = min(amp.overscan.x1 for amp in wanted) - 1
        columns = slice(x_first, max(amp.overscan.x2 for amp in wanted))
        parts = {id(amp): [] for amp in wanted}
        for start in range(first, last, _OVERSCAN_CHUNK):
            stop = min(start + _OVERSCAN_CHUNK, last)
            block = sources[extension].rows(start, stop, columns=columns)
            for amp in wanted:
                lo, hi = max(start, amp.overscan.y1 - 1), min(stop, amp.overscan.y2)
                if lo < hi:
                    parts[id(amp)].append(np.array(
                        block[lo - start:hi - start,
                              amp.overscan.x1 - 1 - x_first:amp.overscan.x2 - x_first],
                        dtype=np.float64))
        pixels.update({key: np.concatenate(value) for key, value in parts.items()})

    def level(amp):
        if amp.overscan is None:
            return np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32)
        region = pixels[id(amp)]
        if not amp.overscan_along_rows:
            region = region.T
        estimate = estimate_overscan(region, method, window)
        level, var = estimate.level, estimate.variance
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
