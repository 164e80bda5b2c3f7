"""Tests for napari_lsr.evaluate.metrics: hand-made masks with answers worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_lsr.evaluate.metrics import (
    Counts,
    band_mask,
    confusion_counts,
    downsample_mask,
    evaluate_many,
    masked_scores,
    to_json_dict,
)


def left_half_truth() -> np.ndarray:
    """10x10, columns 0..4 cancer, columns 5..9 non-cancer."""
    g = np.zeros((10, 10), dtype=bool)
    g[:, :5] = True
    return g


def shifted_pred() -> np.ndarray:
    """The truth shifted right by one column: columns 0..5 cancer."""
    p = np.zeros((10, 10), dtype=bool)
    p[:, :6] = True
    return p


# ------------------------------------------------------------------------------------------
# band geometry
# ------------------------------------------------------------------------------------------


def test_band_of_straight_boundary():
    # Cancer columns 0..4. Distance of non-cancer column c to the nearest cancer pixel is
    # c - 4 (col 5 -> 1, col 6 -> 2, col 7 -> 3); distance of cancer column c to the nearest
    # non-cancer pixel is 5 - c (col 4 -> 1, col 3 -> 2, col 2 -> 3).
    # band 2 -> columns 3, 4, 5, 6 = 40 pixels.
    band = band_mask(left_half_truth(), 2)
    expected = np.zeros((10, 10), dtype=bool)
    expected[:, 3:7] = True
    np.testing.assert_array_equal(band, expected)
    assert band.dtype == bool


def test_band_edges_exact_distance_in_and_plus_one_out():
    # 3x12, cancer columns 0..5. band 3: cancer column 3 is at distance 6 - 3 = 3 (in),
    # column 2 at 4 (out); non-cancer column 8 at 8 - 5 = 3 (in), column 9 at 4 (out).
    g = np.zeros((3, 12), dtype=bool)
    g[:, :6] = True
    band = band_mask(g, 3)
    assert band[:, 3].all() and band[:, 8].all()
    assert not band[:, 2].any() and not band[:, 9].any()
    assert band.sum() == 3 * 6  # columns 3..8


def test_band_around_single_pixel_is_euclidean_disc():
    # One cancer pixel at (10, 10). Its own distance to non-cancer is 1 -> in the band.
    # Non-cancer pixels are in when their Euclidean distance to (10, 10) is <= 3:
    # lattice points with dx^2 + dy^2 <= 9: 7 (dx=0) + 2*5 (|dx|=1) + 2*5 (|dx|=2) + 2*1 = 29.
    g = np.zeros((21, 21), dtype=bool)
    g[10, 10] = True
    band = band_mask(g, 3)
    assert band[10, 10]
    assert band[10, 13]  # distance 3: in
    assert not band[10, 14]  # distance 4 = band + 1: out
    assert band[12, 12]  # distance sqrt(8) = 2.83: in
    assert not band[12, 13]  # distance sqrt(13) = 3.61: out
    assert band.sum() == 29
    # Non-integer band 2.5: (10, 12) d=2 in; (11, 12) d=sqrt(5)=2.24 in; (12, 12) d=2.83 out.
    band = band_mask(g, 2.5)
    assert band[10, 12] and band[11, 12] and not band[12, 12]


def test_band_below_one_pixel_is_empty_and_image_edge_is_not_a_boundary():
    assert not band_mask(left_half_truth(), 0).any()
    assert not band_mask(left_half_truth(), 0.99).any()
    # Rows 0 and 9 touch the image edge but are not treated as boundary: only columns matter.
    band = band_mask(left_half_truth(), 1)
    np.testing.assert_array_equal(band.sum(axis=0), [0, 0, 0, 0, 10, 10, 0, 0, 0, 0])


def test_band_empty_when_truth_has_no_boundary():
    assert not band_mask(np.zeros((5, 5), dtype=bool), 3).any()
    assert not band_mask(np.ones((5, 5), dtype=bool), 3).any()
    assert band_mask(np.zeros((5, 5), dtype=bool), 3).shape == (5, 5)


def test_band_rejects_negative_or_nan():
    with pytest.raises(ValueError, match="band_px"):
        band_mask(left_half_truth(), -1)
    with pytest.raises(ValueError, match="band_px"):
        band_mask(left_half_truth(), float("nan"))


def test_infinite_band_covers_everything():
    assert band_mask(left_half_truth(), float("inf")).all()


# ------------------------------------------------------------------------------------------
# counts and single-image scores
# ------------------------------------------------------------------------------------------


def test_shifted_prediction_known_scores():
    # Band (2 px) = columns 3..6. Inside it: P = cols 3,4,5 (30 px), G = cols 3,4 (20 px),
    # P&G = 20, P|G = 30, col 6 is true negative (10 px).
    #   masked IoU  = 20 / 30 = 2/3
    #   masked DICE = 2*20 / (30 + 20) = 0.8
    # Whole image: P = 60, G = 50, P&G = 50, P|G = 60, tn = 40.
    #   IoU = 50/60 = 5/6, DICE = 100/110 = 10/11
    s = masked_scores(shifted_pred(), left_half_truth(), 2)
    assert s["masked_counts"] == Counts(tp=20, fp=10, fn=0, tn=10)
    assert s["unmasked_counts"] == Counts(tp=50, fp=10, fn=0, tn=40)
    assert s["masked_iou"] == pytest.approx(2 / 3)
    assert s["masked_dice"] == pytest.approx(0.8)
    assert s["unmasked_iou"] == pytest.approx(5 / 6)
    assert s["unmasked_dice"] == pytest.approx(10 / 11)
    assert s["band_pixels"] == 40
    assert s["band_px"] == 2.0


def test_perfect_prediction_scores_one():
    g = left_half_truth()
    s = masked_scores(g.copy(), g, 2)
    for key in ("masked_iou", "masked_dice", "unmasked_iou", "unmasked_dice"):
        assert s[key] == 1.0


def test_empty_prediction_scores_zero():
    # Band columns 3..6: G & M = 20 px, P = 0 -> tp = 0, fn = 20: IoU 0/20 = 0, DICE 0/20 = 0.
    s = masked_scores(np.zeros((10, 10), dtype=bool), left_half_truth(), 2)
    assert s["masked_counts"] == Counts(tp=0, fp=0, fn=20, tn=20)
    assert s["masked_iou"] == 0.0 and s["masked_dice"] == 0.0
    assert s["unmasked_iou"] == 0.0 and s["unmasked_dice"] == 0.0


def test_empty_truth_band_empty_masked_nan_unmasked_zero():
    # No cancer in truth: no boundary, empty band, masked counts all zero -> 0/0 -> NaN.
    # Unmasked: pred has 10 px (fp = 10), tp = 0 -> IoU 0/10 = 0, DICE 0/10 = 0.
    pred = np.zeros((10, 10), dtype=bool)
    pred[0, :] = True
    s = masked_scores(pred, np.zeros((10, 10), dtype=bool), 2)
    assert s["band_pixels"] == 0
    assert s["masked_counts"] == Counts()
    assert math.isnan(s["masked_iou"]) and math.isnan(s["masked_dice"])
    assert s["unmasked_iou"] == 0.0 and s["unmasked_dice"] == 0.0


def test_both_empty_is_nan_everywhere():
    z = np.zeros((4, 4), dtype=bool)
    s = masked_scores(z, z, 2)
    assert all(math.isnan(s[k]) for k in ("masked_iou", "masked_dice", "unmasked_iou"))
    assert math.isnan(s["unmasked_dice"])


def test_confusion_counts_with_and_without_mask():
    # pred  = [1 1 0 0], truth = [1 0 1 0] -> tp 1, fp 1, fn 1, tn 1
    pred = np.array([[1, 1, 0, 0]])
    truth = np.array([[1, 0, 1, 0]])
    c = confusion_counts(pred, truth)
    assert c == Counts(1, 1, 1, 1)
    assert all(type(v) is int for v in (c.tp, c.fp, c.fn, c.tn))
    assert c.iou == pytest.approx(1 / 3) and c.dice == pytest.approx(0.5)
    # mask keeps the first two pixels: tp 1, fp 1
    c = confusion_counts(pred, truth, np.array([[1, 1, 0, 0]], dtype=bool))
    assert c == Counts(tp=1, fp=1, fn=0, tn=0)
    assert c.total == 2


def test_counts_add_and_sum_and_frozen():
    a = Counts(1, 2, 3, 4)
    b = Counts(10, 20, 30, 40)
    assert a + b == Counts(11, 22, 33, 44)
    assert sum([a, b]) == Counts(11, 22, 33, 44)
    assert Counts().iou != Counts().iou  # NaN
    with pytest.raises(AttributeError):
        a.tp = 5  # type: ignore[misc]
    with pytest.raises(ValueError):
        Counts(tp=-1)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(10, 10\).*\(10, 9\)"):
        confusion_counts(np.zeros((10, 10)), np.zeros((10, 9)))
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(4, 4\)"):
        masked_scores(np.zeros((3, 3), dtype=bool), np.zeros((4, 4), dtype=bool), 1)
    with pytest.raises(ValueError, match="mask shape"):
        confusion_counts(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((3, 3), dtype=bool))


def test_inputs_coerced_to_bool_and_probabilities_refused():
    g = left_half_truth()
    s_int = masked_scores(shifted_pred().astype(np.uint8) * 255, g.astype(np.int64), 2)
    s_bool = masked_scores(shifted_pred(), g, 2)
    assert s_int["masked_counts"] == s_bool["masked_counts"]
    s_float = masked_scores(shifted_pred().astype(float), g.astype(np.float32), 2)
    assert s_float["masked_counts"] == s_bool["masked_counts"]
    with pytest.raises(ValueError, match="threshold"):
        confusion_counts(np.full((2, 2), 0.3), np.zeros((2, 2)))


# ------------------------------------------------------------------------------------------
# several images
# ------------------------------------------------------------------------------------------


def test_pooled_and_mean_differ_in_known_case():
    # Image A: shifted prediction -> masked tp 20, fp 10, fn 0 (IoU 2/3, DICE 0.8);
    #          unmasked tp 50, fp 10, fn 0 (IoU 5/6, DICE 10/11).
    # Image B: empty prediction  -> masked tp 0, fp 0, fn 20 (IoU 0, DICE 0);
    #          unmasked tp 0, fp 0, fn 50 (IoU 0, DICE 0).
    # Image C: empty truth, 10-pixel prediction -> band empty, masked NaN (left out of the mean,
    #          adds nothing to the pooled masked counts); unmasked tp 0, fp 10, fn 0 (0, 0).
    # Pooled masked: tp 20, fp 10, fn 20 -> IoU 20/50 = 0.4, DICE 40/70 = 4/7.
    # Mean masked (A, B): IoU (2/3 + 0)/2 = 1/3, DICE (0.8 + 0)/2 = 0.4.
    # Pooled unmasked: tp 50, fp 20, fn 50 -> IoU 50/120 = 5/12, DICE 100/170 = 10/17.
    # Mean unmasked (A, B, C): IoU (5/6)/3 = 5/18, DICE (10/11)/3 = 10/33.
    g = left_half_truth()
    pred_c = np.zeros((10, 10), dtype=bool)
    pred_c[0, :] = True
    pairs = [
        (shifted_pred(), g),
        (np.zeros((10, 10), dtype=bool), g),
        (pred_c, np.zeros((10, 10), dtype=bool)),
    ]
    r = evaluate_many(iter(pairs), band_px=2)
    assert r["n_images"] == 3
    assert r["band_px"] == 2.0
    assert r["pooled"]["masked_iou"] == pytest.approx(0.4)
    assert r["pooled"]["masked_dice"] == pytest.approx(4 / 7)
    assert r["mean"]["masked_iou"] == pytest.approx(1 / 3)
    assert r["mean"]["masked_dice"] == pytest.approx(0.4)
    assert r["pooled"]["unmasked_iou"] == pytest.approx(5 / 12)
    assert r["pooled"]["unmasked_dice"] == pytest.approx(10 / 17)
    assert r["mean"]["unmasked_iou"] == pytest.approx(5 / 18)
    assert r["mean"]["unmasked_dice"] == pytest.approx(10 / 33)
    assert r["n_defined"]["masked_iou"] == 2 and r["n_defined"]["unmasked_iou"] == 3
    assert r["counts"]["masked"] == {"tp": 20, "fp": 10, "fn": 20, "tn": 30}
    assert math.isnan(r["per_image"][2]["masked_iou"])
    # Plain types; strict JSON after to_json_dict (NaN -> None).
    text = json.dumps(to_json_dict(r), allow_nan=False)
    back = json.loads(text)
    assert back["per_image"][2]["masked_iou"] is None
    assert back["pooled"]["masked_iou"] == pytest.approx(0.4)


def test_evaluate_many_all_masked_undefined_gives_nan_mean():
    z = np.zeros((4, 4), dtype=bool)
    r = evaluate_many([(z, z)], band_px=1)
    assert math.isnan(r["mean"]["masked_iou"]) and math.isnan(r["pooled"]["masked_iou"])
    assert r["n_defined"]["masked_iou"] == 0


def test_evaluate_many_errors():
    with pytest.raises(ValueError, match="at least one"):
        evaluate_many([], band_px=2)
    with pytest.raises(ValueError, match=r"image 1"):
        evaluate_many(
            [(left_half_truth(), left_half_truth()), (np.zeros((2, 2)), np.zeros((3, 3)))], 2
        )


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def test_downsample_mask():
    # factor 2 takes pixel 2*i + 1 of each axis
    a = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(downsample_mask(a, 2), [[5, 7], [13, 15]])
    # factor 3 takes the centre 3*i + 1
    b = np.arange(36).reshape(6, 6)
    np.testing.assert_array_equal(downsample_mask(b, 3), [[7, 10], [25, 28]])
    np.testing.assert_array_equal(downsample_mask(a, 1), a)
    with pytest.raises(ValueError, match="divisible"):
        downsample_mask(np.zeros((5, 4)), 2)
    for bad in (0, -2, 1.5, "2"):
        with pytest.raises(ValueError, match="positive integer"):
            downsample_mask(a, bad)  # type: ignore[arg-type]
    assert downsample_mask(a, 2.0).shape == (2, 2)
