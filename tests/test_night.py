"""reduce_night: outputs, grouping, safety (raw folder, overwrite, interruption)."""

import hashlib
import json
import stat

import numpy as np
import pytest
from astropy.io import fits

from apocal import ApocalError
from apocal.instruments import DISRed, SBO
from apocal.io import read_frame
from apocal.night import ReductionOptions, reduce_night
from apocal.simulate import simulate


def _night(folder):
    simulate(DISRed(), folder, binning=(8, 8), bias=3, flat=3, arc=1, science=2, truth="red",
             seed=1)
    simulate(DISRed(), folder, binning=(8, 8), bias=0, flat=3, arc=1, science=1,
             config={"GRATING": "R1200"}, prefix="hi-", first_number=30, truth="hi", seed=2)
    simulate(SBO(), folder, binning=(8, 8), bias=3, dark=2, flat=3, science=2, truth="sbo",
             seed=3)
    return folder


def _snapshot(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns,
                     hashlib.md5(p.read_bytes()).hexdigest()) for p in sorted(folder.iterdir())}


@pytest.fixture
def raw(tmp_path):
    return _night(tmp_path / "raw")


def test_a_night_is_reduced_with_the_right_masters(raw, tmp_path):
    result = reduce_night(raw, tmp_path / "out", report=False)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    groups = {g["label"]: g for g in summary["groups"]}
    assert set(groups) == {"dis-red_8x8_R300_7500.0", "dis-red_8x8_R1200_7500.0", "sbo_8x8_R"}
    high = groups["dis-red_8x8_R1200_7500.0"]
    assert [s["raw"] for s in high["science"]] == ["hi-target.0034r.fits"]
    assert set(high["masters"]["flat"]["inputs"]) == {"hi-flat.0030r.fits", "hi-flat.0031r.fits",
                                                     "hi-flat.0032r.fits"}
    assert high["masters"]["bias"]["inputs"] == ["bias.0001r.fits", "bias.0002r.fits",
                                                 "bias.0003r.fits"]
    for group in groups.values():
        for science in group["science"]:
            assert science["flat"] == f"masters/{group['label']}/master_flat.fits"
            assert science["bias"] == f"masters/{group['label']}/master_bias.fits"
            frame = read_frame(tmp_path / "out" / science["output"])
            assert frame.unit == "electron" and frame.flags is not None
            assert np.isfinite(frame.uncertainty.array).all()
    assert groups["sbo_8x8_R"]["science"][0]["dark"] == "masters/sbo_8x8_R/master_dark.fits"
    assert result.problems == []
    assert (tmp_path / "out" / "apocal.log").read_text().count("group ") == 3
    assert "dis-red" in (tmp_path / "out" / "files.ecsv").read_text()


def test_bad_files_are_reported_and_the_rest_reduced(raw, tmp_path):
    good = raw / "flat.0004r.fits"
    (raw / "flat.0099r.fits").write_bytes(good.read_bytes()[:4000])
    (raw / "alien.fits").write_bytes(_alien())
    result = reduce_night(raw, tmp_path / "out", report=False)
    joined = "\n".join(result.problems)
    assert "flat.0099r.fits: is truncated" in joined
    assert "alien.fits: no instrument recognises" in joined
    assert sum(len(g["science"]) for g in result.summary["groups"]) == 5
    log = (tmp_path / "out" / "apocal.log").read_text()
    assert "flat.0099r.fits: is truncated" in log


def _alien() -> bytes:
    import io

    buffer = io.BytesIO()
    fits.PrimaryHDU(np.zeros((4, 4), np.int16), header=fits.Header({"INSTRUME": "HIRES"})) \
        .writeto(buffer)
    return buffer.getvalue()


def test_a_group_without_flats_is_reported_not_dropped(tmp_path):
    simulate(DISRed(), tmp_path / "raw", binning=(8, 8), bias=3, flat=0, arc=1, science=1)
    result = reduce_night(tmp_path / "raw", tmp_path / "out", report=False)
    assert any("no master flat" in p for p in result.problems)
    assert result.summary["groups"][0]["science"][0]["flat"] is None
    assert result.summary["groups"][0]["science"][0]["status"] == "calibrated"


def test_the_raw_folder_is_never_written(raw, tmp_path):
    before = _snapshot(raw)
    for path in raw.iterdir():
        path.chmod(stat.S_IRUSR | stat.S_IRGRP)
    raw.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        reduce_night(raw, tmp_path / "out", report=False)
        assert _snapshot(raw) == before
    finally:
        raw.chmod(stat.S_IRWXU)
    with pytest.raises(ApocalError, match="must not be inside the raw folder"):
        reduce_night(raw, raw / "out", report=False)
    assert not (raw / "out").exists()


def test_a_finished_reduction_is_not_overwritten(raw, tmp_path):
    reduce_night(raw, tmp_path / "out", report=False)
    product = next((tmp_path / "out" / "calibrated").rglob("*.fits"))
    stamp = product.stat().st_mtime_ns
    with pytest.raises(ApocalError, match="holds a finished reduction"):
        reduce_night(raw, tmp_path / "out", report=False)
    assert product.stat().st_mtime_ns == stamp
    reduce_night(raw, tmp_path / "out", overwrite=True, report=False)
    assert product.stat().st_mtime_ns != stamp


def test_rerun_after_an_interruption_finishes_the_job(raw, tmp_path, monkeypatch):
    import apocal.night as night

    real_write = night.write_frame
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(night, "write_frame", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reduce_night(raw, tmp_path / "out", report=False)
    monkeypatch.setattr(night, "write_frame", real_write)
    done_before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*_cal.fits")}
    assert len(done_before) == 2
    assert not (tmp_path / "out" / "summary.json").exists()

    result = reduce_night(raw, tmp_path / "out", report=False)
    outputs = list((tmp_path / "out").rglob("*_cal.fits"))
    assert len(outputs) == 5
    assert all(p.stat().st_mtime_ns == t for p, t in done_before.items())
    statuses = [s["status"] for g in result.summary["groups"] for s in g["science"]]
    assert statuses.count("kept from an earlier run") == 2
    assert not list((tmp_path / "out").rglob("*.part"))


def test_resuming_with_other_options_is_refused(raw, tmp_path, monkeypatch):
    import apocal.night as night

    monkeypatch.setattr(night, "_reduce_group", _boom)
    with pytest.raises(KeyboardInterrupt):
        reduce_night(raw, tmp_path / "out", report=False)
    monkeypatch.undo()
    with pytest.raises(ApocalError, match="unfinished reduction .* other options"):
        reduce_night(raw, tmp_path / "out", options=ReductionOptions(combine="mean"),
                     report=False)


def _boom(*args, **kwargs):
    raise KeyboardInterrupt


def test_real_arcsat_night(shared_data, tmp_path):
    result = reduce_night(shared_data / "arcsat-2025", tmp_path / "out", report=False)
    group, = result.summary["groups"]
    assert group["instrument"] == "sbo" and len(group["science"]) == 6
    detector = group["detector"]
    assert detector["measured"] and 1.1 < detector["gain"][0] < 1.6
    assert 10 < detector["read_noise"][0] < 20
    assert result.problems == []
    light = read_frame(tmp_path / "out" / group["science"][0]["output"])
    assert light.unit == "electron" and np.isfinite(light.uncertainty.array).all()


def test_real_kast_night_with_a_user_subclass(shared_data, tmp_path):
    from .kast import KastRed

    result = reduce_night(shared_data / "kast-red", tmp_path / "out", instrument=KastRed(),
                          report=False)
    group, = result.summary["groups"]
    assert [s["raw"] for s in group["science"]] == ["r136.fits.gz", "r153.fits.gz",
                                                   "r154.fits.gz", "r534.fits.gz", "r535.fits.gz"]
    assert set(group["masters"]) == {"bias", "flat", "arc"}
    flat = read_frame(tmp_path / "out" / group["masters"]["flat"]["file"])
    good = ~flat.mask
    assert np.median(flat.data[good]) == pytest.approx(1.0, abs=0.01)


def test_sbo_night_without_biases_uses_darks_of_each_exposure(tmp_path):
    simulate(SBO(), tmp_path / "raw", binning=(8, 8), bias=0, dark=3, flat=3, science=2,
             exptime={"dark": 60.0, "flat": 5.0, "science": 60.0}, truth="a", seed=1)
    simulate(SBO(), tmp_path / "raw", binning=(8, 8), bias=0, dark=3, flat=0, science=0,
             exptime={"dark": 5.0}, first_number=40, truth="b", seed=2)
    result = reduce_night(tmp_path / "raw", tmp_path / "out", report=False)
    group, = result.summary["groups"]
    assert set(group["masters"]) == {"dark:5", "dark:60", "flat"}
    assert group["masters"]["dark:5"]["file"] == "masters/sbo_8x8_R/master_dark_5s.fits"
    for science in group["science"]:
        assert science["dark"] == "masters/sbo_8x8_R/master_dark_60s.fits"
        assert science["bias"] is None
    assert result.problems == []    # darks stand in for the bias: not a problem


def test_a_compressed_file_damaged_inside_is_left_out_of_its_master(tmp_path):
    import gzip

    sim = simulate(DISRed(), tmp_path / "raw", binning=(8, 8), bias=3, flat=3, arc=1, science=1)
    good = sim["flat"][0].read_bytes()
    # a gzip file whose header is intact but whose data stop short: the survey
    # cannot see it without reading the data
    (tmp_path / "raw" / "flat.0050r.fits.gz").write_bytes(gzip.compress(good[: len(good) // 2]))
    result = reduce_night(tmp_path / "raw", tmp_path / "out", report=False)
    group, = result.summary["groups"]
    assert any("flat.0050r.fits.gz" in p and "left out of the master flat" in p
               for p in result.problems)
    assert len(group["masters"]["flat"]["inputs"]) == 3
    assert group["science"][0]["flat"] is not None
