"""Estimating the bias level of one amplifier from its overscan.

Two estimates are offered:

``"rows"``
    The median across the overscan of every line (row, for an overscan to
    the side of the data), smoothed along the readout direction with a
    Savitzky-Golay filter (PypeIt's choice; it follows slow drifts and keeps
    straight trends right up to the edges, where a running median bends).
``"level"``
    One robust level (sigma-clipped median) for the whole amplifier.

Both return the variance of the estimate, so the bias-level uncertainty can
be carried into the frame's uncertainty.
"""

from __future__ import annotations

import bottleneck as bn
import numpy as np
from astropy.stats import mad_std, sigma_clipped_stats
from scipy.signal import savgol_filter

from .statistics import median_variance_factor

__all__ = ["OVERSCAN_METHODS", "estimate_overscan"]

OVERSCAN_METHODS = ("rows", "level")

_POLYORDER = 2


def _nanmedian(values: np.ndarray, axis: int | None = None,
               overwrite_input: bool = False) -> np.ndarray | float:
    """bottleneck's nanmedian for astropy's ``mad_std(func=...)``: astropy before
    7.0 calls ``func(..., overwrite_input=True)``, which bottleneck does not take."""
    return bn.nanmedian(values, axis=axis)


def estimate_overscan(pixels: np.ndarray, method: str = "rows",
                      window: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Bias level of every line of an overscan region, with its variance.

    Parameters
    ----------
    pixels : numpy.ndarray
        The overscan region, oriented so that each row of the array is one
        line (one readout row for an overscan beside the data), in ADU.
    method : {"rows", "level"}
        Per-line smoothed estimate or one level for the whole region.
    window : int
        Length, in lines, of the smoothing filter for ``"rows"``. Made odd
        and shortened to the number of lines when needed.

    Returns
    -------
    level : numpy.ndarray
        Bias level of each line, ADU (one value per row of ``pixels``).
    variance : numpy.ndarray
        Variance of each level, ADU**2.
    """
    if method not in OVERSCAN_METHODS:
        raise ValueError(f"overscan method {method!r} is not one of {OVERSCAN_METHODS}")
    pixels = np.asarray(pixels, dtype=np.float64)
    n_lines, n_cols = pixels.shape
    if method == "level" or n_lines < _POLYORDER + 3:
        _, median, _ = sigma_clipped_stats(pixels, sigma=4.0, maxiters=5)
        noise = mad_std(pixels, ignore_nan=True)
        n = int(np.isfinite(pixels).sum())
        variance = median_variance_factor(min(n, 1000)) * noise**2 / max(n, 1)
        return np.full(n_lines, median), np.full(n_lines, variance)

    line_median = bn.nanmedian(pixels, axis=1)
    noise = mad_std(pixels - line_median[:, None], func=_nanmedian)  # NaN-safe, no masked arrays
    # Lines with a single column have no scatter to measure: fall back on
    # the scatter between neighbouring lines.
    if not np.isfinite(noise) or noise == 0:
        noise = mad_std(np.diff(line_median), ignore_nan=True) / np.sqrt(2.0)
    line_variance = median_variance_factor(n_cols) * noise**2 / n_cols

    window = min(int(window), n_lines)
    window -= 1 - window % 2  # odd
    if window <= _POLYORDER + 1:
        return line_median, np.full(n_lines, line_variance)
    level = savgol_filter(line_median, window, _POLYORDER, mode="interp")
    return level, line_variance * _savgol_leverage(n_lines, window)


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
