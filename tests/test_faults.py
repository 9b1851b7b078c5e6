"""Faults and hostile input (issue 13): nothing lost, nothing written where it
should not be, every refusal one line naming the file.

Each case checks that the raw folder is byte-identical afterwards; cases
that interrupt a run check that the rerun's products equal, array by
array, those of an uninterrupted run. Interruptions are real: ``apocal
reduce`` runs in a subprocess that pauses at a named stage
(``APOCAL_PAUSE_AT``, see `apocal.stages`) where the test kills it with
SIGKILL, SIGINT or SIGTERM. A full disk and a read-only output folder use a
small tmpfs, mounted where the machine allows it (root), else skipped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from apocal import ApocalError, CalibrationSet
from apocal.cli import main
from apocal.instruments import SBO, DISRed
from apocal.io import RawImage, read_frame
from apocal.lock import FolderInUseError
from apocal.night import reduce_night
from apocal.simulate import simulate

# ----------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------
DIS_LABEL = "dis-red_8x8_R300_7500.0"


def _dis(folder, **counts):
    settings = dict(binning=(8, 8), bias=3, flat=3, arc=1, science=2, seed=1)
    settings.update(counts)
    return simulate(DISRed(), folder, **settings)


def _sbo(folder, **counts):
    settings = dict(binning=(8, 8), bias=3, dark=2, flat=3, science=2, seed=3, truth="sbo")
    settings.update(counts)
    return simulate(SBO(), folder, **settings)


def _gzip(path: Path) -> Path:
    """Replace ``path`` by ``path.gz``."""
    packed = path.with_name(path.name + ".gz")
    packed.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    path.unlink()
    return packed


def _snapshot(folder: Path) -> dict:
    """Every entry of a folder: type, size, time and content hash."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        content = None
        if stat.S_ISREG(info.st_mode):
            content = hashlib.md5(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            content = os.readlink(path)
        found[str(path.relative_to(folder))] = (stat.S_IFMT(info.st_mode), info.st_size,
                                                info.st_mtime_ns, content)
    return found


def _products(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.is_file() and p.parts[len(out.parts)] in ("masters", "calibrated"))


def _assert_same_products(out: Path, reference: Path) -> None:
    """The masters and calibrated frames of two reductions are equal, array
    by array and header by header."""
    assert _products(out) == _products(reference)
    for name in _products(out):
        if not name.endswith(".fits"):
            continue
        with fits.open(out / name) as mine, fits.open(reference / name) as theirs:
            assert [h.name for h in mine] == [h.name for h in theirs], name
            for a, b in zip(mine, theirs):
                assert a.header == b.header, (name, a.name)
                if a.data is None:
                    assert b.data is None
                else:
                    np.testing.assert_array_equal(a.data, b.data, err_msg=f"{name} {a.name}")
    assert _summary_content(out) == _summary_content(reference)


def _summary_content(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    for group in summary["groups"]:
        for entry in group["science"]:
            entry.pop("status")
    return {k: summary[k] for k in ("files", "groups", "problems")}


def _no_leftovers(out: Path) -> None:
    leftovers = [p for p in out.rglob("*") if p.name.endswith((".part", ".partial", ".old"))
                 or p.name == ".apocal-tmp"]
    assert leftovers == []


def _env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ)
    for key in ("APOCAL_PAUSE_AT", "APOCAL_PAUSE_FILE"):
        env.pop(key, None)
    temporary = tmp_path / "tmpdir"
    temporary.mkdir(exist_ok=True)
    env["TMPDIR"] = str(temporary)
    env.update(extra)
    return env


def _apocal(*args, env=None, timeout=120, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apocal.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout, **options)


class _Paused:
    """``apocal reduce`` in a subprocess, paused at ``stage``."""

    def __init__(self, tmp_path, raw, out, stage, *more):
        self.marker = tmp_path / f"paused-{time.monotonic_ns()}"
        env = _env(tmp_path, APOCAL_PAUSE_AT=stage, APOCAL_PAUSE_FILE=str(self.marker))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "apocal.cli", "reduce", str(raw), "-o", str(out),
             "--no-report", "-q", *more], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while not self.marker.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                _, err = self.process.communicate()
                raise AssertionError(f"never paused at {stage}: {err}")
            time.sleep(0.02)
        self.where = self.marker.read_text().split()[0]

    def stop(self, signum) -> tuple[int, str]:
        self.process.send_signal(signum)
        _, err = self.process.communicate(timeout=60)
        return self.process.returncode, err


def _one_line(err: str, *words) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("apocal: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# ----------------------------------------------------------------------
# A night and its uninterrupted reduction, shared by the interruption tests
# ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A DIS Red group (one flat and one science frame gzip-compressed) and
    an SBO group, and the reduction of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("night")
    raw = folder / "raw"
    sim = _dis(raw)
    _gzip(sim["flat"][0])
    _gzip(sim["science"][1])
    _sbo(raw)
    reference = folder / "reference"
    reduce_night(raw, reference, report=False)
    return raw, reference


def _interrupted(tmp_path, night, stage, signum=signal.SIGKILL, code=-signal.SIGKILL):
    """Pause a run at ``stage``, send ``signum``, rerun; the products must
    equal the uninterrupted run's and the raw folder be untouched."""
    raw, reference = night
    before = _snapshot(raw)
    out = tmp_path / "out"
    paused = _Paused(tmp_path, raw, out, stage)
    returncode, err = paused.stop(signum)
    assert returncode == code, err
    reduce_night(raw, out, report=False)        # the rerun
    _assert_same_products(out, reference)
    _no_leftovers(out)
    assert list((tmp_path / "tmpdir").iterdir()) == []      # nothing left in $TMPDIR
    assert _snapshot(raw) == before
    return out, err


# ----------------------------------------------------------------------
# Interruptions: kill -9, Ctrl-C, SIGTERM at known stages
# ----------------------------------------------------------------------
@pytest.mark.parametrize("stage", [
    "surveyed",
    "written:master_bias.fits",          # issue 13, failure 1: half a masters folder
    f"masters-built:{DIS_LABEL}",
    "written:target.0008r_cal.fits",     # one calibrated frame done
    "summary",
])
def test_kill_9_at_any_stage_then_rerun_equals_an_uninterrupted_run(tmp_path, night, stage):
    out, _ = _interrupted(tmp_path, night, stage)
    if stage.endswith("_cal.fits"):
        summary = json.loads((out / "summary.json").read_text())
        statuses = {e["raw"]: e["status"] for g in summary["groups"] for e in g["science"]}
        assert statuses["target.0008r.fits"] == "kept from an earlier run"


def test_ctrl_c_while_masters_are_written(tmp_path, night):
    out, err = _interrupted(tmp_path, night, "written:master_bias.fits", signal.SIGINT, 130)
    assert "run the same command again" in err
    assert "interrupted" in (out / "apocal.log").read_text()


def test_sigterm_while_decompressing_removes_the_temporary_copy(tmp_path, night):
    raw, _ = night
    out = tmp_path / "out"
    paused = _Paused(tmp_path, raw, out, "decompressing")
    assert list((out / ".apocal-tmp").iterdir())        # the copy is in the output folder
    returncode, err = paused.stop(signal.SIGTERM)
    assert returncode == 128 + signal.SIGTERM and "SIGTERM" in err
    assert not (out / ".apocal-tmp").exists()
    assert "interrupted (SIGTERM)" in (out / "apocal.log").read_text()
    reduce_night(raw, out, report=False)
    _assert_same_products(out, night[1])


def test_kill_9_while_decompressing_leaves_nothing_after_the_rerun(tmp_path, night):
    raw, reference = night
    out = tmp_path / "out"
    paused = _Paused(tmp_path, raw, out, "decompressing")
    paused.stop(signal.SIGKILL)
    assert list((out / ".apocal-tmp").iterdir())        # what kill -9 leaves...
    assert list((tmp_path / "tmpdir").iterdir()) == []  # ...is not in $TMPDIR
    reduce_night(raw, out, report=False)
    _no_leftovers(out)                                  # and the rerun removed it
    _assert_same_products(out, reference)


def test_a_half_written_masters_folder_of_an_older_version_is_rebuilt(tmp_path, night):
    """What apocal 0.1 left after a kill during a master write: a master
    without calibration_set.json. The rerun finishes the job."""
    raw, reference = night
    out = tmp_path / "out"
    paused = _Paused(tmp_path, raw, out, "surveyed")
    paused.stop(signal.SIGKILL)
    shutil.copytree(reference / "masters" / DIS_LABEL, out / "masters" / DIS_LABEL)
    (out / "masters" / DIS_LABEL / "calibration_set.json").unlink()
    (out / "masters" / DIS_LABEL / "build.json").unlink()
    reduce_night(raw, out, report=False)
    _assert_same_products(out, reference)


def test_a_second_run_into_the_same_folder_is_refused_naming_the_first(tmp_path, night,
                                                                        capsys):
    raw, reference = night
    out = tmp_path / "out"
    paused = _Paused(tmp_path, raw, out, "surveyed")
    try:
        with pytest.raises(FolderInUseError, match=f"in use by another apocal run "
                                                   f"\\(process {paused.process.pid}\\)"):
            reduce_night(raw, out, report=False)
        assert main(["reduce", str(raw), "-o", str(out), "-q"]) == 1
        _one_line(capsys.readouterr().err, str(out), f"process {paused.process.pid}")
    finally:
        paused.stop(signal.SIGKILL)
    reduce_night(raw, out, report=False)
    _assert_same_products(out, reference)


# ----------------------------------------------------------------------
# Full disk, read-only output (a small tmpfs; needs root)
# ----------------------------------------------------------------------
def _mount_small_disk(tmp_path, size):
    point = tmp_path / "disk"
    point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'no mount'})")

    def remount(options):
        subprocess.run(["mount", "-o", f"remount,{options}", str(point)], check=True)

    return point, remount


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs mount: ``(size) -> (folder, remount)``; unmounted at the end."""
    mounted = []

    def mount(size):
        mounted.append(_mount_small_disk(tmp_path, size))
        return mounted[-1]

    yield mount
    for point, _ in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


# The disk fills up at three places: the decompressed copy of a raw frame,
# a master, a calibrated frame.
@pytest.mark.parametrize("size,where", [("48k", ".apocal-tmp"), ("120k", "master_bias.fits"),
                                        ("1600k", "_cal.fits")])
def test_a_full_disk_is_named_and_the_rerun_finishes(tmp_path, night, small_disk, size, where,
                                                     capsys):
    raw, reference = night
    disk, remount = small_disk(size)
    out = disk / "out"
    before = _snapshot(raw)
    assert main(["reduce", str(raw), "-o", str(out), "--no-report", "-q"]) == 1
    line = _one_line(capsys.readouterr().err, "No space left on device", str(out), where)
    assert "[Errno" not in line
    assert "stopped:" in (out / "apocal.log").read_text()
    _no_leftovers(out)
    remount("size=20m")
    reduce_night(raw, out, report=False)
    _assert_same_products(out, reference)
    assert _snapshot(raw) == before


def test_a_read_only_output_folder_is_named(tmp_path, night, small_disk, capsys):
    raw, _ = night
    disk, remount = small_disk("1m")
    (disk / "existing").mkdir()
    remount("ro")
    for out in (disk / "new", disk / "existing"):
        assert main(["reduce", str(raw), "-o", str(out), "-q"]) == 1
        _one_line(capsys.readouterr().err, str(out), "Read-only file system")


# ----------------------------------------------------------------------
# Reruns, resumes and stale products
# ----------------------------------------------------------------------
@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "raw"
    _dis(folder)
    return folder


def test_rerun_without_overwrite_is_refused_and_with_it_redone(raw, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reduce", str(raw), "-o", str(out), "--no-report", "-q"]) == 0
    stamp = (out / "summary.json").stat().st_mtime_ns
    assert main(["reduce", str(raw), "-o", str(out), "--no-report", "-q"]) == 1
    assert "holds a finished reduction" in capsys.readouterr().err
    assert (out / "summary.json").stat().st_mtime_ns == stamp
    assert main(["reduce", str(raw), "-o", str(out), "--no-report", "-q", "--overwrite"]) == 0
    assert (out / "summary.json").stat().st_mtime_ns != stamp


def test_overwrite_removes_products_of_raw_frames_since_removed(raw, tmp_path):
    out = tmp_path / "out"
    reduce_night(raw, out, report=False)
    gone = out / "calibrated" / DIS_LABEL / "target.0009r_cal.fits"
    assert gone.exists()
    (raw / "target.0009r.fits").unlink()
    reduce_night(raw, out, overwrite=True, report=False)
    assert not gone.exists()
    assert "target.0009r_cal.fits" in (out / "apocal.log").read_text()
    fresh = tmp_path / "fresh"
    reduce_night(raw, fresh, report=False)
    _assert_same_products(out, fresh)


def test_a_resume_rebuilds_masters_whose_inputs_changed(raw, tmp_path, monkeypatch):
    import apocal.night as night_module

    out = tmp_path / "out"
    real = night_module._calibrate_science

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(night_module, "_calibrate_science", stop)
    with pytest.raises(KeyboardInterrupt):
        reduce_night(raw, out, report=False)
    monkeypatch.setattr(night_module, "_calibrate_science", real)
    assert (out / "masters" / DIS_LABEL / "master_bias.fits").exists()
    (raw / "bias.0003r.fits").unlink()           # the user removes a bad bias, and resumes
    result = reduce_night(raw, out, report=False)
    group, = result.summary["groups"]
    assert any("masters rebuilt" in n and "bias.0003r.fits" in n for n in group["notes"])
    assert group["masters"]["bias"]["inputs"] == ["bias.0001r.fits", "bias.0002r.fits"]
    fresh = tmp_path / "fresh"
    reduce_night(raw, fresh, report=False)
    assert _products(out) == _products(fresh)
    master = read_frame(out / "masters" / DIS_LABEL / "master_bias.fits")
    np.testing.assert_array_equal(master.data, read_frame(
        fresh / "masters" / DIS_LABEL / "master_bias.fits").data)


def test_a_resume_redoes_what_a_corrected_header_changes(raw, tmp_path, monkeypatch):
    """A user fixes a card of a frame (same pixels) before resuming: the
    products that depend on it are made again, not kept."""
    import apocal.night as night_module

    out = tmp_path / "out"
    real, written = night_module.write_frame, []

    def stop_at_the_second(*args, **kwargs):
        written.append(args[1])
        if len(written) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(night_module, "write_frame", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        reduce_night(raw, out, report=False)
    monkeypatch.setattr(night_module, "write_frame", real)
    for name, card, value in (("target.0008r.fits", "EXPTIME", 450.0),
                              ("flat.0005r.fits", "OBSERVER", "corrected")):
        with fits.open(raw / name, mode="update") as hdul:
            hdul[0].header[card] = value
    result = reduce_night(raw, out, report=False)
    group, = result.summary["groups"]
    assert any("masters rebuilt" in n and "changed: flat.0005r.fits" in n
               for n in group["notes"])
    assert [e["status"] for e in group["science"]] == ["calibrated", "calibrated"]
    assert read_frame(out / group["science"][0]["output"]).header["EXPTIME"] == 450.0


def test_calibration_set_overwrite_leaves_no_stale_master(tmp_path):
    sim = _sbo(tmp_path / "raw", science=0)
    folder = tmp_path / "masters"
    with_dark = CalibrationSet(SBO()).add_biases(sim["bias"]).add_darks(sim["dark"])
    with_dark.write(folder)
    assert (folder / "master_dark.fits").exists()
    CalibrationSet(SBO()).add_biases(sim["bias"]).write(folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["calibration_set.json",
                                                        "master_bias.fits"]
    assert CalibrationSet.read(folder).master_dark is None


def test_stale_part_files_are_removed_by_the_next_run(raw, tmp_path):
    out = tmp_path / "out"
    (out / "calibrated" / DIS_LABEL).mkdir(parents=True)
    stale = out / "calibrated" / DIS_LABEL / ".target.0008r_cal.fits.0a1b2c3d.part"
    stale.write_bytes(b"half a file")
    (out / "run.json").write_text(json.dumps({"raw_dir": str(raw.resolve()), "finished": None,
                                              "options": None, "instrument": None}))
    reduce_night(raw, out, overwrite=True, report=False)
    assert not stale.exists()
    _no_leftovers(out)


def test_an_empty_run_record_is_named(raw, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("")
    assert main(["reduce", str(raw), "-o", str(out), "-q", "--no-report"]) == 1
    _one_line(capsys.readouterr().err, "run.json", "--overwrite")
    assert main(["reduce", str(raw), "-o", str(out), "-q", "--no-report", "--overwrite"]) == 0


# ----------------------------------------------------------------------
# The output folder: links, permissions
# ----------------------------------------------------------------------
@pytest.mark.parametrize("planted", ["apocal.log", "calibrated", "masters"])
def test_no_write_through_a_link_planted_in_the_output_folder(raw, tmp_path, planted, capsys):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    if planted == "apocal.log":
        elsewhere.write_text("precious\n")
    else:
        elsewhere.mkdir()
    (out / planted).symlink_to(elsewhere)
    before = _snapshot(tmp_path / "elsewhere") if elsewhere.is_dir() else elsewhere.read_text()
    assert main(["reduce", str(raw), "-o", str(out), "-q"]) == 1
    _one_line(capsys.readouterr().err, str(out / planted), "symbolic link")
    after = _snapshot(tmp_path / "elsewhere") if elsewhere.is_dir() else elsewhere.read_text()
    assert after == before


def test_a_link_planted_during_the_run_is_not_written_through(raw, tmp_path):
    """The folders on the way are opened without following links, so even a
    link made after the start-up check is refused."""
    from apocal import output

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / "calibrated").mkdir(parents=True)
    elsewhere.mkdir()
    (out / "calibrated" / DIS_LABEL).symlink_to(elsewhere)
    with output.no_links_under(out), pytest.raises(output.LinkError, match="symbolic link"):
        output.write_atomically(out / "calibrated" / DIS_LABEL / "x_cal.fits", b"data")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("umask,report", [(0o022, True), (0o002, False)])
def test_products_honour_the_umask(raw, tmp_path, umask, report):
    old = os.umask(umask)
    try:
        reduce_night(raw, tmp_path / "out", report=report)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()
             and p.name != ".apocal.lock"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~umask}
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").rglob("*")
            if p.is_dir()} == {0o777 & ~umask}


# ----------------------------------------------------------------------
# Bad frames: each named, left out, the rest reduced
# ----------------------------------------------------------------------
def _reduce(raw, tmp_path, **options):
    before = _snapshot(raw)
    result = reduce_night(raw, tmp_path / "out", report=False, **options)
    assert _snapshot(raw) == before
    return result


def _problem(result, name, *words):
    found = [p for p in result.problems if name in p]
    assert found, (name, result.problems)
    assert all(word in found[0] for word in words), (words, found[0])
    return found[0]


def _calibrated(result) -> list[str]:
    return sorted(e["raw"] for g in result.summary["groups"] for e in g["science"])


def _primary(data, **cards) -> bytes:
    import io

    buffer = io.BytesIO()
    fits.PrimaryHDU(data, header=fits.Header(cards)).writeto(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("case,content,words", [
    ("truncated", lambda good: good[:4000], ["is truncated"]),
    ("zero-byte", lambda good: b"", ["not a FITS file"]),
    ("text", lambda good: b"SIMPLE = this is not FITS\n" * 200, ["FITS"]),
    ("corrupt-gzip", lambda good: b"\x1f\x8b\x08\x00" + b"garbage" * 500, ["FITS"]),
    ("gzip-damaged-inside", lambda good: gzip.compress(good[: len(good) // 2]),
     ["truncated"]),
])
def test_an_unreadable_flat_is_named_and_left_out(raw, tmp_path, case, content, words):
    good = (raw / "flat.0004r.fits").read_bytes()
    name = "flat.0099r.fits" + (".gz" if "gzip" in case else "")
    (raw / name).write_bytes(content(good))
    result = _reduce(raw, tmp_path)
    _problem(result, name, *words)
    group, = result.summary["groups"]
    assert len(group["masters"]["flat"]["inputs"]) == 3
    assert _calibrated(result) == ["target.0008r.fits", "target.0009r.fits"]


@pytest.mark.parametrize("kind", ["bias", "flat"])
def test_one_frame_of_another_shape_is_left_out_of_its_master(raw, tmp_path, kind):
    """Issue 13, failure 2: the master was dropped, the night exited 0."""
    odd = raw / f"{kind}.0050r.fits"
    with fits.open(raw / f"{kind}.0001r.fits" if kind == "bias" else raw / "flat.0004r.fits") \
            as hdul:
        hdul[0].data = hdul[0].data[:-8]
        hdul.writeto(odd)
    result = _reduce(raw, tmp_path)
    # its DATASEC no longer fits: the survey says it is no raw DIS frame
    _problem(result, odd.name, "is not a raw dis-red frame", "header DATASEC", "does not fit")
    group, = result.summary["groups"]
    assert len(group["masters"][kind]["inputs"]) == 3 and odd.name not in \
        group["masters"][kind]["inputs"]
    assert all(e[kind] for e in group["science"])


def test_one_bias_of_another_shape_without_sections_is_left_out(tmp_path):
    """Issue 13, failure 2, for a camera without data sections (SBO): the
    frame fits no section check, only the combination refused it."""
    raw = tmp_path / "raw"
    sim = _sbo(raw)
    with fits.open(sim["bias"][0]) as hdul:
        hdul[0].data = hdul[0].data[:-4, :-4]
        hdul.writeto(raw / "Bias_BIN1_050.fits")
    result = _reduce(raw, tmp_path)
    _problem(result, "Bias_BIN1_050.fits", "unlike", "left out of the master bias")
    group, = result.summary["groups"]
    assert len(group["masters"]["bias"]["inputs"]) == 3
    assert all(e["bias"] for e in group["science"])


def test_a_science_frame_of_another_shape_is_named(raw, tmp_path):
    with fits.open(raw / "target.0008r.fits") as hdul:
        hdul[0].data = hdul[0].data[:, :-16]
        hdul.writeto(raw / "target.0050r.fits")
    result = _reduce(raw, tmp_path)
    _problem(result, "target.0050r.fits", "is not a raw dis-red frame", "does not fit")
    assert _calibrated(result) == ["target.0008r.fits", "target.0009r.fits"]


@pytest.mark.parametrize("card", ["EXPTIME", "IMAGETYP"])
def test_a_frame_without_a_needed_card_is_named(raw, tmp_path, card):
    with fits.open(raw / "target.0008r.fits") as hdul:
        del hdul[0].header[card]
        hdul.writeto(raw / "target.0050r.fits")
    result = _reduce(raw, tmp_path)
    _problem(result, "target.0050r.fits", card)
    assert "target.0050r.fits" not in _calibrated(result)


@pytest.mark.parametrize("kind", ["bias", "target"])
def test_an_all_nan_frame_is_named_and_left_out(raw, tmp_path, kind):
    """Issue 13, failure 5."""
    source = raw / ("bias.0001r.fits" if kind == "bias" else "target.0008r.fits")
    with fits.open(source) as hdul:
        header = hdul[0].header.copy()
        data = np.full(hdul[0].data.shape, np.nan, np.float32)
    for key in ("BZERO", "BSCALE"):
        header.remove(key, ignore_missing=True)
    name = f"{kind}.0060r.fits"
    fits.PrimaryHDU(data, header=header).writeto(raw / name)
    result = _reduce(raw, tmp_path)
    _problem(result, name, "no finite pixel value")
    group, = result.summary["groups"]
    assert name not in group["masters"]["bias"]["inputs"] and name not in _calibrated(result)
    assert len(group["masters"]["bias"]["inputs"]) == 3


def test_an_identical_copy_is_counted_once(raw, tmp_path):
    """Issue 13, failure 12 (a copy with another header is a copy too)."""
    with fits.open(raw / "bias.0002r.fits") as hdul:
        hdul[0].header["OBSERVER"] = "someone else"
        hdul.writeto(raw / "bias.0070r.fits")
    result = _reduce(raw, tmp_path)
    _problem(result, "bias.0070r.fits", "same pixel data as bias.0002r.fits")
    group, = result.summary["groups"]
    assert group["masters"]["bias"]["inputs"] == ["bias.0001r.fits", "bias.0002r.fits",
                                                  "bias.0003r.fits"]


@pytest.mark.parametrize("other", ["target.0008r.fits.gz", "target.0008r.fit",
                                   "TARGET.0008r.FITS"])
def test_files_of_one_stem_get_distinct_products(raw, tmp_path, other):
    """Issue 13, failure 3: both became target.0008r_cal.fits."""
    import io

    buffer = io.BytesIO()
    with fits.open(raw / "target.0008r.fits") as hdul:
        hdul[0].data[10, 10] += 1                  # not a copy
        hdul.writeto(buffer)
    payload = buffer.getvalue()
    (raw / other).write_bytes(gzip.compress(payload) if other.endswith(".gz") else payload)
    result = _reduce(raw, tmp_path)
    group, = result.summary["groups"]
    outputs = {e["raw"]: e["output"] for e in group["science"]}
    assert len(outputs) == 3 and len(set(outputs.values())) == 3
    assert all(e["status"] == "calibrated" for e in group["science"])
    for name, output in outputs.items():
        assert read_frame(tmp_path / "out" / output).header["RAWFILE"] == name


def test_non_ascii_and_html_file_names(raw, tmp_path):
    """Issue 13, failure 4 (unicode) and HTML in names and headers."""
    os.rename(raw / "target.0008r.fits", raw / "café-星 ß.fits")
    os.rename(raw / "bias.0002r.fits", raw / "biás.0002r.fits")
    with fits.open(raw / "target.0009r.fits") as hdul:
        hdul[0].header["OBJECT"] = "<script>alert(1)</script>"
        hdul.writeto(raw / "<img src=x onerror=alert(1)>.fits")
    (raw / "target.0009r.fits").unlink()
    before = _snapshot(raw)
    result = reduce_night(raw, tmp_path / "out", report=True)
    assert _snapshot(raw) == before
    assert result.problems == []
    group, = result.summary["groups"]
    assert "biás.0002r.fits" in group["masters"]["bias"]["inputs"]
    outputs = {e["raw"]: e["output"] for e in group["science"]}
    assert outputs["café-星 ß.fits"].endswith("café-星 ß_cal.fits")
    header = read_frame(tmp_path / "out" / outputs["café-星 ß.fits"]).header
    assert header["RAWFILE"] == "caf\\xe9-\\u661f \\xdf.fits"
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script>" not in page and "<img src=x" not in page
    with pytest.raises(ApocalError, match="finished"):     # a rerun is clean too
        reduce_night(raw, tmp_path / "out", report=False)
    reduce_night(raw, tmp_path / "out", report=False, overwrite=True)


def test_very_long_file_names_and_configuration_values(tmp_path):
    """Issue 13, failure 4: ENAMETOOLONG aborted the night."""
    raw = tmp_path / "raw"
    sim = _sbo(raw)
    long_name = "x" * 235 + ".fits"
    os.rename(sim["science"][0], raw / long_name)
    for path in raw.glob("*.fits"):
        if path.name.startswith(("domeflat", "x", "target")):
            with fits.open(path, mode="update") as hdul:
                hdul[0].header["FILTER"] = "R" * 300
    result = _reduce(raw, tmp_path)
    assert result.problems == []
    group, = result.summary["groups"]
    assert len(group["label"]) <= 100 and len(group["science"]) == 2
    for path in (tmp_path / "out").rglob("*"):
        assert len(path.name.encode()) <= 255


def test_path_traversal_in_header_values_stays_inside(tmp_path):
    raw = tmp_path / "raw"
    _sbo(raw)
    for path in raw.glob("*.fits"):
        with fits.open(path, mode="update") as hdul:
            hdul[0].header["FILTER"] = "../../../../escaped"
            hdul[0].header["OBJECT"] = "../../../escaped-object"
    outside = set(tmp_path.rglob("*"))
    result = _reduce(raw, tmp_path / "nested")
    assert result.problems == []
    new = set(tmp_path.rglob("*")) - outside
    assert all((tmp_path / "nested") in p.parents or p == tmp_path / "nested" for p in new)
    assert not any("escaped" in p.name and "sbo" not in p.name for p in new)


def test_spaces_and_unicode_in_folder_names(tmp_path):
    raw = tmp_path / "nuit d'été 2025" / "raw frames"
    _dis(raw)
    result = _reduce(raw, tmp_path / "réduit" / "out put")
    assert result.problems == [] and len(_calibrated(result)) == 2


def test_mixed_instruments_in_one_folder(tmp_path):
    raw = tmp_path / "raw"
    _dis(raw)
    _sbo(raw)
    (raw / "alien.fits").write_bytes(_primary(np.zeros((8, 8), np.int16), INSTRUME="HIRES"))
    result = _reduce(raw, tmp_path)
    _problem(result, "alien.fits", "no instrument recognises")
    assert sorted(g["instrument"] for g in result.summary["groups"]) == ["dis-red", "sbo"]
    assert len(_calibrated(result)) == 4


def test_a_dangling_link_is_named(raw, tmp_path):
    (raw / "gone.fits").symlink_to(tmp_path / "nowhere.fits")
    result = _reduce(raw, tmp_path)
    _problem(result, "gone.fits", "broken symbolic link")
    assert len(_calibrated(result)) == 2


def test_a_fifo_named_fits_does_not_hang_summary_or_reduce(raw, tmp_path):
    """Issue 13, failure 10: only regular files are read."""
    os.mkfifo(raw / "pipe.fits")
    summary = _apocal("summary", raw, env=_env(tmp_path), timeout=60)
    assert summary.returncode == 0 and "not a regular file" in summary.stdout
    result = _reduce(raw, tmp_path)
    _problem(result, "pipe.fits", "a FIFO")


def test_an_unreadable_file_is_named(raw, tmp_path):
    """As root, permissions stop nobody: the run is made without the
    capabilities that override them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    (raw / "flat.0004r.fits").chmod(0)
    before = _snapshot(raw)
    result = subprocess.run(
        [sys.executable, "-m", "apocal.cli", "reduce", str(raw), "-o", str(tmp_path / "out"),
         "--no-report"], capture_output=True, text=True, timeout=120, env=_env(tmp_path),
        preexec_fn=_without_file_capabilities if os.geteuid() == 0 else None)
    assert result.returncode == 0, result.stderr
    assert "flat.0004r.fits: cannot be read (Permission denied)" in result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["groups"][0]["science"]) == 2
    assert len(summary["groups"][0]["masters"]["flat"]["inputs"]) == 2
    assert _snapshot(raw) == before


def _without_file_capabilities():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):       # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:        # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "cannot drop a capability")


# ----------------------------------------------------------------------
# Header and gzip bombs
# ----------------------------------------------------------------------
def _bomb_header(**cards) -> bytes:
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -64
    header["NAXIS"] = 2
    header["NAXIS1"] = 200_000
    header["NAXIS2"] = 200_000
    for key, value in cards.items():
        header[key] = value
    return header.tostring().encode() + b"\0" * 2880 * 10


def test_a_gzip_file_declaring_a_huge_image_is_refused_before_decompressing(raw, tmp_path):
    with fits.open(raw / "target.0008r.fits") as hdul:
        cards = {k: hdul[0].header[k] for k in ("INSTRUME", "DETECTOR", "IMAGETYP", "EXPTIME",
                                                 "GRATING", "CCDBIN1", "CCDBIN2")
                 if k in hdul[0].header}
    (raw / "bomb.fits.gz").write_bytes(gzip.compress(_bomb_header(**cards)))
    result = _reduce(raw, tmp_path)
    _problem(result, "bomb.fits.gz", "GiB")
    assert len(_calibrated(result)) == 2


def test_a_gzip_stream_longer_than_its_header_says_is_not_all_decompressed(tmp_path):
    image = np.arange(64 * 32, dtype=np.int16).reshape(64, 32)
    frame = _primary(image)
    path = tmp_path / "long.fits.gz"
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(frame)
        out.write(b"\0" * (16 << 20))              # 16 MB more than the header declares
    raw = RawImage(path)
    np.testing.assert_array_equal(raw.rows(0, 64), image)
    # the header and the image's blocks, not the 16 MB after them
    assert os.path.getsize(raw.file.readable()) == 2880 + 2880 * -(-image.nbytes // 2880)


@pytest.mark.parametrize("keywords", [5_000, 20_000])
def test_a_header_of_many_keywords_is_read_or_named(raw, tmp_path, keywords):
    # the file is put together by hand: astropy takes minutes to add 20000 cards
    good = (raw / "target.0008r.fits").read_bytes()
    end = next(i for i in range(0, len(good), 80) if good[i:i + 80].rstrip() == b"END")
    header = good[:end] + b"".join(f"HIERARCH JUNK{i} = {i}".ljust(80).encode()
                                   for i in range(keywords)) + b"END".ljust(80)
    header += b" " * (-len(header) % 2880)
    data = bytearray(good[(end // 2880 + 1) * 2880:])
    data[1000] ^= 1                                       # not a copy
    (raw / "target.0080r.fits").write_bytes(header + bytes(data))
    result = _reduce(raw, tmp_path)
    if keywords < 10_000:
        assert result.problems == []
        assert "target.0080r.fits" in _calibrated(result)
    else:
        _problem(result, "target.0080r.fits", "header is longer than 10080 cards")
        assert len(_calibrated(result)) == 2


def test_a_header_bomb_is_named_without_being_parsed(raw, tmp_path):
    """A gzip file of 40 kB whose header runs to 100 000 cards."""
    cards = "".join(f"{'JUNK':8}= {index:20d}" + " " * 50 for index in range(100_000))
    header = "SIMPLE  = " + f"{'T':>20}" + " " * 50 + cards
    (raw / "bomb.fits.gz").write_bytes(gzip.compress(header.encode()))
    started = time.monotonic()
    result = _reduce(raw, tmp_path)
    _problem(result, "bomb.fits.gz", "header is longer than")
    assert len(_calibrated(result)) == 2
    assert time.monotonic() - started < 60       # not a timing test: a hang guard


# ----------------------------------------------------------------------
# Instrument plugins that misbehave
# ----------------------------------------------------------------------
PLUGIN = '''
import sys
from apocal.instruments import DISRed

FAILING = None
{top}

class Plugin(DISRed):
    def __init__(self, *args, **kwargs):
        {init}
        super().__init__(*args, **kwargs)

    def classify(self, header):
        if header.get("DATE-OBS") == FAILING:
            {classify}
        return super().classify(header)
'''


@pytest.mark.parametrize("top,init,classify,words", [
    ("sys.exit(3)", "pass", "pass", ["plugin.py:Plugin", "sys.exit(3)"]),
    ("", "raise RuntimeError('boom in init')", "pass", ["plugin.py:Plugin",
                                                       "RuntimeError: boom in init"]),
])
def test_a_plugin_failing_to_load_gives_one_line(raw, tmp_path, capsys, top, init, classify,
                                                 words):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN.format(top=top, init=init, classify=classify))
    code = main(["reduce", str(raw), "-o", str(tmp_path / "out"), "--instrument",
                 f"{plugin}:Plugin", "-q"])
    assert code == 1
    _one_line(capsys.readouterr().err, *words)


@pytest.mark.parametrize("classify,words", [
    ("raise RuntimeError('boom in classify')", ["RuntimeError: boom in classify"]),
    ("sys.exit(4)", ["sys.exit(4)"]),
])
def test_a_plugin_failing_on_one_file_leaves_that_file_out(raw, tmp_path, classify, words,
                                                           capsys):
    plugin = tmp_path / "plugin.py"
    failing = fits.getheader(raw / "target.0009r.fits")["DATE-OBS"]
    plugin.write_text(PLUGIN.format(top=f"FAILING = {failing!r}", init="pass",
                                    classify=classify))
    code = main(["reduce", str(raw), "-o", str(tmp_path / "out"), "--instrument",
                 f"{plugin}:Plugin", "--no-report", "-q"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    assert "target.0009r.fits" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    problem, = [p for p in summary["problems"] if "target.0009r.fits" in p]
    assert all(word in problem for word in words)
    assert [e["raw"] for e in summary["groups"][0]["science"]] == ["target.0008r.fits"]


def test_an_unexpected_error_in_a_group_is_one_problem_with_the_traceback_in_the_log(
        raw, tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN.format(top="", init="pass", classify="pass")
                      + "\n    def raw_flags(self, *args, **kwargs):\n"
                        "        raise ZeroDivisionError('bug in raw_flags')\n")
    from apocal.detection import load_instrument

    result = _reduce(raw, tmp_path, instrument=load_instrument(f"{plugin}:Plugin"))
    _problem(result, "group not reduced", "ZeroDivisionError: bug in raw_flags")
    assert "Traceback" in (tmp_path / "out" / "apocal.log").read_text()


# ----------------------------------------------------------------------
# A night of 200 frames: none dropped, memory bounded
# ----------------------------------------------------------------------
def test_a_night_of_200_frames_reduces_every_frame_in_bounded_memory(tmp_path):
    raw = tmp_path / "raw"
    simulate(SBO(), raw, binning=(8, 8), bias=60, dark=40, flat=50, science=50, seed=5)
    assert len(list(raw.glob("*.fits"))) == 200
    out = tmp_path / "out"
    # the run reports its own peak resident memory (VmHWM) as it ends
    script = ("import sys; from apocal.cli import main; code = main(sys.argv[1:]); "
              "print(*[l for l in open('/proc/self/status') if l.startswith('VmHWM')], "
              "file=sys.stderr); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script, "reduce", str(raw), "-o", str(out),
                             "--no-report", "-q"], env=_env(tmp_path), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    peak = int(result.stderr.split("VmHWM:")[1].split()[0]) * 1024
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == []
    group, = summary["groups"]
    assert len(group["science"]) == 50
    assert {k: len(v["inputs"]) for k, v in group["masters"].items()} == \
        {"bias": 60, "dark": 40, "flat": 50}
    assert peak < 300 * 2**20, f"peak memory {peak / 2**20:.0f} MB"
