"""Checking a calibration set's error model on its own frames.

Every reduction claims an uncertainty per pixel; this module tests that
claim with the frames the set was built from, amplifier by amplifier. Two
frames of the same kind differ only by noise (and, for flats, by their
levels), so their difference over its claimed uncertainty, the *pull*,
must scatter with a standard deviation of 1:

* bias pairs: ``(b1 - b2) / sqrt(s1**2 + s2**2)``;
* leave-one-out: each bias minus the master built from the others (with
  the set's own combination), over ``sqrt(s_i**2 + s_master**2)``;
* flat pairs of one configuration and exposure:
  ``(f1 - k f2) / sqrt(s1**2 + k**2 s2**2)``, with ``k`` the ratio of their
  levels measured on tiles (a lamp that changed a little between the two
  leaves no structure);
* dark pairs of one exposure, likewise with ``k`` the ratio of exposures.

A row passes when the robust standard deviation of its pulls (clipped at
4 standard deviations) is within ``tolerance`` (5%) of 1. A failing bias row says the read noise
is wrong and which read noise the pairs imply; a failing flat row with
passing bias rows says the gain is wrong and which gain the pairs imply
(the photon noise of a flat scales as ``g_used / g_true``).

The cost is bounded: pulls come from a sample of rows of each frame
(`FrameSample`: about 100,000 pixels, in blocks spread over the frame),
taken while the set built its masters, so no frame is read again.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.stats import sigma_clipped_stats
from astropy.table import Table

from ..combine import combine
from ..exceptions import CalibrationError
from ..flags import FLAG_DTYPE, Flag

__all__ = ["UncertaintyCheck", "FrameSample", "check_uncertainty"]

# Blocks of rows the sample is taken from.
_BLOCKS = 8
# Columns (and rows, within a block) of the tiles a flat pair's ratio is measured on.
_TILE = 32
# Exposure times within this fraction of each other count as one exposure.
_SAME_EXPOSURE = 0.02
# Pulls kept per row for plots and the summary.
_KEEP = 4000


@dataclass
class UncertaintyCheck:
    """The result of `check_uncertainty`.

    Attributes
    ----------
    table : astropy.table.Table
        One row per test and amplifier: ``test``, ``amplifier``, ``frames``
        (how many frames or pairs), ``pixels``, ``pull_std`` (robust),
        ``expected`` (1), ``passed``, and ``implied`` (the read noise in e-
        a failing bias row implies, or the gain in e-/ADU a failing flat
        row implies; NaN otherwise).
    messages : list of str
        One line per failing row, saying what is wrong.
    pulls : list of numpy.ndarray
        A sample of each row's pulls (for `plot`).
    """

    table: Table
    messages: list = field(default_factory=list)
    pulls: list = field(default_factory=list, repr=False)

    @property
    def passed(self) -> bool:
        """True when every row passed (and there was at least one)."""
        return len(self.table) > 0 and bool(np.all(self.table["passed"]))

    @property
    def verdict(self) -> str:
        """One line: passed, or the first thing that is wrong."""
        if not len(self.table):
            return "uncertainty not checked: no pair of frames to compare"
        if self.passed:
            worst = float(np.max(np.abs(self.table["pull_std"] - self.table["expected"])))
            return (f"uncertainty checked on the set's own frames: {len(self.table)} test(s) "
                    f"passed (pull std within {worst:.3f} of 1)")
        return self.messages[0]

    def to_dict(self) -> dict:
        """The result as plain values (for ``summary.json``)."""
        rows = [{name: (row[name].item() if hasattr(row[name], "item") else row[name])
                 for name in self.table.colnames} for row in self.table]
        for row in rows:
            if not np.isfinite(row["implied"]):
                row["implied"] = None
        return {"passed": self.passed, "verdict": self.verdict, "tests": rows,
                "messages": list(self.messages)}

    def plot(self, ax=None):
        """Histograms of the pulls of every row against a unit normal;
        returns the Axes."""
        from ..diagnostics.display import axes_or_new

        ax = axes_or_new(ax)
        bins = np.linspace(-5, 5, 41)
        for row, pulls in zip(self.table, self.pulls):
            ax.hist(pulls, bins=bins, density=True, histtype="step",
                    label=f"{row['test']}, {row['amplifier']}: {row['pull_std']:.3f}")
        x = np.linspace(-5, 5, 201)
        ax.plot(x, np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi), "k--", label="expected (std 1)")
        ax.set_xlabel("pull = difference / claimed uncertainty")
        ax.set_ylabel("density")
        ax.set_title("uncertainty self-check" + ("" if self.passed else ": FAILED"))
        ax.legend(fontsize="x-small")
        return ax


def check_uncertainty(cal, *, tolerance: float = 0.05) -> UncertaintyCheck:
    """Test a set's uncertainties on the frames it was built from.

    Parameters
    ----------
    cal : CalibrationSet
        A set built in this session: while building its masters it kept a
        sample of rows of each frame (`FrameSample`).
    tolerance : float
        A row passes when its robust pull standard deviation is within this
        of 1.

    Returns
    -------
    UncertaintyCheck

    Raises
    ------
    CalibrationError
        If the set holds no sample of its frames (it was read from files).
    """
    samples = cal.samples
    if not any(samples.get(kind) for kind in ("bias", "flat", "dark")):
        raise CalibrationError("this set holds no sample of the frames its masters were built "
                               "from (was it read from files?); nothing to check")
    rows = []
    biases = samples.get("bias", [])
    first = next(iter(s for kind in ("bias", "dark", "flat") for s in samples.get(kind, [])))
    masters_bad = _masters_bad(cal, first.blocks)
    if len(biases) >= 2:
        rows += _pair_rows("bias pairs", biases, None, masters_bad)
    if len(biases) >= 3:
        rows += _leave_one_out(biases, cal.combine_options.get("bias", {}), masters_bad)
    for kind in ("dark", "flat"):
        for group in _groups(samples.get(kind, []), cal.instrument):
            if len(group) >= 2:
                rows += _pair_rows(f"{kind} pairs", group, kind, masters_bad,
                                   bias=cal.master_bias)
    return _result(rows, tolerance)


class FrameSample:
    """A sample of rows of one prepared frame: data, variance and flags
    (float32), kept while a master is built so that the set can check its
    uncertainty without reading the frame again.

    Parameters
    ----------
    prepared : apocal.processing.ProcessedFrame
    max_pixels : int
        About how many pixels to keep, in blocks of rows spread over the
        frame (the same rows for every frame of one shape).
    """

    def __init__(self, prepared, max_pixels: int = 100_000):
        self.header = prepared.header.copy()
        self.name = prepared.name
        self.layout = prepared.layout
        self.instrument = prepared.instrument
        self.shape = prepared.shape
        self.blocks = _blocks(*prepared.shape, max_pixels)
        parts = [prepared.rows(start, stop) for start, stop in self.blocks]
        self.data = np.concatenate([p[0] for p in parts])
        self.variance = np.concatenate([p[1] for p in parts])
        self.flags = np.concatenate([p[2] for p in parts])

    def amplifiers(self):
        """Per amplifier: its layout and the sample's pixels that belong to it."""
        rows = np.concatenate([np.arange(a, b) for a, b in self.blocks])
        for amp in self.layout.amplifiers:
            inside = (rows >= amp.output.y1 - 1) & (rows < amp.output.y2)
            mask = np.zeros(self.data.shape, dtype=bool)
            mask[inside, amp.output.x1 - 1:amp.output.x2] = True
            yield amp, mask


def _blocks(n_rows: int, n_cols: int, max_pixels: int) -> list[tuple[int, int]]:
    per_block = max(_TILE // 4, min(n_rows, max_pixels // max(n_cols, 1)) // _BLOCKS)
    if per_block * _BLOCKS >= n_rows:
        return [(0, n_rows)]
    starts = np.linspace(0, n_rows - per_block, _BLOCKS).astype(int)
    return [(int(s), int(s) + per_block) for s in starts]


def _masters_bad(cal, blocks) -> np.ndarray | None:
    """Pixels of the sample the masters flag (bad, hot, unlit, unfitted)."""
    if blocks is None:
        return None
    wanted = FLAG_DTYPE(Flag.BAD_PIXEL | Flag.HOT | Flag.NO_DATA | Flag.UNILLUMINATED
                        | Flag.BAD_FLAT)
    bad = None
    for master in (cal.master_bias, cal.master_flat):
        if master is not None and master.flags is not None:
            these = np.concatenate([(master.flags[a:b] & wanted) != 0 for a, b in blocks])
            bad = these if bad is None else bad | these
    return bad


def _groups(frames, instrument):
    """Frames of one configuration and exposure time."""
    groups: list[list] = []
    keys: list = []
    for frame in frames:
        config = instrument.configuration(frame.header)
        exptime = instrument.exposure_time(frame.header, frame.name)
        for key, group in zip(keys, groups):
            if key[0] == config and abs(key[1] - exptime) <= _SAME_EXPOSURE * max(key[1], 1e-9):
                group.append(frame)
                break
        else:
            keys.append((config, exptime))
            groups.append([frame])
    return groups


def _pair_rows(test, frames, kind, masters_bad, bias=None):
    """One row per amplifier: pulls of consecutive pairs of ``frames``."""
    pairs = [(frames[i], frames[i + 1]) for i in range(0, len(frames) - 1, 2)]
    rows = []
    first = frames[0]
    for index, (amp, region) in enumerate(first.amplifiers()):
        pulls, signal = [], []
        for one, two in pairs:
            usable = region & (one.flags == 0) & (two.flags == 0)
            if masters_bad is not None:
                usable &= ~masters_bad
            a, b = one.data.astype(np.float64), two.data.astype(np.float64)
            if kind is not None and bias is not None:
                pedestal = np.concatenate([bias.data[s:e] for s, e in one.blocks])
                a, b = a - pedestal, b - pedestal
            if kind == "flat":
                k = _tile_ratio(a, b, usable)
                usable &= np.isfinite(k) & (a > 0) & (b > 0)
            elif kind == "dark":
                k = np.full(a.shape, one.instrument.exposure_time(one.header, one.name)
                            / two.instrument.exposure_time(two.header, two.name))
            else:
                k = np.ones(a.shape)
            with np.errstate(invalid="ignore", divide="ignore"):
                z = (a - k * b) / np.sqrt(one.variance.astype(np.float64)
                                          + k**2 * two.variance.astype(np.float64))
            pulls.append(z[usable & np.isfinite(z)])
            signal.append(a[usable])
        pulls = np.concatenate(pulls) if pulls else np.array([])
        signal = np.concatenate(signal) if signal else np.array([])
        rows.append(_row(test, amp, len(pairs), pulls, kind,
                         float(np.median(signal)) if signal.size else np.nan))
    return rows


def _tile_ratio(a, b, usable) -> np.ndarray:
    """The ratio of two flats' levels, measured on tiles of the sample."""
    ratio = np.full(a.shape, np.nan)
    n_rows, n_cols = a.shape
    step = max(1, _TILE // 4)
    for r0 in range(0, n_rows, step):
        for c0 in range(0, n_cols, _TILE):
            tile = (slice(r0, r0 + step), slice(c0, c0 + _TILE))
            good = usable[tile]
            if good.sum() >= 16:
                with np.errstate(invalid="ignore", divide="ignore"):
                    ratio[tile] = np.median(a[tile][good]) / np.median(b[tile][good])
    return ratio


def _leave_one_out(biases, options, masters_bad):
    """Each bias against the master of the others, per amplifier."""
    method = options.get("method", "median")
    rest = {k: v for k, v in options.items() if k not in ("method", "memory_limit")}
    ccds = [CCDData(b.data, unit="electron", flags=b.flags,
                    uncertainty=StdDevUncertainty(np.sqrt(b.variance)))
            for b in biases]
    z_all = []
    for i, one in enumerate(biases):
        others = ccds[:i] + ccds[i + 1:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            master = combine(others, method, **rest)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = ((one.data - master.data)
                 / np.sqrt(one.variance.astype(np.float64) + master.uncertainty.array**2))
        usable = (one.flags == 0) & (master.flags == 0)
        if masters_bad is not None:
            usable &= ~masters_bad
        z_all.append((z, usable))
    rows = []
    for amp, region in biases[0].amplifiers():
        pulls = np.concatenate([z[region & usable & np.isfinite(z)] for z, usable in z_all])
        rows.append(_row("leave-one-out", amp, len(biases), pulls, None, np.nan))
    return rows


def _row(test, amp, frames, pulls, kind, signal):
    std = _robust_std(pulls) if pulls.size >= 100 else np.nan
    return {"test": test, "amplifier": amp.name, "frames": int(frames),
            "pixels": int(pulls.size), "pull_std": std, "expected": 1.0,
            "_amp": amp, "_kind": kind, "_signal": signal,
            "_pulls": pulls[:: max(1, pulls.size // _KEEP)]}


def _robust_std(pulls: np.ndarray) -> float:
    """Standard deviation of the pulls within 4 of their own (clipped) scatter
    from their median: cosmic rays and defects do not count, and unlike the
    MAD it is right for differences of whole ADU (a MAD of quantised values
    read 0.90 of the truth on frames of 1.2 ADU noise)."""
    _, _, std = sigma_clipped_stats(pulls, sigma=4.0, maxiters=10)
    return float(std)


def _result(rows, tolerance) -> UncertaintyCheck:
    rows = [r for r in rows if np.isfinite(r["pull_std"])]
    for row in rows:
        row["passed"] = bool(abs(row["pull_std"] - row["expected"]) <= tolerance)
        row["implied"] = np.nan
    # What the bias pairs say of each amplifier's read noise (e-).
    noise = {}
    for row in rows:
        if row["_kind"] is None and not row["passed"]:
            row["implied"] = row["_amp"].read_noise * row["pull_std"]
            noise.setdefault(row["amplifier"], row["implied"])
    messages = []
    for row in rows:
        if row["passed"] or row["_kind"] is None:
            continue
        amp, std = row["_amp"], row["pull_std"]
        if row["_kind"] == "flat":
            # var = S g_used / g_true + RN_true**2 against the claimed S + RN**2
            signal, claimed = row["_signal"], amp.read_noise**2
            true_noise = noise.get(row["amplifier"], amp.read_noise)**2
            row["implied"] = amp.gain * signal / max(std**2 * (signal + claimed) - true_noise,
                                                     1e-9)
            message = (f"uncertainty self-check failed: flat pairs of {amp.name} scatter "
                       f"{std:.3f} times their claimed uncertainty: the gain is wrong; they imply "
                       f"{row['implied']:.3f} e-/ADU (used {amp.gain:.3f} e-/ADU)")
            if row["amplifier"] in noise:
                message += (f"; the biases imply a read noise of {noise[row['amplifier']]:.2f} e- "
                            f"(used {amp.read_noise:.2f} e-), as a wrong gain would")
            messages.append(message)
        else:
            messages.append(f"uncertainty self-check failed: {row['test']} of {amp.name} scatter "
                            f"{std:.3f} times their claimed uncertainty")
    for row in rows:
        if row["_kind"] is None and not row["passed"] and not any(
                r["_kind"] == "flat" and not r["passed"] and r["amplifier"] == row["amplifier"]
                for r in rows):
            messages.append(f"uncertainty self-check failed: {row['test']} of {row['amplifier']} "
                            f"scatter {row['pull_std']:.3f} times their claimed uncertainty: the "
                            f"read noise is wrong; they imply {row['implied']:.2f} e- (used "
                            f"{row['_amp'].read_noise:.2f} e-)")
    names = ["test", "amplifier", "frames", "pixels", "pull_std", "expected", "passed", "implied"]
    table = Table(rows=[[r[n] for n in names] for r in rows], names=names) if rows else \
        Table(names=names, dtype=[str, str, int, int, float, float, bool, float])
    return UncertaintyCheck(table, messages, [r["_pulls"] for r in rows])
