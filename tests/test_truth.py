"""Calibration against a truth apocal had no part in making.

Raw frames are written byte by byte by `tests/rawwriter.py` from arrays
made here (not by `apocal.simulate`, which shares apocal's geometry code):
integer ADU, rounded as a real ADC rounds them, with a read noise of two
ADU and an overscan of a few columns, where a median of whole numbers is
biased (`tests/test_overscan.py` shows how much). The masters and the
science frames must then match the truth within their uncertainties.
"""

import numpy as np
import pytest

import apocal

from .rawwriter import image, write_raw

GAIN, NOISE = 1.5, 3.0                # e-/ADU, e- before the ADC rounds: 2 ADU
# What a photon transfer curve measures: the noise and the ADC's rounding.
READ_NOISE = float(np.hypot(NOISE, GAIN / np.sqrt(12)))
ROWS, DATA, OVERSCAN = 2000, 100, 8


class Rounded(apocal.Instrument):
    """An imager with 8 overscan columns on the right."""

    name = "rounded"
    amplifiers = (apocal.Amplifier(f"[1:{DATA},1:{ROWS}]",
                                   f"[{DATA + 1}:{DATA + OVERSCAN},1:{ROWS}]",
                                   gain=GAIN, read_noise=READ_NOISE),)
    saturation = 65535.0


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rounded")
    rng = np.random.default_rng(2024)
    structure = 0.8 * rng.standard_normal((ROWS, DATA)) + np.linspace(0, 2, DATA)  # ADU
    response = 1.0 + 0.02 * rng.standard_normal((ROWS, DATA))
    # The Poisson term comes from each pixel's own measured signal (as
    # ccdproc's and IRAF's do), which pulls the mean pull low by about
    # S / (2 (S + RN**2)**1.5): -0.025 at 400 e-, -0.011 at 2,000 e-.
    sky = 2000.0                                                                      # e-
    truth = {"bias": structure * GAIN, "response": response, "sky": sky}
    frames = {"bias": [], "flat": [], "science": []}
    for kind, count, electrons in (("bias", 20, 0.0), ("flat", 6, 20000.0),
                                   ("science", 6, sky)):
        for k in range(count):
            level = 300.37 + 0.1 * rng.standard_normal() \
                + 0.4 * np.linspace(-1, 1, ROWS)[:, None]              # the bias drifts
            signal = rng.poisson(electrons * response) if electrons else 0.0
            raw = np.empty((ROWS, DATA + OVERSCAN))
            raw[:, :DATA] = level + structure + (signal + NOISE
                                                 * rng.standard_normal((ROWS, DATA))) / GAIN
            raw[:, DATA:] = level + NOISE / GAIN * rng.standard_normal((ROWS, OVERSCAN))
            path = folder / f"{kind}{k:02d}.fits"
            write_raw(path, image(np.round(raw), 16, 32768, cards={
                "IMAGETYP": {"science": "object"}.get(kind, kind),
                "EXPTIME": 0.0 if kind == "bias" else 10.0}))
            frames[kind].append(path)
    return frames, truth


def _pulls(ccd, truth):
    good = ~ccd.mask
    return ((ccd.data - truth) / ccd.uncertainty.array)[good]


def test_master_bias_of_integer_frames_is_unbiased(night):
    frames, truth = night
    master = apocal.CalibrationSet(Rounded()).add_biases(frames["bias"]).master_bias
    pulls = _pulls(master, truth["bias"])
    assert abs(pulls.mean()) < 0.02
    assert 0.95 < pulls.std() < 1.05


def test_science_of_integer_frames_matches_the_truth(night):
    frames, truth = night
    cal = (apocal.CalibrationSet(Rounded()).add_biases(frames["bias"])
           .add_flats(frames["flat"]))
    # the flat is normalised to its median: the sky comes out times that
    expected = truth["sky"] * np.median(truth["response"])
    pulls = np.concatenate([_pulls(cal.calibrate(path), expected) for path in frames["science"]])
    assert abs(pulls.mean()) < 0.02
    assert 0.95 < pulls.std() < 1.05
    assert cal.check_uncertainty().passed
