"""Which frames calibrate which: grouping a night by instrument and configuration.

Biases and darks belong to every configuration of the same instrument and
binning; flats, arcs and science frames to their own configuration (grating
and slit, or filter). DIS Red and Blue are different instruments, so they
never mix; the two KOSMOS amplifiers are one instrument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .instrument import Instrument
from .naming import short_name
from .survey import FrameInfo

__all__ = ["Group", "group_frames"]

# Configuration keys flats and arcs may differ in when none of the exact
# configuration exists (arcs are often taken through a narrower slit, and a
# slit's width read back from its micrometer changes from one setting to
# the next): the group borrows them and says so.
_MAY_DIFFER = ("slit",)


@dataclass
class Group:
    """Frames reduced together: one instrument, binning and configuration.

    Attributes
    ----------
    instrument : Instrument
    binning : str
        ``"<x>x<y>"``.
    configuration : dict
        Grating, slit, filter... (binning excluded).
    biases, darks, flats, arcs, science : list of FrameInfo
        The frames of each kind that belong to this group.
    notes : list of str
        Choices worth telling the user (e.g. arcs of another slit).
    """

    instrument: Instrument
    binning: str
    configuration: dict
    biases: list = field(default_factory=list)
    darks: list = field(default_factory=list)
    flats: list = field(default_factory=list)
    arcs: list = field(default_factory=list)
    science: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    label: str = ""

    def describe(self) -> str:
        config = " ".join(f"{k}={v}" for k, v in self.configuration.items() if v)
        return f"{self.instrument.name} {self.binning}" + (f" {config}" if config else "")


def group_frames(infos: list[FrameInfo]) -> list[Group]:
    """Group usable frames by instrument, binning and configuration.

    Parameters
    ----------
    infos : list of FrameInfo
        From `apocal.survey.survey`; unusable files are left out.

    Returns
    -------
    list of Group
        One per configuration that has flats, arcs or science frames, with
        unique file-name-safe labels, in order of instrument and label.
    """
    detectors: dict[tuple, list[FrameInfo]] = {}
    for info in infos:
        if info.usable:
            detectors.setdefault((info.instrument.name, info.binning), []).append(info)

    groups = []
    for (_, binning), frames in detectors.items():
        instrument = frames[0].instrument
        biases = [f for f in frames if f.kind == "bias"]
        darks = [f for f in frames if f.kind == "dark"]
        configs = []
        for f in frames:
            if f.kind in ("flat", "arc", "science") and f.configuration not in configs:
                configs.append(f.configuration)
        for config in configs:
            group = Group(instrument, binning, dict(config), biases=list(biases),
                          darks=list(darks))
            for f in frames:
                if f.configuration == config and f.kind in ("flat", "arc", "science"):
                    {"flat": group.flats, "arc": group.arcs, "science": group.science}[f.kind].append(f)
            if group.science:
                kinds = ("flat", "arc") if instrument.dispersion_axis is not None else ("flat",)
                for kind in kinds:
                    _borrow(group, kind, frames, config)
            groups.append(group)
    # A configuration whose flats and arcs all went to another group's science
    # needs no group of its own.
    borrowed = {id(f) for g in groups if g.science for f in g.flats + g.arcs}
    groups = [g for g in groups if g.science
              or not all(id(f) in borrowed for f in g.flats + g.arcs)]
    _label(groups)
    return sorted(groups, key=lambda g: g.label)


def _borrow(group: Group, kind: str, frames: list, config: dict) -> None:
    """Give a group with science frames the flats or arcs of a configuration
    that differs only in `_MAY_DIFFER`, when it has none of its own."""
    mine = {"flat": group.flats, "arc": group.arcs}[kind]
    if mine:
        return
    found = [f for f in frames if f.kind == kind and _same_but(f.configuration, config,
                                                                  _MAY_DIFFER)]
    if found:
        mine.extend(found)
        differ = sorted({f"{k} {f.configuration.get(k)!r}" for f in found for k in _MAY_DIFFER
                         if f.configuration.get(k) != config.get(k)})
        group.notes.append(f"no {kind} in this configuration; using {kind}s that differ only "
                           f"in {', '.join(_MAY_DIFFER)} ({', '.join(differ)} against "
                           f"{', '.join(repr(config.get(k)) for k in _MAY_DIFFER)}): "
                           f"{', '.join(f.name for f in found)}")


def _same_but(one: dict, other: dict, ignored) -> bool:
    keys = (set(one) | set(other)) - set(ignored)
    return all(one.get(k) == other.get(k) for k in keys)


def _label(groups: list[Group]) -> None:
    seen: dict[str, int] = {}
    for group in groups:
        words = [group.instrument.name, group.binning] + [str(v) for v in
                                                          group.configuration.values() if v]
        label = re.sub(r"[^A-Za-z0-9._+-]+", "-", "_".join(words)).strip("-")
        label = short_name(label, limit=100)   # a folder name, with room for figure names
        count = seen.get(label, 0)
        seen[label] = count + 1
        group.label = label if count == 0 else f"{label}-{count + 1}"
