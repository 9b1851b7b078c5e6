"""Spectroscopic flats: the illuminated slit, the lamp spectrum and its fit.

A spectroscopic flat is the flat lamp's spectrum times the pixel response.
To keep only the pixel response, apocal (like pyDIS and the class code)
finds the illuminated part of the slit, takes the flat's median along the
spatial axis as the lamp spectrum, fits a smooth curve to it along the
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
_TREND = 10.0             # F ratio of a cubic in a knot interval that asks for more knots


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
                  bad: np.ndarray | None = None) -> np.ndarray:
    """Median along the slit of the illuminated, good pixels, at every
    position along the dispersion axis.

    A median, not a mean: dead pixels and cosmic rays do not pull it, and a
    slit whose illumination is lower towards its ends (vignetting) leaves
    the master flat's median across the slit at 1, where a mean would leave
    it above 1 by the depth of the vignetting.
    """
    keep = np.broadcast_to(np.expand_dims(illuminated, axis=dispersion_axis), image.shape)
    if bad is not None:
        keep = keep & ~bad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # positions with nothing good
        return np.asarray(bn.nanmedian(np.where(keep, image, np.nan), axis=1 - dispersion_axis),
                          dtype=float)


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
                    limit: float = 0.5, window: int = 101) -> np.ndarray:
    """Where a fitted lamp spectrum does not follow the spectrum.

    The relative residual, averaged over ``window`` points, is compared with
    the master flat's own relative noise per pixel there (``pixel_noise``):
    a misfit larger than ``limit`` times that noise makes every pixel of the
    position wrong by more than its uncertainty allows. Structure finer
    than the window (fringes: pixel response, kept in the flat) averages
    out, and isolated points (a bad column, which is pixel response too)
    are replaced by their neighbours' median first, so neither is a misfit.

    Returns
    -------
    numpy.ndarray of bool
        True where the fit cannot be trusted.
    """
    spectrum = np.asarray(spectrum, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        residual = spectrum / fitted - 1.0
    nearby = _running(residual, 5, bn.move_median)
    deviation = np.abs(residual - nearby)
    isolated = deviation > 5 * 1.4826 * _running(deviation, _SCATTER_WINDOW, bn.move_median)
    mean = _running(np.where(isolated, nearby, residual), window, bn.move_mean)
    return np.isfinite(mean) & (np.abs(mean) > limit * np.asarray(pixel_noise))


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
    whose residual still has a trend (`_trend_left`), until none has (or the
    intervals are `_MIN_SPACING` points short). Then points further from the
    fit than ``rejection`` times the larger of the scatter and the local
    misfit are left out and the knots refined again (``iterations`` times at
    most): isolated points (a bad column) go, a steep stretch (the end of a
    filter's range) stays and is followed."""
    used = good.copy()
    lo, hi = x[good][0], x[good][-1]
    knots = list(np.linspace(lo, hi, max(1, min(n_knots, good.sum() // _MIN_SPACING)) + 2)[1:-1])
    rejections = 0
    spline = None
    for _ in range(16 * (iterations + 1)):
        knots = _valid_knots(x[used], knots, lo, hi)
        spline = LSQUnivariateSpline(x[used], y[used], knots, w=weight[used], k=3)
        edges = np.concatenate([[lo], knots, [hi + 1]])
        added = [0.5 * (a + b) for a, b in zip(edges[:-1], edges[1:])
                 if _trend_left(y[used] - spline(x[used]), x[used], a, b)]
        if added:
            knots = sorted(knots + added)
            continue
        normalised = (y - spline(x)) * weight
        local = 1.4826 * _running(np.where(good, np.abs(normalised), np.nan), _SCATTER_WINDOW,
                                  bn.move_median)
        outliers = good & (np.abs(normalised) > rejection * np.fmax(local, 1.0))
        if rejections >= iterations or not np.any(outliers != (good & ~used)):
            break
        used = good & ~outliers
        rejections += 1
    return spline


def _trend_left(residual, x, start, stop) -> bool:
    """True when a knot interval's residual still has a trend a finer spline
    would follow: a cubic across the interval explains far more of it than
    noise would (F ratio above `_TREND`). Structure finer than the interval
    (the fringes of a red CCD, which are pixel response, not lamp) or an
    isolated bad point is not a trend and adds no knot."""
    inside = (x >= start) & (x < stop)
    n = int(inside.sum())
    if n < 2 * _MIN_SPACING:
        return False
    t = 2.0 * (x[inside] - start) / (stop - start) - 1.0
    design = np.vander(t, 4)
    coefficients, *_ = np.linalg.lstsq(design, residual[inside], rcond=None)
    explained = design @ coefficients
    unexplained = np.sum((residual[inside] - explained) ** 2) / (n - 4)
    return bool(np.sum(explained**2) / 4 > _TREND * unexplained)


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
