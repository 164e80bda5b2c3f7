"""napari layer data (Qt-free) for labels heat maps, truth and boundary overlays."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from .formats import Bins, LowResLabels
from .slide import Slide

#: Bin colours, cold (no cancer) to hot (cancer), for the heat overlay and the legend.
BIN_COLORS = (
    "#313695",
    "#4575b4",
    "#74add1",
    "#abd9e9",
    "#e0f3f8",
    "#fee090",
    "#fdae61",
    "#f46d43",
    "#d73027",
    "#a50026",
)
#: Boundary colours of the paper's Figure 4 (red, green, blue, cyan), used everywhere. The
#: blue is an azure (#3d8bff) rather than pure #0000ff, which is nearly invisible on napari's
#: dark theme and on haematoxylin-purple tissue; it is also drawn wider (BOUNDARY_WIDTHS).
BOUNDARY_COLORS = {
    "truth": "#ff0000",
    "lowres": "#00ff00",
    "intra+inter": "#3d8bff",
    "intra": "#00ffff",
}
#: The colour names the legend gives (the paper's words).
COLOR_NAMES = {
    BOUNDARY_COLORS["truth"]: "red",
    BOUNDARY_COLORS["lowres"]: "green",
    BOUNDARY_COLORS["intra+inter"]: "blue",
    BOUNDARY_COLORS["intra"]: "cyan",
}
#: Boundary line width in pixels of the truth grid: 2, and 3 for the blue intra+inter line.
BOUNDARY_WIDTH = 2
BOUNDARY_WIDTHS = {BOUNDARY_COLORS["intra+inter"]: 3}
#: Colours for other models, in order.
OTHER_COLORS = ("#ff00ff", "#ffff00", "#ff8000", "#8000ff", "#00ff80", "#ffffff")
#: Largest raster painted for a heat overlay.
MAX_RASTER_PIXELS = 16_000_000


def boundary_width(color: str) -> int:
    """Line width (truth-grid pixels) of a boundary drawn in ``color``."""
    return BOUNDARY_WIDTHS.get(color.lower(), BOUNDARY_WIDTH)


def color_label(color: str) -> str:
    """``blue #3d8bff, 3 px``: how the legend names a boundary's colour and width."""
    name = COLOR_NAMES.get(color.lower())
    return f"{name + ' ' if name else ''}{color.lower()}, {boundary_width(color)} px"


def bin_color(b: int, n_bins: int) -> str:
    """Colour of bin b out of n_bins (sampled from the 10-colour ramp)."""
    if n_bins <= 1:
        return BIN_COLORS[-1]
    return BIN_COLORS[round(b * (len(BIN_COLORS) - 1) / (n_bins - 1))]


def labels_raster(labels: LowResLabels, slide_size: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Bin+1 of each block painted on a grid of ``cell`` level-0 px (0 = no block)."""
    vals = np.concatenate([labels.x, labels.y, labels.width, labels.height]).astype(np.int64)
    cell = int(np.gcd.reduce(vals[vals > 0])) if np.any(vals > 0) else 1
    sw, sh = slide_size
    while math.ceil(sw / cell) * math.ceil(sh / cell) > MAX_RASTER_PIXELS:
        cell *= 2
    raster = np.zeros((math.ceil(sh / cell), math.ceil(sw / cell)), np.uint8)
    for x, y, w, h, z in zip(labels.x, labels.y, labels.width, labels.height, labels.bin):
        raster[y // cell : (y + h) // cell, x // cell : (x + w) // cell] = z + 1
    return raster, cell


def bin_colormap(n_bins: int) -> Any:
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[Any, Any] = {0: "transparent", None: "transparent"}
    colors.update({b + 1: bin_color(b, n_bins) for b in range(n_bins)})
    return DirectLabelColormap(color_dict=colors)


def _placement(slide: Slide, factor: float) -> dict[str, Any]:
    """scale and translate that put a raster of ``factor`` level-0 px per pixel on the slide.

    A raster pixel k covers level-0 pixels [k*factor, (k+1)*factor); napari centres pixels on
    their index, so the raster is shifted by (factor - 1) / 2 level-0 pixels.
    """
    unit = slide.mpp if slide.mpp else 1.0
    shift = (factor - 1) / 2 * unit
    return {"scale": (unit * factor, unit * factor), "translate": (shift, shift)}


def labels_layer_data(labels: LowResLabels, slide: Slide, bins: Bins) -> tuple:
    """The binned patch-probability heat overlay as a labels layer (label = bin + 1)."""
    raster, cell = labels_raster(labels, slide.dimensions)
    return (
        raster,
        {
            "name": f"{slide.name} low-res bins",
            "colormap": bin_colormap(len(bins)),
            **_placement(slide, cell),
            "opacity": 0.4,
            "units": "um" if slide.mpp else "pixel",
            "metadata": {
                "napari_lsr": {
                    "kind": "lowres",
                    "bins": [list(e) for e in bins.edges],
                    "cell": cell,
                }
            },
        },
        "labels",
    )


def boundary_raster(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Pixels on the inner boundary of a binary mask, dilated to ``thickness``."""
    from scipy import ndimage as ndi

    mask = np.asarray(mask, bool)
    edge = mask & ~ndi.binary_erosion(mask, border_value=1)
    if thickness > 1:
        edge = ndi.binary_dilation(edge, iterations=thickness - 1)
    return edge


def boundary_layer_data(
    mask: np.ndarray,
    downsample: float,
    slide: Slide,
    color: str,
    name: str,
    thickness: int | None = None,
    kind: str = "boundary",
) -> tuple:
    """A boundary overlay: a labels layer whose one label is drawn in ``color``, ``thickness``
    truth-grid pixels wide (default ``boundary_width(color)``)."""
    from napari.utils.colormaps import DirectLabelColormap

    if thickness is None:
        thickness = boundary_width(color)
    edge = boundary_raster(mask, thickness).astype(np.uint8)
    cmap = DirectLabelColormap(color_dict={0: "transparent", 1: color, None: "transparent"})
    return (
        edge,
        {
            "name": name,
            "colormap": cmap,
            **_placement(slide, downsample),
            "opacity": 1.0,
            "blending": "translucent_no_depth",
            "units": "um" if slide.mpp else "pixel",
            "metadata": {"napari_lsr": {"kind": kind, "color": color, "downsample": downsample}},
        },
        "labels",
    )


def truth_layer_data(path: str | os.PathLike, slide: Slide) -> tuple:
    """Ground-truth boundary (red) from a mask image or GeoJSON."""
    from .formats import read_truth

    truth = read_truth(path, slide.dimensions)
    return boundary_layer_data(
        truth.mask,
        truth.downsample,
        slide,
        BOUNDARY_COLORS["truth"],
        f"{slide.name} ground truth",
        kind="truth",
    )
