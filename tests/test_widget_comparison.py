"""The comparison dock widget in a real viewer: run, table, legend, exports, errors, colours.

Run under Xvfb: ``xvfb-run -a python -m pytest tests/test_widget_comparison.py``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from qtpy.QtWidgets import QLabel
from scipy import ndimage as ndi

from napari_lsr.compare import LOWRES_NAME
from napari_lsr.io.formats import read_truth, write_prediction
from napari_lsr.layers import BOUNDARY_COLORS

pytestmark = pytest.mark.gui

HAS_DISPLAY = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
WAIT_MS = 120_000


@pytest.fixture
def project_with_model(project_copy, tiny_model):
    """The writable tiny project with the tiny model (and its card) in models/."""
    project_copy.models_dir.mkdir(exist_ok=True)
    shutil.copy(tiny_model, project_copy.models_dir / "lsr.pt")
    card = json.loads(tiny_model.with_suffix(".card.json").read_text())
    card.update(name="lsr", checkpoint="lsr.pt")
    (project_copy.models_dir / "lsr.json").write_text(json.dumps(card))
    return project_copy


def craft_prediction(project, name: str, loss: str, grow: int, **meta) -> object:
    """A prediction file whose cancer is the truth grown (or shrunk) by ``grow`` px at 4 um/px.

    The tiny model barely learns in 4 steps, so these stand in for trained models with visible
    boundaries of their own.
    """
    entry = project.slides[0]
    truth = read_truth(entry.truth, (768, 768))  # downsample 4
    mask = np.repeat(np.repeat(truth.mask, 2, 0), 2, 1)  # the prediction grid: downsample 2
    op = ndi.binary_dilation if grow > 0 else ndi.binary_erosion
    mask = op(mask, iterations=abs(grow))
    info = {
        "slide": str(entry.path.resolve()),
        "slide_width": 768,
        "slide_height": 768,
        "downsample": 2.0,
        "mpp": 4.0,
        "model": name,
        "loss": loss,
        **meta,
    }
    path = project.folder / "elsewhere" / f"{name}.tiff"
    write_prediction(path, np.where(mask, 230, 20).astype(np.uint8), info)
    return path


def make_widget(make_napari_viewer, project, show: bool = False):
    from napari_lsr.widgets.comparison import ComparisonWidget

    viewer = make_napari_viewer(show=show)
    widget = ComparisonWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Comparison", area="right")
    assert widget.open_project(project.folder)
    return viewer, widget


def run_and_wait(qtbot, widget) -> list:
    events: list = []
    show = widget._on_progress

    def record(event):
        events.append(event)
        show(event)

    widget._on_progress = record  # the worker connects to it when it starts
    try:
        assert widget.run() is not None
        qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    finally:
        del widget._on_progress
    return events


def layer_kinds(viewer) -> dict:
    out = {}
    for layer in viewer.layers:
        kind = (layer.metadata or {}).get("napari_lsr", {}).get("kind")
        out.setdefault(kind, []).append(layer)
    return out


# -- a full run ----------------------------------------------------------------------------


def test_widget_predicts_compares_and_exports(make_napari_viewer, qtbot, project_with_model):
    proj = project_with_model
    viewer, widget = make_widget(make_napari_viewer, proj)
    assert widget.slide_combo.currentText() == "slide_0"
    assert widget.truth_edit.text() == str(proj.slides[0].truth)
    assert [e.name for e in widget.entries()] == ["lsr"]
    widget.heatmap_check.setChecked(True)

    events = run_and_wait(qtbot, widget)
    assert widget.status.styleSheet() == "", widget.status.text()
    assert any(msg.startswith("predicting lsr") for msg, _ in events)
    assert widget.progress.value() == 100
    assert (proj.predictions_dir / "lsr.tiff").exists()

    # Table 2 layout: low-resolution model, then the model; four score columns.
    t = widget.table
    assert t.rowCount() == 2 and t.columnCount() == 5
    assert [t.horizontalHeaderItem(c).text().replace("\n", " ") for c in range(5)] == [
        "Model",
        "Masked IoU",
        "Masked DICE",
        "IoU",
        "DICE",
    ]
    assert t.item(0, 0).text() == LOWRES_NAME and t.item(1, 0).text() == "lsr"
    row = widget.comparison.rows[1]
    assert t.item(1, 4).text() in (f"{row['unmasked_dice']:.4f}", "n/a")

    # Legend and layers: the model's name is on its layer; colours per SPEC section 4.
    assert widget.legend.entries == [
        ("Ground truth", "#ff0000"),
        ("Low resolution (p >= 0.5)", "#00ff00"),
        ("lsr (intra+inter/gaussian)", "#3d8bff"),
    ]
    # the legend names each colour and its width (issue 14: the blue stands out on H&E)
    texts = [la.text() for la in widget.legend.findChildren(QLabel) if la.text()]
    assert "lsr (intra+inter/gaussian)  (blue #3d8bff, 3 px)" in texts
    assert "Ground truth  (red #ff0000, 2 px)" in texts
    kinds = layer_kinds(viewer)
    assert [la.name for la in kinds["model"]] == ["slide_0 lsr (intra+inter/gaussian)"]
    assert len(kinds["truth"]) == len(kinds["lowres"]) == len(kinds["band"]) == 1
    assert len(kinds["heatmap"]) == 1
    assert viewer.layers[-1] is kinds["truth"][0]  # ground truth drawn on top
    assert viewer.layers[0].name == "slide_0"  # the slide was opened underneath
    cmap = kinds["truth"][0].colormap
    assert np.allclose(cmap.map(1)[..., :3], [1, 0, 0])

    # Exports.
    out = widget.export_metrics(proj.folder / "metrics.csv")
    with open(out, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [g["model"] for g in got] == [LOWRES_NAME, "lsr"]
    fig = widget.export_figure(proj.folder / "figure.png")
    img = np.asarray(Image.open(fig).convert("RGB"))
    assert (img == (255, 0, 0)).all(axis=-1).any()  # the legend's ground-truth swatch

    # A second run reuses the prediction and replaces the layers instead of adding more.
    n_layers = len(viewer.layers)
    events = run_and_wait(qtbot, widget)
    assert any(msg == "reusing lsr.tiff" for msg, _ in events)
    assert len(viewer.layers) == n_layers


# -- bad input: one line in the dock and a notification, no traceback ----------------------


def bad_truth_size(proj, widget, tmp_path):
    bad = tmp_path / "truth.png"
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(bad)
    widget.set_truth(bad)
    return "divided by an integer"


def bad_geojson(proj, widget, tmp_path):
    gj = tmp_path / "truth.geojson"
    ring = [[5000, 5000], [6000, 5000], [6000, 6000], [5000, 5000]]
    feat = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}}
    gj.write_text(json.dumps({"type": "FeatureCollection", "features": [feat]}))
    widget.set_truth(gj)
    return "outside the slide"


def bad_model_mpp(proj, widget, tmp_path):
    proj.slides[0].mpp = 8.0  # the slide's finest level is coarser than the model's 4 um/px
    proj.save()
    widget.open_project(proj.folder)
    return "cannot supply"


def bad_other_slide(proj, widget, tmp_path):
    pred = craft_prediction(
        proj, "foreign", "intra/gaussian", 2, slide="/x/other.tiff", slide_width=1000
    )
    from qtpy.QtCore import Qt

    for i in range(widget.models_list.count()):  # leave the checkpoint out
        widget.models_list.item(i).setCheckState(Qt.CheckState.Unchecked)
    assert widget.add_prediction_file(pred)
    return "not for slide_0.tiff"


BAD_INPUTS = [bad_truth_size, bad_geojson, bad_model_mpp, bad_other_slide]


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=lambda f: f.__name__)
def test_bad_input_gives_one_line(
    make_napari_viewer, qtbot, project_with_model, tmp_path, monkeypatch, make_bad
):
    from napari.utils import notifications

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    proj = project_with_model
    viewer, widget = make_widget(make_napari_viewer, proj)
    expected = make_bad(proj, widget, tmp_path)
    run_and_wait(qtbot, widget)
    text = widget.status.text()
    assert expected in text and "\n" not in text and "Traceback" not in text
    assert "color" in widget.status.styleSheet()
    assert len(shown) == 1 and shown[0] == f"napari-lsr: {text}"
    assert widget.comparison is None and widget.run_button.isEnabled()
    assert not list(proj.predictions_dir.glob("*.tiff"))


def test_missing_truth_and_export_before_run(make_napari_viewer, project_with_model, tmp_path):
    viewer, widget = make_widget(make_napari_viewer, project_with_model)
    assert widget.set_project(project_with_model)  # a Project, as the demo passes it
    assert widget.project.folder == project_with_model.folder
    widget.set_truth("")
    assert widget.run() is None
    assert "ground-truth" in widget.status.text()
    assert widget.export_metrics(tmp_path / "m.csv") is None
    assert "run the comparison first" in widget.status.text()
    assert not widget.add_prediction_file(tmp_path / "nothing.tiff")
    assert "no such file" in widget.status.text()


# -- the screenshot: colours at known boundary pixels --------------------------------------


def canvas_pixels(viewer, layer, shot, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    """Screenshot pixel (row, col) of data pixels of ``layer``.

    2-D napari maps world to canvas as centre + (world - camera.center) * zoom (checked
    empirically: data pixel centres land inside the drawn pixel), scaled by the device pixel
    ratio (screenshot size / canvas size).
    """
    cam = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    world = np.stack([rows, cols], 1) * np.asarray(layer.scale[-2:])
    world = world + np.asarray(layer.translate[-2:])
    ratio = shot.shape[0] / viewer.canvas.size[0]
    centre = np.array(shot.shape[:2]) / 2
    pix = centre + (world - np.asarray(cam.center[-2:])) * cam.zoom * ratio
    return np.floor(pix[:, 0]).astype(int), np.floor(pix[:, 1]).astype(int)


def colour_fraction(shot, rr, cc, color: str, tol: int = 40) -> float:
    ok = (rr >= 0) & (rr < shot.shape[0]) & (cc >= 0) & (cc < shot.shape[1])
    assert ok.mean() > 0.95, "boundary pixels fall outside the canvas"
    want = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
    got = shot[rr[ok], cc[ok], :3].astype(int)
    return float((np.abs(got - want).max(axis=1) <= tol).mean())


@pytest.mark.skipif(not HAS_DISPLAY, reason="needs a display: run under xvfb-run")
def test_screenshot_colours_at_boundary_pixels(make_napari_viewer, qtbot, project_copy):
    proj = project_copy
    viewer, widget = make_widget(make_napari_viewer, proj, show=True)
    viewer.window.resize(1400, 900)
    assert widget.add_prediction_file(craft_prediction(proj, "wide", "intra+inter/kl", 10))
    assert widget.add_prediction_file(craft_prediction(proj, "narrow", "intra/gaussian", -10))
    run_and_wait(qtbot, widget)
    assert widget.comparison is not None, widget.status.text()
    viewer.reset_view()
    qtbot.wait(200)
    shot = viewer.screenshot(canvas_only=True)

    kinds = layer_kinds(viewer)
    truth = kinds["truth"][0]
    lowres = kinds["lowres"][0]
    wide, narrow = kinds["model"]
    assert wide.name == "slide_0 wide (intra+inter/kl)"
    drawn = {la.name: la.data > 0 for la in (truth, lowres, wide, narrow)}
    # Each boundary wins where no layer above it draws (order: low-res, models, truth).
    expect = [
        (truth, drawn[truth.name], BOUNDARY_COLORS["truth"]),
        (narrow, drawn[narrow.name] & ~drawn[truth.name], BOUNDARY_COLORS["intra"]),
        (
            wide,
            drawn[wide.name] & ~drawn[truth.name] & ~drawn[narrow.name],
            BOUNDARY_COLORS["intra+inter"],
        ),
        (
            lowres,
            drawn[lowres.name] & ~drawn[truth.name] & ~drawn[wide.name] & ~drawn[narrow.name],
            BOUNDARY_COLORS["lowres"],
        ),
    ]
    for layer, mask, color in expect:
        rows, cols = np.nonzero(mask)
        assert len(rows) > 50, layer.name
        rr, cc = canvas_pixels(viewer, layer, shot, rows, cols)
        frac = colour_fraction(shot, rr, cc, color)
        assert frac > 0.9, f"{layer.name}: only {frac:.0%} of its pixels are {color}"

    # Away from every boundary, none of the four colours: check the band-free slide interior.
    none = ~np.logical_or.reduce(list(drawn.values()))
    none = ndi.binary_erosion(none, iterations=3)
    rows, cols = np.nonzero(none)
    rr, cc = canvas_pixels(viewer, truth, shot, rows, cols)
    for color in BOUNDARY_COLORS.values():
        assert colour_fraction(shot, rr, cc, color, tol=10) < 0.01, color


def test_project_of_an_open_slide_comes_from_the_state(make_napari_viewer, project_with_model):
    from napari_lsr._reader import slide_layer_data
    from napari_lsr.io.slide import Slide
    from napari_lsr.state import state_for
    from napari_lsr.widgets.comparison import ComparisonWidget

    viewer = make_napari_viewer()
    entry = project_with_model.slides[0]
    data, meta, _ = slide_layer_data(Slide(entry.path))
    viewer.add_image(data, **meta)
    widget = ComparisonWidget(viewer)
    assert widget.project is None  # not guessed from the layer's file
    state_for(viewer).project = project_with_model  # as Block review's "Use slide" shares it
    assert widget.project is project_with_model
    assert widget.truth_edit.text() == str(entry.truth)
    assert [e.name for e in widget.entries()] == ["lsr"]


def test_a_runtime_error_in_the_run_is_reported(
    make_napari_viewer, qtbot, project_with_model, monkeypatch
):
    """torch raises RuntimeErrors (out of memory among them); superqt's worker would drop
    them silently, so the widget must still show one."""
    from napari.utils import notifications

    from napari_lsr.widgets import comparison

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_error", shown.append)

    def failing(req):
        yield "predicting lsr", 0.1
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")

    monkeypatch.setattr(comparison, "run_comparison", failing)
    viewer, widget = make_widget(make_napari_viewer, project_with_model)
    run_and_wait(qtbot, widget)
    text = widget.status.text()
    assert "RuntimeError: CUDA out of memory" in text and "\n" not in text
    assert shown == [f"napari-lsr: {text}"]
    assert widget.run_button.isEnabled() and widget.comparison is None


def test_regions_to_qupath_after_a_comparison_reads_back_with_evaluate(
    make_napari_viewer, qtbot, project_with_model, monkeypatch, tmp_path
):
    """Issue 24.1: the models of the list get their prediction once the comparison ran, so
    Regions to QuPath (the selected score row) writes a file that ``evaluate --truth`` reads."""
    from qtpy.QtWidgets import QFileDialog

    from napari_lsr import cli
    from napari_lsr.io.formats import read_prediction

    proj = project_with_model
    viewer, widget = make_widget(make_napari_viewer, proj)
    run_and_wait(qtbot, widget)
    assert widget.status.styleSheet() == "", widget.status.text()
    pred = proj.predictions_dir / "lsr.tiff"
    widget.table.selectRow(1)  # the model's row, as a user clicks it
    asked: list = []
    out = tmp_path / "regions.geojson"

    def save_dialog(parent, caption, start, filt):
        asked.append(start)
        return str(out), filt

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_dialog)
    # the tiny model barely learns: cut at its median so that there are regions to export
    values, _ = read_prediction(pred)
    cut = float(np.median(values)) / 255.0
    monkeypatch.setattr(
        type(widget), "export_regions", partial_threshold(type(widget).export_regions, cut)
    )
    widget._browse_export_regions()
    assert asked and asked[0].endswith("lsr_regions.geojson"), asked
    assert out.exists(), widget.status.text()
    assert "region(s) of lsr" in widget.status.text()
    feats = json.loads(out.read_text())["features"]
    assert feats
    scores = tmp_path / "scores.json"
    rc = cli.main(
        [
            "evaluate",
            "--truth",
            str(out),
            "--slide",
            str(proj.slides[0].path),
            "--labels",
            str(proj.slides[0].labels),
            "--json",
            str(scores),
        ]
    )
    assert rc == 0 and scores.exists()


def partial_threshold(method, threshold: float):
    def call(self, path, threshold_=threshold):
        return method(self, path, threshold=threshold_)

    return call


# -- issue 24.12: every slide and the pooled Table 2 ----------------------------------------


def test_all_slides_pool_the_scores_and_export_every_slide(
    make_napari_viewer, qtbot, tmp_path, tiny_model
):
    from napari_lsr.compare import POOLED
    from napari_lsr.evaluate.metrics import Counts
    from napari_lsr.sample.synthetic import write_sample

    proj = write_sample(tmp_path / "two", size=512, mpp=2.0, seed=4, block_um=128.0, n_slides=2)
    assert len(proj.slides) == 2 and all(e.truth for e in proj.slides)
    proj.models_dir.mkdir(exist_ok=True)
    shutil.copy(tiny_model, proj.models_dir / "lsr.pt")
    card = json.loads(tiny_model.with_suffix(".card.json").read_text())
    card.update(name="lsr", checkpoint="lsr.pt")
    (proj.models_dir / "lsr.card.json").write_text(json.dumps(card))
    viewer, widget = make_widget(make_napari_viewer, proj)
    assert widget.run_all() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.status.styleSheet() == "", widget.status.text()
    comps = widget.comparisons
    assert [c.slide.name for c in comps] == [e.path.stem for e in proj.slides]
    pooled = {r["name"]: r for r in widget.pooled}
    assert set(pooled) == {LOWRES_NAME, "lsr"}
    for name, row in pooled.items():
        per_slide = [r for c in comps for r in c.rows if r["name"] == name]
        counts = sum((r["masked_counts"] for r in per_slide), Counts())
        assert row["masked_counts"] == counts and row["slides"] == 2
        assert row["masked_dice"] == pytest.approx(counts.dice, nan_ok=True)
    # the table shows the pooled rows
    assert [widget.table.item(r, 0).text() for r in range(widget.table.rowCount())] == list(pooled)
    out = widget.export_metrics(tmp_path / "metrics.csv")
    with open(out, newline="") as fh:
        got = list(csv.DictReader(fh))
    slides = [e.path.stem for e in proj.slides]
    assert [(g["slide"], g["model"]) for g in got] == [
        (slides[0], LOWRES_NAME),
        (slides[0], "lsr"),
        (slides[1], LOWRES_NAME),
        (slides[1], "lsr"),
        (POOLED, LOWRES_NAME),
        (POOLED, "lsr"),
    ]
    assert float(got[4]["masked_dice"]) == pytest.approx(pooled[LOWRES_NAME]["masked_dice"])
