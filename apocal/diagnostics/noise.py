"""Read noise from bias frames: the difference of two, or a stack.

Both work on raw frames in ADU, amplifier by amplifier, and convert to
electrons with the instrument's quoted gain (NaN when it is unknown; use
`apocal.diagnostics.photon_transfer` to measure the gain too).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from astropy.nddata import CCDData
from astropy.table import Table
from scipy.stats import chi2

from ..instrument import Instrument
from .display import axes_or_new
from .frames import data_section, load_raws, raw_layout
from .tiles import DEFAULT_TILES, clipped_tile_variance, scatter_error, tile_stack

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["ReadNoise", "read_noise_from_pair", "read_noise_from_stack", "difference_noise",
           "stack_noise"]


@dataclass(frozen=True)
class ReadNoise:
    """Read noise per amplifier, measured and quoted.

    Attributes
    ----------
    method : str
        ``"pair"`` (difference of two biases) or ``"stack"``.
    files : tuple of str
        The bias frames used.
    amplifiers : tuple of str
        Amplifier names.
    adu, adu_error : numpy.ndarray
        Measured read noise and its uncertainty, ADU, per amplifier.
    gain : numpy.ndarray
        Quoted gain used for the conversion, e-/ADU (NaN when unknown).
    quoted : numpy.ndarray
        The instrument's read noise, electrons (NaN when unknown).
    """

    method: str
    files: tuple[str, ...]
    amplifiers: tuple[str, ...]
    adu: np.ndarray
    adu_error: np.ndarray
    gain: np.ndarray
    quoted: np.ndarray

    @property
    def electrons(self) -> np.ndarray:
        """Measured read noise, electrons (with the quoted gain)."""
        return self.adu * self.gain

    @property
    def electrons_error(self) -> np.ndarray:
        """Uncertainty of `electrons` (the gain taken as exact), electrons."""
        return self.adu_error * self.gain

    @property
    def ratio(self) -> np.ndarray:
        """Measured / quoted read noise."""
        return self.electrons / self.quoted

    @property
    def ratio_error(self) -> np.ndarray:
        """Uncertainty of `ratio`."""
        return self.electrons_error / self.quoted

    def to_table(self) -> Table:
        """One row per amplifier: measured (ADU and e-), quoted and ratio."""
        return Table({"amplifier": self.amplifiers, "read_noise_adu": self.adu,
                      "error_adu": self.adu_error, "gain": self.gain,
                      "read_noise": self.electrons, "error": self.electrons_error,
                      "quoted": self.quoted, "ratio": self.ratio},
                     units={"read_noise_adu": "adu", "error_adu": "adu",
                            "gain": "electron/adu", "read_noise": "electron",
                            "error": "electron", "quoted": "electron"},
                     meta={"method": self.method, "files": list(self.files)})

    def plot(self, ax: Axes | None = None) -> Axes:
        """Measured read noise (electrons, or ADU when the gain is unknown)
        with its error bar, and the quoted value, per amplifier; returns the Axes."""
        ax = axes_or_new(ax)
        known = np.all(np.isfinite(self.gain))
        value, error = (self.electrons, self.electrons_error) if known else (self.adu,
                                                                            self.adu_error)
        x = np.arange(len(self.amplifiers))
        ax.errorbar(x, value, yerr=error, fmt="o", capsize=4, label=f"measured ({self.method})")
        if known and np.any(np.isfinite(self.quoted)):
            ax.plot(x, self.quoted, "_", markersize=30, mew=2, label="quoted")
        ax.set_xticks(x, self.amplifiers)
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_ylabel(f"read noise [{'e-' if known else 'ADU'}]")
        ax.legend()
        return ax


def read_noise_from_pair(bias1: str | os.PathLike | CCDData, bias2: str | os.PathLike | CCDData,
                         instrument: Instrument, *,
                         tiles: tuple[int, int] = DEFAULT_TILES,
                         sigma: float = 5.0) -> ReadNoise:
    """Read noise from the difference of two biases.

    The difference ``B1 - B2`` of each amplifier's data section has no
    fixed pattern and twice the read-noise variance, so the read noise is
    its sigma-clipped standard deviation divided by sqrt(2). It is computed
    on tiles of the section (`apocal.diagnostics.tiles`): the value is the
    root of the mean tile variance, the uncertainty the scatter of the tile
    values divided by sqrt(number of tiles).

    Parameters
    ----------
    bias1, bias2 : str, path-like or astropy.nddata.CCDData
        Two raw biases (ADU).
    instrument : Instrument
        The camera; its gain converts to electrons (NaN when unknown).
    tiles : tuple of int
        Tiles per amplifier along numpy axes 0 and 1.
    sigma : float
        Outlier rejection threshold within each tile.

    Returns
    -------
    ReadNoise
    """
    (first, name1), (second, name2) = load_raws((bias1, bias2), instrument)
    layout = raw_layout(first, instrument, name1)
    adu, error = [], []
    for amp in layout.amplifiers:
        value, value_error, _ = difference_noise(data_section(first.data, amp),
                                                 data_section(second.data, amp), tiles, sigma)
        adu.append(value)
        error.append(value_error)
    return _result("pair", (name1, name2), layout, adu, error)


def difference_noise(first: np.ndarray, second: np.ndarray,
                     tiles: tuple[int, int] = DEFAULT_TILES, sigma: float = 5.0
                     ) -> tuple[float, float, np.ndarray]:
    """Read noise of two bias sections (ADU), its uncertainty and the
    read-noise variance of every tile (ADU**2), from ``var(B1 - B2) / 2``."""
    variance = clipped_tile_variance(tile_stack(first - second, tiles), sigma) / 2
    return float(np.sqrt(np.nanmean(variance))), scatter_error(np.sqrt(variance)), variance


def read_noise_from_stack(biases: Sequence[str | os.PathLike | CCDData], instrument: Instrument, *,
                          tiles: tuple[int, int] = DEFAULT_TILES) -> ReadNoise:
    """Read noise from a stack of biases: the typical per-pixel scatter.

    Each frame's median level is removed tile by tile (the bias level
    drifts from frame to frame and along the readout; the difference
    method removes it the same way), then every pixel's variance across
    the N frames (ddof=1) is taken. A first, robust value comes from the median of those
    variances: for Gaussian noise ``(N - 1) s**2 / sigma**2`` follows
    chi-squared with N - 1 degrees of freedom, so dividing the median by
    ``median(chi2(N - 1)) / (N - 1)`` is the small-sample correction
    (0.693 for N = 3, 0.839 for N = 5). The read noise is then the root of
    the mean variance of the pixels below the chi-squared level a Gaussian
    exceeds once in a million (hot or telegraph pixels are left out): a
    variance, like the difference of two biases gives, so the two agree
    even when the noise has wider wings than a Gaussian (where the median
    alone reads low).

    The uncertainty is a jackknife over the frames (the estimate repeated
    leaving out each frame in turn): it counts a frame noisier than the
    others, which no statistic of a single frame can.

    Parameters
    ----------
    biases : sequence of str, path-like or astropy.nddata.CCDData
        Three or more raw biases (ADU).
    instrument : Instrument
        The camera; its gain converts to electrons (NaN when unknown).
    tiles : tuple of int
        Tiles per amplifier along numpy axes 0 and 1.

    Returns
    -------
    ReadNoise
    """
    frames = load_raws(biases, instrument)
    if len(frames) < 3:
        raise ValueError(f"a stack needs at least 3 biases, not {len(frames)}")
    layout = raw_layout(frames[0][0], instrument, frames[0][1])
    adu, error = [], []
    for amp in layout.amplifiers:
        value, value_error = stack_noise([data_section(ccd.data, amp) for ccd, _ in frames],
                                         tiles)
        adu.append(value)
        error.append(value_error)
    return _result("stack", tuple(name for _, name in frames), layout, adu, error)


def stack_noise(sections: Sequence[np.ndarray],
                tiles: tuple[int, int] = DEFAULT_TILES) -> tuple[float, float]:
    """Read noise of three or more bias sections and its jackknife
    uncertainty, ADU (the estimate of `read_noise_from_stack`)."""
    cube = np.stack([tile_stack(section, tiles) for section in sections])
    cube -= np.median(cube, axis=2, keepdims=True)
    n = len(cube)
    total, squares = cube.sum(axis=0), (cube**2).sum(axis=0)
    variance = (squares - total**2 / n) / (n - 1)
    first_guess = np.median(variance) / (chi2.median(n - 1) / (n - 1))
    leave_one_out = np.array([
        _clipped_rms((squares - c**2 - (total - c)**2 / (n - 1)) / (n - 2), n - 1, first_guess)
        for c in cube])
    jackknife = np.sqrt((n - 1) / n * np.sum((leave_one_out - leave_one_out.mean())**2))
    return _clipped_rms(variance, n, first_guess), float(jackknife)


def _clipped_rms(variance, n, guess) -> float:
    """Root of the mean per-pixel variance (from ``n`` frames), leaving out
    pixels a Gaussian of variance ``guess`` exceeds with probability 1e-6."""
    keep = variance <= guess * chi2.isf(1e-6, n - 1) / (n - 1)
    return float(np.sqrt(np.mean(variance[keep])))


def _result(method, files, layout, adu, error) -> ReadNoise:
    return ReadNoise(method, files, tuple(a.name for a in layout.amplifiers),
                     np.array(adu, dtype=float), np.array(error, dtype=float),
                     np.array([a.gain for a in layout.amplifiers]),
                     np.array([a.read_noise for a in layout.amplifiers]))
