"""napari layer data (Qt-free): labels heat maps, truth, boundary, band and comparison overlays."""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .evaluate.evaluation import Comparison, LayerData, ModelEntry
from .io.formats import Bins, LowResLabels
from .io.slide import Slide

if TYPE_CHECKING:
    from .elicit.review import ReviewBlock

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
#: Losses with a fixed boundary colour (SPEC section 4); other models get OTHER_COLORS.
LOSS_COLORS = {"intra+inter": BOUNDARY_COLORS["intra+inter"], "intra": BOUNDARY_COLORS["intra"]}
#: Shading of the evaluation band: a translucent dark veil over the band pixels.
BAND_COLOR = "#000000"
BAND_OPACITY = 0.25
#: Opacity of the probability heat map over the slide.
HEATMAP_OPACITY = 0.5
#: The block fills this fraction of the canvas's shorter side when the camera moves to it.
CAMERA_FILL = 1.0 / 3.0
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
    """Bin+1 of each block painted on a grid of ``cell`` level-0 px (0 = no block).

    Overlapping patches are painted from their centres, as the low-resolution model is
    (``evaluation.paint_labels``): each patch's step x step cell around its centre on top.
    """
    from .io.interop import patch_lattice

    lattice = patch_lattice(labels.x, labels.y, labels.width, labels.height)
    extra = [] if lattice is None else [lattice[0], lattice[1]]
    if lattice is not None:
        extra += [(lattice[2] - lattice[0]) // 2, (lattice[3] - lattice[1]) // 2]
    vals = np.concatenate(
        [labels.x, labels.y, labels.width, labels.height, np.asarray(extra, np.int64)]
    ).astype(np.int64)
    cell = int(np.gcd.reduce(vals[vals > 0])) if np.any(vals > 0) else 1
    sw, sh = slide_size
    while math.ceil(sw / cell) * math.ceil(sh / cell) > MAX_RASTER_PIXELS:
        cell *= 2
    raster = np.zeros((math.ceil(sh / cell), math.ceil(sw / cell)), np.uint8)
    boxes = list(zip(labels.x, labels.y, labels.width, labels.height, labels.bin))
    for x, y, w, h, z in boxes:
        raster[y // cell : (y + h) // cell, x // cell : (x + w) // cell] = z + 1
    if lattice is not None:
        sx, sy, pw, ph = lattice
        for x, y, w, h, z in boxes:
            cx, cy = x + (pw - sx) // 2, y + (ph - sy) // 2
            x1, y1 = min(cx + sx, x + w), min(cy + sy, y + h)
            raster[cy // cell : y1 // cell, cx // cell : x1 // cell] = z + 1
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
    from .io.formats import read_truth

    truth = read_truth(path, slide.dimensions)
    return boundary_layer_data(
        truth.mask,
        truth.downsample,
        slide,
        BOUNDARY_COLORS["truth"],
        f"{slide.name} ground truth",
        kind="truth",
    )


# -- model colours and the comparison's layers ---------------------------------------------


def _palette() -> Iterator[str]:
    """OTHER_COLORS, then as many further saturated hues as needed."""
    yield from OTHER_COLORS
    k = 0
    while True:
        h = (0.083 + 0.618034 * k) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.8, 1.0)
        yield f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
        k += 1


def model_colors(models: Sequence[ModelEntry]) -> dict[str, str]:
    """A boundary colour per model name: the first intra+inter model blue, the first intra
    model cyan, every other model a distinct colour from OTHER_COLORS (then further hues)."""
    reserved = {c.lower() for c in BOUNDARY_COLORS.values()}
    used: set[str] = set()
    out: dict[str, str] = {}
    palette = _palette()
    for m in models:
        color = LOSS_COLORS.get(m.statistic or "")
        if color is None or color in used:
            color = next(c for c in palette if c.lower() not in reserved | used)
        used.add(color.lower())
        out[m.name] = color
    return out


def band_layer_data(comp: Comparison) -> LayerData:
    """The evaluation band as a translucent labels layer on the truth grid."""
    from napari.utils.colormaps import DirectLabelColormap

    cmap = DirectLabelColormap(color_dict={0: "transparent", 1: BAND_COLOR, None: "transparent"})
    um = comp.band_um
    width = f"{um:.0f} um" if um else f"{comp.band_px:.0f} px"
    return (
        comp.band.astype(np.uint8),
        {
            "name": f"{comp.slide.name} evaluation band ({width})",
            "colormap": cmap,
            **_placement(comp.slide, comp.truth.downsample),
            "opacity": BAND_OPACITY,
            "units": "um" if comp.slide.mpp else "pixel",
            "metadata": {"napari_lsr": {"kind": "band", "band_px_level0": comp.band_px}},
        },
        "labels",
    )


def heatmap_layer_data(
    values: np.ndarray, downsample: float, slide: Slide, name: str, visible: bool = True
) -> LayerData:
    """A prediction's cancer probability (uint8) as a translucent heat map over the slide."""
    return (
        values,
        {
            "name": f"{name} probability",
            "colormap": "inferno",
            "contrast_limits": (0, 255),
            "opacity": HEATMAP_OPACITY,
            "blending": "translucent",
            "visible": visible,
            **_placement(slide, downsample),
            "units": "um" if slide.mpp else "pixel",
            "metadata": {"napari_lsr": {"kind": "heatmap", "downsample": downsample}},
        },
        "image",
    )


def comparison_layers(
    comp: Comparison, heat: Sequence[tuple[ModelEntry, np.ndarray, float]] = ()
) -> list[LayerData]:
    """Layers bottom to top: band, heat maps (first visible), low-res, models, ground truth."""
    out = [band_layer_data(comp)]
    for i, (m, values, pds) in enumerate(heat):
        out.append(heatmap_layer_data(values, pds, comp.slide, m.name, visible=i == 0))
    ds = comp.truth.downsample
    name = comp.slide.name
    ordered = [b for b in comp.boundaries if b.kind != "truth"]
    ordered += [b for b in comp.boundaries if b.kind == "truth"]
    for b in ordered:
        label = b.entry.label if b.entry is not None else b.name
        out.append(
            boundary_layer_data(b.mask, ds, comp.slide, b.color, f"{name} {label}", kind=b.kind)
        )
    return out


# -- where a block is in the viewer -------------------------------------------------------------


def world_box(block: ReviewBlock, unit: float) -> np.ndarray:
    """The block's rectangle as (4, 2) (y, x) world corners (``unit`` = mpp, or 1 for px).

    napari centres pixel k on coordinate k, so level-0 pixels [x, x + w) span x - 0.5 to
    x + w - 0.5 in data coordinates.
    """
    y0, x0 = (block.y - 0.5) * unit, (block.x - 0.5) * unit
    y1, x1 = (block.y + block.height - 0.5) * unit, (block.x + block.width - 0.5) * unit
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])


def world_center(block: ReviewBlock, unit: float) -> tuple[float, float]:
    """(y, x) world centre of the block."""
    return (
        (block.y + block.height / 2 - 0.5) * unit,
        (block.x + block.width / 2 - 0.5) * unit,
    )


def camera_zoom(
    block: ReviewBlock, unit: float, canvas_size: tuple[int, int], fill: float = CAMERA_FILL
) -> float:
    """Canvas pixels per world unit that make the block fill ``fill`` of the canvas."""
    side = max(block.width, block.height) * unit
    return fill * max(1, min(canvas_size)) / side
