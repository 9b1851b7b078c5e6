"""report.html: every group's plots exist and the page says what was used for what."""

import html
import re

import pytest
from astropy.io import fits

from apocal.instruments import KOSMOS, SBO
from apocal.night import reduce_night
from apocal.simulate import simulate


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    raw = folder / "raw"
    simulate(KOSMOS(), raw, binning=(8, 8), bias=3, flat=3, arc=2, science=1, truth="k",
             seed=1)
    simulate(SBO(), raw, binning=(8, 8), bias=3, dark=2, flat=3, science=1, truth="s",
             header_gain=False, seed=2)
    (raw / "broken.0099.fits").write_bytes((raw / "bias.0001.fits").read_bytes()[:6000])
    result = reduce_night(raw, folder / "out")
    return result, folder / "out"


def test_report_has_every_group_and_its_figures(reduced):
    result, out = reduced
    page = result.report.read_text()
    assert result.report == out / "report.html"
    for record in result.summary["groups"]:
        assert f"id='{record['label']}'" in page
    images = re.findall(r"<img src='([^']+)'", page)
    assert images and all((out / image).is_file() for image in images)
    kosmos = [i for i in images if i.startswith("report/kosmos")]
    for plot in ("master-bias", "master-flat", "master-arc", "bias-histograms", "read-noise",
                 "lamp-spectrum", "slit-illumination", "arc-slices"):
        assert any(plot in i for i in kosmos), plot
    sbo = [i for i in images if i.startswith("report/sbo")]
    # no gain in these SBO headers: it was measured, and the report shows how
    assert any("photon-transfer" in i for i in sbo)
    assert "measured from this night" in page
    assert "no problems" not in page.lower()
    # each group opens with the verdict of its uncertainty self-check, and its pulls
    for record in result.summary["groups"]:
        check = record["uncertainty_check"]
        assert check["passed"] is True, check
        heading = page.index(f"id='{record['label']}'")
        assert page.index(html.escape(check["verdict"]), heading) < page.index("<table>", heading)
        assert any(f"{record['label']}-uncertainty-check" in i for i in images)


def test_report_shows_problems_and_what_calibrated_what(reduced):
    result, out = reduced
    page = result.report.read_text()
    assert "broken.0099.fits: is truncated" in page
    science = result.summary["groups"][0]["science"][0]
    assert f"<a href='{science['output']}'>" in page
    assert "master_flat.fits" in page and "master_bias.fits" in page


def test_figures_are_png(reduced):
    _, out = reduced
    for png in (out / "report").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_demo_is_the_main_job(tmp_path):
    """`apocal demo` writes calibrated KOSMOS, DIS Red, DIS Blue and SBO frames and a report."""
    from apocal.cli import main

    assert main(["demo", str(tmp_path / "demo"), "-q"]) == 0
    reduced = tmp_path / "demo" / "reduced"
    assert (reduced / "report.html").is_file()
    instruments = {fits.getheader(p)["INSTRUME"] for p in reduced.rglob("*_cal.fits")}
    assert instruments == {"kosmos", "DIS", "SBO campus camera"}
    detectors = {fits.getheader(p).get("DETECTOR") for p in reduced.rglob("*_cal.fits")}
    assert {"red", "blue"} <= detectors
