"""Aligning and co-adding calibrated frames: `stack`.

Frames with a celestial WCS (plate-solved images) are reprojected onto one
grid with reproject (``reproject_interp``, ``reproject_adaptive`` or
``reproject_exact``); frames without one (2-D spectra) are shifted along
their spatial axis by shifts given or measured by cross-correlation. Both
then go through the same weighted mean, with masked pixels left out and an
optional sigma clipping.

What the uncertainty of a stacked pixel means
---------------------------------------------

Every resampling here is linear: an output pixel of frame *i* is
``sum_k W_k x_k`` over a few input pixels. Its variance is therefore
``sum_k W_k**2 var_k`` -- not the reprojected variance ``sum_k W_k var_k``,
which overstates it (bilinear interpolation half-way between four pixels
averages them and halves the noise twice). The returned uncertainty is this
exact per-pixel value, so ``(stack - truth) / uncertainty`` has unit
standard deviation. The price of resampling is that neighbouring output
pixels are correlated: the noise of a sum over an aperture is about the
single-pixel value times the square root of the number of pixels only for
the unresampled frame; for a stack it is larger than that rule gives from
the per-pixel uncertainty (by up to a factor two for bilinear
interpolation). Photometry in apertures should use the frames' own noise
(which the stack reduces by sqrt(N)) or account for the correlation.

``sum_k W_k**2 var_k`` is computed with the reprojection itself: the
standard deviation image is split into "combs" (every ``s``-th pixel along
each axis, ``s`` larger than the resampling kernel), so that each output
pixel receives at most one input pixel of a comb; squaring each
reprojected comb and summing over the ``s x s`` combs gives the sum of
squared weights times the variances, exactly, whatever the projection.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import pixel_to_pixel

from . import __version__
from .exceptions import FrameError
from .flags import FLAG_DTYPE, Flag, flags_of
from .io import card_text, read_frame, write_frame

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["stack", "StackedImage", "measure_shifts", "PROJECTIONS"]

#: Resampling methods of `stack` for frames with a celestial WCS.
PROJECTIONS = ("interp", "adaptive", "exact")

# A frame's output pixel is used when masked input pixels carry at most this
# fraction of its resampling weight (the rest is renormalised; masked values
# never enter).
_MASKED_WEIGHT = 0.05
# A flag of an input pixel is carried to an output pixel it weighs at least this much in.
_FLAG_WEIGHT = 1e-3
# An output pixel is inside a frame when at least this fraction of it is covered.
_INSIDE = 0.999
# Planes reprojected per call (coordinates are computed once per call).
_PLANES_PER_CALL = 16
# Sample region of reproject_adaptive (output pixels), its default.
_ADAPTIVE_REGION = 4
_EXPTIME_KEYS = ("EXPTIME", "EXPOSURE")
_WCS_KEY = re.compile(r"^(WCSAXES|CTYPE\d|CUNIT\d|CRPIX\d|CRVAL\d|CDELT\d|CROTA\d|CD\d_\d|PC\d_\d|"
                      r"PV\d_\d+|PS\d_\d+|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|"
                      r"A_ORDER|B_ORDER|AP_ORDER|BP_ORDER|A_\d+_\d+|B_\d+_\d+|AP_\d+_\d+|"
                      r"BP_\d+_\d+|A_DMAX|B_DMAX)$")


@dataclass
class StackedImage:
    """Frames aligned and co-added by `stack`.

    Attributes
    ----------
    image : astropy.nddata.CCDData
        The weighted mean (float32, the frames' unit, electrons for
        calibrated frames, scaled to the exposure time of the first frame),
        its per-pixel `~astropy.nddata.StdDevUncertainty`, ``flags``
        (`apocal.Flag` bits; ``NO_DATA`` where no frame was used), ``mask``
        and a header with NCOMBINE, STKPROJ (projection) and the output WCS
        (``image.wcs`` too, for frames with a celestial WCS).
    coverage : numpy.ndarray
        Number of frames used at each pixel (int16).
    exposure : numpy.ndarray
        Exposure time at each pixel, seconds (sum over the frames used;
        NaN when the frames have no exposure time).
    offsets : numpy.ndarray
        Where each frame lies relative to the output grid, pixels: for
        frames with a WCS, ``(dx, dy)`` of the grid's central pixel in each
        frame (shape (N, 2)); for spectra, the shift of each frame along
        the spatial axis (shape (N,)), positive when its features sit at
        higher pixel numbers than in the first frame.
    weights : numpy.ndarray
        Relative weight of each frame (sums to 1).
    projection : str
        Resampling used: ``"interp"``, ``"adaptive"``, ``"exact"`` or
        ``"shift"`` (linear interpolation along the spatial axis).
    names : list of str
        The frames, in order (file names, or header RAWFILE).
    """

    image: CCDData
    coverage: np.ndarray
    exposure: np.ndarray
    offsets: np.ndarray
    weights: np.ndarray
    projection: str
    names: list = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"<StackedImage of {len(self.names)} frames, {self.image.shape[1]}x"
                f"{self.image.shape[0]} pixels, {self.projection}>")

    def write(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the stack with `apocal.io.write_frame`, plus COVERAGE and EXPOSURE.

        The file holds the image (primary HDU), UNCERT, MASK, FLAGS,
        COVERAGE (frames per pixel) and EXPOSURE (seconds per pixel)
        extensions. It appears complete or not at all.

        Parameters
        ----------
        path : str or path-like
            Output FITS file.
        overwrite : bool
            Replace an existing file. Default False.

        Returns
        -------
        pathlib.Path

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is False.
        """
        coverage = fits.ImageHDU(self.coverage.astype(np.int16), name="COVERAGE")
        coverage.header["BUNIT"] = ("", "frames used at each pixel")
        exposure = fits.ImageHDU(self.exposure.astype(np.float32), name="EXPOSURE")
        exposure.header["BUNIT"] = ("s", "exposure time at each pixel")
        return write_frame(self.image, path, overwrite=overwrite,
                           extra_hdus=[coverage, exposure])

    def plot(self, ax: Axes | None = None, **options: Any) -> Axes:
        """Show the stacked image with zscale limits (`apocal.diagnostics.show_frame`).

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Where to draw; a new figure by default.
        **options
            Passed to `~apocal.diagnostics.show_frame` (``mask``, ``cmap``,
            ``title``, ...).

        Returns
        -------
        matplotlib.axes.Axes
        """
        from .diagnostics.display import show_frame

        options.setdefault("title", f"stack of {len(self.names)} frames ({self.projection})")
        return show_frame(self.image, ax=ax, **options)


def stack(frames: Sequence[str | os.PathLike | CCDData], *,
          reference: str | int | tuple[WCS, tuple[int, int]] | None = None,
          projection: str = "interp",
          sigma_clip: float | tuple[float, float] | None = None,
          shifts: Sequence[float] | None = None, spatial_axis: int | None = None,
          exclude: int | None = None, max_shift: int = 30) -> StackedImage:
    """Align calibrated frames on one grid and combine them.

    Frames with a celestial WCS are reprojected onto the reference grid
    with reproject. Frames without one (2-D spectra) are shifted along
    ``spatial_axis`` by ``shifts``, or by shifts measured by
    cross-correlating their spatial profiles (`measure_shifts`). Each
    frame is scaled to the exposure time of the first; the frames are then
    averaged with one weight per frame, masked pixels left out.

    Parameters
    ----------
    frames : sequence of CCDData, str or path-like
        Calibrated frames (electrons, `~astropy.nddata.StdDevUncertainty`,
        ``flags`` or ``mask``), or files written by apocal
        (`apocal.io.write_frame`). For frames with a celestial WCS it is
        ``ccd.wcs`` or, failing that, the header's.
    reference : None, "first", "optimal", int or (WCS, shape)
        The output grid: the first frame's (None or "first"), frame
        ``reference``'s, one covering every frame (``"optimal"``, from
        `reproject.mosaicking.find_optimal_celestial_wcs`), or a given WCS
        and shape (rows, columns). Spectra always use the first frame's.
    projection : {"interp", "adaptive", "exact"}
        ``"interp"`` (default): bilinear interpolation
        (`reproject.reproject_interp`); for frames of one camera, offset
        and slightly rotated, its weights are the pixel overlaps, so it
        conserves flux, it smooths least and its uncertainty costs four
        extra planes. ``"adaptive"``: DeForest's anti-aliased resampling
        with flux conservation (`reproject.reproject_adaptive`,
        ``conserve_flux=True``), for grids of another pixel scale; it
        smooths more. ``"exact"``: spherical polygon overlap
        (`reproject.reproject_exact`), slowest.
    sigma_clip : float or (float, float), optional
        Reject a frame's value more than this many times its own
        uncertainty below (or above) the median of the frames at that
        pixel (repeated up to three times): satellite trails, cosmic rays
        and asteroids that survived calibration. Needs three frames or
        more; pixels covered by fewer frames are not clipped. Clipping
        keeps every resampled frame in memory (11 bytes a pixel a frame);
        without it, frames are added one at a time.
    shifts : sequence of float, optional
        Frames without celestial WCS: shift of each frame along the spatial
        axis, pixels, positive when its features sit at higher pixel numbers
        than in the first frame. Measured when not given.
    spatial_axis : {0, 1}, optional
        Frames without celestial WCS: the numpy axis along the slit (0 when
        the slit runs along the rows' index, i.e. dispersion along columns).
        Giving it (or ``shifts``) selects the shift path even for frames
        that have a WCS.
    exclude : int, optional
        `apocal.Flag` bits that keep a frame's pixel out; by default any
        flag (or ``mask``). Flags not excluded are carried into the stack's
        ``flags`` where the pixels carrying them were used.
    max_shift : int
        Largest shift (pixels) searched when measuring shifts.

    Returns
    -------
    StackedImage

    Raises
    ------
    FrameError
        A frame (named) cannot be read, has no uncertainty, another unit or
        shape (spectra), no celestial WCS (when neither ``shifts`` nor
        ``spatial_axis`` is given) or no exposure time while others have one.
    ValueError
        For no frames, an unknown projection or bad options.

    Notes
    -----
    **Weights.** Each frame gets one weight, the inverse of the median
    variance of its unmasked pixels (after scaling to the common exposure
    time): sky-limited frames of a worse night count less. Per-pixel
    inverse-variance weights would be optimal for known variances, but the
    variances of calibrated frames are estimated from the data (photon
    noise of the measured signal), so a pixel that fluctuated low gets a
    larger weight and the mean is biased low wherever photon noise
    dominates; one weight per frame has no such bias. For N equal frames
    the stack is their mean and its noise is the single frame's over
    sqrt(N).

    **Uncertainty.** The returned uncertainty is the exact standard
    deviation of each stacked pixel (``sum w_i**2 var_i / (sum w_i)**2``
    over the frames used, with each frame's resampled variance
    ``sum_k W_k**2 var_k``; see the module documentation). Resampling
    correlates neighbouring pixels: the per-pixel uncertainty of a stack
    of resampled frames is below the single frame's over sqrt(N), while
    the noise of sums over several pixels follows sqrt(N).
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, not {projection!r}")
    loaded = _load(frames)
    if not loaded:
        raise ValueError("no frames to stack")
    if sigma_clip is not None and len(loaded) < 3:
        raise ValueError(f"sigma clipping needs three frames or more, not {len(loaded)}")
    exclude_bits = int(sum(Flag)) if exclude is None else int(exclude)
    names = [name for _, name in loaded]
    ccds = [ccd for ccd, _ in loaded]
    scales, times = _exposure_scales(loaded)

    if shifts is not None or spatial_axis is not None:
        grid = _ShiftGrid(loaded, shifts, spatial_axis, exclude_bits, max_shift, projection)
    else:
        grid = _SkyGrid(loaded, reference, projection)

    def variance(ccd):   # float64, made when needed: a night may have many frames
        return np.asarray(ccd.uncertainty.array, dtype=np.float64) ** 2

    weights = np.empty(len(ccds))
    for i, ccd in enumerate(ccds):
        var = variance(ccd)
        usable = ((flags_of(ccd) & exclude_bits) == 0) & np.isfinite(var) & np.isfinite(ccd.data)
        if not usable.any():
            raise FrameError(names[i], "has no unmasked pixel to stack")
        weights[i] = 1.0 / (scales[i] ** 2 * float(np.median(var[usable])))
    weights /= weights.sum()

    total = _Accumulator(grid.shape)
    kept = []
    for i, ccd in enumerate(ccds):
        one = _resample_frame(ccd, variance(ccd), exclude_bits, grid.resampler(i), grid.spacing(i),
                              scales[i])
        total.add_footprint(one)
        if sigma_clip is None:
            total.add(one, weights[i], times[i])
        else:   # clipping needs every frame: keep what it judges (11 bytes a pixel)
            one.raw = one.raw_variance = one.inside = None
            kept.append(one)
    rejected = None
    if sigma_clip is not None:
        rejected = _clip(kept, sigma_clip)
        for one, w, t in zip(kept, weights, times):
            total.add(one, w, t)

    data, sigma, flags = total.result()
    header = _header(ccds[0], names, grid, weights, scales, times, sigma_clip, rejected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        image = CCDData(data, unit=ccds[0].unit, meta=header, wcs=grid.wcs,
                        uncertainty=StdDevUncertainty(sigma, copy=False), flags=flags,
                        mask=flags != 0)
    exposure = total.exposure if not math.isnan(times[0]) else np.full(grid.shape, np.nan,
                                                                         np.float32)
    return StackedImage(image, total.coverage, exposure, grid.offsets, weights, grid.projection,
                        names)


def measure_shifts(frames: Sequence[CCDData], spatial_axis: int, *, exclude: int | None = None,
                   max_shift: int = 30) -> np.ndarray:
    """Shifts of 2-D spectra along the slit, by cross-correlating their profiles.

    Each frame is collapsed along the dispersion axis (4-sigma-clipped mean
    of the unmasked pixels of each row or column along the slit), its median
    level removed, and cross-correlated with the first frame's profile;
    the peak is refined by fitting a parabola to its three highest values,
    twice (the second time on the profile moved by the first estimate).

    Parameters
    ----------
    frames : sequence of astropy.nddata.CCDData
        Frames of one shape.
    spatial_axis : {0, 1}
        The numpy axis along the slit.
    exclude : int, optional
        `apocal.Flag` bits of pixels left out of the profiles (any by default).
    max_shift : int
        Largest shift searched, pixels.

    Returns
    -------
    numpy.ndarray
        Shift of each frame along ``spatial_axis`` in pixels (0 for the
        first), positive when its features sit at higher pixel numbers.
    """
    exclude_bits = int(sum(Flag)) if exclude is None else int(exclude)
    profiles = [_profile(ccd, spatial_axis, exclude_bits) for ccd in frames]
    reference = profiles[0]
    return np.array([0.0] + [_cross_correlation_shift(reference, p, max_shift)
                             for p in profiles[1:]])


# ----------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------
def _load(frames) -> list[tuple[CCDData, str]]:
    loaded = []
    for index, frame in enumerate(frames):
        if isinstance(frame, CCDData):
            name = str(frame.meta.get("RAWFILE", f"frame {index + 1}"))
            ccd = frame
        else:
            name = str(frame)
            ccd = read_frame(frame)
        if ccd.data.ndim != 2:
            raise FrameError(name, f"holds a {ccd.data.ndim}-D array; a 2-D image was expected")
        if not isinstance(ccd.uncertainty, StdDevUncertainty):
            raise FrameError(name, "has no standard-deviation uncertainty (UNCERT); stack "
                                   "frames calibrated by apocal")
        if loaded and ccd.unit != loaded[0][0].unit:
            raise FrameError(name, f"unit {ccd.unit} differs from {loaded[0][0].unit} of the "
                                   f"first frame")
        loaded.append((ccd, name))
    return loaded


def _exposure_time(ccd: CCDData) -> float | None:
    for key in _EXPTIME_KEYS:
        value = ccd.meta.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


def _exposure_scales(loaded):
    """Factor bringing each frame to the first frame's exposure time, and the times."""
    times = [_exposure_time(ccd) for ccd, _ in loaded]
    if all(t is None for t in times):
        return np.ones(len(loaded)), np.full(len(loaded), np.nan)
    for (ccd, name), t in zip(loaded, times):
        if t is None:
            raise FrameError(name, "has no exposure time (EXPTIME) while other frames have "
                                   "one; frames of unknown exposure cannot be scaled")
    times = np.array(times)
    return times[0] / times, times


def _celestial_wcs(ccd: CCDData, name: str) -> WCS | None:
    wcs = ccd.wcs
    if wcs is None or not getattr(wcs, "has_celestial", False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            try:
                wcs = WCS(fits.Header(ccd.meta), naxis=2)
            except Exception:  # a damaged WCS is reported as none
                return None
    if not wcs.has_celestial:
        return None
    return wcs.celestial


# ----------------------------------------------------------------------
# Output grids: the sky (reproject) or shifts along the slit
# ----------------------------------------------------------------------
class _SkyGrid:
    """Reprojection of frames with a celestial WCS onto one grid."""

    def __init__(self, loaded, reference, projection):
        self.projection = projection
        self.wcs_in = []
        for ccd, name in loaded:
            wcs = _celestial_wcs(ccd, name)
            if wcs is None:
                raise FrameError(name, "has no celestial WCS to align it by; plate-solve it, "
                                       "or, for 2-D spectra, give shifts= or spatial_axis= "
                                       "(--spatial-axis on the command line)")
            self.wcs_in.append(wcs)
        shapes = self.shapes = [ccd.shape for ccd, _ in loaded]
        if reference is None or (isinstance(reference, str) and reference == "first"):
            self.wcs, self.shape = self.wcs_in[0], shapes[0]
        elif isinstance(reference, str) and reference == "optimal":
            from reproject.mosaicking import find_optimal_celestial_wcs

            self.wcs, self.shape = find_optimal_celestial_wcs(
                [(shape, wcs) for shape, wcs in zip(shapes, self.wcs_in)])
        elif isinstance(reference, (int, np.integer)) and not isinstance(reference, bool):
            if not -len(loaded) <= reference < len(loaded):
                raise ValueError(f"reference={reference} but there are {len(loaded)} frames")
            self.wcs, self.shape = self.wcs_in[reference], shapes[reference]
        elif isinstance(reference, tuple) and len(reference) == 2:
            self.wcs, self.shape = reference[0], tuple(int(n) for n in reference[1])
        else:
            raise ValueError("reference must be None, 'first', 'optimal', a frame index or "
                             f"(WCS, shape), not {reference!r}")
        self.shape = tuple(int(n) for n in self.shape)
        centre = ((self.shape[1] - 1) / 2.0, (self.shape[0] - 1) / 2.0)
        offsets = np.array([np.array(pixel_to_pixel(self.wcs, w, *centre), float)
                            - np.array(centre) for w in self.wcs_in])
        self.offsets = np.round(offsets, 6) + 0.0    # no -0.0 from rounding noise

    def resampler(self, index):
        from reproject import reproject_adaptive, reproject_exact, reproject_interp

        wcs_in, wcs_out, shape = self.wcs_in[index], self.wcs, self.shape
        if wcs_in is wcs_out and self.shapes[index] == shape and self.projection != "adaptive":
            return lambda cube: (cube, np.ones(shape))   # the reference frame itself

        def run(cube):
            # roundtrip_coords=False: plate solutions (TAN, TAN-SIP) invert exactly.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                if self.projection == "interp":
                    out, footprint = reproject_interp((cube, wcs_in), wcs_out, shape_out=shape,
                                                      order="bilinear", roundtrip_coords=False)
                elif self.projection == "adaptive":
                    out, footprint = reproject_adaptive((cube, wcs_in), wcs_out, shape_out=shape,
                                                        conserve_flux=True,
                                                        sample_region_width=_ADAPTIVE_REGION,
                                                        roundtrip_coords=False)
                else:
                    out, footprint = reproject_exact((cube, wcs_in), wcs_out, shape_out=shape)
            return out, footprint[0]

        return run

    def spacing(self, index):
        """Comb spacing (rows, columns): more than the input pixels one output pixel uses."""
        if self.projection == "interp":
            return 2, 2   # bilinear: two neighbouring pixels along each axis
        cx, cy = (self.shape[1] - 1) / 2.0, (self.shape[0] - 1) / 2.0
        x, y = pixel_to_pixel(self.wcs, self.wcs_in[index], np.array([cx, cx + 1, cx]),
                              np.array([cy, cy, cy + 1]))
        jacobian = np.array([[x[1] - x[0], x[2] - x[0]], [y[1] - y[0], y[2] - y[0]]])
        extent = np.abs(jacobian).sum(axis=1)           # input pixels per output pixel (x, y)
        if self.projection == "adaptive":   # the kernel is never narrower than an input pixel
            extent = _ADAPTIVE_REGION * np.maximum(extent, 1.0)
        sx, sy = (int(np.floor(e + 1e-9)) + 2 for e in extent)
        return sy, sx


class _ShiftGrid:
    """Linear interpolation of 2-D spectra along the slit."""

    wcs = None

    def __init__(self, loaded, shifts, spatial_axis, exclude_bits, max_shift, projection):
        if spatial_axis not in (0, 1):
            raise ValueError(f"spatial_axis must be 0 or 1 (the numpy axis along the slit), "
                             f"not {spatial_axis!r}")
        if projection == "adaptive":
            raise ValueError("projection='adaptive' needs frames with a celestial WCS; spectra "
                             "are shifted by linear interpolation (which for a shift is also "
                             "the exact overlap)")
        ccds = [ccd for ccd, _ in loaded]
        for ccd, name in loaded[1:]:
            if ccd.shape != ccds[0].shape:
                raise FrameError(name, f"shape {ccd.shape} differs from {ccds[0].shape} of the "
                                       f"first frame")
        self.axis = spatial_axis
        self.shape = ccds[0].shape
        self.projection = "shift"
        if shifts is None:
            shifts = measure_shifts(ccds, spatial_axis, exclude=exclude_bits, max_shift=max_shift)
        shifts = np.asarray(shifts, dtype=np.float64)
        if shifts.shape != (len(ccds),) or not np.all(np.isfinite(shifts)):
            raise ValueError(f"shifts needs one finite value per frame ({len(ccds)}), got "
                             f"{shifts.tolist()}")
        self.offsets = shifts

    def resampler(self, index):
        from scipy.ndimage import shift as nd_shift

        move = [0.0, 0.0, 0.0]
        move[1 + self.axis] = -self.offsets[index]   # output(y) = input(y + shift)

        def run(cube):
            out = nd_shift(cube, move, order=1, mode="constant", cval=0.0, prefilter=False)
            return out, out[2]    # plane 2 is the image of ones: its coverage

        return run

    def spacing(self, index):
        return (2, 1) if self.axis == 0 else (1, 2)


def _profile(ccd, axis, exclude_bits):
    from astropy.stats import sigma_clip

    data = np.where((flags_of(ccd) & exclude_bits) == 0, np.asarray(ccd.data, float), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", AstropyWarning)   # "invalid values": the masked ones
        # a clipped mean: less noisy than a median, blind to unflagged cosmic rays
        clipped = sigma_clip(data, sigma=4, axis=1 - axis, masked=True)
        profile = np.ma.filled(clipped.mean(axis=1 - axis), np.nan)
    profile = np.where(np.isfinite(profile), profile, np.nanmedian(profile))
    return profile - np.median(profile)


def _cross_correlation_shift(reference, profile, max_shift):
    n = reference.size
    max_shift = int(min(max_shift, n // 2 - 2))
    positions = np.arange(n, dtype=float)
    estimate = 0.0
    for _ in range(2):
        moved = np.interp(positions + estimate, positions, profile)  # profile moved back
        lags = np.arange(-max_shift, max_shift + 1)
        core = slice(max_shift, n - max_shift)
        values = np.array([np.dot(reference[core], moved[max_shift + lag:n - max_shift + lag])
                           for lag in lags])
        peak = int(np.clip(np.argmax(values), 1, len(lags) - 2))
        left, centre, right = values[peak - 1:peak + 2]
        curvature = left - 2 * centre + right
        step = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        estimate += lags[peak] + step
    return float(estimate)


# ----------------------------------------------------------------------
# Resampling one frame, and combining
# ----------------------------------------------------------------------
@dataclass
class _Resampled:
    value: np.ndarray        # float32; masked inputs left out, renormalised
    variance: np.ndarray     # float32; sum W^2 var / (sum W)^2
    usable: np.ndarray       # bool
    inside: np.ndarray       # bool: the pixel lies inside the frame
    flags: np.ndarray        # every flag of inputs weighing in the pixel
    raw: np.ndarray          # float32; all inputs, for pixels no frame can give
    raw_variance: np.ndarray


def _resample_frame(ccd, variance, exclude_bits, resample, spacing, scale) -> _Resampled:
    data = np.asarray(ccd.data, dtype=np.float64)
    flags = flags_of(ccd)
    finite = np.isfinite(data) & np.isfinite(variance)
    good = finite & ((flags & exclude_bits) == 0)
    sigma = np.sqrt(np.where(good, variance, 0.0))
    bits = [int(b) for b in Flag if np.any(flags & int(b))]
    base = [np.where(good, data, 0.0), good.astype(np.float64), np.ones(data.shape),
            np.where(finite, data, 0.0), np.where(finite, variance, 0.0)]
    base += [((flags & b) != 0).astype(np.float64) for b in bits]
    sy, sx = spacing
    combs = []
    for py in range(sy):
        for px in range(sx):
            comb = np.zeros(data.shape)
            comb[py::sy, px::sx] = sigma[py::sy, px::sx]
            combs.append(comb)

    planes = base + combs
    outputs, footprint = [], None
    for start in range(0, len(planes), _PLANES_PER_CALL):
        out, fp = resample(np.stack(planes[start:start + _PLANES_PER_CALL]))
        outputs.extend(out)
        footprint = fp if footprint is None else footprint
    outputs = [np.nan_to_num(o, nan=0.0, posinf=0.0, neginf=0.0) for o in outputs]
    masked_sum, good_sum, ones, raw, raw_var = outputs[:5]
    bit_planes = outputs[5:5 + len(bits)]
    comb_planes = outputs[5 + len(bits):]

    inside = (np.nan_to_num(footprint) >= _INSIDE) & (ones > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(inside, good_sum / ones, 0.0)
        usable = inside & (fraction >= 1.0 - _MASKED_WEIGHT)
        ratio = np.where(usable, ones / good_sum, 0.0)   # renormalise to the unmasked inputs
        squares = np.zeros(ones.shape)
        for comb in comb_planes:
            squares += comb * comb
        out_flags = np.zeros(ones.shape, dtype=FLAG_DTYPE)
        for b, plane in zip(bits, bit_planes):
            out_flags[inside & (plane > _FLAG_WEIGHT * ones)] |= FLAG_DTYPE(b)
        value = masked_sum * ratio * scale
        var = squares * ratio ** 2 * scale ** 2
        # Pixels no frame can give: the plain resampled value (approximate variance).
        raw_variance = np.where(inside, raw_var * ones, 0.0) * scale ** 2
    return _Resampled(value.astype(np.float32), var.astype(np.float32), usable, inside,
                      out_flags, (raw * scale).astype(np.float32),
                      raw_variance.astype(np.float32))


def _clip(kept: list[_Resampled], sigma_clip, max_iterations: int = 3) -> list[int]:
    """Judge each value against its own uncertainty about the per-pixel median
    of the frames (IRAF's "ccdclip", as in `apocal.combine`); returns the
    number of values rejected in each frame."""
    low, high = np.broadcast_to(np.asarray(sigma_clip, dtype=float), 2)
    values = np.stack([k.value for k in kept])
    sigma = np.sqrt(np.stack([k.variance for k in kept]))
    usable = np.stack([k.usable for k in kept])
    start = usable.copy()
    for _ in range(max_iterations):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            centre = np.nanmedian(np.where(usable, values, np.nan), axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            deviation = (values - centre) / sigma
        # two values cannot say which of them is wrong: clip where three or more remain
        judged = usable & (usable.sum(axis=0) >= 3)
        reject = judged & ((deviation < -low) | (deviation > high))
        if not reject.any():
            break
        usable &= ~reject
    for k, use in zip(kept, usable):
        k.usable = use
    return [int(n) for n in (start & ~usable).sum(axis=(1, 2))]


class _Accumulator:
    """Running sums of the weighted mean, so that frames need not all be in memory."""

    def __init__(self, shape):
        self.weight = np.zeros(shape)
        self.weighted = np.zeros(shape)
        self.variance = np.zeros(shape)
        self.coverage = np.zeros(shape, dtype=np.int16)
        self.exposure = np.zeros(shape, dtype=np.float32)
        self.flags_used = np.zeros(shape, dtype=FLAG_DTYPE)
        self.flags_any = np.zeros(shape, dtype=FLAG_DTYPE)
        self.inside = np.zeros(shape, dtype=np.int16)
        self.raw = np.zeros(shape)
        self.raw_variance = np.zeros(shape)

    def add_footprint(self, one: _Resampled) -> None:
        """What does not depend on the frames used: for pixels no frame can give."""
        self.flags_any |= one.flags
        self.inside += one.inside
        self.raw += np.where(one.inside, one.raw, 0.0)
        self.raw_variance += np.where(one.inside, one.raw_variance, 0.0)

    def add(self, one: _Resampled, weight: float, exptime: float) -> None:
        """A frame's pixels that are used."""
        use = one.usable
        self.weight += np.where(use, weight, 0.0)
        self.weighted += np.where(use, weight * one.value.astype(np.float64), 0.0)
        self.variance += np.where(use, weight ** 2 * one.variance.astype(np.float64), 0.0)
        self.coverage += use
        if not math.isnan(exptime):
            self.exposure += np.where(use, np.float32(exptime), np.float32(0))
        self.flags_used |= np.where(use, one.flags, 0).astype(FLAG_DTYPE)

    def result(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            data = self.weighted / self.weight
            sigma = np.sqrt(self.variance) / self.weight
            # No frame usable: every frame's plain value, flagged NO_DATA;
            # outside every frame: NaN.
            fallback = self.raw / self.inside
            fallback_sigma = np.sqrt(self.raw_variance) / self.inside
        empty = self.coverage == 0
        data = np.where(empty, fallback, data)
        sigma = np.where(empty, fallback_sigma, sigma)
        flags = np.where(empty, self.flags_any | FLAG_DTYPE(Flag.NO_DATA),
                         self.flags_used).astype(FLAG_DTYPE)
        return data.astype(np.float32), sigma.astype(np.float32), flags


def _header(first, names, grid, weights, scales, times, sigma_clip, rejected) -> fits.Header:
    header = fits.Header(first.meta)
    if grid.wcs is not None:
        for key in [k for k in header.keys() if _WCS_KEY.match(k)]:
            header.remove(key, ignore_missing=True, remove_all=True)
    for key in [k for k in header.keys() if k.startswith(("IMCMB", "STK"))]:
        header.remove(key, ignore_missing=True, remove_all=True)
    header["APSTAGE"] = ("stacked", "apocal: aligned and co-added")
    header["NCOMBINE"] = (len(names), "frames stacked")
    header["STKPROJ"] = (grid.projection, "resampling onto the output grid")
    header["STKWEIGH"] = ("1/median variance", "one weight per frame")
    if grid.wcs is None:
        header["STKAXIS"] = (grid.axis, "numpy axis along the slit (shifted)")
    if sigma_clip is not None:
        low, high = np.broadcast_to(np.asarray(sigma_clip, dtype=float), 2)
        header["STKCLIP"] = (f"{low:g},{high:g}", "sigma clipping (low, high)")
    if not math.isnan(times[0]):
        key = next((k for k in _EXPTIME_KEYS if k in header), "EXPTIME")
        header[key] = (float(times[0]), "[s] exposure the stack is scaled to")
    for index, name in enumerate(names, start=1):
        header[f"IMCMB{index:03d}"] = card_text(Path(name).name)
        header[f"STKW{index:03d}"] = (round(float(weights[index - 1]), 6), "relative weight")
        offset = np.atleast_1d(grid.offsets[index - 1])
        header[f"STKO{index:03d}"] = (",".join(f"{v:.3f}" for v in offset),
                                      "offset in pixels (x,y), or shift along the slit")
        if rejected is not None:
            header[f"STKR{index:03d}"] = (rejected[index - 1], "values sigma-clipped")
    header["APVERS"] = (__version__, "apocal version")
    return header
