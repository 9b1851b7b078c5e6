"""Looking at a frame: zscale display with a colour bar and masks overlaid."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from astropy.nddata import CCDData

from ..flags import Flag

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["show_frame", "axes_or_new"]


def axes_or_new(ax: Axes | None = None) -> Axes:
    """``ax``, or the Axes of a new figure when ``ax`` is None."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def show_frame(frame: CCDData | np.ndarray, *, mask: bool | np.ndarray | Flag | None = None,
               title: str | None = None, ax: Axes | None = None, cmap: str = "gray",
               mask_color: str = "red", mask_alpha: float = 0.5,
               colorbar: bool = True) -> Axes:
    """Display a frame or master with zscale limits and a colour bar.

    Parameters
    ----------
    frame : astropy.nddata.CCDData or numpy.ndarray
        Any 2-D image (raw, processed, master); row 0 is drawn at the bottom.
    mask : bool, numpy.ndarray, Flag or None
        Pixels to overlay in ``mask_color``: True for the frame's own
        ``mask``, a boolean image, or `apocal.Flag` bits to pick from the
        frame's ``flags`` (e.g. ``Flag.SATURATED | Flag.NONLINEAR``).
    title : str, optional
        Axes title.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure by default.
    cmap : str
        Colour map of the image.
    mask_color : str
        Colour of the masked pixels.
    mask_alpha : float
        Opacity of the mask overlay.
    colorbar : bool
        Add a colour bar labelled with the frame's unit.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from astropy.visualization import ImageNormalize, ZScaleInterval  # imports matplotlib

    data = np.asarray(frame.data if isinstance(frame, CCDData) else frame, dtype=float)
    finite = data[np.isfinite(data)]
    norm = ImageNormalize(finite if finite.size else np.zeros(1), interval=ZScaleInterval())
    ax = axes_or_new(ax)
    image = ax.imshow(data, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    if colorbar:
        unit = getattr(frame, "unit", None)
        label = f"[{unit}]" if unit is not None and str(unit) else "value"
        ax.figure.colorbar(image, ax=ax, label=label)
    shown = _mask(frame, mask)
    if shown is not None and shown.any():
        from matplotlib.colors import ListedColormap

        ax.imshow(np.ma.masked_where(~shown, np.ones(shown.shape)), origin="lower",
                  cmap=ListedColormap([mask_color]), alpha=mask_alpha, interpolation="nearest")
    ax.set_xlabel("column [pixel]")
    ax.set_ylabel("row [pixel]")
    if title:
        ax.set_title(title)
    return ax


def _mask(frame, mask) -> np.ndarray | None:
    if mask is None or mask is False:
        return None
    if isinstance(mask, Flag):
        flags = getattr(frame, "flags", None)
        if flags is None:
            raise ValueError("mask=Flag(...) needs a frame with flags (a processed CCDData)")
        return (np.asarray(flags) & int(mask)) != 0
    if mask is True:
        own = getattr(frame, "mask", None)
        return None if own is None else np.asarray(own, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != np.shape(frame):
        raise ValueError(f"mask shape {mask.shape} differs from the frame's {np.shape(frame)}")
    return mask
