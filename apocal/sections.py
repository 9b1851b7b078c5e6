"""FITS image sections: parsing, binning and conversion to numpy slices.

FITS sections are written ``[x1:x2,y1:y2]``: 1-based, inclusive, x (the
column) first. numpy indexes ``[row, column]``, 0-based, end-exclusive. All
conversions between the two live here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Section", "parse_section"]

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
    match = _SECTION.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a FITS section of the form '[x1:x2,y1:y2]'")
    xstar, x1, x2, ystar, y1, y2 = match.groups()
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
