import numpy as np
import pytest

from apocal.flat_response import fit_response, illuminated_rows, lamp_spectrum


def _flat(n_spat=200, n_disp=600, lit=(30, 170)):
    x = np.linspace(0, 1, n_disp)
    lamp = 1000 * (0.2 + np.exp(-((x - 0.6) / 0.3) ** 2))
    slit = np.zeros(n_spat)
    slit[lit[0]:lit[1]] = 1.0
    return np.outer(slit, lamp), lamp


def test_illuminated_rows_finds_the_slit_even_when_it_is_short():
    image, _ = _flat(lit=(80, 120))            # only 20% of the rows are lit
    rows = illuminated_rows(image, dispersion_axis=1)
    assert rows.sum() == 40 and rows[80] and not rows[79]


def test_lamp_spectrum_ignores_dead_pixels():
    image, lamp = _flat()
    image[100, 300] = 0.0
    spectrum = lamp_spectrum(image, 1, illuminated_rows(image, 1))
    np.testing.assert_allclose(spectrum, lamp, rtol=1e-10)


@pytest.mark.parametrize("mode, options", [("spline", {}), ("poly", {"order": 12}),
                                           ("boxcar", {"width": 5})])
def test_fits_follow_a_smooth_lamp(mode, options):
    _, lamp = _flat()
    rng = np.random.default_rng(0)
    noisy = lamp * (1 + 0.001 * rng.standard_normal(lamp.size))
    fitted = fit_response(noisy, mode, **options)
    limit = 0.001 if mode == "boxcar" else 0.0005
    assert np.median(np.abs(fitted / lamp - 1)) < limit


def test_spline_ignores_a_bad_column():
    _, lamp = _flat()
    spoiled = lamp.copy()
    spoiled[250] *= 0.5
    fitted = fit_response(spoiled, "spline")
    assert fitted[250] == pytest.approx(lamp[250], rel=2e-3)


def test_none_is_a_constant_and_unknown_mode_an_error():
    _, lamp = _flat()
    assert np.all(fit_response(lamp, None) == np.median(lamp))
    with pytest.raises(ValueError, match="response"):
        fit_response(lamp, "legendre")
