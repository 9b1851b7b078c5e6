import numpy as np
import pytest

from apocal.overscan import estimate_overscan


def _overscan(rng, n_lines=1000, n_cols=40, sigma=4.0, level=3280.0):
    trend = level + 2.0 * np.linspace(-1, 1, n_lines) + 0.5 * np.sin(np.linspace(0, 4 * np.pi, n_lines))
    return trend, trend[:, None] + sigma * rng.standard_normal((n_lines, n_cols))


def test_rows_follow_a_slow_drift_up_to_the_edges():
    rng = np.random.default_rng(1)
    trend, pixels = _overscan(rng)
    level, variance = estimate_overscan(pixels, "rows", window=101)
    error = level - trend
    assert np.abs(error).max() < 6 * np.sqrt(variance).max()
    assert abs(error.mean()) < 0.05


def test_rows_variance_matches_the_scatter_of_repeated_estimates():
    rng = np.random.default_rng(2)
    estimates = []
    for _ in range(300):
        trend, pixels = _overscan(rng, n_lines=300, n_cols=20)
        level, variance = estimate_overscan(pixels, "rows", window=51)
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
    level, variance = estimate_overscan(pixels, "level")
    assert np.all(level == level[0])
    assert level[0] == pytest.approx(100.0, abs=5 * np.sqrt(variance[0]))
    assert variance[0] == pytest.approx(np.pi / 2 * 9.0 / pixels.size, rel=0.1)


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="overscan method"):
        estimate_overscan(np.zeros((10, 10)), "spline")
