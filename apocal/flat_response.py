"""Spectroscopic flats: the illuminated slit, the lamp spectrum and its fit.

A spectroscopic flat is the flat lamp's spectrum times the pixel response.
To keep only the pixel response, apocal (like pyDIS and the class code)
finds the illuminated part of the slit, averages the flat along the spatial
axis to get the lamp spectrum, fits a smooth curve to it along the
dispersion axis, and divides it out.
"""

from __future__ import annotations

import numpy as np
from astropy.convolution import Box1DKernel, convolve
from astropy.stats import mad_std, sigma_clip
from numpy.polynomial import Chebyshev
from scipy.interpolate import LSQUnivariateSpline

__all__ = ["RESPONSE_MODES", "illuminated_rows", "lamp_spectrum", "fit_response"]

#: Ways to fit the lamp spectrum (None: do not remove it).
RESPONSE_MODES = ("spline", "poly", "boxcar", None)

_DEFAULT_ORDER = 9        # Chebyshev order for "poly"
_DEFAULT_KNOTS = 40       # interior knots for "spline", spread evenly
_DEFAULT_WIDTH = 51       # pixels, for "boxcar"


def illuminated_rows(image: np.ndarray, dispersion_axis: int, bad: np.ndarray | None = None,
                     threshold: float = 0.8) -> np.ndarray:
    """Which positions along the slit (spatial axis) are illuminated.

    The spatial profile is the median along the dispersion axis; a
    position is illuminated when its profile is at least ``threshold``
    times the typical level of the slit. The typical level is the median of
    the profile over positions brighter than a tenth of its 99th
    percentile, so a slit that covers only part of the detector is judged
    against itself, not against the dark rows beside it.

    Parameters
    ----------
    image : numpy.ndarray
        A bias-subtracted flat (electrons).
    dispersion_axis : int
        numpy axis along which wavelength changes.
    bad : numpy.ndarray of bool, optional
        Pixels to leave out of the profile.
    threshold : float
        Fraction of the typical level that counts as illuminated.

    Returns
    -------
    numpy.ndarray of bool
        One value per spatial position.
    """
    values = np.where(bad, np.nan, image) if bad is not None else np.asarray(image, dtype=float)
    profile = np.nanmedian(values, axis=dispersion_axis)
    bright = profile > 0.1 * np.nanpercentile(profile, 99)
    if not bright.any():
        return np.zeros(profile.shape, dtype=bool)
    level = np.nanmedian(profile[bright])
    return np.nan_to_num(profile, nan=0.0) >= threshold * level


def lamp_spectrum(image: np.ndarray, dispersion_axis: int, illuminated: np.ndarray,
                  bad: np.ndarray | None = None, clip: float = 5.0) -> np.ndarray:
    """Mean along the slit of the illuminated, good pixels, at every position
    along the dispersion axis.

    Values further than ``clip`` robust standard deviations from the median
    of their position (dead pixels, cosmic rays) are left out of the mean.
    """
    spatial_axis = 1 - dispersion_axis
    keep = np.broadcast_to(np.expand_dims(illuminated, axis=dispersion_axis), image.shape)
    if bad is not None:
        keep = keep & ~bad
    values = np.ma.masked_array(image, mask=~keep)
    clipped = sigma_clip(values, sigma=clip, axis=spatial_axis, maxiters=3,
                         cenfunc="median", stdfunc="mad_std")
    return np.ma.filled(clipped.mean(axis=spatial_axis).astype(float), np.nan)


def fit_response(spectrum: np.ndarray, mode: str | None = "spline", *, order: int | None = None,
                 knots: int | None = None, width: int | None = None,
                 rejection: float = 4.0, iterations: int = 3) -> np.ndarray:
    """A smooth fit to a lamp spectrum along the dispersion axis.

    Parameters
    ----------
    spectrum : numpy.ndarray
        The lamp spectrum (1-D, NaN where unknown).
    mode : {"spline", "poly", "boxcar", None}
        Cubic least-squares spline with ``knots`` evenly spaced interior
        knots; Chebyshev polynomial of ``order``; running mean over
        ``width`` pixels; or None, a constant (the median), which leaves
        the lamp spectrum in the flat.
    order, knots, width : int, optional
        Defaults 9, 40 and 51.
    rejection : float
        Points further than this many robust standard deviations from a
        spline or polynomial fit are left out of the next fit (bad columns,
        edges of filters); ``iterations`` fits at most.

    Returns
    -------
    numpy.ndarray
        The fitted response, same length as ``spectrum``.
    """
    if mode not in RESPONSE_MODES:
        raise ValueError(f"response must be one of {RESPONSE_MODES}, not {mode!r}")
    spectrum = np.asarray(spectrum, dtype=float)
    x = np.arange(spectrum.size, dtype=float)
    good = np.isfinite(spectrum)
    if good.sum() < 10:
        raise ValueError("the lamp spectrum has fewer than 10 usable points")
    if mode is None:
        return np.full(spectrum.shape, np.nanmedian(spectrum))
    if mode == "boxcar":
        size = int(width or _DEFAULT_WIDTH) | 1
        return convolve(spectrum, Box1DKernel(size), boundary="extend",
                        nan_treatment="interpolate", preserve_nan=False)

    for _ in range(iterations):
        if mode == "poly":
            model = Chebyshev.fit(x[good], spectrum[good], deg=order or _DEFAULT_ORDER)(x)
        else:
            model = _spline(x, spectrum, good, knots or _DEFAULT_KNOTS)
        residual = spectrum - model
        scatter = mad_std(residual[good])
        keep = good & (np.abs(residual) <= rejection * scatter) if scatter > 0 else good
        if keep.sum() < 10 or np.array_equal(keep, good):
            break
        good = keep
    return model


def _spline(x, y, good, n_knots):
    inner = x[good][0], x[good][-1]
    n_knots = max(1, min(int(n_knots), good.sum() // 4))
    knots = np.linspace(*inner, n_knots + 2)[1:-1]
    # Knots must have data between them (Schoenberg-Whitney); keep those that do.
    occupied = np.histogram(x[good], bins=np.concatenate(([inner[0]], knots, [inner[1] + 1])))[0]
    knots = knots[(occupied[:-1] > 0) & (occupied[1:] > 0)]
    spline = LSQUnivariateSpline(x[good], y[good], knots, k=3)
    return spline(x)
