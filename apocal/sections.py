"""FITS image sections: parsing, binning and conversion to numpy slices.

FITS sections are written ``[x1:x2,y1:y2]``: 1-based, inclusive, x (the
column) first. numpy indexes ``[row, column]``, 0-based, end-exclusive. All
conversions between the two live here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Section", "DetectorSection", "parse_section", "parse_detector_section"]

_RANGE = r"\s*(?:(\*)|(\d+)\s*:\s*(\d+))\s*"
_SECTION = re.compile(r"^\s*\[" + _RANGE + "," + _RANGE + r"\]\s*$")


@dataclass(frozen=True)
class Section:
    """A rectangular region of an image in FITS convention.

    Attributes
    ----------
    x1, x2 : int
        First and last column, 1-based and inclusive.
    y1, y2 : int
        First and last row, 1-based and inclusive.
    """

    x1: int
    x2: int
    y1: int
    y2: int

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the region as numpy sees it, (rows, columns)."""
        return (self.y2 - self.y1 + 1, self.x2 - self.x1 + 1)

    @property
    def slices(self) -> tuple[slice, slice]:
        """numpy index ``(rows, columns)`` selecting this region."""
        return (slice(self.y1 - 1, self.y2), slice(self.x1 - 1, self.x2))

    def binned(self, binning: tuple[int, int]) -> "Section":
        """The same detector region in an image binned ``(bin_x, bin_y)``.

        A binned pixel belongs to the region when all of the unbinned pixels
        it sums lie inside it, so ``[1025:2048,...]`` binned by 2 becomes
        ``[513:1024,...]``.
        """
        bx, by = binning
        return Section(-(-(self.x1 - 1) // bx) + 1, self.x2 // bx,
                       -(-(self.y1 - 1) // by) + 1, self.y2 // by)

    def overlaps(self, other: "Section") -> bool:
        """True when the two regions share at least one pixel."""
        return not (self.x2 < other.x1 or other.x2 < self.x1
                    or self.y2 < other.y1 or other.y2 < self.y1)

    def fits_in(self, shape: tuple[int, int]) -> bool:
        """True when the region lies inside an image of numpy ``shape``."""
        rows, cols = shape
        return (1 <= self.x1 <= self.x2 <= cols) and (1 <= self.y1 <= self.y2 <= rows)

    def __str__(self) -> str:
        return f"[{self.x1}:{self.x2},{self.y1}:{self.y2}]"

    @classmethod
    def whole(cls, shape: tuple[int, int]) -> "Section":
        """The section covering a whole image of numpy ``shape``."""
        return cls(1, shape[1], 1, shape[0])


def parse_section(text: str, shape: tuple[int, int] | None = None) -> Section:
    """Parse a FITS section string such as ``'[1:1024,1:4096]'``.

    Parameters
    ----------
    text : str
        The section, ``[x1:x2,y1:y2]`` (1-based, inclusive, x first). A ``*``
        stands for the whole axis and needs ``shape``.
    shape : tuple of int, optional
        numpy shape ``(rows, columns)`` of the image, used to expand ``*``.

    Returns
    -------
    Section

    Raises
    ------
    ValueError
        If the text is not a valid section or a range runs backwards.
    """
    xstar, x1, x2, ystar, y1, y2 = _match(text)
    if (xstar or ystar) and shape is None:
        raise ValueError(f"section {text!r} uses '*', which needs the image shape")
    if xstar:
        x1, x2 = 1, shape[1]
    if ystar:
        y1, y2 = 1, shape[0]
    x1, x2, y1, y2 = int(x1), int(x2), int(y1), int(y2)
    if x1 < 1 or y1 < 1 or x2 < x1 or y2 < y1:
        raise ValueError(f"section {text!r} must have 1 <= start <= end on both axes")
    return Section(x1, x2, y1, y2)


@dataclass(frozen=True)
class DetectorSection:
    """Where an amplifier's pixels lie on the detector (mosaic), unbinned.

    FITS ``DETSEC``-style sections may run backwards, ``[2048:1025,1:4096]``:
    the amplifier was read out from the other side, so its first column is
    detector column 2048.

    Attributes
    ----------
    region : Section
        The detector pixels covered, with ``x1 <= x2`` and ``y1 <= y2``.
    flip_x, flip_y : bool
        True when the section runs backwards along x (columns) or y (rows).
    """

    region: Section
    flip_x: bool = False
    flip_y: bool = False

    def __str__(self) -> str:
        r = self.region
        xs = (r.x2, r.x1) if self.flip_x else (r.x1, r.x2)
        ys = (r.y2, r.y1) if self.flip_y else (r.y1, r.y2)
        return f"[{xs[0]}:{xs[1]},{ys[0]}:{ys[1]}]"


def _match(text: str):
    match = _SECTION.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a FITS section of the form '[x1:x2,y1:y2]'")
    return match.groups()


def parse_detector_section(text: str) -> DetectorSection:
    """Parse a detector section such as ``'[2048:1025,1:4096]'``, which may
    run backwards on either axis.

    Raises
    ------
    ValueError
        If the text is not a section of explicit ranges with start >= 1.
    """
    xstar, x1, x2, ystar, y1, y2 = _match(text)
    if xstar or ystar:
        raise ValueError(f"detector section {text!r} must give explicit ranges, not '*'")
    x1, x2, y1, y2 = int(x1), int(x2), int(y1), int(y2)
    if min(x1, x2, y1, y2) < 1:
        raise ValueError(f"detector section {text!r} must start at 1 or more on both axes")
    return DetectorSection(Section(min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)),
                           flip_x=x2 < x1, flip_y=y2 < y1)
