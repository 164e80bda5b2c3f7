"""Evaluate predictions or low-res labels against ground truth on a common grid (Table 2).

One place for what an evaluation is: the thresholds, the default band, a Table 2 row and its
formatting, and the models and boundaries of a comparison (``compare`` runs one).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CANCER_THRESHOLD
from ..io.formats import (
    FormatError,
    LowResLabels,
    Truth,
    read_prediction,
    read_prediction_sidecar,
    read_truth,
)
from ..io.interop import patch_lattice, read_lowres
from ..io.slide import Slide
from .metrics import SCORE_KEYS, masked_scores, to_json_dict

#: Table 2 columns: masked scores first (the paper's), then scores over the whole grid.
TABLE_COLUMNS = ("Masked IoU", "Masked DICE", "IoU", "DICE")

#: napari layer data: (data, keyword arguments, layer type).
LayerData = tuple[Any, dict[str, Any], str]


# -- models and boundaries -----------------------------------------------------------------


@dataclass
class ModelEntry:
    """A model to compare: a checkpoint to run, or a prediction file made earlier."""

    name: str
    loss: str | None = None
    checkpoint: Path | None = None
    prediction: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def statistic(self) -> str | None:
        """The loss statistic (``intra``, ``inter``, ``intra+inter``) without the distance."""
        return loss_statistic(self.loss)

    @property
    def label(self) -> str:
        """Display name: the model name with its loss, e.g. ``m1 (intra+inter/gaussian)``."""
        return f"{self.name} ({self.loss})" if self.loss and self.loss != self.name else self.name


def loss_statistic(loss: str | None) -> str | None:
    """``"intra+inter/gaussian"`` -> ``"intra+inter"``; None or blank -> None."""
    if not loss:
        return None
    stat = str(loss).split("/")[0].strip().lower()
    return stat or None


def prediction_entry(path: str | os.PathLike) -> ModelEntry:
    """A prediction TIFF (with its sidecar) as a model to compare; named after the file."""
    path = Path(path)
    if not path.exists():
        raise FormatError(path, "no such file")
    meta = read_prediction_sidecar(path)
    return ModelEntry(path.stem, meta.get("loss"), prediction=path, card=meta)


@dataclass
class Boundary:
    """One boundary overlay: its mask on the truth grid and its colour."""

    name: str
    kind: str  # "truth", "lowres" or "model"
    color: str
    mask: np.ndarray
    entry: ModelEntry | None = None


@dataclass
class Comparison:
    """The result: boundaries on the truth grid, band, Table 2 rows and napari layer data."""

    slide: Slide
    truth: Truth
    band_px: float  # level-0 pixels each side of the truth boundary
    band: np.ndarray
    boundaries: list[Boundary]
    rows: list[dict[str, Any]]
    layers: list[LayerData] = field(default_factory=list)

    @property
    def band_um(self) -> float | None:
        return self.band_px * self.slide.mpp if self.slide.mpp else None

    def legend(self) -> list[tuple[str, str]]:
        """(label, colour) of every boundary, truth first."""
        return legend_entries(self.boundaries)


def legend_entries(boundaries: Iterable[Boundary]) -> list[tuple[str, str]]:
    """(label, colour) for each boundary: ground truth, low-res threshold, then each model."""
    out = []
    for b in boundaries:
        if b.kind == "lowres":
            out.append(("Low resolution (p >= 0.5)", b.color))
        elif b.kind == "model" and b.entry is not None:
            out.append((b.entry.label, b.color))
        else:
            out.append((b.name, b.color))
    return out


# -- masks on the truth grid ---------------------------------------------------------------


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
    """The low-resolution model: each block painted with its probability (float32).

    Overlapping patches (WSInfer's ``--patch-overlap-ratio``, see
    :func:`~napari_lsr.io.interop.patch_lattice`) are painted from their centres: each patch
    paints the step x step cell around its centre, so a pixel takes the probability of the
    patch whose centre is nearest; the half step at the edges of the patched area, which no
    centre cell holds, takes that of a patch covering it.
    """
    out = np.zeros(shape, np.float32)
    boxes = list(zip(labels.x, labels.y, labels.width, labels.height, labels.probability))

    def paint(x0: float, y0: float, x1: float, y1: float, p: float) -> None:
        r0, r1 = max(0, int(round(y0 / downsample))), int(round(y1 / downsample))
        c0, c1 = max(0, int(round(x0 / downsample))), int(round(x1 / downsample))
        out[r0:r1, c0:c1] = p

    for x, y, w, h, p in boxes:
        paint(x, y, x + w, y + h, p)
    lattice = patch_lattice(labels.x, labels.y, labels.width, labels.height)
    if lattice is not None:
        sx, sy, pw, ph = lattice
        for x, y, w, h, p in boxes:  # a clipped edge patch keeps its lattice centre
            cx, cy = x + (pw - sx) / 2, y + (ph - sy) / 2
            paint(cx, cy, min(cx + sx, x + w), min(cy + sy, y + h), p)
    return out


def lowres_mask(labels: LowResLabels, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """The low-resolution model's cancer mask: blocks painted with probability, >= 0.5."""
    return paint_labels(labels, shape, downsample) >= CANCER_THRESHOLD


def prediction_mask(
    values: np.ndarray, pred_downsample: float, shape: tuple[int, int], downsample: float
) -> np.ndarray:
    """A uint8 prediction (probability x 255) sampled on the truth grid and thresholded at
    probability CANCER_THRESHOLD (0.5: uint8 128)."""
    cut = math.ceil(CANCER_THRESHOLD * 255)
    return resample_to_grid(values, pred_downsample, shape, downsample) >= cut


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
    labels: LowResLabels | None = None,
    blocks: Iterable[tuple[Any, Any]] = (),
    *,
    remedy: str = "give the band width or low-resolution labels",
    need: str = "a band of one block width",
) -> float:
    """One block width in level-0 px: the labels' median block, else the first model's block
    (``blocks``: ``(block_size, train_mpp)`` pairs, block size in pixels at train mpp).

    ``need`` says what the slide's mpp is wanted for, ``remedy`` what to give instead; both end
    up in the one-line errors.
    """
    if labels is not None and len(labels):
        return float(np.median(labels.width))
    for block_size, train_mpp in blocks:
        if block_size and train_mpp:
            return float(block_size) * float(train_mpp) / slide.require_mpp(need)
    raise FormatError("band", f"cannot tell the block width: {remedy}")


def score_row(
    name: str, mask: np.ndarray, truth: np.ndarray, band_grid_px: float, **extra: Any
) -> dict[str, Any]:
    """One Table 2 row: masked and unmasked IoU/DICE of ``mask`` against ``truth``, with
    the confusion counts behind them (``masked_counts``, ``unmasked_counts``: rows of several
    slides pool by adding them, see ``compare.pooled_rows``)."""
    s = masked_scores(mask, truth, band_grid_px)
    counts = {"masked_counts": s["masked_counts"], "unmasked_counts": s["unmasked_counts"]}
    return {"name": name, **{k: float(s[k]) for k in SCORE_KEYS}, **counts, **extra}


def format_score(v: float | None) -> str:
    """A score as the paper prints it (4 decimals); n/a when undefined."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Table 2 cells: the row name then masked IoU, masked DICE, IoU, DICE."""
    return [[str(r["name"]), *(format_score(r.get(k)) for k in SCORE_KEYS)] for r in rows]


def _checkpoint_block(meta: dict[str, Any] | None) -> list[tuple[Any, Any]]:
    """The ``(block_size, train_mpp)`` of the checkpoint a prediction names, when it exists."""
    if meta is None or not meta.get("model") or not Path(meta["model"]).exists():
        return []
    from ..learn.training import load_checkpoint

    ckpt = load_checkpoint(meta["model"])
    return [(ckpt["block_size"], ckpt["train_mpp"])]


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
    truth_class: str | None = None,
    truth_objects: Any = None,
    mask_threshold: float | None = None,
) -> dict[str, Any]:
    """Masked and unmasked IoU/DICE of one prediction (or the low-res model) on one slide.

    ``class_name`` and ``columns`` read low-res labels of other tools (see ``read_lowres``);
    ``truth_class``, ``truth_objects`` and ``mask_threshold`` read the truth (``read_truth``).
    """
    with Slide(slide, mpp=slide_mpp) as s:
        t = read_truth(
            truth,
            s.dimensions,
            truth_class=truth_class,
            objects=truth_objects,
            mask_threshold=mask_threshold,
        )
        meta = lab = None
        if pred is not None:
            values, meta = read_prediction(pred)
            check_prediction_slide(meta, s, pred)
            pmask = prediction_mask(values, float(meta["downsample"]), t.mask.shape, t.downsample)
            label = name or str(meta.get("loss") or Path(pred).stem)
        elif labels is not None:
            lab = read_lowres(labels, s.dimensions, class_name=class_name, columns=columns)
            pmask = lowres_mask(lab, t.mask.shape, t.downsample)
            label = name or "low resolution"
        else:
            raise ValueError("give a prediction or low-res labels")
        if band_um is not None:
            band0 = band_um / s.require_mpp("a band in microns")
        elif band_px is not None:
            band0 = float(band_px)
        else:
            if lab is None and labels is not None:
                lab = read_lowres(labels, s.dimensions, class_name=class_name, columns=columns)
            band0 = default_band_px(
                s,
                lab,
                [] if lab is not None else _checkpoint_block(meta),
                remedy="give --band-px or --band-um",
                need="a band in microns",
            )
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
