"""Names of the files and folders a reduction writes.

Two rules keep every product name usable:

- distinct raw files get distinct products: ``X.fits`` and ``X.fits.gz``
  (or ``X.fit``, or ``x.FITS``) would both become ``X_cal.fits``, so when
  stems collide each colliding file keeps its whole name
  (``X_fits_cal.fits``, ``X_fits_gz_cal.fits``);
- a name fits in a file system's 255 bytes: a long one is cut and ends
  with a short hash of the whole, so it stays unique and the same from run
  to run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["calibrated_names", "short_name", "frame_stem", "LONGEST_NAME"]

#: Longest name (UTF-8 bytes) apocal gives a file or folder it writes;
#: leaves room under the usual 255-byte limit for the temporary-file
#: prefix and suffix (`apocal.output`).
LONGEST_NAME = 180

_COMPRESSION = (".gz", ".fz", ".bz2")


def frame_stem(name: str) -> str:
    """A raw file's name without its FITS and compression extensions."""
    for suffix in _COMPRESSION:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name.rsplit(".", 1)[0] if "." in name else name


def short_name(text: str, limit: int = LONGEST_NAME, suffix: str = "") -> str:
    """``text + suffix``, with ``text`` cut and given a hash of the whole when
    the result would be longer than ``limit`` UTF-8 bytes."""
    whole = text + suffix
    if len(whole.encode()) <= limit:
        return whole
    digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    room = limit - len(suffix.encode()) - len(digest) - 1
    cut = text.encode()[:room].decode("utf-8", "ignore")
    return f"{cut}-{digest}{suffix}"


def calibrated_names(paths) -> dict[Path, str]:
    """The calibrated file name of each raw file (``<stem>_cal.fits``).

    Parameters
    ----------
    paths : iterable of path-like
        Raw files that go into one folder.

    Returns
    -------
    dict
        Path -> file name, distinct (case ignored) and at most
        `LONGEST_NAME` bytes.
    """
    paths = [Path(p) for p in paths]
    stems = {p: frame_stem(p.name) for p in paths}
    counts: dict[str, int] = {}
    for stem in stems.values():
        counts[stem.casefold()] = counts.get(stem.casefold(), 0) + 1
    names = {}
    for path, stem in stems.items():
        if counts[stem.casefold()] > 1:
            stem = path.name.replace(".", "_")
        names[path] = short_name(stem, suffix="_cal.fits")
    taken: dict[str, int] = {}
    for name in names.values():
        taken[name.casefold()] = taken.get(name.casefold(), 0) + 1
    for path, name in names.items():
        if taken[name.casefold()] > 1:      # e.g. "a.b" and "a_b" both given "a_b"
            digest = hashlib.blake2b(path.name.encode(), digest_size=4).hexdigest()
            names[path] = short_name(f"{name[:-len('_cal.fits')]}-{digest}", suffix="_cal.fits")
    return names
