"""Linearity: signal against exposure time, and frames that reach the
non-linear regime."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table

from ..exceptions import FrameError
from ..instrument import AmplifierLayout, Instrument
from .display import axes_or_new
from .frames import beyond_linear, data_section, load_raws, raw_layout

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["Linearity", "linearity", "NonlinearFrame", "NonlinearCheck", "nonlinear_check"]


@dataclass(frozen=True)
class Linearity:
    """Mean signal of a series of flats against exposure time, per amplifier.

    Attributes
    ----------
    files : tuple of str
        The flats, in the order given.
    amplifiers : tuple of str
        Amplifier names.
    exposure_time : numpy.ndarray
        Exposure time of each flat, s.
    signal : numpy.ndarray
        Bias-subtracted mean level in the central box of each amplifier,
        ADU, shape (amplifiers, flats).
    raw_level : numpy.ndarray
        Mean raw level in the same box, ADU (what the non-linearity level
        applies to), shape (amplifiers, flats).
    slope, intercept : numpy.ndarray
        Straight line ``signal = slope * t + intercept`` fitted to the
        low-signal flats, ADU/s and ADU, per amplifier.
    fitted : numpy.ndarray of bool
        Which flats the line was fitted to, shape (amplifiers, flats).
    nonlinear : float
        The instrument's non-linearity level (its saturation when it has
        none), raw ADU.
    """

    files: tuple[str, ...]
    amplifiers: tuple[str, ...]
    exposure_time: np.ndarray
    signal: np.ndarray
    raw_level: np.ndarray
    slope: np.ndarray
    intercept: np.ndarray
    fitted: np.ndarray
    nonlinear: float

    @property
    def deviation(self) -> np.ndarray:
        """Fractional deviation from the line, ``(signal - line) / (slope * t)``,
        shape (amplifiers, flats); -0.02 is a signal 2 % short of linear."""
        linear = self.slope[:, None] * self.exposure_time[None, :]
        return (self.signal - linear - self.intercept[:, None]) / linear

    def onset(self, tolerance: float = 0.01) -> np.ndarray:
        """Lowest raw level (ADU) per amplifier at which the deviation
        exceeds ``tolerance`` in size; NaN where the series stays linear."""
        beyond = np.abs(self.deviation) > tolerance
        levels = np.where(beyond, self.raw_level, np.inf).min(axis=1)
        return np.where(np.isfinite(levels), levels, np.nan)

    def plot(self, ax: Axes | None = None) -> Axes:
        """Deviation from linear (%) against signal, per amplifier, with the
        non-linearity level marked; the signal against exposure time and
        the fitted line are drawn in a panel above. Returns the lower Axes."""
        from mpl_toolkits.axes_grid1 import make_axes_locatable

        ax = axes_or_new(ax)
        top = make_axes_locatable(ax).append_axes("top", size="80%", pad=0.1)
        t = np.linspace(0, 1.05 * self.exposure_time.max(), 50)
        for k, amp in enumerate(self.amplifiers):
            colour = f"C{k}"
            top.plot(self.exposure_time, self.signal[k], "o", color=colour, label=amp)
            top.plot(t, self.slope[k] * t + self.intercept[k], "-", color=colour)
            ax.plot(self.signal[k], 100 * self.deviation[k], "o-", color=colour)
            bias = np.median(self.raw_level[k] - self.signal[k])
            label = f"non-linear level ({self.nonlinear:.0f} ADU raw)" if k == 0 else None
            ax.axvline(self.nonlinear - bias, color=colour, ls="--", label=label)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.axhspan(-1, 1, color="0.9", zorder=0)
        ax.set_xlabel("signal (bias subtracted) [ADU]")
        ax.set_ylabel("deviation [%]")
        ax.legend(fontsize="small")
        top.set_xlabel("exposure time [s]")
        top.xaxis.set_label_position("top")
        top.xaxis.tick_top()
        top.set_ylabel("signal [ADU]")
        top.legend(fontsize="small")
        return ax


def linearity(flats: Sequence[str | os.PathLike | CCDData], instrument: Instrument,
              biases: Sequence[str | os.PathLike | CCDData] | None = None, *, box: float = 0.5,
              fit_below: float | None = None) -> Linearity:
    """Measure how the signal grows with exposure time.

    Parameters
    ----------
    flats : sequence of str, path-like or astropy.nddata.CCDData
        Raw flats (ADU) of one lamp at several exposure times.
    instrument : Instrument
        The camera (its exposure-time key and non-linearity level).
    biases : sequence, optional
        Raw biases, averaged and subtracted. Without them only the overscan
        is subtracted (a camera without overscan needs them).
    box : float
        The signal is the mean over the central ``box`` fraction of each
        axis of every amplifier's data section.
    fit_below : float, optional
        Raw level (ADU) below which flats are fitted; default half the
        non-linearity level (or of saturation). At least the two faintest
        flats are always fitted.

    Returns
    -------
    Linearity

    Raises
    ------
    ValueError
        Without biases on a camera without overscan, or with fewer than
        two distinct exposure times.
    """
    frames = load_raws(flats, instrument)
    layout = raw_layout(frames[0][0], instrument, frames[0][1])
    if biases is None and any(amp.overscan is None for amp in layout.amplifiers):
        raise ValueError(f"{instrument.name} has no overscan: give biases to subtract")
    bias_frames = load_raws(biases, instrument, frames[0][0].shape) if biases else []
    times = np.array([instrument.exposure_time(fits.Header(ccd.meta), name)
                      for ccd, name in frames])
    if np.unique(times).size < 2:
        raise ValueError("linearity needs flats of at least two exposure times")
    level = instrument.nonlinear or instrument.saturation
    fit_below = 0.5 * level if fit_below is None else fit_below
    signal, raw_level = [], []
    for amp in layout.amplifiers:
        box_of = _central_box(amp, box)
        bias = np.mean([data_section(b.data, amp)[box_of] for b, _ in bias_frames]) \
            if bias_frames else 0.0
        signal.append([np.mean(data_section(ccd.data, amp)[box_of]) - bias for ccd, _ in frames])
        raw_level.append([np.mean(np.asarray(ccd.data[amp.data.slices], float)[box_of])
                          for ccd, _ in frames])
    signal, raw_level = np.array(signal), np.array(raw_level)
    fitted = raw_level <= fit_below
    for k in range(len(fitted)):
        if np.unique(times[fitted[k]]).size < 2:
            fitted[k, np.argsort(signal[k])[:2]] = True
    lines = np.array([np.polyfit(times[f], s[f], 1) for s, f in zip(signal, fitted)])
    return Linearity(tuple(name for _, name in frames), tuple(a.name for a in layout.amplifiers),
                     times, signal, raw_level, lines[:, 0], lines[:, 1], fitted, float(level))


def _central_box(amp: AmplifierLayout, box: float) -> tuple[slice, slice]:
    """numpy index of the central ``box`` fraction of a data section."""
    def span(n):
        half = max(1, round(n * box / 2))
        return slice(max(0, n // 2 - half), n // 2 + half)

    return span(amp.data.shape[0]), span(amp.data.shape[1])


@dataclass(frozen=True)
class NonlinearFrame:
    """How far one raw frame's data sections reach.

    Attributes
    ----------
    file : str
        The frame.
    kind : str
        Its kind (``flat``, ``arc``...), ``"unknown"`` if the header does not say.
    peak : float
        Highest raw value in the data sections, ADU.
    n_nonlinear : int
        Pixels above the non-linearity level or saturated.
    n_saturated : int
        Pixels at or above saturation.
    """

    file: str
    kind: str
    peak: float
    n_nonlinear: int
    n_saturated: int


@dataclass(frozen=True)
class NonlinearCheck:
    """Which frames have pixels in the non-linear regime.

    Attributes
    ----------
    frames : tuple of NonlinearFrame
        One per frame, in the order given.
    threshold : float
        The non-linearity level (saturation when none is known), raw ADU.
    saturation : float
        The saturation level, raw ADU.
    """

    frames: tuple[NonlinearFrame, ...]
    threshold: float
    saturation: float

    @property
    def flagged(self) -> tuple[str, ...]:
        """Frames with at least one pixel above the threshold."""
        return tuple(f.file for f in self.frames if f.n_nonlinear)

    def to_table(self) -> Table:
        """One row per frame: kind, peak (ADU), non-linear and saturated pixels."""
        table = Table(rows=[(f.file, f.kind, f.peak, f.n_nonlinear, f.n_saturated)
                            for f in self.frames],
                      names=("file", "kind", "peak", "n_nonlinear", "n_saturated"))
        table["peak"].unit = "adu"
        table.meta["threshold"] = self.threshold
        return table

    def plot(self, ax: Axes | None = None) -> Axes:
        """Peak raw value of each frame (red when past the threshold), with
        the non-linearity and saturation levels; returns the Axes."""
        ax = axes_or_new(ax)
        x = np.arange(len(self.frames))
        colours = ["C3" if f.n_nonlinear else "C0" for f in self.frames]
        ax.bar(x, [f.peak for f in self.frames], color=colours)
        ax.axhline(self.threshold, color="C3", ls="--", label=f"non-linear ({self.threshold:.0f})")
        if self.saturation != self.threshold:
            ax.axhline(self.saturation, color="k", ls=":",
                       label=f"saturation ({self.saturation:.0f})")
        ax.set_xticks(x, [f.file for f in self.frames], rotation=45, ha="right")
        ax.set_ylabel("peak raw value [ADU]")
        ax.legend(fontsize="small")
        return ax


def nonlinear_check(frames: Sequence[str | os.PathLike | CCDData],
                    instrument: Instrument) -> NonlinearCheck:
    """Find the frames (arcs, flats...) whose data sections reach the
    non-linear regime: raw values above ``instrument.nonlinear``, or at
    ``instrument.saturation`` when it has no non-linearity level.

    Parameters
    ----------
    frames : sequence of str, path-like or astropy.nddata.CCDData
        Raw frames (ADU), of any shape and kind.
    instrument : Instrument
        The camera.

    Returns
    -------
    NonlinearCheck
    """
    results = []
    for frame in frames:
        (ccd, name), = load_raws([frame], instrument)
        header = fits.Header(ccd.meta)
        try:
            kind = instrument.kind_of(header, name)
        except FrameError:
            kind = "unknown"
        pixels = np.concatenate([np.ravel(ccd.data[amp.data.slices])
                                 for amp in raw_layout(ccd, instrument, name).amplifiers])
        results.append(NonlinearFrame(name, kind, float(np.nanmax(pixels)),
                                      int(beyond_linear(pixels, instrument).sum()),
                                      int((pixels >= instrument.saturation).sum())))
    return NonlinearCheck(tuple(results), float(instrument.nonlinear or instrument.saturation),
                          float(instrument.saturation))
