"""Gain and read noise from flats and biases: the photon transfer curve.

Janesick's difference method, amplifier by amplifier, on raw frames (ADU):

* read-noise variance ``v_B = var(B1 - B2) / 2`` from a pair of biases;
* for a pair of flats of bias-subtracted levels ``S1 = r S2``, the
  difference ``F1 - r F2`` has no fixed pattern (pixel response, bias
  structure) and variance ``(1 + r) S1 / g + (1 + r**2) v_B``, so the
  shot-noise variance of the first flat is
  ``V = (var(F1 - r F2) - (1 + r**2) v_B) / (1 + r)`` and the gain is
  ``g = S1 / V`` e-/ADU (for ``r = 1``: Janesick's
  ``var(F1 - F2)/2 - var(B1 - B2)/2``);
* read noise ``g * sqrt(v_B)`` electrons (from the stack of biases when
  there are three or more).

Everything is computed on tiles of each data section
(`apocal.diagnostics.tiles`): each tile has its own ratio ``r`` and mean,
so a lamp whose colour or level changed between the flats leaves no
large-scale structure in the difference; outliers (cosmic rays) are
clipped, and tiles that are not evenly lit are left out. The uncertainties
come from the scatter of the tile values rather than from the Gaussian
``var(s**2) = 2 s**4 / (N - 1)``, because the scatter also counts what that
formula ignores: residual structure, a gain that varies across the section,
correlated noise.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table

from ..exceptions import CalibrationError
from ..instrument import Instrument
from .display import axes_or_new
from .frames import beyond_linear, data_section, load_raws, raw_layout
from .noise import difference_noise, stack_noise
from .tiles import DEFAULT_TILES, clipped_tiles, ratio_error, tile_stack

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["TransferPair", "PhotonTransfer", "photon_transfer", "PAIRINGS"]

#: How flats are paired: by level (sorted, then consecutive) or in the caller's order.
PAIRINGS = ("level", "order")

# A tile is used when at least this fraction of its pixels is usable.
_MIN_GOOD = 0.5


@dataclass(frozen=True)
class TransferPair:
    """One pair of flats measured on one amplifier.

    Attributes
    ----------
    amplifier : str
        Amplifier name.
    files : tuple of str
        The two flats, first and second.
    ratio : float
        Level of the first flat over the second (median over tiles).
    signal : float
        Mean bias-subtracted level of the first flat, ADU.
    variance : float
        Its shot-noise variance (read noise removed), ADU**2.
    gain, gain_error : float
        ``signal / variance`` and its uncertainty, e-/ADU.
    tile_signal, tile_variance : numpy.ndarray
        The same per tile, ADU and ADU**2 (usable tiles only).
    """

    amplifier: str
    files: tuple[str, str]
    ratio: float
    signal: float
    variance: float
    gain: float
    gain_error: float
    tile_signal: np.ndarray
    tile_variance: np.ndarray


@dataclass(frozen=True)
class PhotonTransfer:
    """Gain and read noise per amplifier from the photon transfer curve.

    Attributes
    ----------
    amplifiers : tuple of str
        Amplifier names.
    pairs : tuple of TransferPair
        Every pair of flats on every amplifier.
    bias_files : tuple of str
        The biases used.
    gain, gain_error : numpy.ndarray
        Measured gain per amplifier and its uncertainty, e-/ADU.
    read_noise_adu, read_noise_adu_error : numpy.ndarray
        Read noise per amplifier and its uncertainty, ADU.
    quoted_gain : numpy.ndarray
        The instrument's gain, e-/ADU (NaN when unknown).
    quoted_read_noise : numpy.ndarray
        The instrument's read noise, electrons (NaN when unknown).
    """

    amplifiers: tuple[str, ...]
    pairs: tuple[TransferPair, ...]
    bias_files: tuple[str, ...]
    gain: np.ndarray
    gain_error: np.ndarray
    read_noise_adu: np.ndarray
    read_noise_adu_error: np.ndarray
    quoted_gain: np.ndarray
    quoted_read_noise: np.ndarray

    @property
    def read_noise(self) -> np.ndarray:
        """Read noise per amplifier, electrons (measured gain x ADU value)."""
        return self.gain * self.read_noise_adu

    @property
    def read_noise_error(self) -> np.ndarray:
        """Uncertainty of `read_noise` (gain and ADU value combined), electrons."""
        return self.read_noise * np.hypot(self.gain_error / self.gain,
                                          self.read_noise_adu_error / self.read_noise_adu)

    @property
    def gain_ratio(self) -> np.ndarray:
        """Measured / quoted gain (NaN when the quoted gain is unknown)."""
        return self.gain / self.quoted_gain

    @property
    def read_noise_ratio(self) -> np.ndarray:
        """Measured / quoted read noise (NaN when unknown)."""
        return self.read_noise / self.quoted_read_noise

    # Plain lists of floats, for JSON records (the night pipeline's report).
    @property
    def gain_per_amplifier(self) -> list[float]:
        return [float(v) for v in self.gain]

    @property
    def gain_error_per_amplifier(self) -> list[float]:
        return [float(v) for v in self.gain_error]

    @property
    def read_noise_per_amplifier(self) -> list[float]:
        return [float(v) for v in self.read_noise]

    @property
    def read_noise_error_per_amplifier(self) -> list[float]:
        return [float(v) for v in self.read_noise_error]

    def pairs_of(self, amplifier: str) -> list[TransferPair]:
        """The flat pairs measured on one amplifier."""
        return [p for p in self.pairs if p.amplifier == amplifier]

    def to_table(self) -> Table:
        """One row per amplifier: measured and quoted gain and read noise."""
        return Table({"amplifier": self.amplifiers, "gain": self.gain,
                      "gain_error": self.gain_error, "quoted_gain": self.quoted_gain,
                      "read_noise": self.read_noise, "read_noise_error": self.read_noise_error,
                      "quoted_read_noise": self.quoted_read_noise,
                      "read_noise_adu": self.read_noise_adu},
                     units={"gain": "electron/adu", "gain_error": "electron/adu",
                            "quoted_gain": "electron/adu", "read_noise": "electron",
                            "read_noise_error": "electron", "quoted_read_noise": "electron",
                            "read_noise_adu": "adu"})

    def plot(self, ax: Axes | None = None) -> Axes:
        """Variance against signal per amplifier: tiles (dots), flat pairs
        (error bars), the fitted line ``S / g + RN**2`` and, when the gain is
        quoted, the line it predicts (dashed); returns the Axes."""
        ax = axes_or_new(ax)
        for k, amp in enumerate(self.amplifiers):
            colour = f"C{k}"
            read_var = self.read_noise_adu[k] ** 2
            pairs = self.pairs_of(amp)
            for pair in pairs:
                ax.plot(pair.tile_signal, pair.tile_variance + read_var, ".", color=colour,
                        alpha=0.25, markersize=3)
            signal = np.array([p.signal for p in pairs])
            variance = np.array([p.variance for p in pairs])
            ax.errorbar(signal, variance + read_var,
                        yerr=variance * np.array([p.gain_error / p.gain for p in pairs]),
                        fmt="o", color=colour, capsize=3)
            top = max([p.tile_signal.max() for p in pairs if p.tile_signal.size] + [signal.max()])
            x = np.linspace(0, 1.05 * top, 50)
            ax.plot(x, x / self.gain[k] + read_var, "-", color=colour,
                    label=f"{amp}: g = {self.gain[k]:.3f} ± {self.gain_error[k]:.3f} e-/ADU, "
                          f"RN = {self.read_noise[k]:.2f} ± {self.read_noise_error[k]:.2f} e-")
            if np.isfinite(self.quoted_gain[k]):
                quoted_read = (self.quoted_read_noise[k] / self.quoted_gain[k]) ** 2
                ax.plot(x, x / self.quoted_gain[k] + np.nan_to_num(quoted_read), "--",
                        color=colour, label=f"{amp}: quoted g = {self.quoted_gain[k]:g} e-/ADU")
        ax.set_xlabel("signal (bias subtracted) [ADU]")
        ax.set_ylabel("variance [ADU$^2$]")
        ax.set_title("photon transfer")
        ax.legend(fontsize="small")
        return ax


def photon_transfer(flats: Sequence[str | os.PathLike | CCDData],
                    biases: Sequence[str | os.PathLike | CCDData],
                    instrument: Instrument, *, pairing: str = "level",
                    tiles: tuple[int, int] = DEFAULT_TILES, sigma: float = 5.0,
                    max_spread: float = 0.5) -> PhotonTransfer:
    """Measure gain (e-/ADU) and read noise (e-) per amplifier.

    Works without knowing the gain or read noise (the instrument's layout
    is resolved with ``detector=False``): this is how a camera without a
    GAIN card is measured.

    Parameters
    ----------
    flats : sequence of str, path-like or astropy.nddata.CCDData
        Two or more raw flats (ADU), at one or several levels.
    biases : sequence of str, path-like or astropy.nddata.CCDData
        Two or more raw biases (ADU), averaged for the bias subtracted from
        the flats. The read noise is that of the difference of two, or of
        the stack of three or more (`read_noise_from_stack`).
    instrument : Instrument
        The camera; pixels at or above its ``saturation``, or above its
        ``nonlinear`` level, in either flat of a pair are not used.
    pairing : {"level", "order"}
        ``"level"``: sort the flats by level and pair neighbours (1st with
        2nd, 3rd with 4th...), so flats at several levels pair with one of
        similar level; ``"order"``: pair them in the order given. Only
        flats of one configuration (the instrument's ``config_keys``: a
        filter, a grating) are paired. Each flat is used once; an odd one
        out is left out. The two flats of a
        pair need not be at the same level: the second is scaled to the
        first.
    tiles : tuple of int
        Tiles per amplifier along numpy axes 0 and 1.
    sigma : float
        Outlier rejection threshold in each tile of a difference image.
    max_spread : float
        Tiles whose level varies more than this, as (90th - 10th
        percentile) / median, are not used: the PTC wants evenly lit
        pixels (slit ends and steep lamp spectra are left out).

    Returns
    -------
    PhotonTransfer
        With several pairs, the gain is the fit of ``V = S / g`` over the
        pairs (read noise already removed, so through the origin): the
        mean of the pair gains weighted by their inverse variance, its
        uncertainty scaled up by sqrt(chi2 / dof) when the pairs disagree
        more than their uncertainties allow.

    Raises
    ------
    ValueError
        With fewer than two flats or biases, or an unknown ``pairing``.
    CalibrationError
        If no tile of any pair is usable (flats saturated or without light).
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, not {pairing!r}")
    flat_frames = load_raws(flats, instrument)
    if len(flat_frames) < 2:
        raise ValueError(f"photon transfer needs at least 2 flats, not {len(flat_frames)}")
    bias_frames = load_raws(biases, instrument, flat_frames[0][0].shape)
    if len(bias_frames) < 2:
        raise ValueError(f"photon transfer needs at least 2 biases, not {len(bias_frames)}")
    layout = raw_layout(flat_frames[0][0], instrument, flat_frames[0][1])
    results, all_pairs = [], []
    order = None
    for amp in layout.amplifiers:
        biases_adu = [data_section(ccd.data, amp) for ccd, _ in bias_frames]
        read_var, read_adu, read_error = _read_noise(biases_adu, tiles, sigma)
        bias = np.mean(biases_adu, axis=0)
        signals = [data_section(ccd.data, amp) - bias for ccd, _ in flat_frames]
        high = [beyond_linear(ccd.data[amp.data.slices], instrument) for ccd, _ in flat_frames]
        if order is None:  # pair on the first amplifier's levels, the same for all
            configurations = [str(sorted(instrument.configuration(fits.Header(ccd.meta)).items()))
                              for ccd, _ in flat_frames]
            order = _pairs([np.median(s) for s in signals], pairing, configurations)
            if not order:
                raise CalibrationError(f"no two flats of one configuration among "
                                       f"{', '.join(name for _, name in flat_frames)}")
        pairs = [_pair(amp.name, (flat_frames[i][1], flat_frames[j][1]), signals[i], signals[j],
                       high[i] | high[j], read_var, tiles, sigma, max_spread)
                 for i, j in order]
        gain, gain_error = _combine([p.gain for p in pairs], [p.gain_error for p in pairs])
        if not np.isfinite(gain):
            raise CalibrationError(f"{amp.name}: no usable part of the flats "
                                   f"({', '.join(name for _, name in flat_frames)}) for the "
                                   f"photon transfer curve: saturated, non-linear, unlit or "
                                   f"unevenly lit?")
        results.append((gain, gain_error, read_adu, read_error))
        all_pairs.extend(pairs)
    gain, gain_error, read_adu, read_error = (np.array(v, dtype=float) for v in zip(*results))
    return PhotonTransfer(tuple(a.name for a in layout.amplifiers), tuple(all_pairs),
                          tuple(name for _, name in bias_frames), gain, gain_error,
                          read_adu, read_error,
                          np.array([a.gain for a in layout.amplifiers]),
                          np.array([a.read_noise for a in layout.amplifiers]))


def _pairs(levels, pairing, configurations) -> list[tuple[int, int]]:
    """Indices of the flats paired, only flats of one configuration (filter,
    grating...) together: neighbours by level, or in the given order."""
    pairs = []
    for configuration in dict.fromkeys(configurations):
        members = [i for i, c in enumerate(configurations) if c == configuration]
        if pairing == "level":
            members = sorted(members, key=lambda i: levels[i])
        pairs += [(members[k], members[k + 1]) for k in range(0, len(members) - 1, 2)]
    return pairs


def _read_noise(biases, tiles, sigma):
    """Per-tile read-noise variance (ADU**2), read noise and its uncertainty (ADU).

    The per-tile variance, subtracted from the flats' difference, averages
    ``var(B1 - B2) / 2`` over bias pairs (1st-2nd, 3rd-4th...). The read
    noise reported is that of a pair for two biases (uncertainty: tile
    scatter), and that of the stack for three or more (uncertainty: a
    jackknife over the frames, which also counts a frame noisier than the
    others; see `read_noise_from_stack`).
    """
    per_pair = [difference_noise(biases[k], biases[k + 1], tiles, sigma)
                for k in range(0, len(biases) - 1, 2)]
    variance = np.nanmean([tile_variance for *_, tile_variance in per_pair], axis=0)
    value, error = stack_noise(biases, tiles) if len(biases) > 2 else per_pair[0][:2]
    return variance, value, error


def _pair(amplifier, files, first, second, bad, read_var, tiles, sigma, max_spread
          ) -> TransferPair:
    """Signal, shot-noise variance and gain of one pair of bias-subtracted flats.

    Only evenly lit tiles are used: where the level changes fast (the ends
    of a slit, a steep lamp spectrum) a shift of a fraction of a pixel
    between the two flats leaves structure in their difference that reads
    as extra variance, a gain too low (by 2 % on the Kast flats). In the
    tiles kept, the noise is nearly the same for every pixel, so clipping
    outliers against the tile's standard deviation does not bias it.
    """
    a = tile_stack(np.where(bad, np.nan, first), tiles)
    b = tile_stack(np.where(bad, np.nan, second), tiles)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        ratio = (np.nanmedian(a, axis=1) / np.nanmedian(b, axis=1))[:, None]
        level = (a + ratio * b) / 2
        spread = (np.subtract(*np.nanpercentile(level, [90, 10], axis=1))
                  / np.nanmedian(level, axis=1))
        kept = ~np.ma.getmaskarray(clipped_tiles(a - ratio * b, sigma))
        ratio, signal, variance = _tile_moments(a, b, kept, read_var)
        # Tiles mostly masked, unevenly lit, unlit or dominated by read noise
        # would bias the gain or only add noise.
        usable = ((kept.mean(axis=1) >= _MIN_GOOD) & (spread <= max_spread) & (signal > 0)
                  & (variance > read_var) & np.isfinite(variance))
        signal, variance, ratio = signal[usable], variance[usable], ratio[usable]
        return TransferPair(amplifier, files, float(np.median(ratio)), float(np.mean(signal)),
                            float(np.mean(variance)), float(signal.sum() / variance.sum()),
                            ratio_error(signal, variance), signal, variance)


def _tile_moments(a, b, kept, read_var):
    """Per tile: ratio of the flats' levels, level of the first (ADU) and its
    shot-noise variance (ADU**2), from the ``kept`` pixels."""
    a, b = np.ma.array(a, mask=~kept), np.ma.array(b, mask=~kept)
    signal = np.ma.filled(a.mean(axis=1), np.nan)
    ratio = signal / np.ma.filled(b.mean(axis=1), np.nan)
    difference = np.ma.filled((a - ratio[:, None] * b).var(axis=1, ddof=1), np.nan)
    return ratio, signal, (difference - (1 + ratio**2) * read_var) / (1 + ratio)


def _combine(values, errors) -> tuple[float, float]:
    """Inverse-variance weighted mean, its uncertainty scaled by the Birge
    ratio; the plain mean (uncertainty NaN) when some uncertainty is unknown."""
    values, errors = np.asarray(values, dtype=float), np.asarray(errors, dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        return np.nan, np.nan
    values, errors = values[finite], errors[finite]
    if not np.all(np.isfinite(errors) & (errors > 0)):
        return float(np.mean(values)), np.nan
    weights = errors ** -2.0
    mean = float(np.sum(weights * values) / np.sum(weights))
    error = float(np.sum(weights) ** -0.5)
    if values.size > 1:
        chi2 = float(np.sum(weights * (values - mean) ** 2))
        error *= max(1.0, np.sqrt(chi2 / (values.size - 1)))
    return mean, error
