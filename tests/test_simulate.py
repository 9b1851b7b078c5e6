import numpy as np
import pytest
from astropy.io import fits

from apocal.instruments import SBO, DISRed
from apocal.simulate import Truth, simulate


def test_same_seed_same_files(tmp_path):
    first = simulate(SBO(), tmp_path / "a", bias=1, flat=1, science=1, binning=(8, 8), seed=3)
    second = simulate(SBO(), tmp_path / "b", bias=1, flat=1, science=1, binning=(8, 8), seed=3)
    for a, b in zip(first["science"] + first["flat"], second["science"] + second["flat"]):
        np.testing.assert_array_equal(fits.getdata(a), fits.getdata(b))


def test_truth_round_trips_through_disk(tmp_path):
    sim = simulate(DISRed(), tmp_path, bias=1, flat=1, arc=1, science=1, binning=(8, 8))
    loaded = Truth.load(tmp_path)
    np.testing.assert_array_equal(loaded.response, sim.truth.response)
    assert loaded.frames == sim.truth.frames and loaded.gain == [1.88]
    name = sim["science"][0].name
    np.testing.assert_array_equal(loaded.cosmic_rays[name], sim.truth.cosmic_rays[name])


def test_kosmos_files_follow_the_real_conventions(night):
    sim = night("kosmos")
    header = fits.getheader(sim["arc"][0])
    assert header["BITPIX"] == 32 and header["INSTRUME"] == "kosmos"
    assert header["IMAGETYP"] == "Object" and header["NEON"] == "on"
    assert (header["NAXIS2"], header["NAXIS1"]) == (4096 // 4, 2148 // 4)
    assert sim["bias"][0].name == "bias.0001.fits"
    assert fits.getheader(sim["flat"][0])["QUARTZ"] == "on"


def test_raw_values_are_integers_within_the_adc_range(night):
    sim = night("dis-blue")
    data = fits.getdata(sim["science"][0])
    assert data.dtype.kind in "ui" and data.max() <= 65535
    assert (data == 65535).any()   # the saturated spot


def test_arc_lines_curve_along_the_slit(night):
    sim = night("kosmos")
    arc = sim.truth.arc_rate            # wavelength along rows for KOSMOS
    centre, edge = arc[:, 256], arc[:, 40]
    line = np.argmax(centre)
    assert np.argmax(edge[line - 20:line + 20]) + line - 20 != line


def test_no_overscan_frames_keep_a_steady_bias(night):
    sim = night("sbo")
    levels = [np.median(fits.getdata(p)) for p in sim["bias"]]
    assert np.ptp(levels) <= 1


def test_refuses_to_overwrite(tmp_path):
    simulate(SBO(), tmp_path, bias=1, flat=0, science=0, binning=(8, 8))
    with pytest.raises(FileExistsError):
        simulate(SBO(), tmp_path, bias=1, flat=0, science=0, binning=(8, 8))
