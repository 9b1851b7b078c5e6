import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData, StdDevUncertainty

from apocal import CalibrationError, Flag
from apocal.combine import combine


def _stack(rng, n, truth=100.0, sigma=5.0, shape=(200, 250)):
    return [CCDData((truth + sigma * rng.standard_normal(shape)).astype(np.float32), unit=u.electron,
                    uncertainty=StdDevUncertainty(np.full(shape, sigma, np.float32)))
            for _ in range(n)]


def _pull(ccd, truth):
    pulls = (ccd.data - truth) / ccd.uncertainty.array
    return pulls.mean(), pulls.std()


@pytest.mark.parametrize("n", [3, 5, 10, 11, 12])
@pytest.mark.parametrize("method", ["median", "mean"])
def test_uncertainty_from_inputs_passes_the_pull_test(n, method):
    frames = _stack(np.random.default_rng(n), n)
    mean, std = _pull(combine(frames, method), 100.0)
    assert abs(mean) < 0.02 and 0.97 < std < 1.03


def test_ccdproc_default_median_uncertainty_is_too_small():
    """The reason apocal computes its own: ccdproc's MAD-based estimate."""
    from ccdproc import Combiner

    frames = _stack(np.random.default_rng(0), 10)
    theirs = Combiner(frames).median_combine()
    _, std = _pull(theirs, 100.0)
    assert std > 1.15        # about 23% too small an uncertainty
    _, ours = _pull(combine(frames, "median"), 100.0)
    assert 0.97 < ours < 1.03


@pytest.mark.parametrize("method", ["median", "mean"])
def test_sigma_clip_rejects_outliers_and_keeps_the_pull(method):
    frames = _stack(np.random.default_rng(1), 5)
    frames[2].data[10:20, 10:20] = 5000.0          # a cosmic-ray-like blob in one frame
    out = combine(frames, method, sigma_clip=3.0)
    assert np.all(np.abs(out.data[10:20, 10:20] - 100.0) < 15)
    mean, std = _pull(out, 100.0)
    assert abs(mean) < 0.02 and 0.97 < std < 1.04


def test_median_factor_follows_the_number_of_unmasked_frames():
    frames = _stack(np.random.default_rng(2), 4, shape=(400, 400))
    flags = np.zeros((400, 400), np.uint16)
    flags[:200] = Flag.COSMIC_RAY                  # top half: only 3 usable frames
    frames[0].flags = flags
    out = combine(frames, "median")
    # median of 4: factor 1.193; of 3: 1.346
    assert np.median(out.uncertainty.array[200:]) == pytest.approx(np.sqrt(1.193 * 4 * 25) / 4, rel=1e-3)
    assert np.median(out.uncertainty.array[:200]) == pytest.approx(np.sqrt(1.346 * 3 * 25) / 3, rel=1e-3)
    for half in (slice(0, 200), slice(200, 400)):
        pulls = ((out.data - 100) / out.uncertainty.array)[half]
        assert 0.96 < pulls.std() < 1.04


def test_flags_are_ored_over_used_frames_and_empty_pixels_flagged():
    frames = _stack(np.random.default_rng(3), 3, shape=(10, 10))
    for i, frame in enumerate(frames):
        frame.flags = np.zeros((10, 10), np.uint16)
    frames[0].flags[1, 1] = Flag.NONLINEAR           # used: propagates
    frames[1].flags[2, 2] = Flag.SATURATED           # excluded, others fine: does not
    for frame in frames:
        frame.flags[3, 3] = Flag.SATURATED           # excluded everywhere: NO_DATA
    out = combine(frames, "median")
    assert out.flags[1, 1] == Flag.NONLINEAR
    assert out.flags[2, 2] == 0
    assert out.flags[3, 3] == Flag.SATURATED | Flag.NO_DATA
    assert out.mask.sum() == 2 and np.isfinite(out.data).all()


def test_scale_and_sum():
    rng = np.random.default_rng(4)
    frames = _stack(rng, 3, truth=200.0)
    frames[1] = frames[1].multiply(2 * u.one)       # twice as bright, twice the noise
    out = combine(frames, "mean", scale=[1.0, 0.5, 1.0])
    assert _pull(out, 200.0)[1] == pytest.approx(1.0, abs=0.03)
    total = combine(_stack(rng, 4), "sum")
    assert np.mean(total.data) == pytest.approx(400.0, rel=1e-3)
    assert np.median(total.uncertainty.array) == pytest.approx(10.0, rel=1e-3)


def test_blocks_give_the_same_answer():
    frames = _stack(np.random.default_rng(5), 5, shape=(97, 31))
    whole = combine(frames, "median", sigma_clip=3)
    blocks = combine(frames, "median", sigma_clip=3, memory_limit=1)
    np.testing.assert_array_equal(whole.data, blocks.data)
    np.testing.assert_array_equal(whole.uncertainty.array, blocks.uncertainty.array)


def test_min_max_and_extrema():
    frames = _stack(np.random.default_rng(6), 5, shape=(20, 20))
    frames[0].data[0, 0] = 1e6
    out = combine(frames, "mean", minmax=(None, 1000.0))
    assert out.data[0, 0] < 200
    out = combine(frames, "mean", extrema=(1, 1))
    assert out.data[0, 0] < 200 and out.header["COMBEXTR"] == "1,1"


@pytest.mark.parametrize("method", ["median", "mean"])
@pytest.mark.parametrize("options", [{}, {"minmax": (-8.0, 12.0)}, {"extrema": (1, 2)},
                                     {"minmax": (None, 10.0), "extrema": (2, 1),
                                      "scale": [1.0, 0.5, 2.0, 1.5, 0.8, 1.2]}])
def test_rejection_and_combination_are_those_of_ccdprocs_combiner(method, options):
    """apocal rejects and combines on its own stack; ccdproc's Combiner, given
    the same frames through its public methods, is the truth: limits on the
    values as measured, extrema ranked with the masked values among them,
    bottleneck's nanmedian and nanmean, float32."""
    from ccdproc import Combiner

    rng = np.random.default_rng(10)
    frames = _stack(rng, 6, truth=0.0, sigma=5.0, shape=(40, 30))
    for frame in frames:
        frame.data[...] = np.round(frame.data / 2) * 2            # ties for the ranking
        frame.flags = np.where(rng.random(frame.shape) < 0.3, Flag.COSMIC_RAY, 0).astype(np.uint16)
    ours = combine(frames, method, **options)

    low, high = options.get("minmax", (None, None))
    given = []
    for frame, factor in zip(frames, options.get("scale", [1.0] * len(frames))):
        mask = frame.flags != 0                  # excluded, and outside the limits before scaling
        if low is not None:
            mask |= frame.data < low
        if high is not None:
            mask |= frame.data > high
        given.append(CCDData(frame.data * np.float32(factor), unit=u.electron, mask=mask))
    combiner = Combiner(given, dtype=np.float32)
    if "extrema" in options:
        combiner.clip_extrema(*options["extrema"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)                # all-masked pixels
        theirs = combiner.median_combine() if method == "median" else combiner.average_combine()

    no_data = (ours.flags & Flag.NO_DATA) != 0
    np.testing.assert_array_equal(no_data, theirs.mask)
    assert 0 < no_data.sum() < 0.1 * no_data.size
    assert ours.data.dtype == theirs.data.dtype == np.float32
    np.testing.assert_array_equal(ours.data[~no_data], theirs.data[~no_data])


def test_bad_input():
    with pytest.raises(CalibrationError, match="no frames"):
        combine([])
    frames = _stack(np.random.default_rng(7), 2, shape=(5, 5))
    odd = _stack(np.random.default_rng(7), 1, shape=(5, 6))[0]
    odd.meta["RAWFILE"] = "odd.fits"
    with pytest.raises(CalibrationError, match=r"odd\.fits: shape \(5, 6\)"):
        combine(frames + [odd])
    with pytest.raises(ValueError, match="method"):
        combine(frames, "average")
    with pytest.raises(TypeError):
        combine(frames, "mean", sigma_clipp=3)


# ----------------------------------------------------------------------
# Streaming: frames read from their files a block of rows at a time
# ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def biases(tmp_path_factory):
    from apocal.instruments import KOSMOS
    from apocal.simulate import simulate

    folder = tmp_path_factory.mktemp("stream")
    return simulate(KOSMOS(), folder, binning=(4, 4), bias=12, flat=0, arc=0, science=0, seed=8)


@pytest.mark.parametrize("method, options", [("median", {}), ("mean", {"sigma_clip": 3.0}),
                                             ("sum", {"extrema": (1, 1)}),
                                             ("median", {"minmax": (-50.0, 50.0)})])
def test_streamed_files_combine_exactly_like_frames_in_memory(biases, method, options):
    instrument = biases.instrument
    in_memory = combine([instrument.process(p) for p in biases["bias"]], method, **options)
    streamed = combine([instrument.prepare(p) for p in biases["bias"]], method,
                       memory_limit=3e6, **options)   # blocks of a few rows
    np.testing.assert_array_equal(streamed.data, in_memory.data)
    # in memory, each variance went through sqrt and back: float32 rounding
    np.testing.assert_allclose(streamed.uncertainty.array, in_memory.uncertainty.array,
                               rtol=3e-7, atol=0)
    np.testing.assert_array_equal(streamed.flags, in_memory.flags)


def test_streamed_combine_keeps_within_its_memory_limit(biases):
    import tracemalloc

    instrument = biases.instrument
    frames = [instrument.prepare(p) for p in biases["bias"]]
    stack_bytes = len(frames) * frames[0].shape[0] * frames[0].shape[1] * 4
    limit = 8e6      # the result takes 5.8 MB of it
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        combine(frames, "median", memory_limit=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stack_bytes > 3 * limit                 # the stack would not have fitted
    assert peak < 1.1 * limit, peak


def test_sigma_clip_passes_agree_with_clipping_every_pixel_every_pass():
    rng = np.random.default_rng(9)
    frames = _stack(rng, 7, shape=(60, 70))
    for k, frame in enumerate(frames[:3]):         # outliers that need several passes
        frame.data[rng.random((60, 70)) < 0.2] += (30.0, 60.0, 300.0)[k]
    values = np.array([f.data for f in frames], dtype=np.float64)
    keep = np.ones(values.shape, bool)
    for _ in range(3):                             # the plain algorithm
        centre = np.nanmedian(np.where(keep, values, np.nan), axis=0)
        reject = keep & (np.abs(values - centre) > 3.0 * 5.0)
        if not reject.any():
            break
        keep &= ~reject
    expected = np.nanmedian(np.where(keep, values, np.nan), axis=0)
    out = combine(frames, "median", sigma_clip=3.0)
    np.testing.assert_allclose(out.data, expected, rtol=1e-6)
    assert (keep.sum(axis=0) < 6).any()            # some pixels needed more than one pass
