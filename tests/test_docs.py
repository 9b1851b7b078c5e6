"""The documentation builds with Sphinx, warnings as errors (its examples are
doctested separately: ``docs/*.rst`` are in pytest's testpaths)."""

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "html" / "api" / "apocal.CalibrationSet.html").is_file()
    assert "Add your own instrument" in (tmp_path / "html" / "custom_instrument.html").read_text()
