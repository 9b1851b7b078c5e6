"""CalibrationSet against simulated truth, on real SBO-style frames, and with bad input."""

import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.tests.helper import assert_quantity_allclose

import apocal
from apocal import ApocalWarning, CalibrationError, CalibrationSet, Flag, FrameError
from apocal.instruments import KOSMOS, SBO, DISBlue, DISRed
from apocal.simulate import simulate

# Ten biases, five 120 s darks, seven flats, two arcs, a 600 s and a 60 s science frame.
PLAN = dict(bias=10, dark=5, flat=7, arc=2, science=1, exptime={"dark": 120.0, "science": 600.0})


@pytest.fixture(scope="module")
def kosmos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kosmos-cal")
    sim = simulate(KOSMOS(), folder, binning=(4, 4), seed=11, **PLAN)
    short = simulate(KOSMOS(), folder, binning=(4, 4), seed=12, bias=0, flat=0, arc=0,
                     dark=1, science=0, exptime={"dark": 60.0}, first_number=100)
    cal = (CalibrationSet(sim.instrument)
           .add_biases(sim["bias"])
           .add_darks(sim["dark"])
           .add_flats(sim["flat"], response="spline")
           .add_arcs(sim["arc"]))
    return sim, cal, short


def _pulls(ccd, truth, good):
    pulls = (ccd.data[good] - truth[good]) / ccd.uncertainty.array[good]
    return float(pulls.mean()), float(pulls.std())


def _true_flat(sim, cal):
    """The true pixel response, normalised like the master (one constant)."""
    truth = sim.truth.response
    good = ~cal.master_flat.mask & ~sim.truth.dead
    return truth * np.median(cal.master_flat.data[good] / truth[good]), good


@pytest.mark.parametrize("method", ["median", "mean"])
def test_master_bias_pull(kosmos, method):
    sim, _, _ = kosmos
    master = CalibrationSet(sim.instrument).add_biases(sim["bias"], method=method).master_bias
    mean, std = _pulls(master, sim.truth.bias, ~master.mask)
    assert abs(mean) < 0.05 and 0.95 < std < 1.05
    assert master.unit == u.electron and master.header["NCOMBINE"] == 10


def test_master_dark_rate_pull_and_hot_pixels(kosmos):
    sim, cal, _ = kosmos
    dark = cal.master_dark
    assert dark.unit == u.electron / u.s
    hot = (dark.flags & Flag.HOT) != 0
    assert hot[sim.truth.hot].mean() > 0.99          # every true hot pixel found
    assert hot.sum() < 1.05 * sim.truth.hot.sum()     # and few others
    mean, std = _pulls(dark, sim.truth.dark_rate, ~dark.mask)
    assert abs(mean) < 0.05 and 0.95 < std < 1.05


def test_darks_of_mixed_exposures_give_the_true_rate(kosmos):
    sim, _, short = kosmos
    darks = sim["dark"] + short["dark"]                      # 5 x 120 s and 1 x 60 s
    dark = CalibrationSet(sim.instrument).add_biases(sim["bias"]).add_darks(darks).master_dark
    # the master bias's error enters once, at the 1/t of the frames in the
    # middle of the median (the mean of 1/t for a mean)
    assert dark.header["APBIASCO"] == pytest.approx(-1 / 120)
    mean, std = _pulls(dark, sim.truth.dark_rate, ~dark.mask)
    assert abs(mean) < 0.05 and 0.95 < std < 1.05


def test_calibrate_does_ccdprocs_arithmetic_in_float32(kosmos):
    """Bias, scaled dark and flat applied as ccdproc's subtract_bias,
    subtract_dark and flat_correct would, plus the shared-bias covariance."""
    from ccdproc import flat_correct, subtract_bias, subtract_dark

    sim, cal, _ = kosmos
    path = sim["science"][0]
    ours = cal.calibrate(path)
    assert ours.data.dtype == np.float32 and ours.uncertainty.array.dtype == np.float32
    exptime = 600.0
    rate = cal.master_dark
    step = cal.instrument.process(path, bias=cal.master_bias.data)
    step = subtract_bias(step, cal.master_bias)
    dark_1s = CCDData(rate.data, unit=u.electron,
                      uncertainty=StdDevUncertainty(rate.uncertainty.array))
    step = subtract_dark(step, dark_1s,
                         dark_exposure=1 * u.s, data_exposure=exptime * u.s, scale=True)
    theirs = flat_correct(step, cal.master_flat, norm_value=1.0)
    # astropy's arithmetic leaves a value undivided where the flat is masked
    # (bad, e.g. 0.12); apocal divides everywhere, and flags those pixels.
    good = ~(cal.master_flat.mask | cal.master_bias.mask | rate.mask)
    assert good.mean() > 0.85                      # all but the unlit slit ends and bad pixels
    assert_quantity_allclose(ours.data[good] * ours.unit, theirs.data[good] * theirs.unit,
                             rtol=1e-5, atol=1e-3 * u.electron)
    covariance = (2 * rate.header["APBIASCO"] * exptime
                  * cal.master_bias.uncertainty.array.astype(float)**2
                  / cal.master_flat.data.astype(float)**2)
    np.testing.assert_allclose(ours.uncertainty.array[good]**2,
                               (theirs.uncertainty.array.astype(float)**2 + covariance)[good],
                               rtol=1e-4)
    assert (ours.mask[~good]).all()


def test_master_flat_matches_true_response_within_its_uncertainty(kosmos):
    sim, cal, _ = kosmos
    truth, good = _true_flat(sim, cal)
    mean, std = _pulls(cal.master_flat, truth, good)
    assert abs(mean) < 0.05 and 0.95 < std < 1.05


def test_lamp_spectrum_is_removed(kosmos):
    sim, cal, _ = kosmos
    flat, axis = cal.master_flat, sim.instrument.dispersion_axis
    lit = cal.illumination_mask & ~flat.mask
    median = np.nanmedian(np.where(lit, flat.data, np.nan), axis=1 - axis)
    truth, _ = _true_flat(sim, cal)
    true_median = np.nanmedian(np.where(lit, truth, np.nan), axis=1 - axis)
    clean = np.abs(true_median - 1) < 0.005          # wavelengths without a true defect
    assert clean.mean() > 0.99
    assert np.max(np.abs(median[clean] - 1)) < 0.005
    # the raw flats themselves vary by a factor of several along the dispersion
    assert np.nanmax(cal.lamp_spectrum) / np.nanmin(cal.lamp_spectrum) > 3


def test_unilluminated_pixels_are_one_and_flagged(kosmos):
    sim, cal, _ = kosmos
    flat = cal.master_flat
    outside = ~cal.illumination_mask
    assert outside.any() and np.all(flat.data[outside] == 1.0)
    assert np.all(flat.flags[outside] & Flag.UNILLUMINATED)
    # the slit ends are the unilluminated rows of the truth
    assert np.all(sim.truth.illumination[outside.any(axis=0)] < 0.8 * 1.05)


def test_dead_pixels_go_into_the_bad_pixel_mask(kosmos):
    sim, cal, _ = kosmos
    dead_lit = sim.truth.dead & cal.illumination_mask
    assert cal.bad_pixel_mask[dead_lit].all()
    assert cal.bad_pixel_mask[sim.truth.hot].all()


def test_calibrated_science_pull(kosmos):
    sim, cal, _ = kosmos
    path = sim["science"][0]
    science = cal.calibrate(path)
    truth, good = _true_flat(sim, cal)
    expected = sim.truth.expected(path.name) / truth
    good = good & ~science.mask
    good.flat[sim.truth.cosmic_rays[path.name]] = False
    mean, std = _pulls(science, expected, good)
    assert abs(mean) < 0.05 and 0.95 < std < 1.05
    assert science.unit == u.electron and science.header["APSTAGE"] == "calibrated"
    # saturated pixels of the frame and the masters' flags are all there
    assert np.all(science.flags.flat[sim.truth.saturated[path.name]] & Flag.SATURATED)
    assert np.all(science.flags[~cal.illumination_mask] & Flag.UNILLUMINATED)


def test_dark_of_120s_scaled_to_60s_leaves_no_dark_signal(kosmos):
    sim, cal, short = kosmos
    dark_60s = short["dark"][0]
    # calibrate a 60 s dark as if it were science, without the flat
    plain = CalibrationSet(sim.instrument).add_biases(sim["bias"]).add_darks(sim["dark"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ApocalWarning)   # "its header says dark"
        residual = plain.calibrate(dark_60s)
    good = ~residual.mask
    good.flat[short.truth.cosmic_rays[dark_60s.name]] = False
    # The error of the mean is mostly the overscan estimate, shared along
    # rows; measure it from the scatter of the means of 128-row blocks
    # (longer than the smoothing window, so nearly independent).
    blocks = [residual.data[r:r + 128, c:c + 256][good[r:r + 128, c:c + 256]].mean()
              for r in range(0, 1024, 128) for c in (0, 256)]
    standard_error = np.std(blocks, ddof=1) / np.sqrt(len(blocks))
    assert abs(residual.data[good].mean()) < 3 * standard_error
    # while the dark signal that was there is several times that error
    assert 60 * np.mean(sim.truth.dark_rate[good]) > 5 * standard_error
    # hot pixels carry 60 s x up to 300 e-/s: removed to within their uncertainty
    hot = sim.truth.hot
    pulls = residual.data[hot] / residual.uncertainty.array[hot]
    assert abs(pulls.mean()) < 0.2 and pulls.std() < 1.3
    unscaled = residual.data[hot] + sim.truth.dark_rate[hot] * 60.0
    assert np.median(np.abs(unscaled)) > 20 * np.median(np.abs(residual.data[hot]))


def test_arcs_are_summed_and_flag_non_linear_lines(tmp_path):
    sim = simulate(DISRed(), tmp_path, binning=(4, 4), bias=5, flat=3, arc=2, science=0,
                   arc_peak=1.1, seed=3)
    cal = CalibrationSet(sim.instrument).add_biases(sim["bias"])
    with pytest.warns(ApocalWarning, match="non-linear"):
        cal.add_arcs(sim["arc"])
    arc = cal.master_arc
    expected = 2 * sim.truth.arc_rate * sim.truth.frames[sim["arc"][0].name]["exptime"]
    bright = expected > 1000
    ratio = np.median(arc.data[bright & ~arc.mask] / expected[bright & ~arc.mask])
    assert ratio == pytest.approx(1.0, abs=0.01)
    assert (arc.flags & Flag.SATURATED).any() and arc.header["APNLPIX"] > 0


def test_sbo_path_without_bias_uses_darks_of_matching_exposure(tmp_path):
    sim = simulate(SBO(), tmp_path, binning=(4, 4), bias=0, dark=5, flat=5, science=1,
                   exptime={"dark": 60.0, "science": 60.0, "flat": 5.0}, seed=4)
    flat_darks = simulate(SBO(), tmp_path, binning=(4, 4), bias=0, dark=5, flat=0, science=0,
                          exptime={"dark": 5.0}, first_number=50, seed=5)
    cal = (CalibrationSet(sim.instrument)
           .add_darks(sim["dark"] + flat_darks["dark"])
           .add_flats(sim["flat"]))
    assert sorted(cal.master_darks) == [5.0, 60.0] and cal.master_dark is None
    science = cal.calibrate(sim["science"][0])
    truth = sim.truth.response / np.median(sim.truth.response)
    expected = sim.truth.expected(sim["science"][0].name) / truth
    good = ~science.mask & ~sim.truth.dead
    good.flat[sim.truth.cosmic_rays[sim["science"][0].name]] = False
    scale = np.median(science.data[good] / expected[good])
    assert scale == pytest.approx(1.0, abs=0.01)
    mean, std = _pulls(science, expected * scale, good)
    assert abs(mean) < 0.05 and 0.95 < std < 1.05
    cal.write(tmp_path / "masters")
    again = CalibrationSet.read(tmp_path / "masters").calibrate(sim["science"][0])
    np.testing.assert_array_equal(again.data, science.data)
    np.testing.assert_array_equal(again.uncertainty.array, science.uncertainty.array)


def test_dark_of_the_wrong_exposure_without_bias_is_an_error(tmp_path):
    sim = simulate(SBO(), tmp_path, binning=(8, 8), bias=0, dark=2, flat=0, science=1,
                   exptime={"dark": 60.0, "science": 30.0}, seed=6)
    cal = CalibrationSet(sim.instrument).add_darks(sim["dark"])
    with pytest.raises(CalibrationError, match=r"exposure 30 s has no dark of that exposure "
                                               r"\(darks: 60 s\).*add biases, or darks of 30 s"):
        cal.calibrate(sim["science"][0])


def test_sbo_without_bias_or_dark_cannot_calibrate(tmp_path):
    sim = simulate(SBO(), tmp_path, binning=(8, 8), bias=0, flat=2, science=1, seed=6)
    with pytest.raises(CalibrationError, match="nothing removes the bias level"):
        CalibrationSet(sim.instrument).add_flats(sim["flat"])


# ----------------------------------------------------------------------
# Real SBO-style night (shared/data/arcsat-2025)
# ----------------------------------------------------------------------
def test_arcsat_night_end_to_end(shared_data):
    folder = shared_data / "arcsat-2025"
    # gain and read noise are not in these headers; these are measured from
    # the night's bias and flat pairs (test_diagnostics: 1.336 e-/ADU, 16.2 e-)
    cal = (CalibrationSet(SBO(gain=1.336, read_noise=16.2))
           .add_biases(sorted(folder.glob("Bias_*.fits")))
           .add_darks(sorted(folder.glob("Dark_*.fits")))
           .add_flats(sorted(folder.glob("domeflat_z_*.fits"))))
    flat = cal.master_flat
    good = ~flat.mask
    assert np.median(flat.data[good]) == pytest.approx(1.0, abs=1e-3)
    assert np.percentile(flat.data[good], 1) > 0.9 and np.percentile(flat.data[good], 99) < 1.1
    assert cal.master_dark.unit == u.electron / u.s and (cal.master_dark.flags & Flag.HOT).any()
    for path in sorted(folder.glob("XO1-b_z_*.fits")):
        light = cal.calibrate(path)
        assert light.unit == u.electron and light.shape == (1024, 1024)
        assert np.all(np.isfinite(light.uncertainty.array)) and np.all(light.uncertainty.array > 0)
        # sky in z over 60 s: a positive, moderate level once bias and dark are gone
        assert 50 < np.median(light.data[~light.mask]) < 1000
        # the uncertainty of sky pixels matches their scatter (Poisson + read noise)
        sky = light.data[~light.mask]
        from astropy.stats import sigma_clipped_stats

        _, _, scatter = sigma_clipped_stats(sky, sigma=3)
        assert scatter == pytest.approx(np.median(light.uncertainty.array[~light.mask]), rel=0.15)


# ----------------------------------------------------------------------
# Writing and reading
# ----------------------------------------------------------------------
def test_write_and_read_restore_an_identical_set(kosmos, tmp_path):
    sim, cal, _ = kosmos
    written = cal.write(tmp_path / "masters")
    assert {p.name for p in written} == {"master_bias.fits", "master_dark.fits",
                                         "master_flat.fits", "master_arc.fits",
                                         "calibration_set.json"}
    back = CalibrationSet.read(tmp_path / "masters")
    for kind in ("bias", "dark", "flat", "arc"):
        mine, theirs = getattr(cal, f"master_{kind}"), getattr(back, f"master_{kind}")
        np.testing.assert_array_equal(mine.data, theirs.data)
        np.testing.assert_array_equal(mine.uncertainty.array, theirs.uncertainty.array)
        np.testing.assert_array_equal(mine.flags, theirs.flags)
        np.testing.assert_array_equal(mine.mask, theirs.mask)
        assert mine.unit == theirs.unit
    np.testing.assert_array_equal(cal.illumination_mask, back.illumination_mask)
    np.testing.assert_array_equal(cal.lamp_spectrum, back.lamp_spectrum)
    one, two = cal.calibrate(sim["science"][0]), back.calibrate(sim["science"][0])
    np.testing.assert_array_equal(one.data, two.data)
    np.testing.assert_array_equal(one.uncertainty.array, two.uncertainty.array)
    assert two.header["APFLAT"] == "master_flat.fits"
    with fits.open(tmp_path / "masters" / "master_bias.fits") as hdul:
        header = hdul[0].header
        assert header["APMASTER"] == "bias" and header["NCOMBINE"] == 10
        assert header["IMCMB001"] == sim["bias"][0].name and header["COMBMETH"] == "median"
        assert header["APVERS"] == apocal.__version__
        assert [h.name for h in hdul][1:] == ["UNCERT", "MASK", "FLAGS"]


def test_write_refuses_to_overwrite_and_writes_nothing(kosmos, tmp_path):
    _, cal, _ = kosmos
    cal.write(tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        cal.write(tmp_path)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    cal.write(tmp_path, overwrite=True)


def test_an_interrupted_write_is_not_read_as_a_set(kosmos, tmp_path, monkeypatch):
    _, cal, _ = kosmos
    import apocal.calibration.files as module

    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = module.write_frame
    monkeypatch.setattr(module, "write_frame", failing)
    with pytest.raises(KeyboardInterrupt):
        cal.write(tmp_path)
    assert not any(p.suffix == ".part" for p in tmp_path.iterdir())
    with pytest.raises(CalibrationError, match="interrupted"):
        CalibrationSet.read(tmp_path)


# ----------------------------------------------------------------------
# Bad input and options
# ----------------------------------------------------------------------
def test_empty_list(kosmos):
    sim, _, _ = kosmos
    with pytest.raises(CalibrationError, match="no bias frames given"):
        CalibrationSet(sim.instrument).add_biases([])


def test_mixed_binnings(kosmos, tmp_path):
    sim, _, _ = kosmos
    other = simulate(KOSMOS(), tmp_path, binning=(8, 8), bias=1, flat=0, arc=0, science=0)
    with pytest.raises(CalibrationError, match=r"different binnings: .* is 4x4 but .*8x8"):
        CalibrationSet(sim.instrument).add_biases(sim["bias"][:2] + other["bias"])


def test_mixed_shapes(tmp_path):
    large = simulate(SBO(), tmp_path, binning=(8, 8), bias=2, flat=0, science=0)
    small = simulate(SBO(), tmp_path, binning=(8, 8), bias=1, flat=0, science=0,
                     shape=(512, 512), first_number=10)
    with pytest.raises(CalibrationError, match=r"Bias_BIN1_010\.fits: processed shape \(64, 64\) "
                                               r"differs from \(128, 128\)"):
        CalibrationSet(SBO()).add_biases(large["bias"] + small["bias"])


def test_frames_of_another_instrument(tmp_path):
    red = simulate(DISRed(), tmp_path / "r", binning=(4, 4), bias=1, flat=0, arc=0, science=0)
    kosmos = simulate(KOSMOS(), tmp_path / "k", binning=(4, 4), bias=1, flat=0, arc=0, science=0)
    with pytest.raises(FrameError, match=r"bias\.0001\.fits: is a kosmos frame, not dis-red"):
        CalibrationSet(DISRed()).add_biases(red["bias"] + kosmos["bias"])
    blue = simulate(DISBlue(), tmp_path / "b", binning=(4, 4), bias=1, flat=0, arc=0, science=0)
    with pytest.raises(FrameError, match="is a dis-blue frame, not dis-red"):
        DISRed().process(blue["bias"][0])


def test_flat_with_no_light(kosmos):
    sim, _, _ = kosmos
    cal = CalibrationSet(sim.instrument).add_biases(sim["bias"][:5])
    with pytest.warns(ApocalWarning, match="its header says bias"), \
            pytest.raises(CalibrationError, match=r"bias\.0006\.fits: flat has no light"):
        cal.add_flats(sim["flat"][:2] + sim["bias"][5:6])


def test_unknown_options_are_errors(kosmos):
    sim, _, _ = kosmos
    with pytest.raises(TypeError, match="unknown option.*'sigma_clipp'"):
        CalibrationSet(sim.instrument).add_biases(sim["bias"], sigma_clipp=3)
    with pytest.raises(TypeError, match="'scale'"):
        CalibrationSet(sim.instrument).add_biases(sim["bias"][:2]).add_flats(
            sim["flat"], scale=[1] * 7)
    with pytest.raises(TypeError, match="cosmic-ray option"):
        CalibrationSet(sim.instrument).calibrate(sim["science"][0], cosmic_rays=True, sigclp=4)


def test_masters_must_be_added_in_order(kosmos):
    sim, cal, _ = kosmos
    with pytest.raises(CalibrationError, match="already has a master bias"):
        cal.add_biases(sim["bias"])
    fresh = CalibrationSet(sim.instrument).add_biases(sim["bias"][:3]).add_flats(sim["flat"][:2])
    with pytest.raises(CalibrationError, match="add dark frames before flat"):
        fresh.add_darks(sim["dark"])


def test_cosmic_ray_rejection_in_calibrate(kosmos):
    sim, cal, _ = kosmos
    path = sim["science"][0]
    clean = cal.calibrate(path, cosmic_rays=True)
    found = (clean.flags & Flag.COSMIC_RAY) != 0
    hits = np.zeros(clean.shape, bool)
    hits.flat[sim.truth.cosmic_rays[path.name]] = True
    hits &= ~cal.calibrate(path).mask               # hits on good pixels
    assert found[hits].mean() > 0.9                 # nearly all found
    # L.A.Cosmic grows detections into neighbours; anything further is a false alarm
    from scipy.ndimage import binary_dilation

    near = binary_dilation(hits, structure=np.ones((3, 3), bool))
    # (a few: noise peaks and the edges of sharp sky lines in binned spectra)
    assert (found & ~near).sum() < 0.15 * hits.sum()
    # replaced pixels carry their neighbourhood's uncertainty, not the hit's
    sigma = clean.uncertainty.array
    assert np.median(sigma[found & hits]) == pytest.approx(np.median(sigma[~clean.mask]), rel=0.3)
    assert clean.header["NCOSMIC"] == found.sum()
    assert np.all(np.isfinite(clean.uncertainty.array))


def test_a_frame_without_exposure_time_is_named(kosmos, tmp_path):
    sim, cal, _ = kosmos
    raw = sim.instrument.read(sim["science"][0])
    del raw.header["EXPTIME"]
    with pytest.raises(FrameError, match=r"target\.\d+\.fits: has no usable exposure time "
                                         r"\(EXPTIME=None\)"):
        cal.calibrate(raw)
