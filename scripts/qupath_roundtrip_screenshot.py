"""Make docs/images/qupath_roundtrip.png: exported QuPath regions read back over the slide.

The synthetic sample, a stand-in prediction (its ground truth, smoothed, as probabilities), the
prediction's regions exported to GeoJSON as for QuPath, then read back with the truth reader
and shown in napari over the slide: the read-back mask filled in yellow, the GeoJSON outlines
(holes included) in yellow, the sample's ground truth in red. Run with a display (or
``xvfb-run -a``): ``python scripts/qupath_roundtrip_screenshot.py [OUT.png]``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_lsr._reader import slide_layer_data
from napari_lsr.io.formats import read_truth, write_prediction
from napari_lsr.io.interop import export_geojson
from napari_lsr.layers import BOUNDARY_COLORS, _placement, boundary_layer_data
from napari_lsr.sample.synthetic import write_sample

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "qupath_roundtrip.png"


def main(out: Path = OUT) -> Path:
    import napari

    tmp = Path(tempfile.mkdtemp(prefix="lsr_roundtrip_"))
    project = write_sample(tmp / "project", size=2048, mpp=1.0, seed=0)
    entry = project.slides[0]
    slide = entry.open()
    truth = read_truth(entry.truth, slide.dimensions)  # at 1/4 of level 0
    prob = ndimage.gaussian_filter(truth.mask.astype(np.float32), 3.0)
    meta = {
        "slide": str(entry.path),
        "slide_width": slide.width,
        "slide_height": slide.height,
        "downsample": truth.downsample,
        "mpp": slide.mpp * truth.downsample,
        "model": "stand-in (smoothed truth)",
        "loss": "none",
    }
    pred = tmp / "prediction.tiff"
    write_prediction(pred, np.round(prob * 255).astype(np.uint8), meta)
    regions = tmp / "regions.geojson"
    info = export_geojson(pred, regions, min_area_um2=400.0)
    back = read_truth(regions, slide.dimensions)  # the project's own truth reader
    print(f"{info['features']} regions exported to {regions}; read back at {back.downsample}x")

    unit = slide.mpp or 1.0
    units = "um" if slide.mpp else "pixel"
    viewer = napari.Viewer(show=True)
    data, lmeta, _ = slide_layer_data(slide)
    viewer.add_image(data, **lmeta)
    viewer.add_labels(
        back.mask.astype(np.uint8),
        name="exported regions, read back",
        opacity=0.35,
        colormap=_yellow(),
        units=units,
        **_placement(slide, back.downsample),
    )
    rings = []
    for f in json.loads(regions.read_text())["features"]:
        geom = f["geometry"]
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        for poly in polys:
            for ring in poly:
                xy = np.asarray(ring, float)
                rings.append(xy[:, ::-1] - 0.5)  # (row, col); napari centres pixel k on k
    t_data, t_meta, _ = boundary_layer_data(
        truth.mask, truth.downsample, slide, BOUNDARY_COLORS["truth"], "ground truth", 1
    )
    viewer.add_labels(t_data, **t_meta)
    viewer.add_shapes(
        rings,
        shape_type="path",
        edge_color="yellow",
        edge_width=4.0 * unit,
        name="GeoJSON outlines",
        scale=(unit, unit),
        units=units,
    )
    viewer.window.resize(1300, 1000)
    viewer.reset_view()
    viewer.camera.center = (860 * unit, 900 * unit)  # the middle regions, one with a hole
    viewer.camera.zoom *= 2.0
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=True, flash=False)
    viewer.close()
    slide.close()
    print(f"wrote {out}")
    return out


def _yellow():
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={0: "transparent", 1: "yellow", None: "transparent"})


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
