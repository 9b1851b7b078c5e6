"""A spectroscopic flat's lamp spectrum, its fitted response, and the
illumination along the slit (from a `CalibrationSet` after ``add_flats``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..calibration import CalibrationSet
from .display import axes_or_new

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["LampResponse", "lamp_response", "SlitIllumination", "slit_illumination"]


def _require_spectroscopic_flat(cal: CalibrationSet) -> None:
    if cal.master_flat is None or cal.lamp_spectrum is None or cal.illumination_mask is None:
        raise ValueError("needs a CalibrationSet of a spectrograph after add_flats "
                         "(no lamp spectrum or illumination mask)")


@dataclass(frozen=True)
class LampResponse:
    """The flat lamp's spectrum along the dispersion axis and the smooth fit
    divided out of the master flat.

    Attributes
    ----------
    spectrum : numpy.ndarray
        Mean of the illuminated slit at each pixel along the dispersion
        axis, for the combined flat normalised to 1 (dimensionless).
    response : numpy.ndarray
        The fit to it (``CalibrationSet.flat_response``).
    mode : str
        How it was fitted (``spline``, ``poly``, ``boxcar``, ``None``).
    """

    spectrum: np.ndarray
    response: np.ndarray
    mode: str

    @property
    def ratio(self) -> np.ndarray:
        """spectrum / response: what the fit leaves in the master flat."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.spectrum / self.response

    def plot(self, ax: Axes | None = None) -> Axes:
        """Spectrum and fit on ``ax``; their ratio in a panel below it.
        Returns the upper Axes."""
        from mpl_toolkits.axes_grid1 import make_axes_locatable

        ax = axes_or_new(ax)
        pixels = np.arange(self.spectrum.size)
        ax.plot(pixels, self.spectrum, color="0.3", lw=1, label="lamp spectrum")
        ax.plot(pixels, self.response, color="C3", lw=1.5, label=f"fitted response ({self.mode})")
        ax.set_ylabel("normalised flat")
        ax.legend(fontsize="small")
        below = make_axes_locatable(ax).append_axes("bottom", size="40%", pad=0.1, sharex=ax)
        below.plot(pixels, self.ratio, color="0.3", lw=1)
        below.axhline(1.0, color="C3", lw=1)
        below.set_ylabel("spectrum / fit")
        below.set_xlabel("pixel along the dispersion axis")
        ax.tick_params(labelbottom=False)
        return ax


def lamp_response(cal: CalibrationSet) -> LampResponse:
    """The lamp spectrum and fitted response of ``cal``'s master flat.

    Raises
    ------
    ValueError
        If ``cal`` has no spectroscopic master flat.
    """
    _require_spectroscopic_flat(cal)
    return LampResponse(np.asarray(cal.lamp_spectrum, dtype=float),
                        np.asarray(cal.flat_response, dtype=float),
                        str(cal.master_flat.header.get("APRESP", "")))


@dataclass(frozen=True)
class SlitIllumination:
    """The master flat's profile along the slit and where it is illuminated.

    Attributes
    ----------
    profile : numpy.ndarray
        Median of the master flat along the dispersion axis at each
        spatial position (dimensionless; 1 by construction outside the
        illuminated part, where the master flat is set to 1).
    illuminated : numpy.ndarray of bool
        Spatial positions inside the illuminated part of the slit.
    spatial_axis : int
        numpy axis of the image along the slit.
    """

    profile: np.ndarray
    illuminated: np.ndarray
    spatial_axis: int

    @property
    def edges(self) -> list[tuple[int, int]]:
        """First and last pixel of each illuminated stretch of the slit."""
        step = np.diff(np.concatenate(([0], self.illuminated.astype(int), [0])))
        return list(zip(np.flatnonzero(step == 1), np.flatnonzero(step == -1) - 1))

    def plot(self, ax: Axes | None = None) -> Axes:
        """The profile, with the illuminated part shaded; returns the Axes."""
        ax = axes_or_new(ax)
        ax.plot(np.arange(self.profile.size), self.profile, color="0.2", lw=1,
                label="master flat")
        for k, (first, last) in enumerate(self.edges):
            ax.axvspan(first - 0.5, last + 0.5, color="C2", alpha=0.2,
                       label="illuminated" if k == 0 else None)
        ax.set_xlabel(f"{'row' if self.spatial_axis == 0 else 'column'} (along the slit) [pixel]")
        ax.set_ylabel("median along dispersion")
        ax.legend(fontsize="small")
        return ax


def slit_illumination(cal: CalibrationSet) -> SlitIllumination:
    """The illumination profile along the slit of ``cal``'s master flat.

    Raises
    ------
    ValueError
        If ``cal`` has no spectroscopic master flat.
    """
    _require_spectroscopic_flat(cal)
    axis = cal.instrument.dispersion_axis
    flat = np.asarray(cal.master_flat.data, dtype=float)
    return SlitIllumination(np.median(flat, axis=axis),
                            np.asarray(cal.illumination_mask).any(axis=axis), 1 - axis)
