"""Diagnostics against simulated truth, and on the real Kast red and ARCSAT frames."""

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from apocal import CalibrationError, CalibrationSet, Flag  # noqa: E402
from apocal.diagnostics import (  # noqa: E402
    dispersion_slices,
    lamp_response,
    linearity,
    nonlinear_check,
    photon_transfer,
    read_noise_from_pair,
    read_noise_from_stack,
    region_histograms,
    section_statistics,
    show_frame,
    slit_illumination,
)
from apocal.instruments import KOSMOS, SBO  # noqa: E402
from apocal.simulate import simulate  # noqa: E402

from .kast import KastRed  # noqa: E402

SIM = dict(binning=(4, 4), dark=0, science=0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def kosmos(tmp_path_factory):
    """One KOSMOS camera: 4 biases, 2 flats of 10 s and an arc; then 2 flats
    of 3 s and an arc whose brightest line passes the non-linearity level."""
    folder = tmp_path_factory.mktemp("kosmos-diag")
    sim = simulate(KOSMOS(), folder, bias=4, flat=2, arc=1, seed=21, **SIM)
    faint = simulate(KOSMOS(), folder, bias=0, flat=2, arc=1, arc_peak=1.1, seed=22,
                     exptime={"flat": 3.0}, first_number=20, truth="faint", **SIM)
    return sim, faint


@pytest.fixture(scope="module")
def sbo(tmp_path_factory):
    """An SBO camera whose headers carry no gain or read noise."""
    return simulate(SBO(), tmp_path_factory.mktemp("sbo-diag"), bias=4, flat=2, seed=31,
                    header_gain=False, arc=0, **SIM)


# ----------------------------------------------------------------------
# Gain and read noise against the simulated truth
# ----------------------------------------------------------------------
def test_photon_transfer_two_levels_two_amplifiers(kosmos):
    sim, faint = kosmos
    # interleaved on purpose: pairing by level must pair 10 s with 10 s, 3 s with 3 s
    flats = [sim["flat"][0], faint["flat"][0], sim["flat"][1], faint["flat"][1]]
    ptc = photon_transfer(flats, sim["bias"], KOSMOS())
    truth_gain, truth_noise = np.array(sim.truth.gain), np.array(sim.truth.read_noise)
    assert ptc.amplifiers == ("left", "right")
    np.testing.assert_allclose(ptc.gain, truth_gain, rtol=0.03)
    np.testing.assert_allclose(ptc.read_noise, truth_noise, rtol=0.03)
    assert np.all((ptc.gain_error > 0) & (ptc.gain_error < 0.02 * ptc.gain))
    assert np.all((ptc.read_noise_error > 0) & (ptc.read_noise_error < 0.05 * ptc.read_noise))
    # the truth lies within a few uncertainties, so the uncertainties are honest
    assert np.all(np.abs(ptc.gain - truth_gain) < 4 * ptc.gain_error)
    np.testing.assert_allclose(ptc.gain_ratio, 1.0, rtol=0.03)       # quoted gain is the truth
    for pair in ptc.pairs:
        assert len({name.split(".")[1][:2] for name in pair.files}) == 1   # same level
        assert pair.ratio == pytest.approx(1.0, abs=0.01)
    levels = sorted(p.signal for p in ptc.pairs_of("left"))
    assert levels[1] / levels[0] == pytest.approx(10 / 3, rel=0.05)


def test_photon_transfer_pairs_frames_of_different_levels(kosmos):
    sim, faint = kosmos
    # in the caller's order each pair is a 10 s and a 3 s flat: the second is scaled
    flats = [sim["flat"][0], faint["flat"][0], sim["flat"][1], faint["flat"][1]]
    ptc = photon_transfer(flats, sim["bias"], KOSMOS(), pairing="order")
    assert all(p.ratio == pytest.approx(10 / 3, rel=0.05) for p in ptc.pairs)
    np.testing.assert_allclose(ptc.gain, sim.truth.gain, rtol=0.03)


def test_photon_transfer_pairs_only_flats_of_one_configuration(tmp_path):
    # An i flat next to a z flat in level must not be paired with it (a
    # different filter: 1.14 e-/ADU instead of 1.29-1.30 on a real night).
    frames = []
    for band, times, seed in (("R", (5.0, 6.0), 41), ("I", (5.5, 6.5), 42)):
        for k, exptime in enumerate(times):
            night = simulate(SBO(), tmp_path, bias=0, flat=1, seed=seed + k, binning=(8, 8),
                             config={"FILTER": band}, exptime={"flat": exptime},
                             first_number=10 * seed + k, truth=f"t{band}{k}")
            frames += night["flat"]
    biases = simulate(SBO(), tmp_path / "b", bias=2, flat=0, science=0, seed=3, binning=(8, 8))
    ptc = photon_transfer(frames, biases["bias"], SBO(gain=1.4, read_noise=12.0))
    assert len(ptc.pairs) == 2
    for pair in ptc.pairs:
        bands = {name.split("_")[1] for name in pair.files}
        assert len(bands) == 1, pair.files


def test_photon_transfer_without_known_gain(sbo):
    instrument = SBO()   # no EGAIN/RDNOISE in these headers: measured, not quoted
    ptc = photon_transfer(sbo["flat"], sbo["bias"], instrument)
    assert np.isnan(ptc.quoted_gain).all() and np.isnan(ptc.gain_ratio).all()
    assert ptc.gain[0] == pytest.approx(sbo.truth.gain[0], rel=0.03)
    assert ptc.read_noise[0] == pytest.approx(sbo.truth.read_noise[0], rel=0.03)
    # what the night pipeline records
    assert isinstance(ptc.gain_per_amplifier[0], float)
    assert ptc.read_noise_error_per_amplifier[0] > 0
    ax = ptc.plot()
    assert len(ax.lines) >= 2 and "g = " in ax.get_legend().get_texts()[0].get_text()


def test_photon_transfer_ignores_saturated_pixels_and_refuses_saturated_flats(sbo):
    instrument = SBO()
    flats = [instrument.read(f) for f in sbo["flat"]]
    reference = photon_transfer(flats, sbo["bias"], instrument).gain[0]
    flats[0].data[:60, :60] = instrument.saturation      # a saturated patch
    assert photon_transfer(flats, sbo["bias"], instrument).gain[0] == pytest.approx(
        reference, rel=0.01)
    flats[0].data[:] = instrument.saturation
    with pytest.raises(CalibrationError, match="no usable part"):
        photon_transfer(flats, sbo["bias"], instrument)


def test_read_noise_from_biases(kosmos, sbo):
    sim = kosmos[0]
    for result in (read_noise_from_pair(*sim["bias"][:2], KOSMOS()),
                   read_noise_from_stack(sim["bias"], KOSMOS())):
        np.testing.assert_allclose(result.electrons, sim.truth.read_noise, rtol=0.03)
        np.testing.assert_allclose(result.ratio, 1.0, rtol=0.03)
        assert np.all((result.adu_error > 0) & (result.adu_error < 0.02 * result.adu))
        assert len(result.to_table()) == 2
    # unknown gain: ADU only, electrons NaN
    truth_adu = sbo.truth.read_noise[0] / sbo.truth.gain[0]
    for result in (read_noise_from_pair(*sbo["bias"][:2], SBO()),
                   read_noise_from_stack(sbo["bias"], SBO())):
        assert result.adu[0] == pytest.approx(truth_adu, rel=0.03)
        assert np.isnan(result.electrons[0])
    assert result.plot().get_ylabel() == "read noise [ADU]"


# ----------------------------------------------------------------------
# Sections and histograms of a raw frame
# ----------------------------------------------------------------------
def test_section_statistics_of_a_bias(kosmos):
    sim = kosmos[0]
    path = sim["bias"][0]
    stats = section_statistics(path, KOSMOS())
    overscan = sim.truth.frames[path.name]["overscan"]
    # truth.bias: data minus overscan (offset -3 / -5 ADU, gradient, warm columns), e-
    half = sim.truth.bias.shape[1] // 2
    offsets = [sim.truth.bias[:, :half] / 0.6, sim.truth.bias[:, half:] / 0.6]
    for amp, level, offset in zip(("left", "right"), overscan, offsets):
        # raw values are whole ADU, so medians are too; clipped means are finer
        assert stats.get(amp, "overscan").median == pytest.approx(level, abs=1)
        assert stats.get(amp, "data").median == pytest.approx(level + np.median(offset), abs=1)
        assert stats.data_minus_overscan[amp] == pytest.approx(np.median(offset), abs=1)
        assert stats.get(amp, "overscan").mean == pytest.approx(level, abs=0.2)
        data = stats.get(amp, "data")
        assert data.mean == pytest.approx(level + np.mean(offset), abs=0.2)
        assert data.std == pytest.approx(sim.truth.read_noise[0] / sim.truth.gain[0], rel=0.1)
        assert data.median_electrons == pytest.approx(data.median * 0.6)
    table = stats.to_table()
    assert list(table["region"]) == ["data", "overscan", "data", "overscan"]
    assert table["median"].unit == "adu"
    ax = stats.plot()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["left", "right"]


def test_region_histograms(kosmos):
    sim = kosmos[0]
    hist = region_histograms(sim["bias"][1], KOSMOS(), sigma=5)
    stats = section_statistics(sim["bias"][1], KOSMOS())
    assert hist.labels == ("left data", "left overscan", "right data", "right overscan")
    for centres, counts, rejected, region in zip(hist.centres, hist.counts, hist.n_rejected,
                                                 stats.regions):
        assert counts.sum() + rejected == region.n_pixels      # every kept pixel counted
        assert np.all(np.diff(centres) == 1) and np.all(centres == np.round(centres))
        assert 0 <= rejected < 0.01 * region.n_pixels
    ax = hist.plot()
    assert len(ax.lines) == 4
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(hist.labels)


# ----------------------------------------------------------------------
# Linearity
# ----------------------------------------------------------------------
def test_linearity_finds_injected_nonlinearity(tmp_path):
    instrument = SBO(nonlinear=25000.0)
    flats, biases = [], None
    for number, t in enumerate((1.0, 2.0, 4.0, 6.0, 8.0, 10.0)):
        sim = simulate(SBO(), tmp_path, bias=3 if number == 0 else 0, flat=1, arc=0,
                       seed=40 + number,
                       exptime={"flat": t}, first_number=1 + 10 * number, truth=f"t{number}",
                       **SIM)
        biases = biases or sim["bias"]
        flats += sim["flat"]
    linear = linearity(flats, instrument, biases)
    assert np.all(np.abs(linear.deviation) < 0.002)                # the simulator is linear
    assert np.isnan(linear.onset(0.01)).all()
    assert linear.slope[0] > 0 and abs(linear.intercept[0]) < 0.01 * linear.signal[0, -1]

    # compress the response above 25000 ADU raw, as a real CCD might
    compressed = []
    for path in flats:
        ccd = instrument.read(path)
        high = ccd.data > 25000
        ccd.data[high] -= 0.3 * (ccd.data[high] - 25000) ** 2 / 40535
        compressed.append(ccd)
    bent = linearity(compressed, instrument, biases)
    assert bent.fitted[0].tolist() == [True, True, False, False, False, False]
    assert np.all(np.abs(bent.deviation[0, :4]) < 0.002)
    assert bent.deviation[0, -1] < -0.03
    assert 25000 < bent.onset(0.01)[0] < 40000
    ax = bent.plot()
    assert len(ax.lines) >= 3 and ax.get_ylabel() == "deviation [%]"


def test_nonlinear_check_flags_bright_arcs(kosmos):
    sim, bright = kosmos
    frames = sim["flat"] + bright["arc"] + sim["arc"]
    check = nonlinear_check(frames, KOSMOS())
    assert check.flagged == (bright["arc"][0].name,)
    bright_entry = check.frames[2]
    assert bright_entry.kind == "arc" and bright_entry.n_nonlinear > 0
    assert bright_entry.peak > KOSMOS.nonlinear > check.frames[3].peak
    assert check.threshold == KOSMOS.nonlinear
    assert len(check.to_table()) == 4
    assert len(check.plot().patches) == 4


# ----------------------------------------------------------------------
# Arc slices, flat, display
# ----------------------------------------------------------------------
def test_dispersion_slices_measure_line_curvature(kosmos):
    arc = KOSMOS().process(kosmos[0]["arc"][0])
    slices = dispersion_slices(arc, KOSMOS.dispersion_axis)
    n_spatial = arc.shape[1]
    assert slices.positions.tolist() == [round(f * (n_spatial - 1)) for f in (0.25, 0.5, 0.75)]
    assert slices.profiles.shape == (3, arc.shape[0])
    # simulated lines bend by 0.004 * n_dispersion * ((y - n/2) / (n/2))**2 pixels
    half = n_spatial / 2
    bend = 0.004 * arc.shape[0] * ((slices.positions - half) / half) ** 2
    np.testing.assert_allclose(slices.shifts, bend - bend[1], atol=0.1)
    assert slices.shifts[0] > 0.5 and slices.shifts[2] > 0.5
    ax = slices.plot(zoom=20)
    assert len([line for line in ax.lines if line.get_label().startswith("column")]) == 3


@pytest.fixture(scope="module")
def kosmos_cal(night):
    sim = night("kosmos")
    return sim, CalibrationSet(sim.instrument).add_biases(sim["bias"]).add_flats(sim["flat"])


def test_lamp_response_and_slit_illumination(kosmos_cal):
    sim, cal = kosmos_cal
    lamp = lamp_response(cal)
    assert lamp.spectrum.shape == lamp.response.shape == (cal.master_flat.shape[0],)
    assert np.nanmedian(np.abs(lamp.ratio - 1)) < 0.01
    ax = lamp.plot()
    assert [line.get_label() for line in ax.lines] == ["lamp spectrum", "fitted response (spline)"]
    assert len(ax.figure.axes) == 2                      # and the ratio panel below

    slit = slit_illumination(cal)
    assert slit.profile.shape == (cal.master_flat.shape[1],)
    (first, last), = slit.edges                         # the simulated slit: 6% to 94%
    assert first == pytest.approx(0.06 * slit.profile.size, abs=3)
    assert last == pytest.approx(0.94 * slit.profile.size, abs=3)
    ax = slit.plot()
    assert len(ax.lines) == 1 and len(ax.patches) == 1
    assert ax.get_legend().get_texts()[1].get_text() == "illuminated"


def test_lamp_response_needs_a_spectroscopic_flat(sbo):
    cal = CalibrationSet(SBO(gain=1.4, read_noise=12)).add_biases(sbo["bias"]).add_flats(
        sbo["flat"])
    with pytest.raises(ValueError, match="spectrograph"):
        lamp_response(cal)


def test_show_frame_with_mask_overlay(kosmos):
    arc = KOSMOS().process(kosmos[1]["arc"][0])          # lines past the non-linear level
    ax = show_frame(arc, mask=Flag.NONLINEAR, title="bright arc")
    assert len(ax.images) == 2 and ax.get_title() == "bright arc"
    assert len(ax.figure.axes) == 2                      # the colour bar
    assert ax.figure.axes[1].get_ylabel() == "[electron]"
    ax = show_frame(arc.data, colorbar=False)
    assert len(ax.images) == 1 and len(ax.figure.axes) == 1
    with pytest.raises(ValueError, match="shape"):
        show_frame(arc, mask=np.zeros((3, 3), dtype=bool))


# ----------------------------------------------------------------------
# Real frames
# ----------------------------------------------------------------------
def test_kast_red_gain_and_read_noise(shared_data):
    folder = shared_data / "kast-red"
    biases = [folder / f"r{n}.fits.gz" for n in (112, 113, 114)]
    flats = [folder / f"r{n}.fits.gz" for n in (125, 126, 127)]
    kast = KastRed()
    ptc = photon_transfer(flats, biases, kast)
    gain, gain_error = ptc.gain[0], ptc.gain_error[0]
    noise, noise_error = ptc.read_noise[0], ptc.read_noise_error[0]
    quoted = kast.amplifiers[0]
    print(f"\nKast red: gain {gain:.3f} ± {gain_error:.3f} e-/ADU (quoted {quoted.gain}), "
          f"read noise {noise:.2f} ± {noise_error:.2f} e- (quoted {quoted.read_noise})")
    assert 0.5 < gain < 5 and 0 < gain_error < 0.02 * gain
    assert 1 < noise < 15 and 0 < noise_error < 0.05 * noise

    # every pair of flats gives the same gain (pairs share a frame, so are correlated)
    pairs = [photon_transfer(pair, biases, kast) for pair in itertools.combinations(flats, 2)]
    for one, two in itertools.combinations(pairs, 2):
        assert abs(one.gain[0] - two.gain[0]) < 3 * np.hypot(one.gain_error[0], two.gain_error[0])
        assert one.gain[0] == pytest.approx(two.gain[0], rel=0.02)

    # Read noise of each bias pair against the stack. r112 is noisier than
    # r113 and r114 (rows banded with the overscan): the tile uncertainty of a
    # single pair cannot see that, the stack's jackknife over frames does.
    stack = read_noise_from_stack(biases, kast)
    print(f"Kast red read noise: stack {stack.adu[0]:.2f} ± {stack.adu_error[0]:.2f} ADU; pairs "
          + ", ".join(f"{r.adu[0]:.2f} ± {r.adu_error[0]:.2f}" for r in (
              read_noise_from_pair(a, b, kast) for a, b in itertools.combinations(biases, 2))))
    for a, b in itertools.combinations(biases, 2):
        pair = read_noise_from_pair(a, b, kast)
        assert abs(pair.adu[0] - stack.adu[0]) < 2 * np.hypot(pair.adu_error[0],
                                                              stack.adu_error[0])
        assert pair.adu[0] == pytest.approx(stack.adu[0], rel=0.03)
    assert stack.adu[0] == pytest.approx(ptc.read_noise_adu[0])


def test_arcsat_gain_and_read_noise(shared_data):
    folder = shared_data / "arcsat-2025"
    biases = sorted(folder.glob("Bias_*.fits"))
    flats = sorted(folder.glob("domeflat_z_*.fits"))
    camera = SBO()   # no gain or read noise in these headers
    ptc = photon_transfer(flats, biases, camera)
    gain, gain_error = ptc.gain[0], ptc.gain_error[0]
    noise, noise_error = ptc.read_noise[0], ptc.read_noise_error[0]
    print(f"\nARCSAT: gain {gain:.3f} ± {gain_error:.3f} e-/ADU, read noise {noise:.2f} ± "
          f"{noise_error:.2f} e- ({ptc.read_noise_adu[0]:.2f} ADU)")
    assert 0.5 < gain < 5 and 0 < gain_error < 0.01 * gain
    assert 1 < noise < 25 and 0 < noise_error < 0.02 * noise
    # domeflat_z_001 is 8 % fainter than the others: sorted by level it pairs with 002
    assert [p.files for p in ptc.pairs] == [("domeflat_z_001.fits", "domeflat_z_002.fits"),
                                            ("domeflat_z_005.fits", "domeflat_z_004.fits")]
    one, two = ptc.pairs
    assert abs(one.gain - two.gain) < 3 * np.hypot(one.gain_error, two.gain_error)
    # independent bias pairs agree with each other and with the stack
    first, second = (read_noise_from_pair(biases[k], biases[k + 1], camera) for k in (0, 2))
    assert first.adu[0] == pytest.approx(second.adu[0], rel=0.03)
    assert first.adu[0] == pytest.approx(ptc.read_noise_adu[0], rel=0.03)
