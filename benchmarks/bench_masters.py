"""Speed and memory of building a master bias from full-size KOSMOS frames.

Run by hand:  python benchmarks/bench_masters.py [N_FRAMES]

Each approach runs in its own process (so peak memory is its own) on the
same N simulated 4096 x 2148 int32 KOSMOS biases, and is reported as a
ratio to the reference measured in the same run:

reference   read the files and take a bottleneck median (no overscan, no
            uncertainty): the floor any master-bias builder pays.
ccdproc     ccdproc.combine(files, method="median", unit="adu").
apocal      CalibrationSet(KOSMOS()).add_biases(files): overscan, trim, gain,
            median with an uncertainty from the inputs, flags.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKERS = {
    "reference": """
import bottleneck as bn, numpy as np
from astropy.io import fits
stack = np.stack([fits.getdata(f).astype(np.float32) for f in files])
result = bn.median(stack, axis=0)
""",
    "ccdproc": """
import ccdproc, warnings
warnings.simplefilter("ignore")
result = ccdproc.combine(files, method="median", unit="adu")
""",
    "apocal": """
import apocal
from apocal.instruments import KOSMOS
result = apocal.CalibrationSet(KOSMOS()).add_biases(files).master_bias
""",
}

RUNNER = """
import json, resource, sys, time
files = json.loads(sys.argv[1])
start = time.perf_counter()
{body}
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"seconds": elapsed, "peak_bytes": peak}}))
"""


def measure(name: str, files: list[str]) -> dict:
    code = RUNNER.format(body=WORKERS[name])
    out = subprocess.run([sys.executable, "-c", code, json.dumps(files)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(n_frames: int = 10) -> None:
    from apocal.instruments import KOSMOS
    from apocal.simulate import simulate

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        night = simulate(KOSMOS(), Path(folder), bias=n_frames, flat=0, arc=0, science=0, seed=1)
        files = [str(p) for p in night["bias"]]
        print(f"simulated {n_frames} full KOSMOS biases in {time.perf_counter() - start:.1f} s")
        results = {name: measure(name, files) for name in WORKERS}
    ref = results["reference"]
    print(f"{'':10s} {'seconds':>8s} {'x ref':>6s} {'peak GiB':>9s} {'x ref':>6s}")
    for name, r in results.items():
        print(f"{name:10s} {r['seconds']:8.2f} {r['seconds'] / ref['seconds']:6.2f} "
              f"{r['peak_bytes'] / 2**30:9.2f} {r['peak_bytes'] / ref['peak_bytes']:6.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
