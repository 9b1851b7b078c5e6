import numpy as np
import pytest
from astropy.io import fits

from apocal import ApocalError
from apocal.instruments import DISBlue, DISRed, KOSMOS
from apocal.simulate import simulate
from apocal.survey import survey, survey_table

from .kast import KastRed


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    simulate(DISRed(), folder, binning=(8, 8), bias=1, flat=1, arc=1, science=1, truth="t-red")
    simulate(DISBlue(), folder, binning=(8, 8), bias=1, flat=1, arc=1, science=1, truth="t-blue")
    good = folder / "flat.0002r.fits"
    (folder / "cut.0099r.fits").write_bytes(good.read_bytes()[:5000])
    (folder / "notes.fits").write_text("observing log, not an image")
    fits.PrimaryHDU(np.zeros((5, 5), np.int16), header=fits.Header({"INSTRUME": "HIRES"})) \
        .writeto(folder / "other.fits")
    return folder


def test_every_file_is_listed_with_kind_and_camera(mixed):
    infos = {i.name: i for i in survey(mixed)}
    assert infos["bias.0001r.fits"].instrument.name == "dis-red"
    assert infos["bias.0001b.fits"].instrument.name == "dis-blue"
    assert [infos[n].kind for n in ("bias.0001r.fits", "flat.0002r.fits", "HeNeAr.0003r.fits",
                                    "target.0004r.fits")] == ["bias", "flat", "arc", "science"]
    assert infos["HeNeAr.0003b.fits"].lamps == "He Ne Ar"
    assert infos["target.0004r.fits"].configuration["grating"] == "R300"
    assert infos["target.0004r.fits"].exptime == 600.0


def test_unusable_files_are_listed_with_the_reason(mixed):
    infos = {i.name: i for i in survey(mixed)}
    assert "truncated" in infos["cut.0099r.fits"].problem
    assert "not a FITS file" in infos["notes.fits"].problem
    assert "no instrument recognises" in infos["other.fits"].problem
    assert sum(not i.usable for i in infos.values()) == 3


def test_table(mixed):
    table = survey_table(survey(mixed))
    assert table.colnames == ["file", "instrument", "kind", "exptime", "binning", "configuration",
                              "lamps", "date", "problem"]
    assert len(table) == 11 and str(table["exptime"].unit) == "s"


def test_named_instrument_refuses_frames_of_another(mixed):
    infos = {i.name: i for i in survey(mixed, KOSMOS())}
    assert infos["bias.0001r.fits"].problem == "is a dis-red frame, not kosmos"


def test_user_instrument_on_real_frames(shared_data):
    infos = survey(shared_data / "kast-red", KastRed())
    assert [i.kind for i in infos].count("flat") == 3 and all(i.usable for i in infos)


def test_missing_folder(tmp_path):
    with pytest.raises(ApocalError, match="not a folder"):
        survey(tmp_path / "nothing")
