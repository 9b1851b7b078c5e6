"""Spectroscopic flats: the illuminated slit, the lamp spectrum and its fit.

A spectroscopic flat is the flat lamp's spectrum times the pixel response.
To keep only the pixel response, apocal (like pyDIS and the class code)
finds the illuminated part of the slit, averages the flat along the spatial
axis to get the lamp spectrum, fits a smooth curve to it along the
dispersion axis, and divides it out.

Blue lamp spectra fall by orders of magnitude across a detector (ISIS blue:
a factor of 4,400), which no smooth curve in counts follows at both ends.
So the fit is made in log counts, where the lamp is smooth; the spline's
knots are added where the residual is larger than the spectrum's own
point-to-point scatter (the fit follows the lamp where it changes and stays
stiff where it does not); and `response_misfit` tells where the fit still
cannot follow, so those positions are flagged rather than kept. Each span
of the dispersion axis read by its own amplifiers is fitted on its own and
the fits are joined continuously (the lamp is continuous): a relative gain
error between amplifiers stays in the flat as a step, where it corrects
the science, instead of becoming a ramp across the boundary.
"""

from __future__ import annotations

import warnings

import bottleneck as bn
import numpy as np
from astropy.convolution import Box1DKernel, convolve
from astropy.modeling.fitting import FittingWithOutlierRemoval, LinearLSQFitter
from astropy.modeling.models import Chebyshev1D
from astropy.stats import sigma_clip
from scipy.interpolate import LSQUnivariateSpline

__all__ = ["RESPONSE_MODES", "illuminated_rows", "lamp_spectrum", "fit_response",
           "response_misfit", "spectrum_scatter"]

#: Ways to fit the lamp spectrum (None: do not remove it).
RESPONSE_MODES = ("spline", "poly", "boxcar", None)

_DEFAULT_ORDER = 9        # Chebyshev order for "poly"
_DEFAULT_KNOTS = 20       # interior knots a "spline" starts from, spread evenly
_DEFAULT_WIDTH = 51       # pixels, for "boxcar"
_MIN_SPACING = 8          # points between spline knots, at least
_SCATTER_WINDOW = 51      # points over which the spectrum's scatter is measured
_JOIN = 5                 # points each side used to join two spans' fits


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # positions with no good pixel
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


def spectrum_scatter(spectrum: np.ndarray, window: int = _SCATTER_WINDOW) -> np.ndarray:
    """Relative point-to-point scatter of a positive spectrum at every point.

    The robust standard deviation of the second differences of its log over
    ``window`` points, over sqrt(6) (the second difference of independent
    values has six times their variance): a smooth lamp leaves only its
    noise, and the measure follows a signal-to-noise ratio that changes
    along the spectrum. NaN where the spectrum is not positive.
    """
    spectrum = np.asarray(spectrum, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.where(spectrum > 0, np.log(spectrum), np.nan)
    second = np.full(log.shape, np.nan)
    second[1:-1] = log[2:] + log[:-2] - 2 * log[1:-1]
    deviation = np.abs(second - _running(second, window, bn.move_median))
    scatter = 1.4826 * _running(deviation, window, bn.move_median) / np.sqrt(6.0)
    return np.where(np.isfinite(log), scatter, np.nan)


def fit_response(spectrum: np.ndarray, mode: str | None = "spline", *, order: int | None = None,
                 knots: int | None = None, width: int | None = None,
                 segments: list[tuple[int, int]] | None = None, rejection: float = 4.0,
                 iterations: int = 3) -> np.ndarray:
    """A smooth fit to a lamp spectrum along the dispersion axis.

    Parameters
    ----------
    spectrum : numpy.ndarray
        The lamp spectrum (1-D, NaN where unknown; points that are not
        positive are not fitted).
    mode : {"spline", "poly", "boxcar", None}
        In log counts: a cubic least-squares spline whose knots are added
        where the residual exceeds the spectrum's scatter
        (`spectrum_scatter`), starting from ``knots`` evenly spaced ones; a
        Chebyshev polynomial of ``order`` (fitted with astropy's
        `~astropy.modeling.fitting.FittingWithOutlierRemoval`); a running
        mean over ``width`` points; or None, a constant (the median), which
        leaves the lamp spectrum in the flat.
    order, knots, width : int, optional
        Defaults 9, 20 and 51.
    segments : list of (int, int), optional
        Spans ``[start, stop)`` fitted each on their own (one per set of
        amplifiers along the dispersion axis) and joined continuously.
    rejection : float
        Points further than this many times the scatter from a spline or
        polynomial fit are left out of the next fit (bad columns, edges of
        filters); ``iterations`` fits at most.

    Returns
    -------
    numpy.ndarray
        The fitted response, same length as ``spectrum``; beyond the first
        and last positive points it keeps their fitted values.

    Raises
    ------
    ValueError
        For an unknown mode, or fewer than 10 positive points in a span.
    """
    if mode not in RESPONSE_MODES:
        raise ValueError(f"response must be one of {RESPONSE_MODES}, not {mode!r}")
    spectrum = np.asarray(spectrum, dtype=float)
    good = np.isfinite(spectrum) & (spectrum > 0)
    if good.sum() < 10:
        raise ValueError("the lamp spectrum has fewer than 10 usable points")
    if mode is None:
        return np.full(spectrum.shape, np.nanmedian(spectrum[good]))
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.where(good, np.log(spectrum), np.nan)
    scatter = spectrum_scatter(spectrum)
    fitted = np.full(spectrum.shape, np.nan)
    spans = segments or [(0, spectrum.size)]
    for start, stop in spans:
        span = slice(start, stop)
        if good[span].sum() < 10:
            raise ValueError(f"the lamp spectrum has fewer than 10 usable points in "
                             f"positions {start}-{stop - 1}")
        fitted[span] = _fit_span(log[span], good[span], scatter[span], mode, order, knots,
                                 width, rejection, iterations)
    _join(fitted, spans)
    return np.exp(fitted)


def response_misfit(spectrum: np.ndarray, fitted: np.ndarray, pixel_noise: np.ndarray,
                    limit: float = 5.0) -> np.ndarray:
    """Where a fitted lamp spectrum does not follow the spectrum.

    The relative residual, averaged over five points, is compared with what
    noise allows there: ``limit`` times the spectrum's own scatter over
    sqrt(5), or a quarter of the flat's relative noise per pixel
    (``pixel_noise``) where that is larger: a misfit below it is lost in
    every pixel's noise.

    Returns
    -------
    numpy.ndarray of bool
        True where the fit cannot be trusted.
    """
    spectrum = np.asarray(spectrum, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        residual = spectrum / fitted - 1.0
    smoothed = _running(residual, 5, bn.move_mean)
    allowed = np.fmax(limit * spectrum_scatter(spectrum) / np.sqrt(5.0), 0.25 * pixel_noise)
    return np.isfinite(smoothed) & (np.abs(smoothed) > allowed)


def _fit_span(log, good, scatter, mode, order, knots, width, rejection, iterations):
    """The fit (in log counts) of one span."""
    x = np.arange(log.size, dtype=float)
    first, last = np.flatnonzero(good)[[0, -1]]
    # a noise-free spectrum (a simulation) still gets finite weights
    weight = 1.0 / np.fmax(np.where(np.isfinite(scatter), scatter, np.nanmax(scatter[good])
                                    if np.isfinite(scatter[good]).any() else 1.0), 1e-6)
    if mode == "boxcar":
        size = int(width or _DEFAULT_WIDTH) | 1
        smooth = convolve(np.where(good, log, np.nan), Box1DKernel(size), boundary="extend",
                          nan_treatment="interpolate", preserve_nan=False)
        return np.interp(x, x[first:last + 1], smooth[first:last + 1])
    inside = np.clip(x, first, last)
    if mode == "poly":
        fitter = FittingWithOutlierRemoval(LinearLSQFitter(), sigma_clip, niter=iterations,
                                           sigma=rejection)
        model = Chebyshev1D(order or _DEFAULT_ORDER, domain=(first, last))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted, _ = fitter(model, x[good], log[good], weights=weight[good])
        return fitted(inside)
    return _adaptive_spline(x, log, good, weight, knots or _DEFAULT_KNOTS, rejection,
                            iterations)(inside)


def _adaptive_spline(x, y, good, weight, n_knots, rejection, iterations):
    """A weighted cubic spline whose knots are added, halving the intervals
    whose residual is larger than the scatter allows, until none is (or the
    intervals are `_MIN_SPACING` points short). Points further from the fit
    than ``rejection`` times the larger of the scatter and the local misfit
    are left out (up to ``iterations`` times)."""
    used = good.copy()
    lo, hi = x[good][0], x[good][-1]
    knots = list(np.linspace(lo, hi, max(1, min(n_knots, good.sum() // _MIN_SPACING)) + 2)[1:-1])
    rejections = 0
    spline = None
    for _ in range(12 + iterations):
        knots = _valid_knots(x[used], knots, lo, hi)
        spline = LSQUnivariateSpline(x[used], y[used], knots, w=weight[used], k=3)
        normalised = (y - spline(x)) * weight
        local = 1.4826 * _running(np.where(good, np.abs(normalised), np.nan), _SCATTER_WINDOW,
                                  bn.move_median)
        outliers = good & (np.abs(normalised) > rejection * np.fmax(local, 1.0))
        if rejections < iterations and np.any(outliers != (good & ~used)):
            used = good & ~outliers
            rejections += 1
            continue
        edges = np.concatenate([[lo], knots, [hi + 1]])
        which = np.digitize(x[used], edges) - 1
        added = []
        for interval in range(len(edges) - 1):
            points = normalised[used][which == interval]
            if points.size >= 2 * _MIN_SPACING and np.mean(points**2) > 1 + 3 * np.sqrt(
                    2.0 / points.size):
                added.append(0.5 * (edges[interval] + edges[interval + 1]))
        if not added:
            break
        knots = sorted(knots + added)
    return spline


def _valid_knots(x, knots, lo, hi) -> list:
    """Interior knots with data between each pair (Schoenberg-Whitney)."""
    knots = np.asarray([k for k in knots if lo < k < hi])
    occupied = np.histogram(x, bins=np.concatenate(([lo], knots, [hi + 1])))[0]
    return list(knots[(occupied[:-1] > 0) & (occupied[1:] > 0)])


def _join(log_fit: np.ndarray, spans) -> None:
    """Scale each span's fit (in log counts, in place) so that it continues
    the previous span's: both are extended by a straight line over their
    last and first `_JOIN` points to the boundary between them."""
    for (_, boundary), (start, stop) in zip(spans[:-1], spans[1:]):
        left = log_fit[boundary - _JOIN:boundary]
        right = log_fit[start:start + _JOIN]
        at = boundary - 0.5
        left_end = np.polyval(np.polyfit(np.arange(boundary - _JOIN, boundary), left, 1), at)
        right_end = np.polyval(np.polyfit(np.arange(start, start + _JOIN), right, 1), at)
        log_fit[start:] += left_end - right_end


def _running(values: np.ndarray, window: int, function) -> np.ndarray:
    """A centred running statistic (bottleneck's move_*) ignoring NaN."""
    half = window // 2
    padded = np.concatenate([np.full(half, np.nan), values, np.full(half, np.nan)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trailing = function(padded, window, min_count=1)
    return trailing[2 * half:]
