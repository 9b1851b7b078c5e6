import numpy as np
import pytest

from apocal.statistics import median_variance_factor, median_variance_factors


@pytest.mark.parametrize("n, expected", [(1, 1.0), (2, 1.0), (3, 1.346), (10, 1.383),
                                         (11, 1.509), (12, 1.410), (30, 1.501)])
def test_known_values(n, expected):
    assert median_variance_factor(n) == pytest.approx(expected, abs=2e-3)


def test_tends_to_pi_over_two():
    assert median_variance_factor(201) == pytest.approx(np.pi / 2, rel=0.01)


@pytest.mark.parametrize("n", [4, 5, 7])
def test_matches_monte_carlo(n):
    rng = np.random.default_rng(n)
    medians = np.median(rng.standard_normal((400_000, n)), axis=1)
    # 400k draws give the variance to about 0.25%
    assert medians.var() * n == pytest.approx(median_variance_factor(n), rel=0.01)


def test_array_version_marks_empty_pixels_nan():
    factors = median_variance_factors(np.array([[0, 1], [3, 3]]))
    assert np.isnan(factors[0, 0])
    assert factors[0, 1] == 1.0 and factors[1, 0] == pytest.approx(1.346, abs=2e-3)


def test_rejects_zero():
    with pytest.raises(ValueError):
        median_variance_factor(0)
