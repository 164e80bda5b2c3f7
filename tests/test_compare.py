"""Comparison logic (Qt-free): colours, predictions reused or rerun, Table 2, bad input, export."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from napari_lsr.compare import (
    LOWRES_NAME,
    CompareRequest,
    draw_legend,
    prediction_path,
    project_models,
    reusable_prediction,
    run_comparison,
    write_figure,
    write_metrics_csv,
)
from napari_lsr.evaluate.evaluation import (
    ModelEntry,
    evaluate_files,
    lowres_mask,
    prediction_entry,
    table_rows,
)
from napari_lsr.io.formats import FormatError, LowResLabels
from napari_lsr.layers import BOUNDARY_COLORS, OTHER_COLORS, model_colors
from napari_lsr.predict.inference import InferenceError


def run(req: CompareRequest) -> tuple[list[tuple[str, float]], object]:
    """Drive the comparison generator to its end: (progress events, Comparison)."""
    gen = run_comparison(req)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        return events, stop.value


@pytest.fixture
def project_with_model(project_copy, tiny_model):
    """The writable tiny project with the tiny model (and its card) in models/."""
    project_copy.models_dir.mkdir(exist_ok=True)
    shutil.copy(tiny_model, project_copy.models_dir / "lsr.pt")
    card = json.loads(tiny_model.with_suffix(".card.json").read_text())
    card.update(name="lsr", checkpoint="lsr.pt")
    (project_copy.models_dir / "lsr.json").write_text(json.dumps(card))
    return project_copy


def request_for(project, models, **kw) -> CompareRequest:
    entry = project.slides[0]
    return CompareRequest(
        slide=entry.path,
        truth=entry.truth,
        labels=entry.labels,
        models=models,
        predictions_dir=project.predictions_dir,
        **kw,
    )


# -- colours -------------------------------------------------------------------------------


def test_colours_follow_the_loss_and_stay_distinct():
    models = [
        ModelEntry("a", "intra/gaussian"),
        ModelEntry("b", "intra+inter/kl"),
        ModelEntry("c", "inter/gaussian"),
        ModelEntry("d", "intra+inter/gaussian"),  # a second intra+inter model
        ModelEntry("e", None),
    ]
    c = model_colors(models)
    assert c["a"] == BOUNDARY_COLORS["intra"] == "#00ffff"
    assert c["b"] == BOUNDARY_COLORS["intra+inter"] == "#3d8bff"
    assert c["c"] == OTHER_COLORS[0]
    assert len(set(c.values())) == len(models)
    reserved = {BOUNDARY_COLORS["truth"], BOUNDARY_COLORS["lowres"]}
    assert not reserved & set(c.values())


def test_many_models_still_get_distinct_colours():
    c = model_colors([ModelEntry(f"m{i}", "inter") for i in range(20)])
    assert len(set(c.values())) == 20
    assert not set(BOUNDARY_COLORS.values()) & set(c.values())


# -- models --------------------------------------------------------------------------------


def test_project_models_lists_checkpoints_with_their_loss(project_with_model):
    models = project_models(project_with_model.models_dir)
    assert [m.name for m in models] == ["lsr"]
    assert models[0].statistic == "intra+inter"
    assert models[0].checkpoint == project_with_model.models_dir / "lsr.pt"
    assert project_models(project_with_model.folder / "nowhere") == []


def test_lowres_mask_thresholds_at_one_half():
    lab = LowResLabels(
        None,
        np.array([0, 8]),
        np.array([0, 0]),
        np.array([8, 8]),
        np.array([8, 8]),
        np.array([0.5, 0.4999]),
        np.array([4, 3]),
    )
    m = lowres_mask(lab, (4, 8), 2.0)
    assert m[:, :4].all() and not m[:, 4:].any()


# -- the comparison ------------------------------------------------------------------------


def test_comparison_predicts_scores_and_reuses(project_with_model):
    proj = project_with_model
    models = project_models(proj.models_dir)
    events, comp = run(request_for(proj, models))
    pred = proj.predictions_dir / "lsr.tiff"
    assert pred.exists() and pred.with_suffix(".pred.json").exists()
    assert any(msg.startswith("predicting lsr") for msg, _ in events)
    assert events[-1] == ("done", 1.0)
    fracs = [f for _, f in events]
    assert fracs == sorted(fracs)
    assert models[0].prediction is None  # the caller's entries are left alone

    # Table 2 layout: the low-resolution model first, then each model.
    assert [r["name"] for r in comp.rows] == [LOWRES_NAME, "lsr"]
    entry = proj.slides[0]
    ref_low = evaluate_files(truth=entry.truth, slide=entry.path, labels=entry.labels)
    ref_pred = evaluate_files(truth=entry.truth, slide=entry.path, pred=pred)
    for row, ref in zip(comp.rows, (ref_low, ref_pred)):
        for key in ("masked_iou", "masked_dice", "unmasked_iou", "unmasked_dice"):
            assert row[key] == pytest.approx(ref[key], nan_ok=True)
    assert comp.band_px == pytest.approx(ref_low["band_px_level0"])  # one block width
    assert comp.band_px == 64.0
    assert comp.band.shape == comp.truth.mask.shape and comp.band.any()

    # Boundaries and layers: truth red on top, low-res green, model blue (intra+inter).
    assert comp.legend()[0] == ("Ground truth", "#ff0000")
    assert comp.legend()[1][1] == "#00ff00"
    assert comp.legend()[2][1] == "#3d8bff"
    kinds = [ld[1]["metadata"]["napari_lsr"]["kind"] for ld in comp.layers]
    assert kinds == ["band", "lowres", "model", "truth"]
    for data, meta, kind in comp.layers:
        assert kind == "labels" and data.shape == comp.truth.mask.shape
        assert meta["scale"] == (2.0 * 4, 2.0 * 4)  # truth grid: downsample 4 at 2 um/px
    assert table_rows(comp.rows)[0][0] == LOWRES_NAME

    # Second run: the prediction is reused; "recompute" runs the model again.
    mtime = pred.stat().st_mtime_ns
    events, _ = run(request_for(proj, models))
    assert any(msg == "reusing lsr.tiff" for msg, _ in events)
    assert pred.stat().st_mtime_ns == mtime
    events, _ = run(request_for(proj, models, recompute=True, heatmap=True))
    assert any(msg.startswith("predicting") for msg, _ in events)


def test_prediction_files_and_heatmap(project_with_model):
    proj = project_with_model
    _, first = run(request_for(proj, project_models(proj.models_dir)))
    pred = proj.predictions_dir / "lsr.tiff"
    other = proj.folder / "elsewhere" / "mine.tiff"
    other.parent.mkdir()
    shutil.copy(pred, other)
    shutil.copy(pred.with_suffix(".pred.json"), other.with_suffix(".pred.json"))
    entry = prediction_entry(other)
    assert entry.name == "mine" and entry.statistic == "intra+inter"
    _, comp = run(request_for(proj, [entry], heatmap=True, band_um=100.0))
    assert [r["name"] for r in comp.rows] == [LOWRES_NAME, "mine"]
    assert np.array_equal(comp.boundaries[-1].mask, first.boundaries[-1].mask)
    assert comp.rows[1]["unmasked_dice"] == pytest.approx(first.rows[1]["unmasked_dice"])
    assert comp.band_px == pytest.approx(50.0)  # 100 um at 2 um/px
    heat = [ld for ld in comp.layers if ld[2] == "image"]
    assert len(heat) == 1 and heat[0][0].dtype == np.uint8
    assert heat[0][1]["scale"] == (4.0, 4.0)  # prediction grid: model at 4 um/px


def test_reusable_prediction_checks_model_slide_and_age(project_with_model, tmp_path):
    proj = project_with_model
    run(request_for(proj, project_models(proj.models_dir)))
    pred, ckpt = proj.predictions_dir / "lsr.tiff", proj.models_dir / "lsr.pt"
    slide = proj.slides[0].path
    assert reusable_prediction(pred, ckpt, slide)
    assert not reusable_prediction(pred, ckpt, tmp_path / "other.tiff")
    assert not reusable_prediction(pred, tmp_path / "other.pt", slide)
    later = pred.stat().st_mtime + 10
    os.utime(ckpt, (later, later))  # retrained after the prediction
    assert not reusable_prediction(pred, ckpt, slide)
    assert prediction_path(proj.predictions_dir, "m", slide, single=False).name == "m.slide_0.tiff"


# -- bad input: one-line errors before any long work ---------------------------------------


def assert_one_line(exc: BaseException, *words: str) -> None:
    msg = str(exc)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_truth_mask_of_wrong_size(project_with_model, tmp_path):
    bad = tmp_path / "truth.png"
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(bad)
    req = request_for(project_with_model, [])
    req.truth = bad
    with pytest.raises(FormatError) as err:
        run(req)
    assert_one_line(err.value, "truth.png", "divided by an integer")


def test_geojson_outside_the_slide(project_with_model, tmp_path):
    gj = tmp_path / "truth.geojson"
    ring = [[5000, 5000], [6000, 5000], [6000, 6000], [5000, 5000]]
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}}
    gj.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    req = request_for(project_with_model, [])
    req.truth = gj
    with pytest.raises(FormatError) as err:
        run(req)
    assert_one_line(err.value, "outside the slide")


def test_model_finer_than_the_slide(project_with_model):
    proj = project_with_model
    req = request_for(proj, project_models(proj.models_dir), slide_mpp=8.0)
    with pytest.raises(InferenceError) as err:
        run(req)
    assert_one_line(err.value, "cannot supply")
    assert not (proj.predictions_dir / "lsr.tiff").exists()


def test_prediction_for_another_slide(project_with_model, tmp_path):
    proj = project_with_model
    run(request_for(proj, project_models(proj.models_dir)))
    pred = proj.predictions_dir / "lsr.tiff"
    meta = json.loads(pred.with_suffix(".pred.json").read_text())
    meta.update(slide="/data/other_slide.tiff", slide_width=1000, slide_height=900)
    bad = tmp_path / "other.tiff"
    shutil.copy(pred, bad)
    bad.with_suffix(".pred.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError) as err:
        run(request_for(proj, [prediction_entry(bad)]))
    assert_one_line(err.value, "other_slide.tiff", "not for slide_0.tiff")


# -- exports -------------------------------------------------------------------------------


def test_metrics_csv_and_table_cells(tmp_path):
    rows = [
        {"name": LOWRES_NAME, "masked_iou": 0.5722, "masked_dice": 0.7278},
        {"name": "m", "masked_iou": math.nan, "masked_dice": 0.75, "loss": "intra/gaussian"},
    ]
    for r in rows:
        r.update(unmasked_iou=0.9, unmasked_dice=0.95, band_px_level0=240.0, band_um=1000.0)
    assert table_rows(rows) == [
        [LOWRES_NAME, "0.5722", "0.7278", "0.9000", "0.9500"],
        ["m", "n/a", "0.7500", "0.9000", "0.9500"],
    ]
    path = write_metrics_csv(tmp_path / "metrics.csv", rows)
    with open(path, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [g["model"] for g in got] == [LOWRES_NAME, "m"]
    assert float(got[0]["masked_dice"]) == pytest.approx(0.7278)
    assert got[1]["masked_iou"] == "" and got[1]["loss"] == "intra/gaussian"
    assert float(got[1]["band_um"]) == 1000.0


def test_figure_gets_a_legend(tmp_path):
    shot = np.full((300, 400, 4), 128, np.uint8)
    entries = [("Ground truth", "#ff0000"), ("Low resolution", "#00ff00"), ("m", "#3d8bff")]
    out = draw_legend(shot, entries)
    assert out.shape == shot.shape
    for color in ((255, 0, 0), (0, 255, 0), (0x3D, 0x8B, 0xFF)):
        assert (out[..., :3] == color).all(axis=-1).any(), color
    path = write_figure(tmp_path / "fig", shot, entries)
    assert path.suffix == ".png" and Image.open(path).size == (400, 300)


def test_same_name_twice_gets_two_rows_and_colours(project_with_model):
    proj = project_with_model
    run(request_for(proj, project_models(proj.models_dir)))
    pred = prediction_entry(proj.predictions_dir / "lsr.tiff")
    _, comp = run(request_for(proj, [*project_models(proj.models_dir), pred]))
    assert [r["name"] for r in comp.rows] == [LOWRES_NAME, "lsr", "lsr (2)"]
    assert comp.rows[1]["color"] == "#3d8bff" and comp.rows[2]["color"] == OTHER_COLORS[0]
