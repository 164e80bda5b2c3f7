"""Evaluate predictions or low-res labels against ground truth on a common grid (Table 2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .formats import FormatError, read_prediction, read_truth
from .interop import read_lowres
from .metrics import masked_scores, to_json_dict
from .slide import Slide


def resample_to_grid(
    values: np.ndarray, src_ds: float, shape: tuple[int, int], dst_ds: float
) -> np.ndarray:
    """Sample a map on a grid of ``src_ds`` level-0 px per pixel at the centres of a grid of
    ``dst_ds`` (nearest neighbour); pixels beyond the source are 0."""
    h, w = shape
    ys = np.floor((np.arange(h) + 0.5) * dst_ds / src_ds).astype(np.int64)
    xs = np.floor((np.arange(w) + 0.5) * dst_ds / src_ds).astype(np.int64)
    out = np.zeros(shape, values.dtype)
    vy, vx = ys < values.shape[0], xs < values.shape[1]
    out[np.ix_(vy, vx)] = values[np.ix_(ys[vy], xs[vx])]
    return out


def paint_labels(labels: Any, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """The low-resolution model: each block painted with its probability (float32)."""
    out = np.zeros(shape, np.float32)
    for x, y, w, h, p in zip(labels.x, labels.y, labels.width, labels.height, labels.probability):
        y0, y1 = int(round(y / downsample)), int(round((y + h) / downsample))
        x0, x1 = int(round(x / downsample)), int(round((x + w) / downsample))
        out[y0:y1, x0:x1] = p
    return out


def check_prediction_slide(
    meta: dict[str, Any], slide: Slide, pred_path: str | os.PathLike
) -> None:
    """Refuse a prediction whose sidecar names another slide (by size, then by name)."""
    sw, sh = meta.get("slide_width"), meta.get("slide_height")
    if sw is not None and (int(sw), int(sh)) != slide.dimensions:
        raise FormatError(
            pred_path,
            f"prediction was made for {Path(str(meta['slide'])).name} ({sw}x{sh} px), "
            f"not for {slide.path.name} ({slide.width}x{slide.height} px)",
        )
    if Path(str(meta.get("slide", ""))).stem != slide.path.stem and sw is None:
        raise FormatError(
            pred_path, f"prediction was made for {meta.get('slide')}, not {slide.path.name}"
        )


def default_band_px(
    slide: Slide,
    labels_path: str | None,
    meta: dict[str, Any] | None,
    class_name: str | None = None,
    columns: Any = None,
) -> float:
    """One block width in level-0 px: from the labels, else the model's block size in um."""
    if labels_path is not None:
        lab = read_lowres(labels_path, slide.dimensions, class_name=class_name, columns=columns)
        return float(np.median(lab.width))
    if meta is not None and meta.get("model") and Path(meta["model"]).exists():
        from .training import load_checkpoint

        ckpt = load_checkpoint(meta["model"])
        block_um = float(ckpt["block_size"]) * float(ckpt["train_mpp"])
        return block_um / slide.require_mpp("a band in microns")
    raise FormatError(
        labels_path or "band", "cannot tell the block width: give --band-px or --band-um"
    )


def evaluate_files(
    truth: str | os.PathLike,
    slide: str | os.PathLike,
    pred: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    band_um: float | None = None,
    band_px: float | None = None,
    slide_mpp: float | None = None,
    name: str | None = None,
    class_name: str | None = None,
    columns: Any = None,
) -> dict[str, Any]:
    """Masked and unmasked IoU/DICE of one prediction (or the low-res model) on one slide.

    ``class_name`` and ``columns`` read low-res labels of other tools (see ``read_lowres``).
    """
    with Slide(slide, mpp=slide_mpp) as s:
        t = read_truth(truth, s.dimensions)
        meta = None
        if pred is not None:
            values, meta = read_prediction(pred)
            check_prediction_slide(meta, s, pred)
            pmask = resample_to_grid(values, float(meta["downsample"]), t.mask.shape, t.downsample)
            pmask = pmask >= 128  # uint8 0..255: probability >= 0.5
            label = name or str(meta.get("loss") or Path(pred).stem)
        elif labels is not None:
            lab = read_lowres(labels, s.dimensions, class_name=class_name, columns=columns)
            pmask = paint_labels(lab, t.mask.shape, t.downsample) >= 0.5
            label = name or "low resolution"
        else:
            raise ValueError("give a prediction or low-res labels")
        if band_um is not None:
            band0 = band_um / s.require_mpp("a band in microns")
        elif band_px is not None:
            band0 = float(band_px)
        else:
            band0 = default_band_px(s, str(labels) if labels else None, meta, class_name, columns)
        scores = masked_scores(pmask, t.mask, band0 / t.downsample)
        result = {
            "name": label,
            "slide": str(s.path),
            "truth": str(truth),
            "prediction": str(pred) if pred else None,
            "labels": str(labels) if labels else None,
            "band_px_level0": band0,
            "band_um": band0 * s.mpp if s.mpp else None,
            "grid_downsample": t.downsample,
            **{k: v for k, v in scores.items() if not k.endswith("counts")},
            "counts": {
                "masked": scores["masked_counts"].as_dict(),
                "unmasked": scores["unmasked_counts"].as_dict(),
            },
        }
    return to_json_dict(result)


def format_table(results: list[dict[str, Any]]) -> str:
    """A Table 2-style text table: one row per result."""
    head = f"{'model':<28} {'masked IoU':>11} {'masked DICE':>12} {'IoU':>8} {'DICE':>8}"
    lines = [head, "-" * len(head)]

    def f(v: Any) -> str:
        return "   n/a" if v is None else f"{v:.4f}"

    for r in results:
        lines.append(
            f"{str(r['name'])[:28]:<28} {f(r['masked_iou']):>11} {f(r['masked_dice']):>12} "
            f"{f(r['unmasked_iou']):>8} {f(r['unmasked_dice']):>8}"
        )
    band = results[0].get("band_um") if results else None
    if results:
        lines.append(
            f"band: {results[0]['band_px_level0']:.0f} level-0 px"
            + (f" ({band:.0f} um)" if band else "")
            + " each side of the truth boundary"
        )
    return "\n".join(lines)
