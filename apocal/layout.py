"""Where every amplifier's pixels are in one raw frame: `resolve_layout`.

An `~apocal.Instrument` states its amplifiers' sections as class values;
a frame's header may state them too. This module decides, for one frame,
which section each amplifier uses and why, and where its trimmed data go in
the assembled image. The rules, each visible in the processed frame's
header (``AP?SRCn`` cards) and in a night's summary:

* a header card (``data_key``, ``overscan_key``, or the instrument's
  `~apocal.Instrument.header_sections`) wins over the class section; header
  cards count the frame's own (binned) pixels, class sections count
  unbinned detector pixels unless the instrument sets
  ``sections_binned = True``;
* a section that does not fit its image, or an overscan that overlaps data,
  is an error that names the card and the class value;
* gain and read noise: a value given to the instrument (its constructor,
  ``--gain``, or a measurement) wins over a header card, which wins over
  the class value;
* amplifiers are placed by their detector sections (``detector_section``
  or ``detector_key``, unbinned, possibly running backwards: the data are
  then flipped), else side by side in the order of their data sections.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from astropy.io import fits

from .exceptions import ApocalWarning, FrameError
from .sections import DetectorSection, Section, parse_detector_section, parse_section

__all__ = ["AmplifierLayout", "FrameLayout", "resolve_layout"]

#: Source of a value set on the instrument's class.
CLASS = "class"
# A header card this far (relative) from the class value is worth a warning.
_FAR = 0.10


@dataclass(frozen=True)
class AmplifierLayout:
    """An amplifier resolved for one frame.

    Attributes
    ----------
    name : str
    data, overscan : Section, Section or None
        In the pixels of the amplifier's own image (HDU), binned as stored.
    output : Section
        Where its trimmed data go in the assembled image.
    gain, read_noise : float
        e-/ADU and e- (NaN when unknown and not required).
    overscan_along_rows : bool
        True for an overscan beside the data (one level per row), False for
        one above or below it (one level per column).
    extension : int or str
        The HDU holding the amplifier (index when resolved from a file).
    flip_x, flip_y : bool
        The data run backwards on the detector along x or y.
    sources : dict
        Where each value came from: keys ``gain``, ``read_noise``,
        ``data``, ``overscan``, ``detector``; values such as
        ``"header GAIN"``, ``"class"``, ``"given"``.
    """

    name: str
    data: Section
    overscan: Section | None
    output: Section
    gain: float
    read_noise: float
    overscan_along_rows: bool = True
    extension: int | str = 0
    flip_x: bool = False
    flip_y: bool = False
    sources: dict = field(default_factory=dict, compare=False)

    @property
    def overscan_lines(self) -> tuple[int, int]:
        """First and last 0-based data line (row or column) the overscan spans."""
        if self.overscan_along_rows:
            return self.overscan.y1 - 1, self.overscan.y2 - 1
        return self.overscan.x1 - 1, self.overscan.x2 - 1


@dataclass(frozen=True)
class FrameLayout:
    """Where every amplifier of one raw frame is, and the assembled shape."""

    raw_shape: tuple[int, int]
    shape: tuple[int, int]
    binning: tuple[int, int]
    amplifiers: tuple[AmplifierLayout, ...] = field(default_factory=tuple)

    @property
    def uncovered(self) -> np.ndarray | None:
        """True where no amplifier's data land (gaps of a mosaic); None when
        the amplifiers cover the whole assembled image."""
        covered = sum(a.output.shape[0] * a.output.shape[1] for a in self.amplifiers)
        if covered == self.shape[0] * self.shape[1]:
            return None
        gaps = np.ones(self.shape, dtype=bool)
        for amp in self.amplifiers:
            gaps[amp.output.slices] = False
        return gaps


# An image other than the frame's main one: (HDU key, header, numpy shape).
ImageLookup = Callable[[int | str], tuple[int | str, fits.Header, tuple[int, int]]]


@dataclass
class _Resolved:
    label: str
    extension: int | str
    data: Section
    overscan: Section | None
    detector: DetectorSection | None
    gain: float
    read_noise: float
    sources: dict


def resolve_layout(instrument, header: fits.Header, shape: tuple[int, int], source=None, *,
                   detector: bool = True, images: ImageLookup | None = None) -> FrameLayout:
    """Resolve every amplifier of ``instrument`` for one frame.

    Parameters
    ----------
    instrument : Instrument
    header : astropy.io.fits.Header
        The header of the frame's main image (``data_extension``), merged
        with the primary header.
    shape : tuple of int
        numpy shape of that image.
    source : str or path-like, optional
        The file, for error messages.
    detector : bool
        Require gain and read noise; with False unknown values are NaN.
    images : callable, optional
        ``images(extension) -> (key, header, shape)`` for amplifiers in
        other HDUs (and to resolve EXTNAMEs); needed only then.

    Raises
    ------
    FrameError
        For a section that is malformed, does not fit, or overlaps data;
        for amplifiers that cannot be placed; for a missing or impossible
        gain or read noise.
    """
    main = instrument.data_extension

    def image_of(extension):
        if images is not None:
            return images(main if extension is None else extension)
        if extension is None or extension == main:
            return main, header, tuple(shape)
        raise FrameError(source, f"{instrument.name}: amplifiers in HDU {extension!r} need the "
                                 f"file, not only its header")

    binnings, resolved = set(), []
    for index, amp in enumerate(instrument.amplifiers):
        label = amp.name or f"amplifier {index + 1}"
        key, amp_header, amp_shape = image_of(amp.extension)
        binning = instrument.binning(amp_header)
        binnings.add(binning)
        from_header = instrument.header_sections(amp_header, index)
        cards = _section_cards(instrument, amp, index)
        data, data_source = _section(instrument, label, "data", from_header[0], cards[0],
                                     amp.data_section, binning, amp_shape, key, source)
        overscan = overscan_source = None
        if from_header[1] or amp.overscan_section:
            overscan, overscan_source = _section(instrument, label, "overscan", from_header[1],
                                                 cards[1], amp.overscan_section, binning,
                                                 amp_shape, key, source)
        placed, placed_source = _detector_section(amp, amp_header, label, source, instrument)
        sources = {"data": data_source, "overscan": overscan_source, "detector": placed_source}
        values = {}
        for what, keys in (("gain", instrument.gain_keys),
                           ("read_noise", instrument.read_noise_keys)):
            values[what], sources[what] = _detector_value(instrument, index, what, keys,
                                                          amp_header, source)
            _warn_if_far(instrument, index, label, what, values[what], sources[what])
        missing = [what.replace("_", " ") for what in values if sources[what] is None]
        if detector and missing:
            verb = "are" if len(missing) == 2 else "is"
            keys = ", ".join(instrument.gain_keys + instrument.read_noise_keys) or "no keys"
            raise FrameError(source, f"{instrument.name}: the {' and '.join(missing)} of {label} "
                                     f"{verb} not in the header ({keys}) nor set on the "
                                     f"instrument; pass it, e.g. {type(instrument).__name__}"
                                     f"(gain=..., read_noise=...), or measure it with "
                                     f"apocal.diagnostics.photon_transfer")
        resolved.append(_Resolved(label, key, data, overscan, placed, values["gain"],
                                  values["read_noise"], sources))
    if len(binnings) > 1:
        raise FrameError(source, f"{instrument.name}: the amplifiers' HDUs give different "
                                 f"binnings {sorted(binnings)}")
    binning = binnings.pop()
    _check_overlaps(resolved, instrument, source)
    if any(r.detector is not None for r in resolved):
        amplifiers, out_shape = _place_on_detector(resolved, binning, instrument, source)
    else:
        amplifiers, out_shape = _place_side_by_side(resolved, instrument, source)
    return FrameLayout(raw_shape=tuple(image_of(None)[2]), shape=out_shape, binning=binning,
                       amplifiers=tuple(amplifiers))


def _section_cards(instrument, amp, index) -> list[tuple[str, str]]:
    """For the data and the overscan: how a section from the header is
    named in messages and provenance, and how to ignore it."""
    if instrument.header_sections_overridden():
        hook = f"{type(instrument).__name__}.header_sections"
        return [(hook, ""), (hook, "")]
    cards = []
    for what, key, own in zip(("data", "overscan"), instrument.section_keys(index),
                              (amp.data_key, amp.overscan_key)):
        fix = (f"; set {what}_key=None on the amplifier to use the class section" if own
               else f"; set {what}_section_key = None on the class to use the class section")
        cards.append((f"header {key}", fix))
    return cards


def _section(instrument, label, what, from_header, card, default, binning, shape, key,
             source) -> tuple[Section, str]:
    """One section of one amplifier, in its image's (binned) pixels, and its source."""
    bx, by = binning
    size = f"the {shape[1]}x{shape[0]} (columns x rows) image" + (f" of HDU {key!r}" if key else "")
    class_text = ""
    if default:
        class_text = f"; the class {what}_section is {default}"
        if not instrument.sections_binned and binning != (1, 1):
            try:
                class_text += f" ({parse_section(default).binned(binning)} at binning {bx}x{by})"
            except ValueError:
                pass
    if from_header:
        where, fix = card
        try:
            section = parse_section(from_header, shape)
        except ValueError as err:
            raise FrameError(source, f"{instrument.name} {label}: {where} = {from_header!r} is "
                                     f"not a section ({err}){class_text}{fix}") from None
        if not section.fits_in(shape):
            raise FrameError(source, f"{instrument.name} {label}: {where} = {from_header!r} does "
                                     f"not fit {size}{class_text}{fix}")
        return section, where
    if default:
        try:
            section = parse_section(default)
        except ValueError as err:
            raise FrameError(source, f"{instrument.name} {label}: bad class {what}_section: "
                                     f"{err}") from None
        if not instrument.sections_binned:
            section = section.binned(binning)
        if not section.fits_in(shape):
            binned = ""
            if binning != (1, 1) and instrument.sections_binned:
                binned = (f" (class sections count binned pixels; counted unbinned it would be "
                          f"{section.binned(binning)} at binning {bx}x{by}: set "
                          f"sections_binned = False if so)")
            elif binning != (1, 1):
                binned = (f" ({section} at binning {bx}x{by}; class sections count unbinned "
                          f"pixels, set sections_binned = True if yours count binned ones)")
            raise FrameError(source, f"{instrument.name} {label}: class {what}_section "
                                     f"{default}{binned} does not fit {size}; is this a "
                                     f"{instrument.name} frame?")
        return section, CLASS
    return Section.whole(shape), "whole image"


def _detector_section(amp, header, label, source, instrument):
    if amp.detector_section:
        text, where = amp.detector_section, CLASS
    elif amp.detector_key and amp.detector_key in header:
        text, where = str(header[amp.detector_key]), f"header {amp.detector_key}"
    else:
        return None, None
    try:
        return parse_detector_section(text), where
    except ValueError as err:
        raise FrameError(source, f"{instrument.name} {label}: detector section ({where}) "
                                 f"{text!r}: {err}") from None


def _detector_value(instrument, index, what, keys, header, source):
    """Gain or read noise of one amplifier and its source (given, a header
    card, or the class); NaN and None when nobody says."""
    given = instrument.given_value(index, what)
    if given is not None:
        return given
    words = "gain" if what == "gain" else "read noise"
    for key in keys:
        if key in header:
            try:
                value = float(header[key])
            except (TypeError, ValueError):
                raise FrameError(source, f"has a non-numeric {words} ({key}={header[key]!r})") \
                    from None
            impossible = value <= 0 if what == "gain" else value < 0
            if not np.isfinite(value) or impossible:
                raise FrameError(source, f"has an impossible {words} ({key}={value!r})")
            return value, f"header {key}"
    value = getattr(instrument.amplifiers[index], what)
    if value is not None:
        return float(value), CLASS
    return np.nan, None


def _warn_if_far(instrument, index, label, what, value, source) -> None:
    """Say so when a header card replaces a class value far from it (Kast's
    GAIN = 1, a gain index, over the class's 1.465 e-/ADU)."""
    written = getattr(instrument.amplifiers[index], what)
    if not (source or "").startswith("header") or written is None or instrument.given_value(
            index, what) is not None:
        return
    if abs(value - written) > _FAR * abs(written):
        words = what.replace("_", " ")
        warnings.warn(f"{instrument.name} {label}: {source} = {value:g} replaces the class "
                      f"{words} {written:g} ({abs(value / written - 1):.0%} apart); if the "
                      f"card means something else, set {what}_keys = () on the class",
                      ApocalWarning, stacklevel=4)


def _check_overlaps(resolved, instrument, source) -> None:
    """No overscan overlaps data, and no two amplifiers share data pixels,
    within one HDU."""
    for one in resolved:
        for other in resolved:
            if one.extension != other.extension:
                continue
            if one.overscan is not None and one.overscan.overlaps(other.data):
                raise FrameError(source, f"{instrument.name} {one.label}: overscan "
                                         f"{one.overscan} ({one.sources['overscan']}) overlaps "
                                         f"the data {other.data} of {other.label} "
                                         f"({other.sources['data']})")
            if one is not other and resolved.index(one) < resolved.index(other) \
                    and one.data.overlaps(other.data):
                raise FrameError(source, f"{instrument.name}: the data of {one.label} "
                                         f"{one.data} ({one.sources['data']}) and of "
                                         f"{other.label} {other.data} ({other.sources['data']}) "
                                         f"overlap; give each amplifier its own section")


def _along_rows(r: _Resolved) -> bool:
    if r.overscan is None:
        return True
    return r.overscan.x2 < r.data.x1 or r.overscan.x1 > r.data.x2


def _layout(r: _Resolved, output: Section, flip_x=False, flip_y=False) -> AmplifierLayout:
    return AmplifierLayout(r.label, r.data, r.overscan, output, float(r.gain),
                           float(r.read_noise), _along_rows(r), r.extension, flip_x, flip_y,
                           r.sources)


def _place_side_by_side(resolved, instrument, source):
    """Amplifiers of one HDU in a grid by the position of their data sections:
    the output keeps their left-right and bottom-top order and closes any
    gap between them."""
    if len({r.extension for r in resolved}) > 1:
        raise FrameError(source, f"{instrument.name}: amplifiers in different HDUs need a "
                                 f"detector_section (or a detector_key such as DETSEC) to be "
                                 f"placed in the assembled image")
    x_starts = sorted({r.data.x1 for r in resolved})
    y_starts = sorted({r.data.y1 for r in resolved})
    widths = {r.data.x1: r.data.shape[1] for r in resolved}
    heights = {r.data.y1: r.data.shape[0] for r in resolved}
    placed = []
    for r in resolved:
        x0 = sum(widths[x] for x in x_starts if x < r.data.x1)
        y0 = sum(heights[y] for y in y_starts if y < r.data.y1)
        output = Section(x0 + 1, x0 + r.data.shape[1], y0 + 1, y0 + r.data.shape[0])
        if output.shape != r.data.shape:
            raise FrameError(source, f"{instrument.name} {r.label}: data section {r.data} "
                                     f"does not line up with the other amplifiers' (different "
                                     f"widths in one column or heights in one row)")
        placed.append(_layout(r, output))
    shape = (sum(heights.values()), sum(widths.values()))
    if any(not p.output.fits_in(shape) for p in placed):
        raise FrameError(source, f"{instrument.name}: the amplifiers' data sections do not "
                                 f"form a grid; give each a detector_section")
    return placed, shape


def _place_on_detector(resolved, binning, instrument, source):
    """Amplifiers placed at their detector sections (unbinned), flipped where
    a section runs backwards."""
    missing = [r.label for r in resolved if r.detector is None]
    if missing:
        raise FrameError(source, f"{instrument.name}: {', '.join(missing)} has no detector "
                                 f"section while other amplifiers do; give every amplifier one")
    bx, by = binning
    spans = []
    for r in resolved:
        region = r.detector.region
        columns = ((region.x1 - 1) // bx, region.x2 // bx)
        rows = ((region.y1 - 1) // by, region.y2 // by)
        size = (rows[1] - rows[0], columns[1] - columns[0])
        if size != r.data.shape:
            raise FrameError(source, f"{instrument.name} {r.label}: detector section "
                                     f"{r.detector} ({r.sources['detector']}) covers "
                                     f"{size[1]}x{size[0]} pixels at binning {bx}x{by}, but the "
                                     f"data section {r.data} ({r.sources['data']}) holds "
                                     f"{r.data.shape[1]}x{r.data.shape[0]}")
        spans.append((columns, rows))
    x0 = min(c[0] for c, _ in spans)
    y0 = min(r[0] for _, r in spans)
    placed = []
    for r, (columns, rows) in zip(resolved, spans):
        output = Section(columns[0] - x0 + 1, columns[1] - x0, rows[0] - y0 + 1, rows[1] - y0)
        placed.append(_layout(r, output, r.detector.flip_x, r.detector.flip_y))
    for i, one in enumerate(placed):
        for other in placed[i + 1:]:
            if one.output.overlaps(other.output):
                raise FrameError(source, f"{instrument.name}: the detector sections of "
                                         f"{one.name} and {other.name} overlap")
    shape = (max(p.output.y2 for p in placed), max(p.output.x2 for p in placed))
    return placed, shape
