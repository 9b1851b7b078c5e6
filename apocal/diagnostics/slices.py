"""Cuts along the dispersion axis at several places along the slit.

Overplotting them shows how arc lines curve along the slit; the centroid of
the brightest line in each cut puts a number on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from astropy.nddata import CCDData
from scipy.ndimage import median_filter

from .display import axes_or_new

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["DispersionSlices", "dispersion_slices"]

# Running-median length (pixels) that estimates the continuum under lines.
_CONTINUUM = 51


@dataclass(frozen=True)
class DispersionSlices:
    """Cuts along the dispersion axis and the brightest line's centroid in each.

    Attributes
    ----------
    dispersion_axis : int
        numpy axis along which wavelength changes (0: rows, 1: columns).
    positions : numpy.ndarray
        Centre of each cut along the spatial axis, pixels.
    width : int
        Lines (rows or columns) averaged in each cut.
    profiles : numpy.ndarray
        The cuts, shape (cuts, pixels along dispersion), in ``unit``.
    unit : str
        Unit of the frame (electrons for a processed frame or master).
    line : int
        Pixel along the dispersion axis of the brightest line, in the cut
        nearest the middle of the slit.
    centroids : numpy.ndarray
        Centroid of that line in each cut, pixels along the dispersion axis
        (NaN where it cannot be measured).
    middle : int
        Index of the cut nearest the middle of the spatial axis.
    """

    dispersion_axis: int
    positions: np.ndarray
    width: int
    profiles: np.ndarray
    unit: str
    line: int
    centroids: np.ndarray

    middle: int

    @property
    def shifts(self) -> np.ndarray:
        """Centroid of each cut minus that of the ``middle`` cut, pixels:
        the line curvature as numbers."""
        return self.centroids - self.centroids[self.middle]

    def plot(self, ax: Axes | None = None, zoom: float | None = None) -> Axes:
        """Overplot the cuts and mark the line centroids; ``zoom`` (pixels)
        shows only that far either side of the brightest line. Returns the Axes."""
        ax = axes_or_new(ax)
        along = "column" if self.dispersion_axis == 0 else "row"
        pixels = np.arange(self.profiles.shape[1])
        for k, (position, profile, centroid) in enumerate(
                zip(self.positions, self.profiles, self.centroids)):
            ax.plot(pixels, profile, drawstyle="steps-mid", color=f"C{k}",
                    label=f"{along} {position} (±{self.width // 2}): line at {centroid:.2f}")
            if np.isfinite(centroid):
                ax.axvline(centroid, color=f"C{k}", ls=":", lw=1)
        if zoom is not None:
            ax.set_xlim(self.line - zoom, self.line + zoom)
        ax.set_xlabel(f"{'row' if self.dispersion_axis == 0 else 'column'} "
                      f"(dispersion axis) [pixel]")
        ax.set_ylabel(f"mean signal [{self.unit}]")
        ax.legend(fontsize="small")
        return ax


def dispersion_slices(frame: CCDData | np.ndarray, dispersion_axis: int,
                      positions: Sequence[int] | None = None,
                      fractions: tuple[float, ...] = (0.25, 0.5, 0.75), width: int = 5,
                      window: int = 5) -> DispersionSlices:
    """Cut a frame along the dispersion axis at several places along the slit.

    Parameters
    ----------
    frame : astropy.nddata.CCDData or numpy.ndarray
        A processed frame or master (e.g. the master arc), electrons. Its
        mask is ignored: non-linear pixels still show where a line is.
    dispersion_axis : int
        numpy axis along which wavelength changes (0: rows, 1: columns),
        as in ``instrument.dispersion_axis``.
    positions : sequence of int, optional
        Spatial pixel of each cut; by default ``fractions`` of the spatial axis.
    fractions : tuple of float
        Where to cut when ``positions`` is not given (25, 50 and 75 %).
    width : int
        Lines averaged in each cut, centred on its position.
    window : int
        Half-width (pixels) of the window in which a line's centroid is
        computed, above a running-median continuum.

    Returns
    -------
    DispersionSlices
    """
    if dispersion_axis not in (0, 1):
        raise ValueError(f"dispersion_axis must be 0 or 1, not {dispersion_axis!r}")
    data = np.asarray(frame.data if isinstance(frame, CCDData) else frame, dtype=float)
    unit = str(frame.unit) if getattr(frame, "unit", None) is not None else ""
    image = data if dispersion_axis == 1 else data.T          # (spatial, dispersion)
    n_spatial = image.shape[0]
    if positions is None:
        positions = [round(f * (n_spatial - 1)) for f in fractions]
    positions = np.asarray(positions, dtype=int)
    half = width // 2
    profiles = np.array([np.nanmean(image[max(0, p - half):p + half + 1], axis=0)
                         for p in positions])
    lines = profiles - median_filter(np.nan_to_num(profiles), size=(1, _CONTINUUM),
                                     mode="nearest")
    middle = int(np.argmin(np.abs(positions - (n_spatial - 1) / 2)))
    line = int(np.nanargmax(lines[middle]))
    centroids = np.array([_centroid(profile, line, window) for profile in lines])
    return DispersionSlices(dispersion_axis, positions, width, profiles, unit, line, centroids,
                            middle)


def _centroid(profile: np.ndarray, guess: int, window: int) -> float:
    """Flux-weighted centre of the peak nearest ``guess``, within ``window``.

    The peak is looked for within two windows of the guess (lines curve);
    the centroid is then taken twice, the window re-centred on the first.
    """
    n = profile.size
    lo, hi = max(0, guess - 2 * window), min(n, guess + 2 * window + 1)
    centre = lo + int(np.nanargmax(profile[lo:hi]))
    for _ in range(2):
        lo, hi = max(0, centre - window), min(n, centre + window + 1)
        x = np.arange(lo, hi)
        weights = np.clip(np.nan_to_num(profile[lo:hi]), 0, None)
        if weights.sum() <= 0:
            return np.nan
        found = float(np.sum(x * weights) / weights.sum())
        centre = int(round(found))
    return found
