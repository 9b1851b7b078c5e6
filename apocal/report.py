"""The quality report of a night: ``report.html`` with PNG plots, readable offline.

Per group: the master bias, dark, flat and arc (zscale, bad pixels
overlaid), histograms of the raw bias in the data and overscan regions of
each amplifier, the read noise measured against the quoted value (and the
photon transfer curve when the gain was measured), the flat's lamp spectrum
with its fitted response and the illumination along the slit, cuts of the
arc at three places along the slit, and which masters calibrated which
science frame. Every plot comes from `apocal.diagnostics`.
"""

from __future__ import annotations

import html
import logging
import os
from io import BytesIO
from pathlib import Path

from .io import atomic_write_bytes

__all__ = ["write_report", "REPORT_FILE", "FIGURE_DIR"]

log = logging.getLogger("apocal")

REPORT_FILE = "report.html"
FIGURE_DIR = "report"

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #aaa; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
th { background: #eee; } .problem { color: #a00; } .note { color: #555; }
.passed { color: #060; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.85em; max-width: 36em; }
img { max-width: 36em; border: 1px solid #ddd; }
"""


def write_report(output_dir: str | os.PathLike, summary: dict,
                 contexts: dict | None = None) -> Path:
    """Write ``report.html`` and its figures into ``output_dir``.

    Parameters
    ----------
    output_dir : str or path-like
        The reduction's output folder (figures go to ``report/`` in it).
    summary : dict
        The reduction summary (``summary.json``).
    contexts : dict, optional
        Group label -> `apocal.night.GroupContext` (instrument, calibration
        set, photon transfer) from the reduction; groups without one are
        reported from their record alone.

    Returns
    -------
    pathlib.Path
        The report.
    """
    output_dir = Path(output_dir)
    figures = _Figures(output_dir / FIGURE_DIR)
    raw_dir = Path(summary["raw_dir"])
    body = [f"<h1>apocal reduction of {_e(raw_dir)}</h1>",
            f"<p>apocal {_e(summary['apocal_version'])}; started {_e(summary['started'])}, "
            f"finished {_e(summary['finished'])}. Machine-readable: "
            f"<a href='summary.json'>summary.json</a>, <a href='files.ecsv'>files.ecsv</a>, "
            f"log: <a href='apocal.log'>apocal.log</a>.</p>"]
    body.append(_problems(summary["problems"]))
    body.extend(f"<p class='problem'>{_e(g['label'])}: {_e(g['uncertainty_check']['verdict'])}</p>"
                for g in summary["groups"]
                if (g.get("uncertainty_check") or {}).get("passed") is False)
    body.append("<p>Groups: " + ", ".join(
        f"<a href='#{_e(g['label'])}'>{_e(g['label'])}</a>" for g in summary["groups"]) + "</p>")
    for record in summary["groups"]:
        context = (contexts or {}).get(record["label"])
        body.append(_group(record, context, raw_dir, figures))
    body.append(_files(summary["files"]))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>apocal report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>")
    return atomic_write_bytes(output_dir / REPORT_FILE, page.encode("utf-8"), overwrite=True)


class _Figures:
    """Draws figures with the object-oriented matplotlib API (no pyplot state)
    and saves them as PNG files, atomically."""

    def __init__(self, folder: Path):
        self.folder = folder

    def save(self, name: str, draw, caption: str, size=(6.4, 4.2)) -> str:
        from matplotlib.figure import Figure

        figure = Figure(figsize=size)
        try:
            draw(figure.add_subplot())
        except Exception as err:  # a figure that cannot be drawn is reported, not fatal
            log.warning("figure %s not drawn: %s", name, err)
            return f"<p class='problem'>{_e(name)}: not drawn ({_e(err)})</p>"
        buffer = BytesIO()
        figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        path = atomic_write_bytes(self.folder / f"{name}.png", buffer.getvalue(), overwrite=True)
        return (f"<figure><img src='{FIGURE_DIR}/{path.name}' alt='{_e(caption)}'>"
                f"<figcaption>{_e(caption)}</figcaption></figure>")


def _group(record: dict, context, raw_dir: Path, figures: _Figures) -> str:
    from .diagnostics import (dispersion_slices, lamp_response, read_noise_from_pair,
                              region_histograms, show_frame, slit_illumination)
    from .flags import Flag

    label = record["label"]
    config = ", ".join(f"{k} {v}" for k, v in record["configuration"].items() if v)
    parts = [f"<h2 id='{_e(label)}'>{_e(label)}</h2>", _verdict(record),
             f"<p>{_e(record['instrument'])}, binning {_e(record['binning'])}"
             f"{', ' + _e(config) if config else ''}.</p>"]
    parts.extend(f"<p class='note'>{_e(n)}</p>" for n in record["notes"])
    parts.extend(f"<p class='problem'>{_e(p)}</p>" for p in record["problems"])
    parts.append(_detector(record["detector"]))
    cal = context.calibration if context else None
    instrument = context.instrument if context else None
    if cal is None or instrument is None:
        parts.append("<p class='problem'>No masters: nothing more to show.</p>")
        return "".join(parts) + _science(record)

    shown = []
    check = context.uncertainty_check if context else None
    if check is not None and len(check.table):
        shown.append(figures.save(
            f"{label}-uncertainty-check", check.plot,
            "Pulls (difference over claimed uncertainty) of pairs of this night's frames, "
            "per test and amplifier, against a unit normal: the uncertainty is right when "
            "they coincide (robust standard deviation in the legend).", size=(6.4, 4.2)))
    bad = Flag.BAD_PIXEL | Flag.HOT | Flag.NO_DATA
    for kind, mask, what in (("bias", bad, "bad pixels red"),
                             ("dark", bad, "hot and bad pixels red"),
                             ("flat", bad, "bad pixels red"),
                             ("arc", Flag.SATURATED | Flag.NONLINEAR,
                              "saturated or non-linear pixels red")):
        master = getattr(cal, f"master_{kind}")
        if master is not None:
            shown.append(figures.save(
                f"{label}-master-{kind}",
                lambda ax, m=master, k=kind, f=mask: show_frame(m, mask=f, ax=ax,
                                                                title=f"master {k}"),
                f"Master {kind} ({master.header.get('NCOMBINE', '?')} frames, zscale; {what}).",
                size=(6.4, 5.0)))
    parts.append("<h3>Masters</h3>" + "".join(shown))

    biases = [raw_dir / name for name in record["masters"].get("bias", {}).get("inputs", [])]
    if biases:
        checks = [figures.save(
            f"{label}-bias-histograms", lambda ax: region_histograms(biases[0], instrument).plot(ax),
            f"Histograms of the raw bias {biases[0].name} in the data and overscan region of "
            f"each amplifier (outliers beyond 5 sigma rejected, 1-ADU bins).")]
        if len(biases) >= 2:
            noise = read_noise_from_pair(biases[0], biases[1], instrument)
            checks.append(figures.save(
                f"{label}-read-noise", lambda ax: noise.plot(ax),
                f"Read noise from the difference of {biases[0].name} and {biases[1].name} "
                f"against the quoted value."))
            checks.append(_table(noise.to_table()))
        parts.append("<h3>Bias and read noise</h3>" + "".join(checks))
    if context.photon_transfer is not None:
        ptc = context.photon_transfer
        parts.append("<h3>Gain</h3>" + figures.save(
            f"{label}-photon-transfer", lambda ax: ptc.plot(ax),
            "Photon transfer: variance against signal of the flat pairs; the inverse slope is "
            "the gain used for this group.") + _table(ptc.to_table()))
    if cal.master_flat is not None and cal.lamp_spectrum is not None:
        parts.append("<h3>Flat</h3>" + figures.save(
            f"{label}-lamp-spectrum", lambda ax: lamp_response(cal).plot(ax),
            "The flat's lamp spectrum (mean along the illuminated slit) with the fitted "
            "response divided out of it, and their ratio.", size=(6.4, 5.0))
            + figures.save(f"{label}-slit-illumination",
                           lambda ax: slit_illumination(cal).plot(ax),
                           "Master flat along the slit; the illuminated part is shaded."))
    if cal.master_arc is not None and instrument.dispersion_axis is not None:
        cuts = dispersion_slices(cal.master_arc, instrument.dispersion_axis)
        shifts = ", ".join(f"{s:+.2f}" for s in cuts.shifts)
        parts.append("<h3>Arc</h3>" + figures.save(
            f"{label}-arc-slices", lambda ax: cuts.plot(ax),
            f"The master arc along the dispersion axis at three places along the slit; the "
            f"brightest line's centroid shifts by {shifts} pixels from the middle cut "
            f"(line curvature).") + figures.save(
            f"{label}-arc-slices-zoom", lambda ax: cuts.plot(ax, zoom=15),
            "The same, around the brightest line."))
    return "".join(parts) + _science(record)


def _verdict(record: dict) -> str:
    """The uncertainty self-check's verdict, first thing in a group."""
    check = record.get("uncertainty_check")
    if not check:
        return "<p class='note'>Uncertainty not checked.</p>"
    style = {True: "passed", False: "problem"}.get(check.get("passed"), "note")
    rows = "".join(f"<tr><td>{_e(t['test'])}</td><td>{_e(t['amplifier'])}</td>"
                   f"<td>{t['frames']}</td><td>{t['pull_std']:.3f}</td>"
                   f"<td>{'yes' if t['passed'] else 'NO'}</td></tr>" for t in check["tests"])
    table = ("<table><tr><th>test</th><th>amplifier</th><th>frames or pairs</th>"
             "<th>pull std (expected 1)</th><th>passed</th></tr>" + rows + "</table>"
             if rows else "")
    return f"<p class='{style}'><b>{_e(check['verdict'])}</b></p>" + table


def _detector(detector: dict) -> str:
    """A table of what each amplifier used and where each value came from."""
    amplifiers = detector.get("amplifiers") if detector else None
    if not amplifiers:
        return ""
    rows = "".join(
        f"<tr><td>{_e(a['name'])}</td><td>{a['gain']:.4g}</td><td>{_e(a['sources'].get('gain'))}"
        f"</td><td>{a['read_noise']:.3g}</td><td>{_e(a['sources'].get('read_noise'))}</td>"
        f"<td>{_e(a['data_section'])}</td><td>{_e(a['sources'].get('data'))}</td>"
        f"<td>{_e(a['overscan_section'] or 'none')}</td>"
        f"<td>{_e(a['sources'].get('overscan') or '')}</td></tr>" for a in amplifiers)
    measured = ("<p>Gain and read noise measured from this night's flats and biases "
                "(photon transfer).</p>" if detector.get("measured") else "")
    return (measured + "<table><tr><th>amplifier</th><th>gain [e-/ADU]</th><th>from</th>"
            "<th>read noise [e-]</th><th>from</th><th>data section</th><th>from</th>"
            "<th>overscan</th><th>from</th></tr>" + rows + "</table>")


def _science(record: dict) -> str:
    if not record["science"]:
        return ""
    def master(path):
        return Path(path).name if path else "none"

    rows = "".join(
        f"<tr><td>{_e(s['raw'])}</td>"
        f"<td><a href='{_e(s['output'])}'>{_e(Path(s['output']).name)}</a></td>"
        + "".join(f"<td>{_e(master(s.get(kind)))}</td>" for kind in ("bias", "dark", "flat", "arc"))
        + f"<td>{_e(s.get('status', ''))}</td></tr>" for s in record["science"])
    return (f"<h3>Science frames and the masters that calibrated them</h3>"
            f"<p>Masters in <code>masters/{_e(record['label'])}/</code>, calibrated frames in "
            f"<code>calibrated/{_e(record['label'])}/</code>.</p><table><tr>"
            "<th>raw</th><th>calibrated</th><th>bias</th><th>dark</th><th>flat</th>"
            "<th>arc for it</th><th>status</th></tr>" + rows + "</table>")


def _problems(problems: list) -> str:
    if not problems:
        return "<p>No problems.</p>"
    items = "".join(f"<li class='problem'>{_e(p)}</li>" for p in problems)
    return f"<h2>Problems ({len(problems)})</h2><ul>{items}</ul>"


def _files(files: list) -> str:
    def row(f):
        exptime = "" if f["exptime"] is None else f"{f['exptime']:g}"
        config = " ".join(f"{k}={v}" for k, v in f["configuration"].items() if v)
        cells = (f["file"], f["instrument"] or "", f["kind"] or "", exptime, f["binning"],
                 config, f["lamps"], f["date"], f["problem"] or "")
        style = " class='problem'" if f["problem"] else ""
        return f"<tr{style}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>"

    return ("<h2>Files</h2><table><tr><th>file</th><th>instrument</th><th>kind</th>"
            "<th>exptime [s]</th><th>binning</th><th>configuration</th><th>lamps</th>"
            "<th>date</th><th>problem</th></tr>" + "".join(row(f) for f in files) + "</table>")


def _table(table) -> str:
    head = "".join(f"<th>{_e(name)}{f' [{col.unit}]' if col.unit else ''}</th>"
                   for name, col in table.columns.items())
    rows = "".join("<tr>" + "".join(f"<td>{_e(_fmt(value))}</td>" for value in row) + "</tr>"
                   for row in table)
    return f"<table><tr>{head}</tr>{rows}</table>"


def _fmt(value) -> str:
    if isinstance(value, float) or hasattr(value, "dtype") and value.dtype.kind == "f":
        return f"{float(value):.4g}"
    return str(value)


def _e(text) -> str:
    return html.escape(str(text), quote=True)

