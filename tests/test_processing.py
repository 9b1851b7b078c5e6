"""Processing a block of rows at a time gives what processing the whole frame gives."""

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData

from apocal import Amplifier, Instrument
from apocal.instruments import KOSMOS
from apocal.simulate import simulate


class OverscanAbove(Instrument):
    """Two amplifiers stacked vertically, each with overscan rows beside it."""

    name = "stacked"
    amplifiers = (
        Amplifier("[1:40,1:30]", "[1:40,31:36]", gain=1.5, read_noise=4.0, name="bottom"),
        Amplifier("[1:40,37:66]", "[1:40,67:72]", gain=2.0, read_noise=3.0, name="top"),
    )


@pytest.fixture(scope="module")
def kosmos_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kosmos-rows")
    return simulate(KOSMOS(), folder, binning=(4, 4), bias=0, flat=1, arc=0, science=0, seed=3)


def _assert_blocks_equal_whole(prepared, whole, bounds):
    for start, stop in bounds:
        data, variance, flags = prepared.rows(start, stop)
        np.testing.assert_array_equal(data, whole.data[start:stop])
        np.testing.assert_array_equal(np.sqrt(variance), whole.uncertainty.array[start:stop])
        np.testing.assert_array_equal(flags, whole.flags[start:stop])


def test_blocks_of_a_file_match_the_processed_frame(kosmos_files):
    path = kosmos_files["flat"][0]
    instrument = kosmos_files.instrument
    whole = instrument.process(path)
    prepared = instrument.prepare(path)
    assert prepared.shape == whole.shape and prepared.header["APOVSC2"] == whole.header["APOVSC2"]
    _assert_blocks_equal_whole(prepared, whole, [(0, 1), (0, 7), (300, 517), (1000, 1024)])


def test_blocks_cross_amplifiers_stacked_in_rows_and_keep_the_mask():
    rng = np.random.default_rng(5)
    raw = rng.normal(1000, 3, (72, 40))
    raw[:30] += 200.0
    raw[36:66] += 400.0
    mask = np.zeros(raw.shape, bool)
    mask[10, 5] = mask[50, 7] = True
    frame = CCDData(raw, unit=u.adu, mask=mask, meta={"EXPTIME": 10.0})
    whole = OverscanAbove().process(frame, overscan="rows", overscan_window=5)
    assert whole.shape == (60, 40)
    np.testing.assert_allclose(whole.data[:30].mean(), 200 * 1.5, rtol=0.01)
    np.testing.assert_allclose(whole.data[30:].mean(), 400 * 2.0, rtol=0.01)
    assert whole.mask[10, 5] and whole.mask[50 - 6, 7]
    prepared = OverscanAbove().prepare(frame, overscan="rows", overscan_window=5)
    _assert_blocks_equal_whole(prepared, whole, [(0, 60), (25, 35), (29, 31), (59, 60)])
