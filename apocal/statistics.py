"""Sampling statistics of the estimators apocal uses (median of few values).

The variance of the median of ``n`` independent normal values of variance
``s**2`` is ``median_variance_factor(n) * s**2 / n``. The factor is 1 for
``n`` = 1 and 2, rises towards pi/2 for large ``n``, and is lower for even
``n`` (the median then averages the two middle values): 1.346 at 3, 1.383
at 10, 1.509 at 11, 1.410 at 12, 1.501 at 30. Using pi/2 for every ``n``
overstates the uncertainty of small stacks; ccdproc's MAD-based estimate
understates it (see the CalibrationSet documentation).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.integrate import trapezoid
from scipy.special import gammaln, ndtr

__all__ = ["median_variance_factor", "median_variance_factors"]

# The order-statistic densities of n unit normals near the median have a
# width of about 1.25/sqrt(n) and are smooth; integrating them with the
# trapezoid rule on 1601 points over +-12 widths (at most +-8) is accurate
# to better than 1e-6. (scipy's trapezoid: numpy's is np.trapz before NumPy 2
# and np.trapezoid from it on.)
_POINTS = 1601
_LARGE = 200


def _grid(n: int):
    half_width = min(8.0, 15.0 / np.sqrt(n))
    x = np.linspace(-half_width, half_width, _POINTS)
    return x, x[1] - x[0], np.exp(-0.5 * x**2) / np.sqrt(2.0 * np.pi), ndtr(x), ndtr(-x)


def _log_factorial(n: int) -> float:
    return float(gammaln(n + 1))


def _second_moment(n: int, r: int) -> float:
    """E[X_(r)^2] for the r-th smallest of n unit normals (1-based r)."""
    x, dx, pdf, cdf, sf = _grid(n)
    log_c = _log_factorial(n) - _log_factorial(r - 1) - _log_factorial(n - r)
    density = np.exp(log_c + (r - 1) * np.log(cdf) + (n - r) * np.log(sf)) * pdf
    return float(trapezoid(x**2 * density, dx=dx))


def _cross_moment(n: int, k: int) -> float:
    """E[X_(k) X_(k+1)] for adjacent order statistics of n unit normals."""
    x, dx, pdf, cdf, sf = _grid(n)
    log_c = _log_factorial(n) - _log_factorial(k - 1) - _log_factorial(n - k - 1)
    fx = np.exp(0.5 * log_c + (k - 1) * np.log(cdf)) * pdf
    fy = np.exp(0.5 * log_c + (n - k - 1) * np.log(sf)) * pdf
    joint = np.triu(np.outer(x * fx, x * fy), k=1)  # region x < y
    joint[np.diag_indices_from(joint)] = 0.5 * x * fx * x * fy
    return float(trapezoid(trapezoid(joint, dx=dx, axis=1), dx=dx))


@lru_cache(maxsize=None)
def median_variance_factor(n: int) -> float:
    """Ratio of the variance of a median of ``n`` normal values to ``s**2/n``.

    Parameters
    ----------
    n : int
        Number of values (>= 1).

    Returns
    -------
    float
        ``n * Var(median) / s**2``; tends to pi/2 as ``n`` grows.
    """
    n = int(n)
    if n < 1:
        raise ValueError("the median of fewer than one value is undefined")
    if n <= 2:
        return 1.0
    if n > _LARGE:
        # The deficit from pi/2 falls as 1/n; continue it from the largest
        # n of the same parity that is integrated directly (the integration
        # loses accuracy when the two middle values crowd together).
        m = _LARGE - (_LARGE - n) % 2
        return np.pi / 2 * (1.0 - (1.0 - median_variance_factor(m) / (np.pi / 2)) * m / n)
    if n % 2:
        return n * _second_moment(n, (n + 1) // 2)
    k = n // 2
    variance = (_second_moment(n, k) + _second_moment(n, k + 1) + 2.0 * _cross_moment(n, k)) / 4.0
    return n * variance


def median_variance_factors(counts: np.ndarray) -> np.ndarray:
    """:func:`median_variance_factor` for every element of an integer array.

    Elements equal to 0 (no values) give NaN.
    """
    counts = np.asarray(counts, dtype=np.intp)
    largest = int(counts.max()) if counts.size else 0
    table = np.array([np.nan] + [median_variance_factor(n) for n in range(1, largest + 1)])
    return table[counts]
