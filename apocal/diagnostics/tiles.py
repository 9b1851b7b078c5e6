"""Independent tiles of a section, and uncertainties from their scatter.

The detector measurements (read noise, gain) are computed on tiles of each
amplifier's data section as well as on the whole section. The tiles are
independent samples of the same quantity, so the scatter of the tile
values divided by the square root of their number is an honest uncertainty
of the whole-section value: unlike the Gaussian formula
``var(sigma**2) = 2 sigma**4 / (N - 1)``, it also counts what the formula
ignores (pattern noise, residual structure, a gain or noise that varies
across the detector, outliers the clipping leaves).
"""

from __future__ import annotations

import numpy as np
from astropy.stats import SigmaClip

__all__ = ["DEFAULT_TILES", "tile_stack", "clipped_tiles", "clipped_tile_variance",
           "scatter_error", "ratio_error"]

#: Tiles per amplifier, (along rows, along columns).
DEFAULT_TILES = (8, 8)

# A tile should hold at least this many pixels along each axis.
_MIN_TILE = 8


def tile_stack(image: np.ndarray, tiles: tuple[int, int] = DEFAULT_TILES) -> np.ndarray:
    """Cut an image into a grid of equal tiles, one tile per row of the result.

    Parameters
    ----------
    image : numpy.ndarray
        2-D section.
    tiles : tuple of int
        Number of tiles along numpy axes 0 and 1; fewer are used when a
        tile would be smaller than 8 pixels. Lines left over at the far
        edges are dropped.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_tiles, pixels_per_tile)``.
    """
    rows, cols = image.shape
    ny = max(1, min(tiles[0], rows // _MIN_TILE))
    nx = max(1, min(tiles[1], cols // _MIN_TILE))
    h, w = rows // ny, cols // nx
    cut = np.asarray(image)[:h * ny, :w * nx]
    return cut.reshape(ny, h, nx, w).swapaxes(1, 2).reshape(ny * nx, h * w)


def clipped_tiles(stack: np.ndarray, sigma: float = 5.0) -> np.ma.MaskedArray:
    """Tiles with outliers (cosmic rays, hot pixels) and NaN values masked.

    Values further than ``sigma`` robust standard deviations (MAD) from
    their tile's median are rejected with `astropy.stats.SigmaClip`. With
    ``sigma`` = 5 a Gaussian loses a fraction 6e-7 of its values, so the
    variance of pure noise is not biased.
    """
    clip = SigmaClip(sigma=sigma, maxiters=5, cenfunc="median", stdfunc="mad_std")
    return clip(np.ma.masked_invalid(stack), axis=1)


def clipped_tile_variance(stack: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """Variance (ddof=1) of each tile after `clipped_tiles`; NaN for empty tiles."""
    return np.ma.filled(clipped_tiles(stack, sigma).var(axis=1, ddof=1), np.nan)


def scatter_error(values: np.ndarray) -> float:
    """Standard error of the mean of the finite tile ``values``: std / sqrt(n)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return np.nan
    return float(np.std(values, ddof=1) / np.sqrt(values.size))


def ratio_error(numerator: np.ndarray, denominator: np.ndarray) -> float:
    """Standard error of ``sum(numerator) / sum(denominator)`` over tiles.

    The ratio ``R`` of the tile sums weights each tile by its denominator;
    its uncertainty is the scatter of the tile residuals
    ``numerator - R * denominator`` (the usual linearisation of a ratio
    estimator), so tiles with little signal, whose own ratios scatter
    widely, count as little as they weigh.
    """
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    n = numerator.size
    if n < 2:
        return np.nan
    ratio = numerator.sum() / denominator.sum()
    residual = numerator - ratio * denominator
    return float(np.sqrt(n / (n - 1) * np.sum(residual**2)) / abs(denominator.sum()))
