"""Subclasses written only from the documentation's text, run end to end.

The classes are taken from docs/custom_instrument.rst itself (its named code
blocks), so a signature the documentation promises and apocal does not keep
fails here, in `CalibrationSet` and in ``apocal reduce``.
"""

import re
import textwrap
from pathlib import Path

import numpy as np
from astropy.io import fits

import apocal
from apocal.cli import main

from .mosaic import detector_truth, write_mosaic
from .rawwriter import image, write_raw

DOCS = Path(__file__).resolve().parents[1] / "docs" / "custom_instrument.rst"


def docs_code(name: str) -> str:
    """The code block ``:name: <name>`` of the documentation page."""
    text = DOCS.read_text()
    found = re.search(r"\.\. code-block:: python\n   :name: " + re.escape(name)
                      + r"\n\n((?:   .*\n|\n)+)", text)
    assert found, f"no code block {name!r} in {DOCS.name}"
    return textwrap.dedent(found.group(1))


def docs_class(name: str, class_name: str, folder: Path):
    """Execute a documented example as a user's file would be, and return
    the class and the file (for ``--instrument file.py:Class``)."""
    path = folder / f"{name.replace('-', '_')}.py"
    path.write_text(docs_code(name))
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace[class_name], path


# ----------------------------------------------------------------------
# matches(cls, header, filename=None), classify(self, header),
# header_sections(self, header, index)
# ----------------------------------------------------------------------
def _slitcam_night(folder: Path) -> dict:
    """Raw SlitCam frames: 40 rows x 70 columns, the last COVER = 6 columns
    overscan; the kind is in OBJECT; GAIN is a gain setting (3)."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:40, 0:64]
    lamp = 1.0 + 0.5 * np.sin(x / 9.0)
    slit = np.where((y > 3) & (y < 36), 1.0, 0.01)
    electrons = {"bias": 0 * lamp, "flat": 20000.0 * lamp * slit,
                 "arc": np.where(x % 16 == 5, 30000.0, 50.0) * slit,
                 "target": 300.0 * slit + 2000.0 * np.exp(-0.5 * ((y - 20) / 2.0) ** 2)}
    files = {}
    for kind, count in (("bias", 3), ("flat", 3), ("arc", 1), ("target", 2)):
        for k in range(count):
            level = 900.0 + 3 * k
            raw = np.full((40, 70), level)
            raw[:, :64] += rng.poisson(electrons[kind]) / 1.4 + rng.normal(0, 5.0 / 1.4, (40, 64))
            raw[:, 64:] += rng.normal(0, 5.0 / 1.4, (40, 6))
            name = f"sc{len(files):03d}.fits"
            files[name] = kind
            write_raw(folder / name, image(np.round(raw), 16, 32768, cards={
                "INSTRUME": "SLITCAM", "OBJECT": kind, "EXPTIME": 0.0 if kind == "bias" else 10.0,
                "GAIN": 3, "COVER": 6}))
    return files


def test_documented_overrides_are_called_as_documented(tmp_path):
    SlitCam, source = docs_class("example-overrides", "SlitCam", tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    kinds = _slitcam_night(raw)
    paths = {kind: sorted(raw / n for n, k in kinds.items() if k == kind)
             for kind in set(kinds.values())}
    assert apocal.instrument_for(paths["bias"][0], candidates=[SlitCam]).name == "slitcam"

    cal = (apocal.CalibrationSet(SlitCam()).add_biases(paths["bias"])
           .add_flats(paths["flat"]).add_arcs(paths["arc"]))
    science = cal.calibrate(paths["target"][0])
    assert science.shape == (40, 64) and science.unit == "electron"
    assert science.header["APGAIN1"] == 1.4 and science.header["APGSRC1"] == "class"
    assert science.header["APBSEC1"] == "[65:70,1:40]"
    assert science.header["APBSRC1"] == "SlitCam.header_sections"

    out = tmp_path / "out"
    assert main(["reduce", str(raw), "-o", str(out), "--instrument", f"{source}:SlitCam",
                 "--no-report", "-q"]) == 0
    calibrated = sorted((out / "calibrated").rglob("*_cal.fits"))
    assert [p.name for p in calibrated] == ["sc007_cal.fits", "sc008_cal.fits"]


def test_a_matches_override_without_filename_is_valid(tmp_path):
    code = docs_code("example-overrides").replace(
        "def matches(cls, header, filename=None):\n"
        "        return header.get(\"INSTRUME\") == \"SLITCAM\" and str(filename).startswith(\"sc\")",
        "def matches(cls, header):\n        return header.get(\"INSTRUME\") == \"SLITCAM\"")
    assert "def matches(cls, header):" in code
    namespace: dict = {}
    exec(code, namespace)
    raw = tmp_path / "raw"
    raw.mkdir()
    _slitcam_night(raw)
    from apocal.survey import survey

    infos = survey(raw, namespace["SlitCam"]())
    assert all(info.usable for info in infos) and len(infos) == 9


# ----------------------------------------------------------------------
# Amplifiers in their own extensions, placed by DETSEC
# ----------------------------------------------------------------------
def test_documented_extension_example_reduces_a_mosaic_night(tmp_path):
    TwoChips, source = docs_class("example-extensions", "TwoChips", tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    zero = np.zeros((10, 24))
    for k in range(3):
        write_mosaic(raw / f"bias{k}.fits", electrons=zero,
                     cards={"INSTRUME": "TWOCHIPS", "IMAGETYP": "bias", "EXPTIME": 0.0})
        write_mosaic(raw / f"flat{k}.fits", electrons=zero + 30000.0,
                     cards={"INSTRUME": "TWOCHIPS", "IMAGETYP": "flat", "EXPTIME": 5.0})
    _, truth = write_mosaic(raw / "science.fits", cards={"INSTRUME": "TWOCHIPS"})

    cal = apocal.CalibrationSet(TwoChips()).add_biases(sorted(raw.glob("bias*")))
    cal.add_flats(sorted(raw.glob("flat*")))
    science = cal.calibrate(raw / "science.fits")
    np.testing.assert_allclose(science.data, truth, rtol=1e-5)

    out = tmp_path / "out"
    assert main(["reduce", str(raw), "-o", str(out), "--instrument", f"{source}:TwoChips",
                 "--no-report", "-q"]) == 0
    written = fits.getdata(next((out / "calibrated").rglob("science_cal.fits")))
    np.testing.assert_allclose(written, truth, rtol=1e-5)
    assert detector_truth().shape == written.shape
