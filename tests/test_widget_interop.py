"""The widgets' ends of interop: WSInfer class drop-down, regions to QuPath, estimates export.

Run under Xvfb: ``xvfb-run -a python -m pytest tests/test_widget_interop.py``.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from napari_lsr._reader import slide_layer_data
from napari_lsr.io.formats import read_truth, write_prediction
from napari_lsr.io.interop import read_lowres

pytestmark = pytest.mark.gui


def wsinfer_csv(project, path):
    lab = read_lowres(project.slides[0].labels)
    rows = zip(lab.x, lab.y, lab.width, lab.height, lab.probability)
    path.write_text(
        "minx,miny,width,height,prob_notumor,prob_Tumor\n"
        + "".join(f"{x},{y},{w},{h},{1 - p:.6f},{p:.6f}\n" for x, y, w, h, p in rows)
    )
    return lab


def test_block_review_reads_wsinfer_with_class_drop_down(make_napari_viewer, project_copy):
    from napari_lsr.io.slide import Slide
    from napari_lsr.widgets.block_review import BlockReviewWidget

    viewer = make_napari_viewer()
    entry = project_copy.slides[0]
    slide = Slide(entry.path)  # stays open: the layer reads from it
    data, meta, _ = slide_layer_data(slide)
    viewer.add_image(data, **meta)
    w = BlockReviewWidget(viewer)
    ws = entry.path.parent / "slide_0.wsinfer.csv"
    lab = wsinfer_csv(project_copy, ws)
    assert not w.class_combo.isEnabled()
    w.csv_edit.setText(str(ws))
    items = [w.class_combo.itemText(i) for i in range(w.class_combo.count())]
    assert items == ["notumor", "Tumor"] and w.class_combo.currentText() == "Tumor"
    w.annotator_edit.setText("ana")
    assert w.use_viewer_slide(str(ws)), w.message.text()
    assert w.project.slides[0].labels_class == "Tumor"
    assert np.allclose(w.labels_by_slide[0].probability, lab.probability, atol=1e-6)
    w.csv_edit.setText(str(entry.labels))  # the native CSV has no classes
    assert not w.class_combo.isEnabled() and w.labels_class() is None
    w.shutdown()


def test_comparison_exports_regions_to_qupath(make_napari_viewer, project_copy, tmp_path):
    from napari_lsr.widgets.comparison import ENTRY_ROLE, ComparisonWidget

    entry = project_copy.slides[0]
    truth = read_truth(entry.truth, (768, 768))  # downsample 4
    info = {
        "slide": str(entry.path.resolve()),
        "slide_width": 768,
        "slide_height": 768,
        "downsample": 4.0,
        "mpp": 8.0,
        "model": "lsr",
        "loss": "intra+inter/gaussian",
    }
    pred = tmp_path / "lsr.tiff"
    write_prediction(pred, np.where(truth.mask, 230, 20).astype(np.uint8), info)
    viewer = make_napari_viewer()
    widget = ComparisonWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Comparison", area="right")
    assert widget.open_project(project_copy.folder)
    out = tmp_path / "regions.geojson"
    assert widget.add_prediction_file(pred)
    for i in range(widget.models_list.count()):
        if widget.models_list.item(i).data(ENTRY_ROLE).prediction == pred:
            widget.models_list.setCurrentRow(i)
    assert widget.export_regions(out) == out
    feats = json.loads(out.read_text())["features"]
    assert feats and all(shapely.is_valid(shape(f["geometry"])) for f in feats)
    assert {f["properties"]["loss"] for f in feats} == {"intra+inter/gaussian"}
    assert "region(s)" in widget.status.text()
    back = read_truth(out, (768, 768), downsample=4)
    assert (back.mask ^ truth.mask).mean() < 0.02


def test_prior_table_exports_estimates(make_napari_viewer, project_copy, tmp_path):
    from napari_lsr.elicit.review import SlideSet, load_blocks
    from napari_lsr.widgets.prior_table import PriorTableWidget

    _slides = SlideSet(project_copy)
    load_blocks(project_copy, _slides)
    _slides.close()
    ids = sorted(project_copy.store.block_ids(1).values())
    project_copy.store.add_estimate(ids[0], "ana", 25.0)
    project_copy.store.add_estimate(ids[1], "ana", None, skipped=True)
    project_copy.close()
    viewer = make_napari_viewer()
    w = PriorTableWidget(viewer)
    out = tmp_path / "estimates.csv"
    assert w.export_estimates(out) is None  # no project yet
    assert w.open_project(str(project_copy.folder))
    assert w.export_estimates(out) == out
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["annotator"], r["status"]) for r in rows] == [
        ("ana", "recorded"),
        ("ana", "skipped"),
    ]
