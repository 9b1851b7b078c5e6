"""Make ``docs/_static/stack_xo1.png``: one calibrated XO-1 frame against the
stack of six (the real ARCSAT frames in ``../shared/data/arcsat-2025``).

Run from the repository: ``python docs/make_stack_figure.py``. The frames
are read from ``$APOCAL_SHARED_DATA`` or ``../shared/data``; nothing is
written next to them.
"""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from astropy.stats import sigma_clipped_stats  # noqa: E402

import apocal  # noqa: E402
from apocal.instruments import SBO  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("APOCAL_SHARED_DATA", REPO.parent / "shared" / "data"))


def main(output=REPO / "docs" / "_static" / "stack_xo1.png"):
    folder = SHARED / "arcsat-2025"
    # gain and read noise measured from this night's biases and flats
    cal = (apocal.CalibrationSet(SBO(gain=1.336, read_noise=16.2))
           .add_biases(sorted(folder.glob("Bias_*.fits")))
           .add_darks(sorted(folder.glob("Dark_*.fits")))
           .add_flats(sorted(folder.glob("domeflat_z_*.fits"))))
    lights = sorted(folder.glob("XO1-b_z_*.fits"))
    single = cal.calibrate(lights[0])
    stacked = cal.stack(lights)
    cut = (slice(362, 662), slice(362, 662))          # 300 x 300 pixels around XO-1
    image = stacked.image.data[cut]
    # one scale for both: from 2 below to 6 above the sky, in the single frame's noise
    _, sky, noise = sigma_clipped_stats(single.data[cut], mask=single.mask[cut])
    norm = matplotlib.colors.Normalize(sky - 2 * noise, sky + 6 * noise)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), layout="constrained")
    for ax, data, title in ((axes[0], single.data[cut], "one 60 s frame"),
                            (axes[1], image, f"stack of {len(lights)} (interp)")):
        shown = ax.imshow(data, origin="lower", cmap="gray", norm=norm, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel("column [pixel]")
    fig.colorbar(shown, ax=axes[:2], label="[electron]", shrink=0.9)
    axes[0].set_ylabel("row [pixel]")
    cover = axes[2].imshow(stacked.coverage, origin="lower", cmap="viridis",
                           interpolation="nearest", vmin=0, vmax=len(lights))
    axes[2].set_title("coverage, whole frame")
    axes[2].set_xlabel("column [pixel]")
    fig.colorbar(cover, ax=axes[2], label="frames used", shrink=0.9)
    fig.suptitle("XO-1, ARCSAT 0.5 m, z band: calibrated and stacked with apocal")
    fig.savefig(output, dpi=64)
    return output


if __name__ == "__main__":
    print(main())
