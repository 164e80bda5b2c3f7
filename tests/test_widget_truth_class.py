"""The Comparison widget's Truth class field (issue #23): a GeoJSON truth's class chosen by
name, never a non-tumour class read as tumour."""

from __future__ import annotations

import json
import uuid

import pytest

from napari_lsr.compare import CompareRequest, run_comparison
from napari_lsr.io.formats import FormatError

WAIT_MS = 120_000


def write_truth(folder, size: int) -> object:
    """QuPath 0.4+ annotations: Stroma: Negative on the left half, Tumor: Positive on the
    right quarter."""

    def feat(x0: int, x1: int, names: list[str]) -> dict:
        ring = [[x0, 0], [x1, 0], [x1, size], [x0, size], [x0, 0]]
        return {
            "type": "Feature",
            "id": str(uuid.uuid4()),
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "annotation",
                "classification": {"names": names, "color": [1, 2, 3]},
            },
        }

    path = folder / "qupath_truth.geojson"
    feats = [feat(0, size // 2, ["Stroma", "Negative"]), feat(3 * size // 4, size, ["Tumor"])]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def finish(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def test_comparison_reads_the_chosen_truth_class(project_copy):
    entry = project_copy.slides[0]
    truth = write_truth(project_copy.folder, 768)
    req = CompareRequest(slide=entry.path, truth=truth, labels=entry.labels, band_px=64)
    tumour = finish(run_comparison(req)).truth.mask
    assert tumour[:, -10:].all() and not tumour[:, :10].any()
    req.truth_class = "Stroma"
    stroma = finish(run_comparison(req)).truth.mask
    assert stroma[:, :10].all() and not stroma[:, -10:].any()
    req.truth_class = "Necrosis"
    with pytest.raises(FormatError, match=r"Stroma: Negative \(1\), Tumor \(1\)"):
        finish(run_comparison(req))


def test_widget_truth_class_field(make_napari_viewer, project_copy):
    from napari_lsr.widgets.comparison import ComparisonWidget

    viewer = make_napari_viewer()
    widget = ComparisonWidget(viewer)
    assert widget.open_project(project_copy.folder)
    widget.truth_edit.setText(str(write_truth(project_copy.folder, 768)))
    assert widget.request().truth_class is None  # default: the tumour class
    widget.truth_class_edit.setText(" Stroma ")
    assert widget.request().truth_class == "Stroma"
