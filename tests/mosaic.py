"""A mosaic camera's raw frames, written from explicit arrays (no apocal).

Two CCDs side by side, each read by two amplifiers; every amplifier in its
own extension with its own DATASEC, BIASSEC, DETSEC (amplifiers 2 and 4
read from the right, so their DETSEC runs backwards in x; amplifier 3's in
y) and GAIN. The unbinned detector is 24 columns x 10 rows.
"""

import numpy as np

from .rawwriter import image, write_raw

DETSECS = ["[1:6,1:10]", "[12:7,1:10]", "[13:18,10:1]", "[24:19,1:10]"]
GAINS = [1.5, 2.0, 1.25, 3.0]
LEVELS = [1000.0, 1500.0, 800.0, 1200.0]


def detector_truth(bx=1, by=1, scale=1.0):
    """Electrons on the detector: every pixel different, so orientation
    shows; multiples of 30 e-, so each amplifier's ADU are whole numbers."""
    rows, cols = 10 // by, 24 // bx
    y, x = np.mgrid[0:rows, 0:cols]
    return 30.0 * np.round(scale * (100 * (y + 1) + 3 * x + 7))


def write_mosaic(path, bx=1, by=1, compress=False, electrons=None, cards=None):
    """Write one raw frame of ``electrons`` (default `detector_truth`) on
    the detector; returns the path and the electrons."""
    truth = detector_truth(bx, by) if electrons is None else electrons
    primary = {"INSTRUME": "TESTMOS", "IMAGETYP": "object", "EXPTIME": 30.0}
    primary.update(cards or {})
    hdus = [image(None, cards=primary)]
    for number, (detsec, gain, level) in enumerate(zip(DETSECS, GAINS, LEVELS), start=1):
        x1, x2, y1, y2 = (int(v) for v in detsec.strip("[]").replace(",", ":").split(":"))
        cols = slice((min(x1, x2) - 1) // bx, max(x1, x2) // bx)
        rows = slice((min(y1, y2) - 1) // by, max(y1, y2) // by)
        data = truth[rows, cols]
        data = data[:, ::-1] if x2 < x1 else data
        data = data[::-1, :] if y2 < y1 else data
        n_rows, n_cols = data.shape
        raw = np.zeros((n_rows, 2 + n_cols + 4))
        raw[:, :] = level + 2.0 * np.arange(n_rows)[:, None]   # the bias drifts along the rows
        raw[:, 2:2 + n_cols] += data / gain
        hdus.append(image(raw, 32, 2**31, extname=f"AMP{number}", cards={
            "DATASEC": f"[3:{2 + n_cols},1:{n_rows}]",
            "BIASSEC": f"[{3 + n_cols}:{6 + n_cols},1:{n_rows}]",
            "DETSEC": detsec, "CCDSUM": f"{bx} {by}", "GAIN": gain, "RDNOISE": 4.0}))
    return write_raw(path, *hdus, compress=compress), truth
