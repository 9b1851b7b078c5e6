import pytest
from astropy.io import fits

import apocal
from apocal import UnknownInstrumentError
from apocal.instruments import KOSMOS, SBO, DISBlue, DISRed

from .kast import KastRed


@pytest.mark.parametrize("name, cls", [("kosmos", KOSMOS), ("dis-red", DISRed),
                                       ("dis-blue", DISBlue), ("sbo", SBO)])
def test_simulated_frames_are_recognised_and_classified(night, name, cls):
    sim = night(name)
    for kind, files in sim.files.items():
        for path in files:
            instrument = apocal.instrument_for(path)
            assert isinstance(instrument, cls)
            assert instrument.classify(fits.getheader(path)) == kind


def test_dis_camera_from_file_name_when_detector_is_missing(tmp_path):
    header = fits.Header({"INSTRUME": "DIS"})
    for name, cls in (("arc.0012r.fits", DISRed), ("arc.0012b.fits", DISBlue)):
        fits.PrimaryHDU(header=header).writeto(tmp_path / name)
        assert isinstance(apocal.instrument_for(tmp_path / name), cls)


def test_real_arcsat_headers_are_sbo(shared_data):
    for path in (shared_data / "arcsat-2025").glob("*.fits"):
        assert isinstance(apocal.instrument_for(path), SBO)


def test_unknown_instrument_is_a_clear_error(shared_data):
    path = shared_data / "kast-red" / "r112.fits.gz"
    with pytest.raises(UnknownInstrumentError, match=r"r112\.fits\.gz: no instrument recognises"):
        apocal.instrument_for(path)
    # a user's subclass joins the candidates
    assert isinstance(apocal.instrument_for(path, candidates=[KOSMOS, KastRed]), KastRed)


def test_header_without_any_clue():
    with pytest.raises(UnknownInstrumentError, match="no INSTRUME, DETECTOR or SWCREATE"):
        apocal.instrument_for(fits.Header({"OBJECT": "x"}))


def test_not_fits_is_a_frame_error(tmp_path):
    path = tmp_path / "junk.fits"
    path.write_bytes(b"\0" * 5000)
    with pytest.raises(apocal.FrameError, match="junk.fits"):
        apocal.instrument_for(path)
