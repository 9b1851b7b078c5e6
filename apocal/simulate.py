"""Realistic raw frames with known truth, for tests, demos and teaching.

`simulate` writes raw FITS files for any instrument (the built-in ones with
their real header conventions) and returns the truth behind them: the bias
structure, dark current, pixel response, slit illumination, lamp spectrum
and the scene of each science frame, all in electrons in the processed
(trimmed, assembled) geometry, so a reduction can be compared with what it
should recover.

What is simulated, per frame: per-amplifier overscan levels that drift from
frame to frame and slowly along the readout, a data-minus-overscan offset
per amplifier, fixed bias structure (gradient and warm columns), read noise,
gain, dark current with hot pixels, Poisson noise, cosmic rays, and for
spectrographs a flat lamp spectrum, slit illumination with soft ends,
curved arc and sky lines and a source trace; for imagers vignetting and
stars. Science frames contain a few pixels beyond saturation.

``binning`` is the size option: frames binned (4, 4) are 16 times smaller
and keep every feature, which keeps unit tests fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path

import numpy as np
from astropy.io import fits

from . import __version__
from .instrument import Instrument
from .instruments import KOSMOS, SBO, DISRed
from .instruments.dis import _DIS
from .io import atomic_write_bytes

__all__ = ["simulate", "SimulatedNight", "Truth", "FRAME_ORDER"]

#: Order in which frame kinds are written (and numbered) in a night.
FRAME_ORDER = ("bias", "dark", "flat", "arc", "science")


# Cosmic-ray hits per unbinned pixel per second (about 1.5 per cm^2 per
# minute on 15 micron pixels).
_COSMIC_RATE = 5e-8


@dataclass
class Truth:
    """What the simulated frames were made of (processed geometry).

    Attributes
    ----------
    instrument : str
        Name of the simulated instrument.
    gain, read_noise : list of float
        True gain (e-/ADU) and read noise (e-) per amplifier.
    binning : tuple of int
        Binning (x, y) of the frames.
    bias : numpy.ndarray
        Expected processed bias, electrons: what remains after the overscan
        level is removed (data-minus-overscan offset plus fixed structure),
        or the whole bias level for a camera without overscan.
    dark_rate : numpy.ndarray
        Dark current, electrons per second.
    hot : numpy.ndarray
        True where ``dark_rate`` is that of a hot pixel.
    response : numpy.ndarray
        Relative sensitivity of each pixel, slit illumination (spectra) or
        vignetting (images) included; mean about 1 in the illuminated area.
    pixel_response : numpy.ndarray
        The pixel-to-pixel part of ``response`` alone.
    dead : numpy.ndarray
        True for dead or very weak pixels (response below 0.5).
    illumination : numpy.ndarray or None
        Slit illumination along the spatial axis (spectrographs).
    lamp : numpy.ndarray or None
        Flat-lamp spectrum along the dispersion axis, e-/s at the peak pixel.
    flat_rate, arc_rate, science_rate : numpy.ndarray
        Expected signal of a flat, arc and science frame, electrons per
        second, response included, dark current excluded.
    frames : dict
        File name -> ``{"kind", "exptime", "overscan"}`` (overscan: mean raw
        level per amplifier, ADU).
    cosmic_rays : dict
        File name -> indices (flat, processed geometry) of pixels hit.
    saturated : dict
        File name -> indices of pixels driven past saturation.
    """

    instrument: str
    gain: list
    read_noise: list
    binning: tuple
    bias: np.ndarray
    dark_rate: np.ndarray
    hot: np.ndarray
    response: np.ndarray
    pixel_response: np.ndarray
    dead: np.ndarray
    illumination: np.ndarray | None
    lamp: np.ndarray | None
    flat_rate: np.ndarray
    arc_rate: np.ndarray
    science_rate: np.ndarray
    frames: dict = field(default_factory=dict)
    cosmic_rays: dict = field(default_factory=dict)
    saturated: dict = field(default_factory=dict)

    _ARRAYS = ("bias", "dark_rate", "hot", "response", "pixel_response", "dead",
               "illumination", "lamp", "flat_rate", "arc_rate", "science_rate")

    def expected(self, name: str) -> np.ndarray:
        """Expected electrons of a frame's light (no bias, no dark current)."""
        info = self.frames[Path(name).name]
        rate = {"flat": self.flat_rate, "arc": self.arc_rate,
                "science": self.science_rate}.get(info["kind"])
        if rate is None:
            return np.zeros_like(self.bias)
        return rate * info["exptime"]

    def save(self, directory: str | os.PathLike, stem: str = "truth") -> None:
        """Write ``<stem>.npz`` and ``<stem>.json`` into ``directory``."""
        directory = Path(directory)
        arrays = {name: getattr(self, name) for name in self._ARRAYS
                  if getattr(self, name) is not None}
        for kind, store in (("cosmic", self.cosmic_rays), ("saturated", self.saturated)):
            for name, where in store.items():
                arrays[f"{kind}:{name}"] = where
        buffer = BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(directory / f"{stem}.npz", buffer.getvalue(), overwrite=True)
        meta = {"instrument": self.instrument, "gain": self.gain, "read_noise": self.read_noise,
                "binning": list(self.binning), "frames": self.frames,
                "apocal_version": __version__}
        atomic_write_bytes(directory / f"{stem}.json", json.dumps(meta, indent=1).encode(),
                           overwrite=True)

    @classmethod
    def load(cls, directory: str | os.PathLike, stem: str = "truth") -> Truth:
        """Read the truth `simulate` saved in ``directory`` as ``stem``."""
        directory = Path(directory)
        meta = json.loads((directory / f"{stem}.json").read_text())
        with np.load(directory / f"{stem}.npz") as stored:
            arrays = {name: stored[name] if name in stored else None for name in cls._ARRAYS}
            cosmic = {k.split(":", 1)[1]: stored[k] for k in stored if k.startswith("cosmic:")}
            saturated = {k.split(":", 1)[1]: stored[k] for k in stored
                         if k.startswith("saturated:")}
        return cls(instrument=meta["instrument"], gain=meta["gain"],
                   read_noise=meta["read_noise"], binning=tuple(meta["binning"]),
                   frames=meta["frames"], cosmic_rays=cosmic, saturated=saturated, **arrays)


@dataclass
class SimulatedNight:
    """Files written by `simulate` and the truth behind them."""

    instrument: Instrument
    directory: Path
    files: dict
    truth: Truth

    def __getitem__(self, kind: str) -> list:
        return self.files.get(kind, [])


@dataclass(frozen=True)
class _Profile:
    """Detector behaviour and file conventions of one simulated instrument."""

    overscan_levels: tuple          # ADU, per amplifier
    data_offsets: tuple             # ADU, data level minus overscan level
    level_jitter: float             # ADU, frame-to-frame change of the levels
    dark_rate: float                # e-/s
    dtype: type
    level_range: tuple | None = None  # ADU: levels drawn uniformly instead
    gain: tuple | None = None       # truth for cameras whose class leaves it open
    read_noise: tuple | None = None
    science_exptime: float = 600.0
    flat_exptime: float = 10.0
    arc_exptime: float = 5.0


_PROFILES = {
    "kosmos": _Profile((3280.0, 3287.0), (-3.0, -5.0), 2.0, 0.01, np.int32),
    "dis-red": _Profile((140.0,), (1.5,), 0.0, 0.005, np.uint16, level_range=(120.0, 162.0)),
    "dis-blue": _Profile((100.0,), (0.8,), 0.7, 0.005, np.uint16),
    "sbo": _Profile((1356.0,), (0.0,), 0.0, 0.1, np.uint16, gain=(1.4,), read_noise=(12.0,),
                    science_exptime=60.0, flat_exptime=5.0),
}
_GENERIC = _Profile((1000.0,), (0.0,), 1.0, 0.01, np.uint16)


def simulate(instrument: Instrument, directory: str | os.PathLike, *, bias: int = 5, dark: int = 0,
             flat: int = 5, arc: int = 2, science: int = 1, exptime: dict | None = None,
             binning: tuple[int, int] = (1, 1), shape: tuple[int, int] | None = None,
             config: dict | None = None, prefix: str = "", first_number: int = 1,
             header_gain: bool = True, arc_peak: float = 0.6, seed: int = 0,
             detector_seed: int = 0, truth: str = "truth",
             overwrite: bool = False) -> SimulatedNight:
    """Write a night of raw frames for ``instrument`` and return their truth.

    Parameters
    ----------
    instrument : Instrument
        The camera to imitate; built-ins get their real header conventions,
        file names and data types, any other subclass generic ones.
    directory : str or path-like
        Folder for the raw files (created if needed); the truth is saved as
        ``<truth>.npz`` and ``<truth>.json`` beside them.
    bias, dark, flat, arc, science : int
        How many frames of each kind. Imagers get no arcs.
    exptime : dict, optional
        Exposure time (s) per kind, e.g. ``{"dark": 120, "science": 60}``.
    binning : tuple of int
        On-chip binning (x, y); the size option for fast tests.
    shape : tuple of int, optional
        Unbinned raw size (rows, columns) for instruments without
        ``raw_shape`` (default 1024 x 1024).
    config : dict, optional
        Header cards to set on every frame (e.g. ``{"GRATING": "B1200"}``)
        to make a second configuration.
    prefix : str
        Prepended to every file name.
    first_number : int
        Sequence number of the first file.
    header_gain : bool
        For cameras whose gain comes from the header (SBO), write EGAIN and
        RDNOISE cards.
    arc_peak : float
        Raw peak of the brightest arc line as a fraction of the instrument's
        non-linearity (or saturation) level.
    seed : int
        Seed of the noise in the frames: the same seeds give the same files.
    detector_seed : int
        Seed of the detector and scene (bias structure, hot pixels, pixel
        response, lines, stars): calls with the same ``detector_seed``,
        binning and instrument simulate the same camera, so frames from
        several calls can be reduced together.
    truth : str
        Name of the truth files (change it to simulate several instruments
        into one folder).
    overwrite : bool
        Replace existing files of the same names.

    Returns
    -------
    SimulatedNight
    """
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    profile = _PROFILES.get(instrument.name, _GENERIC)
    bx, by = binning
    full = instrument.raw_shape or shape or (1024, 1024)
    raw_shape = (full[0] // by, full[1] // bx)
    template = _header_template(instrument, binning, raw_shape)
    gains, noises = _detector_truth(instrument, profile, header_gain, template)
    layout = instrument.with_detector(gains, noises).layout(template, raw_shape)
    shape_out = layout.shape
    spectro = instrument.dispersion_axis is not None

    arrays, structure, saturating = _make_scene(np.random.default_rng(detector_seed), shape_out,
                                                instrument, profile, gains, arc_peak, spectro)
    times = {"bias": 0.0, "dark": profile.science_exptime, "flat": profile.flat_exptime,
             "arc": profile.arc_exptime, "science": profile.science_exptime}
    times.update(exptime or {})
    counts = {"bias": bias, "dark": dark, "flat": flat, "arc": arc if spectro else 0,
              "science": science}

    truth_name = truth
    truth = Truth(instrument=instrument.name, gain=list(gains), read_noise=list(noises),
                  binning=tuple(binning), bias=_true_bias(structure, layout, profile), **arrays)
    files = {kind: [] for kind in FRAME_ORDER}
    number = first_number
    start = datetime(2024, 10, 19, 1, 0, 0)
    for kind in FRAME_ORDER:
        for index in range(counts[kind]):
            t = float(times[kind])
            name = prefix + _file_name(instrument, kind, number, t, config)
            header = _frame_header(instrument, template, kind, t, name, number,
                                   start + timedelta(minutes=2 * number), config)
            if not header_gain:
                for key in ("EGAIN", "RDNOISE"):
                    header.remove(key, ignore_missing=True)
            raw, info = _raw_frame(rng, truth, structure, saturating, layout, profile,
                                   instrument, kind, t, raw_shape, binning)
            hdu = fits.PrimaryHDU(raw.astype(profile.dtype), header=header)
            path = directory / name
            buffer = _hdul_bytes(fits.HDUList([hdu]))
            atomic_write_bytes(path, buffer, overwrite=overwrite)
            files[kind].append(path)
            truth.frames[name] = {"kind": kind, "exptime": t, "overscan": info["overscan"]}
            if info["cosmic"].size:
                truth.cosmic_rays[name] = info["cosmic"]
            if info["saturated"].size:
                truth.saturated[name] = info["saturated"]
            number += 1
    truth.save(directory, truth_name)
    return SimulatedNight(instrument, directory, files, truth)


def _hdul_bytes(hdul: fits.HDUList) -> bytes:
    buffer = BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


def _detector_truth(instrument, profile, header_gain, template):
    """True gain and read noise per amplifier (the class values when known)."""
    gains, noises = [], []
    for index, amp in enumerate(instrument.amplifiers):
        gain = amp.gain if amp.gain is not None else (profile.gain or (1.5,))[index]
        noise = amp.read_noise if amp.read_noise is not None else (profile.read_noise or (8.0,))[index]
        gains.append(float(gain))
        noises.append(float(noise))
    if instrument.gain_keys and header_gain and instrument.amplifiers[0].gain is None:
        template[instrument.gain_keys[0]] = (gains[0], "[e-/ADU] camera gain")
    if instrument.read_noise_keys and header_gain and instrument.amplifiers[0].read_noise is None:
        template[instrument.read_noise_keys[0]] = (noises[0], "[e-] read noise")
    return gains, noises


def _make_scene(rng, shape, instrument, profile, gains, arc_peak, spectro):
    """Everything about the night that does not change from frame to frame.

    Returns the `Truth` arrays (all but ``bias``), the fixed bias structure
    (ADU) and the flat indices of the pixels driven past saturation.
    """
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    structure = (1.5 * (xx / cols - 0.5) + 1.0 * (yy / rows - 0.5)).astype(np.float32)
    warm_columns = rng.choice(cols, size=max(1, cols // 400), replace=False)
    structure[:, warm_columns] += 8.0

    dark_rate = np.full(shape, profile.dark_rate, dtype=np.float32)
    hot = rng.random(shape) < 1e-3
    dark_rate[hot] = 10 ** rng.uniform(0.5, 2.5, hot.sum())

    pixel = (1.0 + 0.012 * rng.standard_normal(shape)).astype(np.float32)
    dead = rng.random(shape) < 3e-4
    pixel[dead] = rng.uniform(0.05, 0.35, dead.sum())
    pixel[:, rng.integers(cols // 4, 3 * cols // 4)] *= 0.85  # a weak column

    ceiling = (instrument.nonlinear or instrument.saturation) - max(profile.overscan_levels)
    flat_peak_e = 0.3 * ceiling * gains[0]
    arc_peak_e = arc_peak * ceiling * gains[0]

    if spectro:
        disp_axis = instrument.dispersion_axis
        n_disp, n_spat = shape[disp_axis], shape[1 - disp_axis]
        parts = _spectral_scene(rng, n_spat, n_disp)
        orient = (lambda a: a) if disp_axis == 1 else (lambda a: a.T)
        illumination = parts["illumination"]
        response = pixel * orient(np.outer(illumination, np.ones(n_disp)))
        lamp = parts["lamp"] * flat_peak_e / profile.flat_exptime
        flat_rate = response * orient(np.outer(np.ones(n_spat), lamp))
        arc_rate = response * orient(parts["arc"]) * arc_peak_e / profile.arc_exptime
        science_rate = response * orient(parts["science"])
        spot = orient(parts["spot"])
    else:
        illumination = lamp = None
        vignetting = 1.0 - 0.08 * (((xx - cols / 2) ** 2 + (yy - rows / 2) ** 2)
                                   / ((cols / 2) ** 2 + (rows / 2) ** 2))
        response = pixel * vignetting
        flat_rate = response * flat_peak_e / profile.flat_exptime
        arc_rate = np.zeros(shape)
        stars, spot = _star_field(rng, shape)
        science_rate = response * stars
    science_rate = science_rate + spot * 50 * instrument.saturation * max(gains) \
        / profile.science_exptime
    arrays = {"dark_rate": dark_rate, "hot": hot, "response": response.astype(np.float32),
              "pixel_response": pixel, "dead": dead, "illumination": illumination,
              "lamp": lamp, "flat_rate": flat_rate.astype(np.float32),
              "arc_rate": arc_rate.astype(np.float32),
              "science_rate": science_rate.astype(np.float32)}
    return arrays, structure, np.flatnonzero(spot)


def _true_bias(structure, layout, profile) -> np.ndarray:
    """Expected processed bias in electrons, per amplifier."""
    bias = np.zeros(structure.shape, dtype=np.float32)
    for index, amp in enumerate(layout.amplifiers):
        offset = profile.data_offsets[index]
        if amp.overscan is None:
            drift = _readout_drift(profile.overscan_levels[index], layout.raw_shape[0])
            offset = offset + drift[amp.data.slices[0]][:, None]
        out = amp.output.slices
        bias[out] = (structure[out] + offset) * amp.gain
    return bias


def _spectral_scene(rng, n_spat, n_disp):
    """Spectral ingredients on a (spatial, dispersion) grid, peak-normalised."""
    t = np.linspace(0.0, 1.0, n_disp)
    y = np.arange(n_spat, dtype=float)
    lamp = 0.18 + 0.82 * np.exp(-((t - 0.62) / 0.36) ** 2)
    edge = max(0.8, n_spat / 500)
    lo, hi = 0.06 * n_spat, 0.94 * n_spat
    illumination = 0.5 * (np.tanh((y - lo) / edge) - np.tanh((y - hi) / edge))
    illumination = illumination * (1.0 + 0.05 * (y / n_spat - 0.5)) + 0.002
    curvature = 0.004 * n_disp
    bend = curvature * ((y - n_spat / 2) / (n_spat / 2)) ** 2
    width = 1.3

    def lines(positions, amplitudes):
        image = np.zeros((n_spat, n_disp))
        x = np.arange(n_disp)
        for x0, amp in zip(positions, amplitudes):
            centre = x0 + bend[:, None]
            near = np.abs(x[None, :] - centre) < 6 * width
            image += np.where(near, amp * np.exp(-0.5 * ((x[None, :] - centre) / width) ** 2), 0)
        return image

    n_lines = 24
    positions = np.sort(rng.uniform(0.04, 0.96, n_lines)) * n_disp
    amplitudes = 10 ** rng.uniform(-1.7, 0.0, n_lines)
    amplitudes[rng.integers(n_lines)] = 1.0
    arc = lines(positions, amplitudes)

    sky = 2.0 * (0.6 + 0.4 * t)[None, :] + lines(rng.uniform(0.1, 0.9, 6) * n_disp,
                                                 rng.uniform(5.0, 30.0, 6))
    sigma = max(1.2, n_spat / 400)
    centre = 0.45 * n_spat + 0.01 * n_spat * np.sin(np.pi * t)
    source = 25.0 * (0.4 + t)[None, :] * np.exp(-0.5 * ((y[:, None] - centre[None, :]) / sigma) ** 2)
    spot = np.zeros((n_spat, n_disp))
    sy, sx = int(0.7 * n_spat), int(0.3 * n_disp)
    spot[sy:sy + 2, sx:sx + 2] = 1.0
    return {"illumination": illumination, "lamp": lamp, "arc": arc, "science": sky + source,
            "spot": spot}


def _star_field(rng, shape, n_stars=60, sigma=1.8):
    """Sky plus Gaussian stars (e-/s); ``spot`` marks one star's saturated core."""
    rows, cols = shape
    image = np.full(shape, 15.0)
    yy, xx = np.mgrid[0:rows, 0:cols]
    for _ in range(n_stars):
        y0, x0 = rng.uniform(10, rows - 10), rng.uniform(10, cols - 10)
        flux = 10 ** rng.uniform(2.5, 4.5)
        box = (slice(max(0, int(y0) - 8), int(y0) + 9), slice(max(0, int(x0) - 8), int(x0) + 9))
        image[box] += flux / (2 * np.pi * sigma**2) * np.exp(
            -0.5 * ((yy[box] - y0) ** 2 + (xx[box] - x0) ** 2) / sigma**2)
    spot = np.zeros(shape)
    cy, cx = int(0.3 * rows), int(0.7 * cols)
    spot[cy:cy + 2, cx:cx + 2] = 1.0
    return image, spot


def _raw_frame(rng, truth, structure, saturating, layout, profile, instrument, kind, exptime,
               raw_shape, binning):
    """One raw frame in ADU, and what went into it."""
    shape = structure.shape
    light = {"flat": truth.flat_rate, "arc": truth.arc_rate,
             "science": truth.science_rate}.get(kind)
    expected = truth.dark_rate * exptime
    if light is not None:
        expected = expected + light * exptime
    electrons = rng.poisson(np.clip(expected, 0, None)).astype(np.float64)
    cosmic = np.array([], dtype=np.int64)
    if kind in ("dark", "science", "flat", "arc") and exptime > 0:
        cosmic = _cosmic_rays(rng, shape, exptime, binning)
        electrons.flat[cosmic] += rng.uniform(500, 20000, cosmic.size)
    saturated = saturating if kind == "science" else np.array([], dtype=np.int64)

    raw = np.zeros(raw_shape)
    means = []
    for index, amp in enumerate(layout.amplifiers):
        base = profile.overscan_levels[index]
        if amp.overscan is not None:  # without an overscan the level must stay put
            base = (rng.uniform(*profile.level_range) if profile.level_range
                    else base + profile.level_jitter * rng.standard_normal())
        line_level = _readout_drift(base, raw_shape[0])
        rn_adu = amp.read_noise / amp.gain
        out = amp.output.slices
        data_e = electrons[out] + amp.read_noise * rng.standard_normal(amp.output.shape)
        data_adu = (data_e / amp.gain + structure[out] + profile.data_offsets[index]
                    + line_level[amp.data.slices[0]][:, None])
        raw[amp.data.slices] = data_adu
        if amp.overscan is not None:
            ov_rows = amp.overscan.slices[0]
            raw[amp.overscan.slices] = (line_level[ov_rows][:, None]
                                        + rn_adu * rng.standard_normal(amp.overscan.shape))
        means.append(float(line_level.mean()))
    _fill_unused(rng, raw, layout, means)
    raw = np.clip(np.round(raw), 0, instrument.saturation)
    return raw, {"overscan": means, "cosmic": cosmic, "saturated": saturated}


def _readout_drift(base, n_rows):
    """Raw bias level of every row: a frame level, a slow ramp and a ripple."""
    t = np.linspace(0.0, 1.0, n_rows)
    return base + 1.5 * (t - 0.5) + 0.5 * np.sin(4 * np.pi * t)


def _fill_unused(rng, raw, layout, levels):
    """Prescan and other unused columns: bias level and noise."""
    used = np.zeros(raw.shape, dtype=bool)
    for amp in layout.amplifiers:
        used[amp.data.slices] = True
        if amp.overscan is not None:
            used[amp.overscan.slices] = True
    amp = layout.amplifiers[0]
    raw[~used] = levels[0] + (amp.read_noise / amp.gain) * rng.standard_normal((~used).sum())


def _cosmic_rays(rng, shape, exptime, binning):
    """Flat indices of pixels hit by cosmic rays (short tracks of 1-4 pixels)."""
    n_pix = shape[0] * shape[1]
    n_hits = rng.poisson(_COSMIC_RATE * n_pix * binning[0] * binning[1] * exptime)
    starts = rng.integers(0, n_pix, n_hits)
    lengths = rng.integers(1, 5, n_hits)
    steps = rng.choice([1, shape[1], shape[1] + 1], n_hits)
    hits = [start + step * np.arange(length) for start, step, length in zip(starts, steps, lengths)]
    if not hits:
        return np.array([], dtype=np.int64)
    return np.unique(np.clip(np.concatenate(hits), 0, n_pix - 1))


# ----------------------------------------------------------------------
# Headers and file names: each built-in instrument's own conventions
# ----------------------------------------------------------------------
def _header_template(instrument, binning, raw_shape) -> fits.Header:
    bx, by = binning
    header = fits.Header()
    if isinstance(instrument, KOSMOS):
        header.update({"OBSERVAT": "APO", "TELESCOP": "3.5m", "INSTRUME": "kosmos",
                       "BINX": bx, "BINY": by, "CCDBIN1": bx, "CCDBIN2": by,
                       "DISPERSR": "red", "SLIT": "2.0-low", "FILTER1": "empty2",
                       "FILTER2": "empty3", "CCDTEMP": 162.0})
        for lamp in instrument.lamp_keys:
            header[lamp] = "off"
    elif isinstance(instrument, _DIS):
        red = isinstance(instrument, DISRed)
        data = instrument.amplifiers[0].data_section
        overscan = instrument.amplifiers[0].overscan_section
        from .sections import parse_section

        header.update({"OBSERVAT": "APO", "TELESCOP": "3.5m", "INSTRUME": "DIS",
                       "DETECTOR": "red" if red else "blue",
                       "CCDBIN1": bx, "CCDBIN2": by,
                       "DATASEC": str(parse_section(data).binned(binning)),
                       "BIASSEC": str(parse_section(overscan).binned(binning)),
                       "GRATING": "R300" if red else "B400",
                       "DISPWC": 7500.0 if red else 4400.0,
                       "DISPDW": 2.31 if red else 1.83, "LAMP": "", "TURRET": "grating"})
    elif isinstance(instrument, SBO):
        header.update({"SWCREATE": "MaxIm DL Version 6.50 (apocal.simulate)",
                       "INSTRUME": "SBO campus camera", "TELESCOP": "SBO 24-inch",
                       "XBINNING": bx, "YBINNING": by, "SET-TEMP": -25.0, "CCD-TEMP": -25.02,
                       "FILTER": "R", "XPIXSZ": 9.0 * bx, "YPIXSZ": 9.0 * by})
    else:
        header.update({"INSTRUME": instrument.name, "CCDSUM": f"{bx} {by}"})
    return header


def _frame_header(instrument, template, kind, exptime, name, number, when, config):
    header = template.copy()
    header["DATE-OBS"] = (when.isoformat(timespec="seconds"), "start of exposure")
    header[instrument.exptime_key] = (exptime, "[s] exposure time")
    header["APSIM"] = (__version__, "simulated by apocal.simulate")
    target = {"science": "HD 12345", "flat": "flat", "arc": "arc", "bias": "bias",
              "dark": "dark"}[kind]
    if isinstance(instrument, KOSMOS):
        header["IMAGETYP"] = {"bias": "Bias", "dark": "Dark", "flat": "Flat", "arc": "Object",
                              "science": "Object"}[kind]
        header["FILENAME"] = name
        header["OBJNAME"] = target
        if kind == "arc":
            for lamp in ("NEON", "ARGON", "KRYPTON"):
                header[lamp] = "on"
        if kind == "flat":
            header["QUARTZ"] = "on"
    elif isinstance(instrument, _DIS):
        header["IMAGETYP"] = {"bias": "zero", "dark": "dark", "flat": "flat", "arc": "comp",
                              "science": "object"}[kind]
        if kind == "arc":
            header["LAMP"] = "He Ne Ar"
    elif isinstance(instrument, SBO):
        header["IMAGETYP"] = {"bias": "Bias Frame", "dark": "Dark Frame", "flat": "Flat Field",
                              "science": "Light Frame"}[kind]
        header["EXPOSURE"] = exptime
    else:
        header[instrument.imagetype_key] = {"bias": "bias", "dark": "dark", "flat": "flat",
                                            "arc": "arc", "science": "object"}[kind]
    header["OBJECT"] = target
    if kind == "science":
        header["AIRMASS"] = 1.2
    for key, value in (config or {}).items():
        header[key] = value
    return header


def _file_name(instrument, kind, number, exptime, config):
    if isinstance(instrument, KOSMOS):
        stem = {"bias": "bias", "dark": "dark", "flat": "flat", "arc": "Lamps",
                "science": "target"}[kind]
        return f"{stem}.{number:04d}.fits"
    if isinstance(instrument, _DIS):
        suffix = "r" if isinstance(instrument, DISRed) else "b"
        stem = {"bias": "bias", "dark": "dark", "flat": "flat", "arc": "HeNeAr",
                "science": "target"}[kind]
        return f"{stem}.{number:04d}{suffix}.fits"
    if isinstance(instrument, SBO):
        band = (config or {}).get("FILTER", "R")
        stem = {"bias": "Bias_BIN1", "dark": f"Dark_{exptime:g}s", "flat": f"domeflat_{band}",
                "science": f"target_{band}"}[kind]
        return f"{stem}_{number:03d}.fits"
    return f"{kind}{number:03d}.fits"
