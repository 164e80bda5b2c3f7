"""Whole-slide inference: seamless tiles, skipped background, Dask cluster, bad input, sidecar."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_lsr.evaluate.evaluation import evaluate_files
from napari_lsr.io.formats import FormatError, read_prediction
from napari_lsr.io.slide import Slide
from napari_lsr.predict.inference import InferenceError, predict_array, predict_slide

TILE = 32  # small tiles: many seams on the 384 px prediction grid of the tiny slide


def to_uint8(prob: np.ndarray) -> np.ndarray:
    """Probabilities as the prediction TIFF stores them."""
    return (prob * 255.0 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def model(tiny_model):
    from napari_lsr.learn.training import load_model

    return load_model(tiny_model)[0]


@pytest.fixture(scope="module")
def model_rgb(tiny_project):
    """The tiny slide at the tiny model's 4 um/px (384 x 384 px)."""
    with tiny_project.slides[0].open() as slide:
        return slide.read_region(0, 0, slide.width, slide.height, mpp=4.0)


@pytest.fixture(scope="module")
def local_pred(tiny_project, tiny_model, tmp_path_factory):
    """The tiny slide predicted with small tiles on local threads: (path, summary)."""
    out = tmp_path_factory.mktemp("pred") / "local.tiff"
    summary = predict_slide(tiny_model, tiny_project.slides[0].path, out, tile=TILE, device="cpu")
    return out, summary


def whole_image(model, rgb: np.ndarray) -> np.ndarray:
    """One forward pass over the whole image (the reference for seamless tiling)."""
    import torch

    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        return torch.sigmoid(model(x))[0].numpy()


def interior(a: np.ndarray, margin: int) -> np.ndarray:
    return a[margin:-margin, margin:-margin]


# -- (a) seamless tiling -------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_predict_array_tiles_equal_one_forward_pass(model, model_rgb, fast):
    ref = whole_image(model, model_rgb)
    tiled = predict_array(model, model_rgb, tile=2 * TILE, fast=fast)
    assert tiled.shape == ref.shape == model_rgb.shape[:2]
    assert ref.std() > 1e-3  # the maps vary, so equality says something
    m = model.receptive_radius
    diff = np.abs(to_uint8(interior(tiled, m)).astype(int) - to_uint8(interior(ref, m)))
    assert diff.max() <= 1
    with pytest.raises(ValueError, match="tile must be a multiple"):
        predict_array(model, model_rgb, tile=2 * TILE + 1, fast=fast)


def test_predict_slide_tiles_equal_one_forward_pass(model, model_rgb, local_pred):
    pred, meta = read_prediction(local_pred[0])
    ref = to_uint8(whole_image(model, model_rgb))
    assert pred.shape == ref.shape == (384, 384)
    m = model.receptive_radius
    tissue = interior(pred, m) > 0  # background tiles are skipped (0), compare the rest
    assert tissue.mean() > 0.5
    diff = np.abs(interior(pred, m).astype(int) - interior(ref, m))[tissue]
    assert diff.max() <= 1


def test_margin_below_the_context_uses_the_full_forward(
    model, model_rgb, tiny_project, tiny_model, tmp_path
):
    """A margin narrower than the network's reach: CPU tiles then go through the whole forward
    pass and are cropped (``InferenceUNet.centre`` refuses such a margin), and equal the
    plain model's tiles."""
    from napari_lsr.learn.unet import inference_form

    margin = inference_form(model).context - model.multiple
    out = tmp_path / "narrow.tiff"
    predict_slide(
        tiny_model,
        tiny_project.slides[0].path,
        out,
        tile=TILE,
        margin=margin,
        device="cpu",
        skip_background=False,
    )
    pred, meta = read_prediction(out)
    assert meta["margin"] == margin
    ref = to_uint8(predict_array(model, model_rgb, tile=TILE, margin=margin, fast=False))
    inner = slice(TILE, 384 - TILE)  # tiles whose margin lies inside the image
    diff = np.abs(pred[inner, inner].astype(int) - ref[inner, inner])
    assert diff.max() <= 1


# -- (b) background tiles are skipped ------------------------------------------------------


def test_white_tiles_are_skipped_and_zero(tiny_project, tiny_model, tmp_path):
    with tiny_project.slides[0].open() as slide:
        rgb = slide.read_level0(0, 0, slide.width, slide.height).copy()
    rgb[:, 256:] = 255  # glass: pure white right of x = 256 (level 0), 128 on the output
    png = tmp_path / "half_white.png"
    Image.fromarray(rgb).save(png)
    out = tmp_path / "pred.tiff"
    s = predict_slide(tiny_model, png, out, slide_mpp=2.0, tile=TILE, device="cpu")
    full = predict_slide(
        tiny_model, png, tmp_path / "full.tiff", slide_mpp=2.0, tile=TILE, skip_background=False
    )
    assert s["tiles"] == full["tiles"] == (384 // TILE) ** 2
    assert full["skipped"] == 0
    pred, _ = read_prediction(out)
    ref, _ = read_prediction(tmp_path / "full.tiff")
    # Tiles whose area, with the model's context margin, is all glass: skipped and 0.
    glass = slice(128 + 24 + TILE, None)  # margin 24 px for a depth-2 U-Net, one tile of slack
    assert s["skipped"] >= (384 // TILE) * ((384 - 128 - 24 - TILE) // TILE)
    assert (pred[:, glass] == 0).all()
    assert (ref[:, glass] > 0).all()  # the model itself would not have said 0
    # Tissue tiles are predicted as without skipping.
    np.testing.assert_array_equal(pred[:, :128], ref[:, :128])


# -- (c) a Dask distributed cluster gives the same TIFF ------------------------------------


def test_local_cluster_equals_threads(tiny_project, tiny_model, local_pred, tmp_path):
    from distributed import LocalCluster

    out = tmp_path / "cluster.tiff"
    with LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        dashboard_address=None,
        local_directory=str(tmp_path),
    ) as cluster:
        s = predict_slide(
            tiny_model,
            tiny_project.slides[0].path,
            out,
            tile=TILE,
            device="cpu",
            scheduler=cluster.scheduler_address,
        )
    got, meta = read_prediction(out)
    want, want_meta = read_prediction(local_pred[0])
    np.testing.assert_array_equal(got, want)
    assert s["skipped"] == local_pred[1]["skipped"]
    assert {k: v for k, v in meta.items()} == want_meta


# -- (d) bad input: one-line errors --------------------------------------------------------


def one_line(exc: BaseException, *words: str) -> None:
    msg = str(exc)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


def test_model_finer_than_the_slide(tiny_project, tiny_model, tmp_path):
    out = tmp_path / "pred.tiff"
    with pytest.raises(InferenceError) as err:
        # the model works at 4 um/px; a slide whose finest level is 8 um/px cannot supply it
        predict_slide(tiny_model, tiny_project.slides[0].path, out, slide_mpp=8.0)
    one_line(err.value, "4 um/px", "8 um/px", "cannot supply")
    assert not out.exists()


def test_prediction_for_another_slide(tiny_project, tiny_model, tmp_path):
    entry = tiny_project.slides[0]
    with entry.open() as slide:
        rgb = slide.read_level0(0, 0, 512, 512)
    other = tmp_path / "other_slide.png"
    Image.fromarray(rgb).save(other)
    pred = tmp_path / "other.tiff"
    predict_slide(tiny_model, other, pred, slide_mpp=2.0, tile=64)
    with pytest.raises(FormatError) as err:
        evaluate_files(truth=entry.truth, slide=entry.path, pred=pred)
    one_line(err.value, "other.tiff", "other_slide.png", "512x512", "not for slide_0.tiff")


def test_truth_mask_of_wrong_size(tiny_project, tmp_path):
    entry = tiny_project.slides[0]
    bad = tmp_path / "truth.png"
    Image.fromarray(np.zeros((250, 250), np.uint8)).save(bad)  # 768 / 250 is not an integer
    with pytest.raises(FormatError) as err:
        evaluate_files(truth=bad, slide=entry.path, labels=entry.labels)
    one_line(err.value, "truth.png", "250x250", "768x768", "divided by an integer")


def test_geojson_outside_the_slide(tiny_project, tmp_path):
    entry = tiny_project.slides[0]
    gj = tmp_path / "truth.geojson"
    ring = [[1000, 1000], [1500, 1000], [1500, 1400], [1000, 1000]]
    gj.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                        "properties": {"classification": {"name": "Tumor"}},
                    }
                ],
            }
        )
    )
    with pytest.raises(FormatError) as err:
        evaluate_files(truth=gj, slide=entry.path, labels=entry.labels)
    one_line(err.value, "truth.geojson", "outside the slide", "768x768")


# -- (e) the sidecar -----------------------------------------------------------------------


def test_sidecar_names_slide_downsample_mpp_model_and_loss(tiny_project, tiny_model, local_pred):
    out, summary = local_pred
    meta = json.loads(out.with_suffix(".pred.json").read_text())
    for key in ("slide", "downsample", "mpp", "model", "loss"):
        assert key in meta, key
    assert meta["slide"] == str(tiny_project.slides[0].path.resolve())
    assert meta["downsample"] == pytest.approx(2.0) == summary["downsample"]
    assert meta["mpp"] == pytest.approx(4.0)
    assert meta["model"] == str(tiny_model.resolve())
    assert meta["loss"].split("/")[0] == "intra+inter"
    assert (meta["slide_width"], meta["slide_height"]) == (768, 768)
    with Slide(meta["slide"]) as slide:
        assert slide.mpp == pytest.approx(2.0)
