import numpy as np
import pytest

from apocal.overscan import estimate_overscan


def _overscan(rng, n_lines=1000, n_cols=40, sigma=4.0, level=3280.0):
    trend = level + 2.0 * np.linspace(-1, 1, n_lines) + 0.5 * np.sin(np.linspace(0, 4 * np.pi, n_lines))
    return trend, trend[:, None] + sigma * rng.standard_normal((n_lines, n_cols))


def test_rows_follow_a_slow_drift_up_to_the_edges():
    rng = np.random.default_rng(1)
    trend, pixels = _overscan(rng)
    estimate = estimate_overscan(pixels, "rows", window=101)
    level, variance = estimate.level, estimate.variance
    error = level - trend
    assert np.abs(error).max() < 6 * np.sqrt(variance).max()
    assert abs(error.mean()) < 0.05


def test_rows_variance_matches_the_scatter_of_repeated_estimates():
    rng = np.random.default_rng(2)
    estimates = []
    for _ in range(300):
        trend, pixels = _overscan(rng, n_lines=300, n_cols=20)
        estimate = estimate_overscan(pixels, "rows", window=51)
        level, variance = estimate.level, estimate.variance
        estimates.append(level - trend)
    estimates = np.array(estimates)
    measured = estimates.var(axis=0)
    # centre and edge lines (the edges are fitted with less support)
    assert measured[150] == pytest.approx(variance[150], rel=0.2)
    assert measured[:5].mean() == pytest.approx(variance[:5].mean(), rel=0.2)
    assert variance[0] > 2 * variance[150]


def test_single_level_is_robust_to_a_cosmic_ray():
    rng = np.random.default_rng(3)
    pixels = 100.0 + 3.0 * rng.standard_normal((500, 30))
    pixels[10, 5] = 60000.0
    estimate = estimate_overscan(pixels, "level")
    level, variance = estimate.level, estimate.variance
    assert np.all(level == level[0])
    assert level[0] == pytest.approx(100.0, abs=5 * np.sqrt(variance[0]))
    # a clipped mean: the variance of a mean of the pixels kept
    assert variance[0] == pytest.approx(9.0 / pixels.size, rel=0.1)


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="overscan method"):
        estimate_overscan(np.zeros((10, 10)), "spline")


def test_a_hot_line_does_not_bend_the_smoothed_level():
    # ISIS blue: a parallel overscan (one line per column) whose column 398 is
    # 11,600 ADU above the bias bent a smoothed level over 140 columns.
    rng = np.random.default_rng(4)
    pixels = 2178.0 + 4.3 * rng.standard_normal((483, 96))
    pixels[397] += 11600.0
    pixels[398] += 390.0
    pixels[399] += 7.5
    estimate = estimate_overscan(pixels, "rows", window=101)
    assert list(estimate.rejected_lines) == [397, 398, 399]
    assert np.abs(estimate.level - 2178.0).max() < 5 * np.sqrt(estimate.variance).max()
    assert np.abs(estimate.level - 2178.0).max() < 0.3


def test_a_hot_track_and_cosmic_rays_are_left_out():
    # A serial overscan whose first column carries charge trailing from the
    # data (Kast) and a few cosmic rays.
    rng = np.random.default_rng(5)
    pixels = 1062.0 + 6.0 * rng.standard_normal((250, 30))
    pixels[:, 0] += 150.0
    pixels[:, 1] += 40.0
    pixels[rng.integers(0, 250, 20), rng.integers(2, 30, 20)] += 5000.0
    estimate = estimate_overscan(pixels, "rows", window=51)
    assert list(estimate.rejected_tracks) == [0, 1]
    assert abs(np.mean(estimate.level) - 1062.0) < 0.2
    assert estimate.noise == pytest.approx(6.0, rel=0.05)


@pytest.mark.parametrize("method", ["rows", "level"])
def test_integer_data_give_an_unbiased_level(method):
    # The median of whole numbers is pulled towards a whole number: a true
    # level of 140.3 ADU read as the median of 33 columns of 1 ADU noise comes
    # out 0.13 ADU low (a median-based estimate did). A clipped mean is not.
    rng = np.random.default_rng(6)
    errors = []
    for _ in range(20):
        pixels = np.round(140.3 + 1.0 * rng.standard_normal((1000, 33)))
        estimate = estimate_overscan(pixels, method, window=101)
        errors.append(np.mean(estimate.level) - 140.3)
    # each mean level averages 33,000 pixels of 1 ADU noise; 20 of them
    assert abs(np.mean(errors)) < 4 * 1.0 / np.sqrt(33000 * 20)
