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


def test_products_and_frames_of_another_shape_are_not_raw_frames(tmp_path):
    simulate(DISRed(), tmp_path, binning=(8, 8), bias=2, flat=1, arc=0, science=1)
    from apocal import CalibrationSet

    cal = CalibrationSet(DISRed()).add_biases(sorted(tmp_path.glob("bias*")))
    from apocal.io import write_frame

    write_frame(cal.master_bias, tmp_path / "BIAS.fits")          # apocal's own product
    trimmed = fits.getdata(tmp_path / "flat.0003r.fits")[:100, :200].astype(np.float64)
    header = fits.getheader(tmp_path / "flat.0003r.fits")
    fits.PrimaryHDU(trimmed, header=header).writeto(tmp_path / "FLAT.fits")  # combined elsewhere
    infos = {i.name: i for i in survey(tmp_path)}
    assert infos["BIAS.fits"].problem.startswith("is not a raw frame: it carries APSTAGE")
    assert infos["FLAT.fits"].problem.startswith("is not a raw dis-red frame: ")
    assert "does not fit the 200x100" in infos["FLAT.fits"].problem
    assert sum(i.usable for i in infos.values()) == 4


def test_a_fifo_or_folder_named_fits_is_left_alone(tmp_path):
    import os

    simulate(DISRed(), tmp_path, binning=(8, 8), bias=1, flat=0, arc=0, science=0)
    os.mkfifo(tmp_path / "pipe.fits")
    (tmp_path / "folder.fits").mkdir()
    infos = {i.name: i for i in survey(tmp_path)}
    assert infos["bias.0001r.fits"].usable
    assert "is not a regular file (a FIFO)" in infos["pipe.fits"].problem
    assert "is not a regular file (a folder)" in infos["folder.fits"].problem


def test_multi_extension_frames_are_described_by_their_image_extension(shared_data):
    # ALFOSC: an empty primary; CCDSUM is in extension 1, so the 1x1 and 1x2
    # biases are told apart.
    from .alfosc import ALFOSC

    infos = survey(shared_data / "alfosc", ALFOSC())
    binnings = {i.name: i.binning for i in infos}
    assert all(i.usable for i in infos)
    assert [binnings[f"ALDc2100{n}.fits"] for n in (34, 35, 36)] == ["1x1"] * 3
    assert sum(b == "1x2" for b in binnings.values()) == 21
    from apocal.grouping import group_frames

    (group,) = group_frames(infos)
    assert group.binning == "1x2" and len(group.biases) == 10
    assert {f.binning for f in group.biases} == {"1x2"}
    assert (len(group.flats), len(group.arcs), len(group.science)) == (5, 2, 4)
