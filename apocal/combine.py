"""Combining frames, with an uncertainty computed from the inputs' own.

The rejection (min/max limits, extrema) and the combination follow
ccdproc's `~ccdproc.Combiner` (``minmax_clipping``, ``clip_extrema``,
``median_combine`` and ``average_combine`` with their bottleneck
functions; a test compares the two). What apocal changes is the
uncertainty and the bookkeeping:

* the uncertainty comes from the inputs' uncertainties over the frames that
  were actually used at each pixel: ``sqrt(sum var_i) / n`` for a mean and
  ``sqrt(f(n) n) / sum(1 / sigma_i)`` for a median (``sqrt(f(n) / n) sigma``
  when the variances are equal), where ``f(n)`` is the exact median
  variance factor for ``n`` normal values (1.35 at 3, tending to pi/2).
  ccdproc's default (1.4826 MAD / sqrt(n)) ignores the inputs and comes out
  about 23% low for a median of 10.
* flags are OR-ed over the frames used at each pixel; a pixel with no
  usable frame is flagged ``NO_DATA`` (with the flags that excluded it).
* a "sum" is the mean of the frames used times the number of frames, so a
  rejected value does not make a pixel fainter.
* the stack is combined in blocks of rows, read from the inputs when they
  are needed, so memory stays within ``memory_limit`` however many
  full-size frames there are: frames prepared with `Instrument.prepare`
  are read from their files a block at a time, and the blocks are shared
  between two threads (`apocal.blocks`).
* the arithmetic is float32, like the frames (ccdproc works in float64).
* the rejections are made on apocal's own stack and mask of each block,
  not through a ``Combiner``: its stack is reachable only through an
  attribute (``data_arr``) that ccdproc's next release makes private, and
  building one copied every block twice.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence

import bottleneck as bn
import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from . import __version__
from .blocks import WORKERS, for_each_block
from .exceptions import CalibrationError
from .flags import FLAG_DTYPE, Flag
from .processing import InMemoryFrame
from .statistics import median_variance_factors

__all__ = ["combine", "COMBINE_METHODS", "COMBINE_OPTIONS", "DEFAULT_EXCLUDE"]

COMBINE_METHODS = ("median", "mean", "sum")

#: Keyword options `combine` accepts besides the frames (CalibrationSet
#: passes these through and rejects anything else).
COMBINE_OPTIONS = ("method", "sigma_clip", "minmax", "extrema", "scale", "exclude",
                   "memory_limit")

#: Flags that keep a pixel of one frame out of a combination by default.
DEFAULT_EXCLUDE = Flag.SATURATED | Flag.COSMIC_RAY | Flag.NO_DATA

# Working bytes per value of a block (frame x pixel): data, variance and
# flags read, masks and temporaries (argsort's 8-byte indices for extrema).
_BYTES_PER_VALUE = 48
# Bytes of the result per pixel: float32 data and sigma, uint16 flags, mask.
_RESULT_BYTES = 11
# Blocks larger than this many values per frame gain nothing (cache size).
_BEST_BLOCK_VALUES = 1 << 17


def combine(frames: Sequence, method: str = "median", *,
            sigma_clip: float | tuple[float, float] | None = None,
            minmax: tuple[float | None, float | None] | None = None,
            extrema: tuple[int, int] | None = None,
            scale: Sequence[float] | None = None,
            exclude: int = DEFAULT_EXCLUDE,
            memory_limit: float = 512e6) -> CCDData:
    """Combine frames pixel by pixel.

    Parameters
    ----------
    frames : sequence of astropy.nddata.CCDData or apocal.processing.ProcessedFrame
        Frames of one shape and unit: `CCDData` with a `StdDevUncertainty`
        (``flags`` bit flags used when present, else ``mask``), or frames
        from `Instrument.prepare`, read a block of rows at a time.
    method : {"median", "mean", "sum"}
        How to combine the values left after rejection.
    sigma_clip : float or (float, float), optional
        Reject values more than this many times their own uncertainty below
        (or above) the median of the stack at each pixel, repeated until
        nothing more is rejected (at most three passes).
    minmax : (float or None, float or None), optional
        Reject values below the first or above the second limit (in the
        frames' unit, before scaling).
    extrema : (int, int), optional
        Reject the ``nlow`` lowest and ``nhigh`` highest values at each pixel.
    scale : sequence of float, optional
        Multiply frame ``i`` by ``scale[i]`` before combining (e.g. one over
        each flat's level); uncertainties are scaled alike.
    exclude : int
        Bit flags (`apocal.flags.Flag`) that keep a frame's pixel out of
        the combination; 0 keeps everything.
    memory_limit : float
        Bytes that the result and the blocks being combined may take
        (default 512 MB); the stack is combined in blocks of rows that fit.
        Frames given as `CCDData` are already in memory and not counted.

    Returns
    -------
    astropy.nddata.CCDData
        The combined frame (float32) with `StdDevUncertainty`, ``flags``,
        ``mask`` (any flag set) and header cards NCOMBINE, COMBMETH.

    Raises
    ------
    CalibrationError
        For no frames, frames of different shapes or units, or frames
        without an uncertainty.
    ValueError
        For an unknown method or a bad option value.
    """
    frames = [InMemoryFrame(f) if isinstance(f, CCDData) else f for f in frames]
    _check(frames, method, scale)
    n_frames = len(frames)
    shape = frames[0].shape
    factors = np.ones(n_frames) if scale is None else np.asarray(scale, dtype=np.float64)
    data = np.empty(shape, dtype=np.float32)
    sigma = np.empty(shape, dtype=np.float32)
    flags = np.empty(shape, dtype=FLAG_DTYPE)
    budget = memory_limit - _RESULT_BYTES * data.size
    rows_per_block = int(min(budget // (_BYTES_PER_VALUE * n_frames * shape[1] * WORKERS),
                             _BEST_BLOCK_VALUES // shape[1]))
    rows_per_block = min(max(1, rows_per_block), shape[0])
    buffers = threading.local()

    def run(block):
        if not hasattr(buffers, "stack"):
            size = (n_frames, rows_per_block, shape[1])
            buffers.stack = np.empty(size, np.float32)
            buffers.variance = np.empty(size, np.float32)
            buffers.flags = np.empty(size, FLAG_DTYPE)
        n_rows = block.stop - block.start
        stack, variance, frame_flags = (buffers.stack[:, :n_rows], buffers.variance[:, :n_rows],
                                        buffers.flags[:, :n_rows])
        for i, frame in enumerate(frames):
            frame.rows(block.start, block.stop, stack[i], variance[i], frame_flags[i])
        _combine_block(stack, variance, frame_flags, factors, method, sigma_clip, minmax,
                       extrema, int(exclude), data[block], sigma[block], flags[block])

    for_each_block(shape[0], rows_per_block, run)

    header = fits.Header(frames[0].meta)
    header["NCOMBINE"] = (n_frames, "frames combined")
    header["COMBMETH"] = (method, "combination method")
    if sigma_clip is not None:
        low, high = np.broadcast_to(sigma_clip, 2)
        header["COMBCLIP"] = (f"{low:g},{high:g}", "sigma clipping (low, high)")
    if extrema is not None:
        header["COMBEXTR"] = (f"{extrema[0]},{extrema[1]}", "extrema rejected (low, high)")
    if minmax is not None:
        header["COMBLIMS"] = (f"{minmax[0]},{minmax[1]}", "values kept (min, max)")
    header["APVERS"] = (__version__, "apocal version")
    return CCDData(data, unit=frames[0].unit, meta=header,
                   uncertainty=StdDevUncertainty(sigma, copy=False), flags=flags, mask=flags != 0)


def _check(frames, method, scale):
    if method not in COMBINE_METHODS:
        raise ValueError(f"method must be one of {COMBINE_METHODS}, not {method!r}")
    if not frames:
        raise CalibrationError("no frames to combine")
    first = frames[0]
    for index, frame in enumerate(frames):
        name = getattr(frame, "name", None) or f"frame {index + 1}"
        if frame.shape != first.shape:
            raise CalibrationError(f"{name}: shape {frame.shape} differs from "
                                   f"{first.shape} of the first frame")
        if frame.unit != first.unit:
            raise CalibrationError(f"{name}: unit {frame.unit} differs from {first.unit}")
        if not getattr(frame, "has_uncertainty", True):
            raise CalibrationError(f"{name}: has no standard-deviation uncertainty to combine")
    if scale is not None and len(scale) != len(frames):
        raise ValueError(f"scale needs one value per frame ({len(frames)}), got {len(scale)}")


def _reject_extrema(values, rejected, nlow, nhigh):
    """Reject the ``nlow`` lowest and ``nhigh`` highest values at each pixel.

    As ccdproc's ``Combiner.clip_extrema``: the values are ranked with
    those already rejected among them, so a rejected value can count
    towards ``nhigh`` (NaN ranks highest).
    """
    order = np.argsort(values, axis=0)
    np.put_along_axis(rejected, order[np.arange(-nhigh, nlow)], True, axis=0)


def _clip_by_uncertainty(values, rejected, sigma, sigma_clip, max_iterations=3):
    """Reject values far from the stack median in units of their own uncertainty.

    This is IRAF's "ccdclip": the deviation of a value is judged against
    the noise that value is known to have, not against the scatter of a
    handful of frames (with five frames that scatter is itself so uncertain
    that a 3-sigma cut rejects good values, and the combined uncertainty is
    then too small). After the first pass only the pixels where something
    was rejected are looked at again: elsewhere nothing has changed.
    ``rejected`` (frames, ...) is updated in place.
    """
    low, high = np.broadcast_to(sigma_clip, 2)
    n_frames = len(sigma)
    values = values.reshape(n_frames, -1)
    mask = rejected.reshape(n_frames, -1)                   # a view: rejections go in place
    sigma = sigma.reshape(n_frames, -1)
    pixels = np.arange(values.shape[1])
    for iteration in range(max_iterations):
        if iteration == 0:
            v, m, s = values, mask, sigma
        else:
            v, m, s = values[:, pixels], mask[:, pixels], sigma[:, pixels]
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            centre = (bn.nanmedian(np.where(m, np.float32(np.nan), v), axis=0) if m.any()
                      else bn.median(v, axis=0))
            deviation = (v - centre) / s
        reject = ~m & ((deviation < -low) | (deviation > high))
        if not reject.any():
            break
        m |= reject
        changed = reject.any(axis=0)
        if iteration > 0:
            mask[:, pixels] = m
        pixels = pixels[changed]


def _combine_block(stack, variance, frame_flags, factors, method, sigma_clip, minmax, extrema,
                   exclude, data_out, sigma_out, flags_out):
    """Combine one block of rows: ``stack``, ``variance`` and ``frame_flags``
    are (frames, rows, columns); results go into the three output views.
    ``stack`` and ``variance`` are overwritten (scaled, rejected values NaN)."""
    n_frames = len(stack)
    rejected = (frame_flags & exclude) != 0
    if minmax is not None:   # limits apply to the values as measured
        if minmax[0] is not None:
            rejected |= stack < minmax[0]
        if minmax[1] is not None:
            rejected |= stack > minmax[1]
    if not np.all(factors == 1):
        # Scale in place once, so that rejection and combination both see the
        # scaled values (ccdproc's clip_extrema and sigma_clipping ignore scaling).
        stack *= factors.astype(np.float32)[:, None, None]
        variance *= (factors**2).astype(np.float32)[:, None, None]
    if extrema is not None:
        _reject_extrema(stack, rejected, int(extrema[0]), int(extrema[1]))
    if sigma_clip is not None:
        _clip_by_uncertainty(stack, rejected, np.sqrt(variance), sigma_clip)

    used = ~rejected
    n_used = used.sum(axis=0)
    empty = n_used == 0
    if empty.any():
        # Keep the image finite: take every frame's value where none was
        # usable; the pixel is flagged NO_DATA so nothing trusts it.
        fallback = np.median(stack, axis=0) if method == "median" else stack.mean(axis=0)
        fallback_sigma = np.sqrt(variance.sum(axis=0)) / n_frames
    if frame_flags.any():
        combined_flags = np.bitwise_or.reduce(np.where(used, frame_flags, 0), axis=0)
    else:
        combined_flags = np.zeros(n_used.shape, FLAG_DTYPE)

    if rejected.any():
        np.copyto(stack, np.float32(np.nan), where=rejected)
    values = bn.nanmedian(stack, axis=0) if method == "median" else bn.nanmean(stack, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "median":
            # The median of n values of unequal variances varies as
            # pi/2 n / (sum 1/sigma_i)**2 (1 / (4 n f**2), f the mean of their
            # densities at the median); the exact f(n) replaces pi/2. Equal
            # variances give f(n) sigma**2 / n.
            inverse = np.sum(1.0 / np.sqrt(variance), axis=0, where=used)
            sigma = np.sqrt(median_variance_factors(n_used) * n_used).astype(np.float32) / inverse
        else:
            sigma = np.sqrt(np.sum(variance, axis=0, where=used)) / n_used
        if method == "sum":
            values = values * n_frames
            sigma = sigma * n_frames

    if empty.any():
        if method == "sum":
            fallback, fallback_sigma = fallback * n_frames, fallback_sigma * n_frames
        values = np.where(empty, fallback, values)
        sigma = np.where(empty, fallback_sigma, sigma)
        every_flag = np.bitwise_or.reduce(frame_flags, axis=0)
        combined_flags = np.where(empty, every_flag | FLAG_DTYPE(Flag.NO_DATA), combined_flags)
    data_out[...] = values
    sigma_out[...] = sigma
    flags_out[...] = combined_flags
