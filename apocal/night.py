"""Reducing a whole night from a folder: `reduce_night`.

This module only arranges the work: it surveys the folder
(`apocal.survey`), groups frames (`apocal.grouping`), builds each group's
masters with `CalibrationSet`, calibrates the science frames, and writes
masters, calibrated frames, a machine-readable summary, a log and a report.
It holds no calibration logic of its own.

Safety: nothing is written into the raw folder and no raw file is
modified; outputs are written atomically; an output folder holding a
finished reduction is not touched without ``overwrite``; an unfinished one
(interrupted run) is resumed with the same options, keeping what is done.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from . import __version__
from .calibration import CalibrationSet
from .calibration.files import MANIFEST
from .exceptions import ApocalError, ApocalWarning, FrameError
from .grouping import Group, group_frames
from .instrument import Instrument
from .io import atomic_write_bytes, read_header, write_frame
from .survey import FrameInfo, survey, survey_table

if TYPE_CHECKING:
    from .stacking import StackedImage

__all__ = ["ReductionOptions", "Reduction", "reduce_night", "RUN_FILE", "SUMMARY_FILE"]

log = logging.getLogger("apocal")

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
LOG_FILE = "apocal.log"
FILES_TABLE = "files.ecsv"
#: The uncertainty self-check of a group, beside its masters.
CHECK_FILE = "uncertainty_check.json"


@dataclass
class ReductionOptions:
    """The choices a user makes in the lab notebook.

    Attributes
    ----------
    combine : {"median", "mean"}
        Combination of biases, darks and flats.
    sigma_clip : float or None
        Reject values this many times their uncertainty from the stack median.
    flat_response : str or None
        ``"spline"``, ``"poly"``, ``"boxcar"``, ``"none"`` or None for each
        instrument's default (spline for KOSMOS, poly for DIS).
    flat_order, flat_knots, boxcar_width : int or None
        Settings of the lamp-spectrum fit.
    overscan : {"rows", "level"}
        Overscan estimate.
    cosmic_rays : bool
        Reject cosmic rays in calibrated science frames.
    """

    combine: str = "median"
    sigma_clip: float | None = None
    flat_response: str | None = None
    flat_order: int | None = None
    flat_knots: int | None = None
    boxcar_width: int | None = None
    overscan: str = "rows"
    cosmic_rays: bool = False


@dataclass
class GroupContext:
    """What the report needs of a reduced group besides its JSON record."""

    group: Group
    instrument: Instrument | None = None
    calibration: CalibrationSet | None = None
    photon_transfer: object = None
    uncertainty_check: object = None


@dataclass
class Reduction:
    """What `reduce_night` did.

    Attributes
    ----------
    output_dir : pathlib.Path
    summary : dict
        The content of ``summary.json``.
    problems : list of str
        Everything that went wrong (the rest was reduced).
    report : pathlib.Path or None
        ``report.html``, when it could be written.
    """

    output_dir: Path
    summary: dict
    problems: list = field(default_factory=list)
    report: Path | None = None

    @property
    def failed_checks(self) -> list[str]:
        """One line per group whose uncertainty self-check failed."""
        return [f"group {group['label']}: {group['uncertainty_check']['verdict']}"
                for group in self.summary["groups"]
                if (group.get("uncertainty_check") or {}).get("passed") is False]

    @property
    def failed_groups(self) -> list[str]:
        """One line per group that had science frames but calibrated none of
        them, saying why (its first problem)."""
        lines = []
        for group in self.summary["groups"]:
            if group.get("science_frames") and not group["science"]:
                why = group["problems"][0] if group["problems"] else "no reason recorded"
                lines.append(f"group {group['label']} produced no calibrated frame: {why}")
        return lines

    def stack(self, target: str | None = None, **options: Any) -> StackedImage:
        """Align and co-add the calibrated science frames of one target
        (`apocal.stack`).

        Parameters
        ----------
        target : str, optional
            Object name (header OBJECT, case ignored) of the frames to
            stack; needed when the night observed more than one.
        **options
            Options of `apocal.stack` (``projection``,
            ``sigma_clip``, ``spatial_axis`` for spectra, ...).

        Returns
        -------
        apocal.stacking.StackedImage

        Raises
        ------
        ApocalError
            If no calibrated frame matches, or ``target`` is needed.
        """
        from .stacking import stack

        files = [self.output_dir / entry["output"] for group in self.summary["groups"]
                 for entry in group["science"]]
        objects = {path: str(read_header(path).get("OBJECT", "")).strip() for path in files}
        found = ", ".join(sorted(set(objects.values()))) or "none"
        if target is None and len(set(objects.values())) > 1:
            raise ApocalError(f"{self.output_dir}: frames of several targets ({found}); "
                              f"pass target= to choose one")
        chosen = [p for p in files if target is None or objects[p].lower() == target.strip().lower()]
        if not chosen:
            of = "" if target is None else f" of {target!r}"
            raise ApocalError(f"{self.output_dir}: no calibrated frame{of} (targets: {found})")
        return stack(chosen, **options)


def reduce_night(raw_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                 instrument: Instrument | None = None,
                 options: ReductionOptions | None = None, overwrite: bool = False,
                 progress: bool = False, report: bool = True) -> Reduction:
    """Reduce every group of frames in ``raw_dir`` into ``output_dir``.

    Parameters
    ----------
    raw_dir : str or path-like
        Folder of raw frames; read only.
    output_dir : str or path-like
        Where masters (``masters/<group>/``), calibrated frames
        (``calibrated/<group>/<name>_cal.fits``), ``summary.json``,
        ``files.ecsv``, ``apocal.log`` and ``report.html`` go. Must not be
        inside ``raw_dir``.
    instrument : Instrument, optional
        Use this instrument for every file instead of recognising each
        file's own.
    options : ReductionOptions, optional
    overwrite : bool
        Redo a finished reduction in ``output_dir``, replacing its files.
    progress : bool
        Show progress bars (only on a terminal).
    report : bool
        Write ``report.html``.

    Returns
    -------
    Reduction

    Raises
    ------
    ApocalError
        If the folders are unusable, or ``output_dir`` holds a finished
        reduction (without ``overwrite``) or an unfinished one made with
        other options.
    """
    options = options or ReductionOptions()
    raw_dir, output_dir = Path(raw_dir).resolve(), Path(output_dir).resolve()
    _check_folders(raw_dir, output_dir)
    run = _start_run(raw_dir, output_dir, options, instrument, overwrite)
    handler = _log_to_file(output_dir / LOG_FILE)
    try:
        log.info("apocal %s: reducing %s into %s%s", __version__, raw_dir, output_dir,
                 " (resuming)" if run.get("resumed") else "")
        infos = survey(raw_dir, instrument)
        problems = [f"{info.name}: {info.problem}" for info in infos if not info.usable]
        for problem in problems:
            log.warning(problem)
        groups = group_frames(infos)
        log.info("%d files, %d usable, %d group(s)", len(infos),
                 sum(i.usable for i in infos), len(groups))
        records, contexts = [], {}
        for group in tqdm(groups, desc="groups", unit="group", disable=not progress or None,
                          leave=False):
            record, contexts[group.label] = _reduce_group(group, output_dir, options,
                                                          overwrite, progress)
            problems.extend(f"{group.label}: {p}" for p in record["problems"])
            records.append(record)
        summary = {
            "apocal_version": __version__,
            "raw_dir": str(raw_dir),
            "output_dir": str(output_dir),
            "started": run["started"],
            "finished": _now(),
            "options": asdict(options),
            "files": [_file_record(info) for info in infos],
            "groups": records,
            "problems": problems,
        }
        atomic_write_bytes(output_dir / FILES_TABLE, _ecsv(survey_table(infos)), overwrite=True)
        atomic_write_bytes(output_dir / SUMMARY_FILE,
                           json.dumps(summary, indent=1, default=_json_default).encode(),
                           overwrite=True)
        result = Reduction(output_dir, summary, problems)
        if report:
            from .report import write_report

            try:
                result.report = write_report(output_dir, summary, contexts)
            except Exception as err:  # a broken plot must not lose the reduction
                message = f"report could not be written: {type(err).__name__}: {err}"
                log.error(message)
                result.problems.append(message)
        run["finished"] = summary["finished"]
        atomic_write_bytes(output_dir / RUN_FILE, json.dumps(run, indent=1).encode(),
                           overwrite=True)
        log.info("finished: %d calibrated frame(s), %d problem(s)",
                 sum(len(r["science"]) for r in records), len(result.problems))
        return result
    finally:
        log.removeHandler(handler)
        handler.close()


# ----------------------------------------------------------------------
# One group
# ----------------------------------------------------------------------
def _reduce_group(group: Group, output_dir: Path, options: ReductionOptions, overwrite: bool,
                  progress: bool) -> tuple[dict, GroupContext]:
    log.info("group %s: %d bias, %d dark, %d flat, %d arc, %d science", group.describe(),
             len(group.biases), len(group.darks), len(group.flats), len(group.arcs),
             len(group.science))
    record = {"label": group.label, "instrument": group.instrument.name,
              "binning": group.binning, "configuration": group.configuration,
              "science_frames": len(group.science),
              "notes": list(group.notes), "problems": [], "masters": {}, "science": [],
              "detector": {}, "uncertainty_check": None}
    masters_dir = output_dir / "masters" / group.label
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ApocalWarning)
        context = GroupContext(group)
        try:
            cal = context.calibration = _masters(group, masters_dir, options, overwrite,
                                                 record, context)
            if cal is not None:
                _calibrate_science(group, cal, output_dir, options, overwrite, progress, record)
        except ApocalError as err:   # one group's failure must not stop the night
            record["problems"].append(f"group not reduced: {err}")
    for warning in caught:
        if issubclass(warning.category, ApocalWarning):
            record["notes"].append(str(warning.message))
    record["notes"] = list(dict.fromkeys(record["notes"]))    # each once
    for note in record["notes"]:
        log.info("%s: %s", group.label, note)
    for problem in record["problems"]:
        log.warning("%s: %s", group.label, problem)
    return record, context


def _masters(group, masters_dir, options, overwrite, record, context) -> CalibrationSet | None:
    instrument = context.instrument = _detector(group, record, context)
    if instrument is None:
        return None
    manifest = masters_dir / MANIFEST
    if manifest.exists() and not overwrite:
        log.info("%s: masters already built, reading %s", group.label, masters_dir)
        cal = CalibrationSet.read(masters_dir, instrument=instrument)
    else:
        cal = CalibrationSet(instrument, overscan=options.overscan)
        combine = {"method": options.combine}
        if options.sigma_clip is not None:
            combine["sigma_clip"] = options.sigma_clip
        steps = [("bias", group.biases, lambda files: cal.add_biases(files, **combine)),
                 ("dark", group.darks, lambda files: cal.add_darks(files, **combine)),
                 ("flat", group.flats, lambda files: cal.add_flats(files, **_flat_options(
                     instrument, options), **combine))]
        if instrument.dispersion_axis is not None:
            steps.append(("arc", group.arcs, lambda files: cal.add_arcs(files)))
        for kind, frames, build in steps:
            _build_master(kind, [f.path for f in frames], build, record)
        try:
            cal.write(masters_dir, overwrite=overwrite)
        except ApocalError:
            record["problems"].append("no master could be built")
        record["uncertainty_check"] = _check_uncertainty(cal, masters_dir, context)
    if record["uncertainty_check"] is None:
        record["uncertainty_check"] = _read_check(masters_dir)
    for entry in cal.master_files():
        if entry.file is None:
            continue
        record["masters"][entry.key] = {
            "file": str(Path("masters") / group.label / entry.file),
            "inputs": [v for k, v in entry.master.header.items() if k.startswith("IMCMB")],
        }
    if group.science:
        # Without biases, darks of matching exposure stand in (the SBO way).
        missing = [kind for kind, there in (("bias", "bias" in record["masters"]
                                                     or bool(cal.master_darks)),
                                            ("flat", "flat" in record["masters"])) if not there]
        for kind in missing:
            record["problems"].append(f"no master {kind}: science frames of {group.describe()} "
                                      f"are calibrated without one")
    return cal


def _check_uncertainty(cal, masters_dir, context) -> dict:
    """Check the set's uncertainty on its own frames and keep the result
    beside its masters (a resumed run reads it there)."""
    try:
        check = context.uncertainty_check = cal.check_uncertainty()
    except ApocalError as err:
        result = {"passed": None, "verdict": f"uncertainty not checked: {err}", "tests": [],
                  "messages": []}
    else:
        result = check.to_dict()
        log.info("%s: %s", masters_dir.name, check.verdict)
    if masters_dir.is_dir():
        atomic_write_bytes(masters_dir / CHECK_FILE, json.dumps(result, indent=1).encode(),
                           overwrite=True)
    return result


def _read_check(masters_dir) -> dict | None:
    try:
        return json.loads((masters_dir / CHECK_FILE).read_text())
    except (OSError, ValueError):
        return None


def _build_master(kind, paths, build, record) -> None:
    """Build one master; a file that turns out unreadable is left out, the
    rest are used."""
    while paths:
        try:
            build(paths)
            return
        except FrameError as err:
            if err.source is None or Path(err.source) not in paths:
                record["problems"].append(f"master {kind} not built: {err}")
                return
            record["problems"].append(f"{Path(err.source).name}: {err.problem} (left out of "
                                      f"the master {kind})")
            paths = [p for p in paths if p != Path(err.source)]
        except ApocalError as err:
            record["problems"].append(f"master {kind} not built: {err}")
            return


def _flat_options(instrument, options):
    response = options.flat_response if options.flat_response is not None \
        else instrument.flat_response
    return {"response": None if response == "none" else response,
            "order": options.flat_order, "knots": options.flat_knots,
            "width": options.boxcar_width}


def _detector(group: Group, record: dict, context) -> Instrument | None:
    """The group's instrument, with gain and read noise measured when unknown.

    The record says, per amplifier, what each value is and where it came
    from (a header card, the class, given, or measured)."""
    instrument = group.instrument
    sample = (group.biases + group.flats + group.science + group.darks)[0]
    layout = instrument.frame_layout(sample.path, detector=False)
    record["detector"] = _detector_record(layout)
    if not any(math.isnan(a.gain) or math.isnan(a.read_noise) for a in layout.amplifiers):
        return instrument
    from .diagnostics import photon_transfer

    if len(group.biases) < 2 or len(group.flats) < 2:
        record["problems"].append(
            f"the gain and read noise of {instrument.name} are not in the headers and cannot "
            f"be measured (need two biases and two flats); give them with --gain and "
            f"--read-noise")
        return None
    try:
        ptc = photon_transfer([f.path for f in group.flats], [f.path for f in group.biases],
                              instrument)
    except ApocalError as err:
        record["problems"].append(f"gain and read noise could not be measured: {err}")
        return None
    context.photon_transfer = ptc
    record["notes"].append(
        "gain and read noise measured from the night's flats and biases (photon transfer): "
        + ", ".join(f"{g:.3f} ± {ge:.3f} e-/ADU, {r:.2f} ± {re_:.2f} e-" for g, ge, r, re_ in zip(
            ptc.gain_per_amplifier, ptc.gain_error_per_amplifier,
            ptc.read_noise_per_amplifier, ptc.read_noise_error_per_amplifier)))
    measured = instrument.with_detector(ptc.gain_per_amplifier, ptc.read_noise_per_amplifier,
                                        source="measured (photon transfer)")
    record["detector"] = _detector_record(measured.frame_layout(sample.path))
    record["detector"].update(gain_error=ptc.gain_error_per_amplifier,
                              read_noise_error=ptc.read_noise_error_per_amplifier)
    return measured


def _detector_record(layout) -> dict:
    """What the summary says of a group's detector: per amplifier, the gain,
    read noise and sections used, and where each came from."""
    amplifiers = layout.amplifiers
    return {
        "gain": [a.gain for a in amplifiers],
        "read_noise": [a.read_noise for a in amplifiers],
        "measured": any((a.sources.get("gain") or "").startswith("measured")
                        for a in amplifiers),
        "amplifiers": [{"name": a.name, "gain": a.gain, "read_noise": a.read_noise,
                        "data_section": str(a.data),
                        "overscan_section": str(a.overscan) if a.overscan else None,
                        "output_section": str(a.output), "extension": a.extension,
                        "flipped": [a.flip_x, a.flip_y],
                        "sources": dict(a.sources)} for a in amplifiers],
    }


def _calibrate_science(group, cal, output_dir, options, overwrite, progress, record):
    folder = output_dir / "calibrated" / group.label
    arc = record["masters"].get("arc", {}).get("file")
    for info in tqdm(group.science, desc=group.label, unit="frame", leave=False,
                     disable=not progress or None):
        target = folder / f"{_stem(info.path)}_cal.fits"
        entry = {"raw": info.name, "output": str(target.relative_to(output_dir)),
                 "exptime": info.exptime, "arc": arc}
        if target.exists() and not overwrite:
            entry.update(_masters_used(target, group.label))
            entry["status"] = "kept from an earlier run"
            record["science"].append(entry)
            continue
        try:
            calibrated = cal.calibrate(info.path, cosmic_rays=options.cosmic_rays)
            write_frame(calibrated, target, overwrite=overwrite)
        except ApocalError as err:
            record["problems"].append(f"{info.name} not calibrated: {err}")
            continue
        entry.update(_masters_used(target, group.label, calibrated.header))
        entry["status"] = "calibrated"
        record["science"].append(entry)


def _masters_used(path, label, header=None):
    if header is None:
        header = read_header(path)
    used = {}
    for kind in ("bias", "dark", "flat"):
        name = header.get(f"AP{kind.upper()}")
        used[kind] = str(Path("masters") / label / name) if name else None
    return used


# ----------------------------------------------------------------------
# Folders, run bookkeeping, logging
# ----------------------------------------------------------------------
def _check_folders(raw_dir: Path, output_dir: Path) -> None:
    if not raw_dir.is_dir():
        raise ApocalError(f"{raw_dir}: raw folder not found")
    if output_dir == raw_dir or raw_dir in output_dir.parents:
        raise ApocalError(f"{output_dir}: the output folder must not be inside the raw folder "
                          f"{raw_dir} (raw data are never written to)")
    if output_dir.exists() and not output_dir.is_dir():
        raise ApocalError(f"{output_dir}: exists and is not a folder")
    output_dir.mkdir(parents=True, exist_ok=True)


def _start_run(raw_dir, output_dir, options, instrument, overwrite) -> dict:
    run = {"apocal_version": __version__, "raw_dir": str(raw_dir), "options": asdict(options),
           "instrument": _instrument_label(instrument), "started": _now(), "finished": None}
    path = output_dir / RUN_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        same = all(previous.get(k) == run[k] for k in ("raw_dir", "options", "instrument"))
        if not overwrite:
            if previous.get("finished"):
                raise ApocalError(f"{output_dir}: holds a finished reduction "
                                  f"({previous['finished']}); use --overwrite to redo it, or "
                                  f"another output folder")
            if not same:
                raise ApocalError(f"{output_dir}: holds an unfinished reduction of "
                                  f"{previous.get('raw_dir')} with other options; use "
                                  f"--overwrite, or another output folder")
            run["started"] = previous.get("started", run["started"])
            run["resumed"] = True
    elif not overwrite:
        taken = [p.name for p in output_dir.iterdir()
                 if p.name in (SUMMARY_FILE, "masters", "calibrated", "report.html")]
        if taken:
            raise ApocalError(f"{output_dir}: already holds {', '.join(taken)} not made by a "
                              f"resumable apocal run; use --overwrite, or another output folder")
    atomic_write_bytes(path, json.dumps(run, indent=1).encode(), overwrite=True)
    return run


def _instrument_label(instrument):
    if instrument is None:
        return None
    return f"{type(instrument).__module__}:{type(instrument).__qualname__}"


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return handler


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".fz", ".bz2"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name.rsplit(".", 1)[0] if "." in name else name


def _file_record(info: FrameInfo) -> dict:
    return {"file": info.name, "instrument": info.instrument.name if info.instrument else None,
            "kind": info.kind, "exptime": info.exptime, "binning": info.binning,
            "configuration": info.configuration, "lamps": info.lamps, "date": info.date,
            "problem": info.problem}


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _ecsv(table) -> bytes:
    buffer = StringIO()
    table.write(buffer, format="ascii.ecsv")
    return buffer.getvalue().encode()
