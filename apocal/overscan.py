"""Estimating the bias level of one amplifier from its overscan.

An overscan is read as ``lines`` (one per readout row for an overscan
beside the data; one per column for a parallel overscan above or below it)
of a few pixels each. Real overscans hold more than read noise: a hot
column (ISIS blue: one column 11,600 ADU above the bias), charge trailing
from the last data columns (Kast), cosmic rays. So, before any level is
estimated:

1. the pixel noise is measured from differences of neighbouring pixels,
   which no level or slope biases;
2. *tracks* (positions across the lines: overscan columns beside the data,
   rows of a parallel overscan) whose median stands far from the others'
   are left out;
3. in every line, pixels further than `CLIP` noise from the line's median
   are left out, and the level of the line is the mean of the rest: a
   clipped mean, which unlike a median of a few integer values is not
   pulled towards whole ADU (a median of quantised data is biased);
4. lines whose level stands out from its neighbours' running median by
   more than ``reject`` times its own uncertainty (a hot column of a
   parallel overscan) are replaced by interpolation between good lines.

Then:

``"rows"``
    The line levels are smoothed along the readout direction with a
    Savitzky-Golay filter (PypeIt's choice; it follows slow drifts and keeps
    straight trends right up to the edges, where a running median bends).
``"level"``
    One level (the clipped mean of every pixel kept) for the whole amplifier.

Both return the variance of the estimate, so the bias-level uncertainty can
be carried into the frame's uncertainty.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import bottleneck as bn
import numpy as np
from astropy.stats import mad_std
from scipy.signal import savgol_filter

__all__ = ["OVERSCAN_METHODS", "CLIP", "estimate_overscan", "OverscanEstimate"]

OVERSCAN_METHODS = ("rows", "level")

#: Pixels further than this many noise from their line's median are left out.
CLIP = 4.0

_POLYORDER = 2
# Lines of the running median a line's level is compared with.
_NEIGHBOURS = 21
# Lines the overscan's noise and its tracks' levels are measured on, at most.
_SAMPLE_LINES = 1024


@dataclass(frozen=True)
class OverscanEstimate:
    """The bias level of every line of an overscan, and what was left out.

    Attributes
    ----------
    level : numpy.ndarray
        Bias level of each line, ADU.
    variance : numpy.ndarray
        Variance of each level, ADU**2.
    noise : float
        Noise of one overscan pixel, ADU.
    rejected_tracks : numpy.ndarray
        Indices of the tracks (positions across the lines) left out.
    rejected_lines : numpy.ndarray
        Indices of the lines replaced by interpolation.
    """

    level: np.ndarray
    variance: np.ndarray
    noise: float
    rejected_tracks: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))
    rejected_lines: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))


def estimate_overscan(pixels: np.ndarray, method: str = "rows", window: int = 101,
                      reject: float = 5.0) -> OverscanEstimate:
    """Bias level of every line of an overscan region, with its variance.

    Parameters
    ----------
    pixels : numpy.ndarray
        The overscan region, oriented so that each row of the array is one
        line (one readout row for an overscan beside the data), in ADU.
        NaN values are ignored.
    method : {"rows", "level"}
        Per-line smoothed estimate or one level for the whole region.
    window : int
        Length, in lines, of the smoothing filter for ``"rows"``. Made odd
        and shortened to the number of lines when needed.
    reject : float
        Tracks and lines standing out by more than this many times their
        uncertainty are left out (see the module's description).

    Returns
    -------
    OverscanEstimate
        Bias level of each line (ADU, one value per row of ``pixels``), its
        variance (ADU**2), and what was left out.
    """
    if method not in OVERSCAN_METHODS:
        raise ValueError(f"overscan method {method!r} is not one of {OVERSCAN_METHODS}")
    pixels = np.asarray(pixels, dtype=np.float64)
    n_lines, n_cols = pixels.shape
    # The noise and the tracks' levels are measured on at most 1024 lines:
    # plenty for a statistic of the whole overscan, and a quarter of the time.
    sample = np.ascontiguousarray(pixels[::max(1, n_lines // _SAMPLE_LINES)].T)
    noise = _pixel_noise(sample.T)
    usable = np.isfinite(pixels)
    tracks = np.zeros(n_cols, dtype=bool)
    if n_cols >= 3 and n_lines >= 3:
        tracks = _outlying(bn.nanmedian(sample, axis=1),
                           1.2533 * noise / np.sqrt(sample.shape[1]), reject)
        usable &= ~tracks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # lines with nothing usable
        centre = bn.nanmedian(np.where(usable, pixels, np.nan), axis=1)
        usable &= np.abs(pixels - centre[:, None]) <= CLIP * max(noise, 0.5)
        count = usable.sum(axis=1)
        line = np.where(usable, pixels, 0.0).sum(axis=1) / count
    if method == "level" or n_lines < _POLYORDER + 3:
        total = max(int(count.sum()), 1)
        value = float(np.where(usable, pixels, 0.0).sum() / total)
        return OverscanEstimate(np.full(n_lines, value), np.full(n_lines, noise**2 / total),
                                noise, np.flatnonzero(tracks))

    good = count > 0
    if good.sum() >= _NEIGHBOURS:
        neighbours = _running_median(line, good, _NEIGHBOURS)
        sigma = noise / np.sqrt(np.maximum(count, 1))
        good &= np.abs(line - neighbours) <= reject * np.hypot(sigma, 1.2533 * np.median(
            sigma[good]) / np.sqrt(_NEIGHBOURS))
    if not good.any():
        raise ValueError("no usable overscan pixel")
    lines = np.arange(n_lines)
    rejected = lines[~good]
    line = np.interp(lines, lines[good], line[good])
    line_variance = noise**2 / np.where(good, count, np.median(count[good]))

    window = min(int(window), n_lines)
    window -= 1 - window % 2  # odd
    if window <= _POLYORDER + 1:
        return OverscanEstimate(line, line_variance, noise, np.flatnonzero(tracks), rejected)
    level = savgol_filter(line, window, _POLYORDER, mode="interp")
    # lines of fewer kept pixels weigh the same in the filter: their mean
    # variance over the window, times the filter's leverage
    variance = savgol_filter(line_variance, window, 0, mode="interp") \
        * _savgol_leverage(n_lines, window)
    return OverscanEstimate(level, variance, noise, np.flatnonzero(tracks), rejected)


def _pixel_noise(pixels: np.ndarray) -> float:
    """Noise of one pixel (ADU) from differences of neighbours across the
    lines (along them for a one-pixel-wide overscan), each pair's median
    difference removed: no level, trend or fixed offset between tracks
    enters, and a MAD ignores outliers."""
    axis = 1 if pixels.shape[1] >= 2 else 0
    if pixels.shape[axis] < 2:
        return 0.0
    differences = np.diff(pixels, axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        differences = np.ascontiguousarray(differences.T)
        differences -= bn.nanmedian(differences, axis=1)[:, None]
        noise = 1.4826 * float(bn.nanmedian(np.abs(differences))) / np.sqrt(2.0)
    return noise if np.isfinite(noise) else 0.0


def _outlying(values: np.ndarray, sigma: float, reject: float) -> np.ndarray:
    """True for values further from the median of all than ``reject`` times
    their uncertainty (or the spread of the values, when that is larger)."""
    finite = np.isfinite(values)
    if finite.sum() < 3:
        return ~finite
    centre = np.median(values[finite])
    spread = max(float(mad_std(values[finite])), sigma)
    return ~finite | (np.abs(values - centre) > reject * spread)


def _running_median(values: np.ndarray, good: np.ndarray, size: int) -> np.ndarray:
    """Centred running median of the good values over ``size`` lines."""
    filled = np.where(good, values, np.nan)
    half = size // 2
    padded = np.concatenate([np.full(half, np.nan), filled, np.full(half, np.nan)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trailing = bn.move_median(padded, size, min_count=1)
    return trailing[2 * half:]


def _savgol_leverage(n_lines: int, window: int) -> np.ndarray:
    """Sum of squared filter weights for every output line of the filter.

    A Savitzky-Golay value is a least-squares polynomial fit to the window
    evaluated at one point, so its variance (for independent inputs of unit
    variance) is that point's leverage. Inner lines sit at the centre of
    their window; ``mode="interp"`` evaluates the first and last half
    windows on the end windows' fits.
    """
    t = np.arange(window) - window // 2
    design = np.vander(t, _POLYORDER + 1)
    inverse = np.linalg.inv(design.T @ design)
    leverage = np.einsum("ij,jk,ik->i", design, inverse, design)
    out = np.full(n_lines, leverage[window // 2])
    half = window // 2
    out[:half] = leverage[:half]
    out[n_lines - half:] = leverage[window - half:]
    return out
