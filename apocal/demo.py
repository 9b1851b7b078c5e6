"""`run_demo`: a simulated night for KOSMOS, DIS Red and Blue and an SBO
camera, reduced with `reduce_night`, so a new user sees the whole flow
without data of their own."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .exceptions import ApocalError
from .instruments import KOSMOS, SBO, DISBlue, DISRed
from .night import Reduction, reduce_night
from .simulate import simulate

__all__ = ["run_demo", "DEMO_SIZES"]

log = logging.getLogger("apocal")

#: Binning per demo size: "small" keeps every feature at a quarter of the pixels.
DEMO_SIZES = {"small": (2, 2), "full": (1, 1)}

# (instrument, frames, exposure times, first file number)
_PLAN = (
    (KOSMOS, dict(bias=5, flat=5, arc=2, science=2), {"flat": 10.0, "arc": 5.0, "science": 600.0}),
    (DISRed, dict(bias=5, flat=5, arc=2, science=2), {"flat": 8.0, "arc": 4.0, "science": 900.0}),
    (DISBlue, dict(bias=5, flat=5, arc=2, science=2), {"flat": 8.0, "arc": 4.0, "science": 900.0}),
    (SBO, dict(bias=5, dark=5, flat=5, science=3), {"dark": 60.0, "flat": 5.0, "science": 60.0}),
)


def run_demo(output_dir: str | os.PathLike = "apocal-demo", *, size: str = "small",
             overwrite: bool = False,
             progress: bool = False) -> Reduction:
    """Simulate a night into ``output_dir/raw`` and reduce it into ``output_dir/reduced``.

    Parameters
    ----------
    output_dir : str or path-like
        Folder for the demo (created).
    size : {"small", "full"}
        "small" simulates 2x2-binned frames (fast), "full" unbinned ones.
    overwrite : bool
        Replace an earlier demo in the same folder.
    progress : bool
        Show progress bars.

    Returns
    -------
    Reduction
        What the reduction did; ``report`` is the HTML report.
    """
    if size not in DEMO_SIZES:
        raise ApocalError(f"size must be one of {', '.join(DEMO_SIZES)}, not {size!r}")
    output_dir = Path(output_dir)
    raw = output_dir / "raw"
    if raw.exists() and any(raw.iterdir()) and not overwrite:
        if not (raw / "truth-sbo.json").exists():
            raise ApocalError(f"{raw}: exists and is not a complete demo night; use "
                              f"--overwrite or another folder")
        log.info("raw frames already simulated in %s", raw)
    else:
        for seed, (cls, counts, exptime) in enumerate(_PLAN, start=1):
            instrument = cls()
            log.info("simulating %s frames", instrument.name)
            simulate(instrument, raw, exptime=exptime, binning=DEMO_SIZES[size], seed=seed,
                     detector_seed=seed, truth=f"truth-{instrument.name}", overwrite=overwrite,
                     **counts)
    return reduce_night(raw, output_dir / "reduced", overwrite=overwrite, progress=progress)
