"""The apocal command: help, exit codes, summary, reduce."""

import subprocess
import sys
from pathlib import Path

import pytest

from apocal.cli import main
from apocal.instruments import DISBlue
from apocal.simulate import simulate

KAST = Path(__file__).with_name("kast.py")


@pytest.mark.parametrize("command", [[], ["summary"], ["reduce"], ["demo"]])
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main(command + ["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for word in {(): ["summary", "reduce", "demo"],
                 ("summary",): ["RAW_DIR", "--instrument", "--ecsv"],
                 ("reduce",): ["--output", "--combine", "--sigma-clip", "--flat-response",
                               "--flat-order", "--cosmic-rays", "--instrument", "--overwrite"],
                 ("demo",): ["OUT_DIR", "--size", "--overwrite"]}[tuple(command)]:
        assert word in text


def test_summary_lists_every_file(tmp_path, capsys):
    simulate(DISBlue(), tmp_path, binning=(8, 8), bias=1, flat=1, arc=1, science=1)
    (tmp_path / "junk.fits").write_text("not fits")
    assert main(["summary", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "bias.0001b.fits" in out and "dis-blue" in out and "arc" in out
    assert "junk.fits" in out and "not a FITS file" in out


def test_summary_ecsv(tmp_path, capsys):
    simulate(DISBlue(), tmp_path, binning=(8, 8), bias=1, flat=0, arc=0, science=1)
    assert main(["summary", str(tmp_path), "--ecsv"]) == 0
    from astropy.table import Table

    table = Table.read(capsys.readouterr().out, format="ascii.ecsv")
    assert list(table["kind"]) == ["bias", "science"]


def test_errors_are_one_line_with_a_non_zero_exit(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("apocal: error:") and "missing" in err and "\n" not in err
    assert main(["reduce", str(tmp_path), "-o", str(tmp_path / "o"), "--instrument", "hires"]) == 1
    assert "unknown instrument 'hires'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["reduce", str(tmp_path)])          # -o is required
    assert stop.value.code == 2


def test_reduce_with_a_user_instrument_file(shared_data, tmp_path, capsys):
    code = main(["reduce", str(shared_data / "kast-red"), "-o", str(tmp_path / "out"),
                 "--instrument", f"{KAST}:KastRed", "--no-report", "-q"])
    assert code == 0
    assert len(list((tmp_path / "out" / "calibrated").rglob("*_cal.fits"))) == 5
    assert main(["reduce", str(shared_data / "kast-red"), "-o", str(tmp_path / "out"),
                 "--instrument", f"{KAST}:KastRed", "--no-report", "-q"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_a_group_without_a_calibrated_frame_makes_reduce_fail(tmp_path, capsys):
    # An SBO camera has no overscan: without biases or darks nothing removes
    # its bias level, so its science frame cannot be calibrated.
    from apocal.instruments import SBO

    simulate(SBO(), tmp_path / "raw", binning=(8, 8), bias=0, dark=0, flat=2, science=1)
    code = main(["reduce", str(tmp_path / "raw"), "-o", str(tmp_path / "out"), "--no-report",
                 "-q"])
    assert code == 1
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("apocal: error:")]
    assert len(lines) == 1
    assert "produced no calibrated frame" in lines[0] and "nothing removes the bias" in lines[0]


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("apocal")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("apocal ")
