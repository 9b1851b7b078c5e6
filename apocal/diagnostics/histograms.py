"""Histograms of the data and overscan sections of a raw frame, per amplifier."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from astropy.nddata import CCDData
from astropy.stats import SigmaClip

from ..instrument import Instrument
from .display import axes_or_new
from .regions import raw_regions

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["RegionHistograms", "region_histograms"]


@dataclass(frozen=True)
class RegionHistograms:
    """Histograms of a raw frame's sections, outliers rejected.

    Attributes
    ----------
    source : str
        The frame's file name.
    labels : tuple of str
        One per region, e.g. ``"left data"``, ``"left overscan"``.
    centres : tuple of numpy.ndarray
        Bin centres per region, ADU (integers for ``bin_width`` 1).
    counts : tuple of numpy.ndarray
        Pixels per bin per region.
    n_rejected : tuple of int
        Pixels per region rejected by the sigma clipping (not counted).
    sigma : float
        Clipping threshold, standard deviations.
    """

    source: str
    labels: tuple[str, ...]
    centres: tuple[np.ndarray, ...]
    counts: tuple[np.ndarray, ...]
    n_rejected: tuple[int, ...]
    sigma: float

    def plot(self, ax: Axes | None = None, log: bool = True) -> Axes:
        """One step curve per region (counts against ADU); returns the Axes."""
        ax = axes_or_new(ax)
        for label, centres, counts in zip(self.labels, self.centres, self.counts):
            ax.step(centres, counts, where="mid", label=label)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("raw value [ADU]")
        ax.set_ylabel("pixels per bin")
        ax.set_title(f"{self.source} ({self.sigma:g}-sigma clipped)")
        ax.legend()
        return ax


def region_histograms(frame: str | os.PathLike | CCDData, instrument: Instrument,
                      sigma: float = 5.0,
                      bin_width: int = 1) -> RegionHistograms:
    """Histogram each amplifier's data and overscan sections of a raw frame.

    Values further than ``sigma`` standard deviations from the median are
    rejected with `astropy.stats.SigmaClip` (cosmic rays, hot pixels, bad
    columns). Bins are whole ADU as in the lab notebook: ``bin_width`` wide
    and centred on integers, edges ``np.arange(lo, hi + 2, bin_width) - 0.5``
    where ``lo`` and ``hi`` are the lowest and highest kept values (the
    notebook's ``np.arange(min, max + 1) - 0.5`` drops the highest value).

    Parameters
    ----------
    frame : str, path-like or astropy.nddata.CCDData
        A raw frame (ADU).
    instrument : Instrument
        The camera.
    sigma : float
        Clipping threshold, standard deviations.
    bin_width : int
        Bin width, ADU.

    Returns
    -------
    RegionHistograms
    """
    name, regions = raw_regions(frame, instrument)
    clip = SigmaClip(sigma=sigma, maxiters=5)
    centres, counts, rejected = [], [], []
    for region in regions:
        # float64: astropy before 7.0 clips float32 with bottleneck's drifting sums
        clipped = clip(np.ma.masked_invalid(region.pixels.astype(np.float64)))
        kept = clipped.compressed()
        lo, hi = np.floor(kept.min()), np.ceil(kept.max())
        edges = np.arange(lo, hi + bin_width + 1, bin_width) - 0.5
        count, edges = np.histogram(kept, bins=edges)
        centres.append(0.5 * (edges[:-1] + edges[1:]))
        counts.append(count)
        rejected.append(int(region.pixels.size - kept.size))
    return RegionHistograms(name, tuple(r.label for r in regions), tuple(centres),
                            tuple(counts), tuple(rejected), sigma)
