"""Speed and memory of master frames and calibration on full-size KOSMOS frames.

Run by hand:  python benchmarks/bench_masters.py [--runs 3] [--folder DIR]

Simulates 30 KOSMOS biases, 3 flats and a science frame at full size
(4096 x 2148 int32 raw, with overscan), then times every approach in its own
process (so its peak memory is its own), ``--runs`` times, and prints the
median time and peak memory of each with ratios to the floor measured in
the same run:

floor            read the files (astropy, as float32) and take a bottleneck
                 median: what any master-bias builder pays, without
                 overscan, gain, uncertainty or flags.
apocal           CalibrationSet(KOSMOS()).add_biases(files): overscan, trim,
                 gain, median with an uncertainty from the inputs, flags.
ccdproc          ccdproc.combine(files, method="median", unit="adu").
... clipped      the same with sigma clipping (apocal: 3 sigma against each
                 value's own uncertainty; ccdproc: sigma_clip=True, 3 sigma).
calibrate        CalibrationSet.calibrate() of one science frame (master
                 bias and flat applied), against the floor of reading that
                 frame and writing it (astropy, float32).
overscan         apocal.overscan.estimate_overscan on both amplifiers'
                 overscans of one frame (4096 rows x 33 columns each).

With ``--baseline DIR`` (a source tree holding another version's
``apocal`` package, e.g. ``git worktree add /tmp/base <commit>``), every
apocal row is measured for that version too, in the same run, so a change
is reported as ratios measured side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FRAME_BYTES = 4096 * 2148 * 4          # one raw KOSMOS frame as float32

COMBINE = {
    "floor": """
import bottleneck as bn, numpy as np
from astropy.io import fits
start = time.perf_counter()
stack = np.stack([fits.getdata(f).astype(np.float32) for f in files])
result = bn.median(stack, axis=0)
""",
    "apocal": """
import apocal
from apocal.instruments import KOSMOS
start = time.perf_counter()
result = apocal.CalibrationSet(KOSMOS()).add_biases(files, **options).master_bias
""",
    "ccdproc": """
import ccdproc, warnings
warnings.simplefilter("ignore")
start = time.perf_counter()
result = ccdproc.combine(files, method="median", unit="adu", **options)
""",
}

OVERSCAN = """
import numpy as np
from astropy.io import fits
from apocal.overscan import estimate_overscan
raw = fits.getdata(science).astype(np.float64)
start = time.perf_counter()
for _ in range(10):
    for columns in (slice(2055, 2088), slice(2105, 2138)):
        estimate_overscan(raw[:, columns], "rows", 101)
"""

CALIBRATE = {
    "floor": """
import numpy as np, os
from astropy.io import fits
out = os.path.join(os.path.dirname(science), "floor-out.fits")
start = time.perf_counter()
fits.writeto(out, fits.getdata(science).astype(np.float32), overwrite=True)
""",
    "apocal": """
import apocal
from apocal.instruments import KOSMOS
cal = apocal.CalibrationSet(KOSMOS()).add_biases(files).add_flats(flats)
cal.calibrate(science)            # the masters' squared uncertainties are made once
start = time.perf_counter()
result = cal.calibrate(science)
""",
}

# Peak memory is the process's high-water mark of resident memory (VmHWM),
# which starts afresh at exec; getrusage's ru_maxrss would carry over the
# parent's peak.
RUNNER = """
import json, sys, time
{path}
files, flats, science, options = json.loads(sys.argv[1])
{body}
elapsed = time.perf_counter() - start
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
print(json.dumps({{"seconds": elapsed, "peak_bytes": peak}}))
"""


def measure(body: str, files, flats=(), science="", options=None, runs: int = 3,
            source: str | None = None) -> dict:
    """Median seconds and peak bytes of ``body`` over ``runs`` fresh processes
    (importing apocal from the folder ``source`` when given)."""
    path = f"sys.path.insert(0, {source!r})" if source else ""
    code = RUNNER.format(body=body, path=path)
    args = json.dumps([list(files), list(flats), science, options or {}])
    results = [json.loads(subprocess.run([sys.executable, "-c", code, args], check=True,
                                         capture_output=True, text=True).stdout.splitlines()[-1])
               for _ in range(runs)]
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def row(label, result, floor, stack_bytes=None):
    """One line: seconds, peak GiB, time and memory over the floor's (and
    memory over the float32 stack's when ``stack_bytes`` is given)."""
    line = (f"{label:34s} {result['seconds']:8.3f} {result['peak_bytes'] / 2**30:9.2f} "
            f"{result['seconds'] / floor['seconds']:7.2f}")
    if stack_bytes:
        line += (f" {result['peak_bytes'] / floor['peak_bytes']:8.2f}"
                 f" {result['peak_bytes'] / stack_bytes:8.2f}")
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="processes per measurement")
    parser.add_argument("--folder", help="where to simulate the frames (default: a "
                                         "temporary folder, removed afterwards)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="a source tree with another version of apocal, measured in the "
                             "same run (rows marked 'baseline')")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        run(Path(folder), args.runs, args.baseline)


def run(folder: Path, runs: int, baseline: str | None = None) -> None:
    from apocal.instruments import KOSMOS
    from apocal.simulate import simulate

    start = time.perf_counter()
    night = simulate(KOSMOS(), folder, bias=30, flat=3, arc=0, science=1, seed=1)
    biases = [str(p) for p in night["bias"]]
    flats = [str(p) for p in night["flat"]]
    science = str(night["science"][0])
    print(f"simulated 30 biases, 3 flats and 1 science frame (4096 x 2148 int32) in "
          f"{time.perf_counter() - start:.0f} s; median of {runs} runs, each in its own process")

    header = (f"{'':34s} {'seconds':>8s} {'peak GiB':>9s} {'x floor':>7s} {'x floor':>8s} "
              f"{'x stack':>8s}")
    for n in (10, 30):
        files = biases[:n]
        stack = n * FRAME_BYTES
        print(f"\nmaster bias from {n} frames (float32 stack {stack / 2**30:.2f} GiB)")
        print(header + "  (time, memory, memory)")
        floor = measure(COMBINE["floor"], files, runs=runs)
        row("floor (read + bottleneck median)", floor, floor, stack)
        row("apocal median", measure(COMBINE["apocal"], files, runs=runs), floor, stack)
        if baseline:
            row("apocal median (baseline)", measure(COMBINE["apocal"], files, runs=runs,
                                                     source=baseline), floor, stack)
        if n == 30:
            row("apocal median, memory_limit=1e9",
                measure(COMBINE["apocal"], files, options={"memory_limit": 1e9}, runs=runs),
                floor, stack)
            continue
        row("ccdproc.combine median", measure(COMBINE["ccdproc"], files, runs=runs), floor, stack)
        clipped = measure(COMBINE["apocal"], files, options={"sigma_clip": 3.0}, runs=runs)
        ccd_clipped = measure(COMBINE["ccdproc"], files, runs=runs,
                              options={"sigma_clip": True, "sigma_clip_low_thresh": 3,
                                       "sigma_clip_high_thresh": 3})
        row("apocal median, sigma-clipped", clipped, floor, stack)
        row("ccdproc.combine, sigma_clip=True", ccd_clipped, floor, stack)
        print(f"{'sigma-clipped: ccdproc / apocal time':34s} "
              f"{ccd_clipped['seconds'] / clipped['seconds']:8.2f}")

    print("\none science frame")
    print(f"{'':34s} {'seconds':>8s} {'peak GiB':>9s} {'x floor':>7s}  (the apocal process "
          f"holds the masters)")
    floor = measure(CALIBRATE["floor"], [], science=science, runs=runs)
    row("floor (read + write, float32)", floor, floor)
    row("apocal calibrate()", measure(CALIBRATE["apocal"], biases[:10], flats, science,
                                       runs=runs), floor)
    if baseline:
        row("apocal calibrate() (baseline)", measure(CALIBRATE["apocal"], biases[:10], flats,
                                                      science, runs=runs, source=baseline), floor)
    print("\noverscan of one frame (two amplifiers, 4096 rows x 33 columns; mean of 10)")
    ours = measure(OVERSCAN, [], science=science, runs=runs)
    print(f"{'apocal estimate_overscan':34s} {ours['seconds'] / 10:8.4f}")
    if baseline:
        theirs = measure(OVERSCAN, [], science=science, runs=runs, source=baseline)
        print(f"{'apocal estimate_overscan (baseline)':34s} {theirs['seconds'] / 10:8.4f}")
        print(f"{'robust / baseline time':34s} {ours['seconds'] / theirs['seconds']:8.2f}")


if __name__ == "__main__":
    main()
