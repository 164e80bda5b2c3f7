"""The comparison run (Qt-free): find the models, predict or reuse, score, draw, export."""

from __future__ import annotations

import csv
import math
import os
import queue
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate.evaluation import (
    SCORE_KEYS,
    Boundary,
    Comparison,
    ModelEntry,
    check_prediction_slide,
    default_band_px,
    lowres_mask,
    prediction_entry,
    prediction_mask,
    score_row,
)
from .evaluate.metrics import band_mask
from .io.formats import (
    FormatError,
    LowResLabels,
    Truth,
    atomic_path,
    existing_prediction_sidecar,
    read_prediction,
    read_prediction_sidecar,
    read_truth,
    same_file,
)
from .io.interop import read_lowres
from .io.slide import Slide
from .layers import BOUNDARY_COLORS, comparison_layers, model_colors

#: Row name of the low-resolution model in the metrics table (the paper's Table 2).
LOWRES_NAME = "Low resolution model"


# -- models --------------------------------------------------------------------------------


def project_models(folder: str | os.PathLike, errors: list[str] | None = None) -> list[ModelEntry]:
    """The trained models of a project's ``models/`` folder (``models.list_models`` order);
    malformed cards are skipped, their one-line reasons appended to ``errors``."""
    from .learn.models import list_models

    out = []
    for card in list_models(folder, errors=errors):
        info = dict(card.card)
        loss = info.get("loss")
        if loss and info.get("distance"):
            loss = f"{loss}/{info['distance']}"
        out.append(ModelEntry(card.name, loss, checkpoint=card.checkpoint, card=info))
    return out


# -- prediction files ----------------------------------------------------------------------


def prediction_path(
    predictions_dir: str | os.PathLike, model: str, slide: str | os.PathLike, single: bool = True
) -> Path:
    """Where a model's prediction of a slide lands: ``<model>.tiff`` in a one-slide project,
    ``<model>.<slide stem>.tiff`` when the project has several slides."""
    name = model if single else f"{model}.{Path(slide).stem}"
    return Path(predictions_dir) / f"{name}.tiff"


def reusable_prediction(
    pred: str | os.PathLike, checkpoint: str | os.PathLike, slide: str | os.PathLike
) -> bool:
    """True when ``pred`` exists and its sidecar says it was made by ``checkpoint`` (not
    retrained since) for ``slide``."""
    pred, checkpoint = Path(pred), Path(checkpoint)
    side = existing_prediction_sidecar(pred)
    if not (pred.exists() and side.exists() and checkpoint.exists()):
        return False
    try:
        meta = read_prediction_sidecar(pred)
    except FormatError:
        return False
    if not (same_file(meta.get("model"), checkpoint) and same_file(meta.get("slide"), slide)):
        return False
    return pred.stat().st_mtime >= checkpoint.stat().st_mtime


def model_mpp(entry: ModelEntry) -> float | None:
    """The model's training mpp, from its card or else its checkpoint."""
    if entry.card.get("train_mpp"):
        return float(entry.card["train_mpp"])
    if entry.checkpoint is None:
        return None
    from .learn.training import load_checkpoint

    return float(load_checkpoint(entry.checkpoint)["train_mpp"])


def check_model_for_slide(entry: ModelEntry, slide: Slide) -> None:
    """Refuse (InferenceError, one line) a model whose training mpp the slide cannot supply."""
    from .predict.inference import output_geometry

    mpp = model_mpp(entry)
    if mpp is not None:
        output_geometry(slide, mpp)


def predict_with_progress(
    checkpoint: str | os.PathLike,
    slide: str | os.PathLike,
    out: str | os.PathLike,
    **kwargs: Any,
) -> Generator[float, None, dict[str, Any]]:
    """Run ``predict_slide`` in a helper thread, yielding its progress (0..1) as it comes.

    Returns predict_slide's summary; re-raises its error. The generator can be iterated from a
    napari worker so that progress reaches the GUI as ``yielded`` events.
    """
    from .predict.inference import predict_slide

    q: queue.Queue[float | None] = queue.Queue()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["summary"] = predict_slide(
                checkpoint, slide, out, progress=lambda what, frac: q.put(float(frac)), **kwargs
            )
        except BaseException as exc:  # handed over to the caller's thread
            result["error"] = exc
        finally:
            q.put(None)

    thread = threading.Thread(target=target, name="napari-lsr-predict", daemon=True)
    thread.start()
    while (frac := q.get()) is not None:
        yield frac
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["summary"]


# -- the comparison ------------------------------------------------------------------------


@dataclass
class CompareRequest:
    """What to compare: a slide, its ground truth, its low-res labels and some models."""

    slide: Path
    truth: Path
    labels: Path | None = None
    models: list[ModelEntry] = field(default_factory=list)
    predictions_dir: Path | None = None
    single_slide: bool = True
    slide_mpp: float | None = None
    band_um: float | None = None
    band_px: float | None = None
    recompute: bool = False
    heatmap: bool = False
    device: str = "auto"
    #: GeoJSON truth: the class (None: the tumour class) and QuPath object types (None:
    #: annotations), as ``read_truth`` takes them.
    truth_class: str | None = None
    truth_objects: str | None = None


def run_comparison(req: CompareRequest) -> Generator[tuple[str, float], None, Comparison]:
    """Predict (or reuse predictions), then score and draw every boundary on the truth grid.

    Yields ``(message, fraction)`` progress; returns the :class:`Comparison`. Bad input raises
    FormatError / InferenceError / SlideError with a one-line message before any long work.
    """
    yield "reading the ground truth", 0.0
    slide = Slide(req.slide, mpp=req.slide_mpp)
    try:
        truth = read_truth(
            req.truth, slide.dimensions, truth_class=req.truth_class, objects=req.truth_objects
        )
        labels = read_lowres(req.labels, slide.dimensions) if req.labels else None
        models = _unique_names([replace(m, card=dict(m.card)) for m in req.models])
        to_run = []
        for m in models:
            if m.checkpoint is not None:
                check_model_for_slide(m, slide)
                to_run.append(m)
            elif m.prediction is not None:
                check_prediction_slide(prediction_entry(m.prediction).card, slide, m.prediction)
            else:
                raise FormatError(m.name, "neither a checkpoint nor a prediction file")
        if to_run and req.predictions_dir is None:
            raise FormatError(to_run[0].name, "no predictions folder to write to (open a project)")
        steps = len(to_run) + 1
        for i, m in enumerate(to_run):
            assert m.checkpoint is not None and req.predictions_dir is not None
            out = prediction_path(req.predictions_dir, m.name, slide.path, req.single_slide)
            if req.recompute or not reusable_prediction(out, m.checkpoint, slide.path):
                gen = predict_with_progress(
                    m.checkpoint, slide.path, out, device=req.device, slide_mpp=req.slide_mpp
                )
                for frac in gen:
                    yield f"predicting {m.name}", (i + frac) / steps
            else:
                yield f"reusing {out.name}", (i + 1) / steps
            m.prediction = out
        yield "scoring", (steps - 1) / steps
        comp = _compare(req, models, slide, truth, labels)
        yield "done", 1.0
        return comp
    finally:
        slide.close()  # a closed Slide keeps its path, size and mpp for layer placement


def _unique_names(models: list[ModelEntry]) -> list[ModelEntry]:
    """Rename repeated model names ``name (2)``, ``name (3)``: names key colours and rows."""
    seen: dict[str, int] = {}
    for m in models:
        n = seen[m.name] = seen.get(m.name, 0) + 1
        if n > 1:
            m.name = f"{m.name} ({n})"
    return models


def _compare(
    req: CompareRequest,
    models: list[ModelEntry],
    slide: Slide,
    truth: Truth,
    labels: LowResLabels | None,
) -> Comparison:
    shape, ds = truth.mask.shape, float(truth.downsample)
    if req.band_px is not None:
        band0 = float(req.band_px)
    elif req.band_um is not None:
        band0 = req.band_um / slide.require_mpp("a band in microns")
    else:
        blocks = [(m.card.get("block_size"), m.card.get("train_mpp")) for m in models]
        band0 = default_band_px(slide, labels, blocks)
    band_grid = band0 / ds
    common = {
        "band_px_level0": band0,
        "band_um": band0 * slide.mpp if slide.mpp else None,
        "slide": slide.name,
    }
    colors = model_colors(models)
    boundaries = [Boundary("Ground truth", "truth", BOUNDARY_COLORS["truth"], truth.mask)]
    rows = []
    heat: list[tuple[ModelEntry, np.ndarray, float]] = []
    if labels is not None:
        mask = lowres_mask(labels, shape, ds)
        boundaries.append(Boundary(LOWRES_NAME, "lowres", BOUNDARY_COLORS["lowres"], mask))
        source = str(labels.path)
        color = BOUNDARY_COLORS["lowres"]
        rows.append(score_row(LOWRES_NAME, mask, truth.mask, band_grid, source=source, **common))
        rows[-1]["color"] = color
    for m in models:
        assert m.prediction is not None
        values, meta = read_prediction(m.prediction)
        check_prediction_slide(meta, slide, m.prediction)
        if not m.loss and meta.get("loss"):
            m.loss = str(meta["loss"])
        pds = float(meta["downsample"])
        mask = prediction_mask(values, pds, shape, ds)
        boundaries.append(Boundary(m.name, "model", colors[m.name], mask, m))
        rows.append(
            score_row(
                m.name,
                mask,
                truth.mask,
                band_grid,
                loss=m.loss,
                source=str(m.prediction),
                color=colors[m.name],
                **common,
            )
        )
        if req.heatmap:
            heat.append((m, values, pds))
    band = band_mask(truth.mask, band_grid)
    comp = Comparison(slide, truth, band0, band, boundaries, rows)
    comp.layers = comparison_layers(comp, heat)
    return comp


# -- exports -------------------------------------------------------------------------------


CSV_COLUMNS = ("slide", "model", *SCORE_KEYS, "loss", "band_px_level0", "band_um", "source")

#: The ``slide`` of a row pooled over slides (``pooled_rows``).
POOLED = "pooled"


def run_project_comparison(
    requests: Sequence[CompareRequest],
) -> Generator[tuple[str, float], None, list[Comparison]]:
    """``run_comparison`` for each request (one per slide of a project), one after the other;
    yields their progress over the whole, returns their Comparisons in order."""
    comps: list[Comparison] = []
    n = len(requests)
    for i, req in enumerate(requests):
        gen = run_comparison(req)
        while True:
            try:
                message, frac = next(gen)
            except StopIteration as stop:
                comps.append(stop.value)
                break
            yield f"{req.slide.stem} ({i + 1}/{n}): {message}", (i + frac) / n
    return comps


def pooled_rows(comps: Sequence[Comparison]) -> list[dict[str, Any]]:
    """Table 2 over several slides, as the paper's Table 2 is: for each row name (the
    low-resolution model, each model) the confusion counts summed over the slides that have
    it, and the scores of the sums (``slide`` = ``pooled``, ``slides`` = how many)."""
    from .evaluate.metrics import Counts

    order: list[str] = []
    acc: dict[str, dict[str, Any]] = {}
    for comp in comps:
        for r in comp.rows:
            a = acc.get(r["name"])
            if a is None:
                order.append(r["name"])
                a = acc[r["name"]] = {
                    "loss": r.get("loss"),
                    "color": r.get("color"),
                    "masked": Counts(),
                    "unmasked": Counts(),
                    "slides": [],
                }
            a["masked"] = a["masked"] + r["masked_counts"]
            a["unmasked"] = a["unmasked"] + r["unmasked_counts"]
            a["slides"].append(r.get("slide") or comp.slide.name)
    rows = []
    for name in order:
        a = acc[name]
        m, u = a["masked"], a["unmasked"]
        rows.append(
            {
                "name": name,
                "slide": POOLED,
                "slides": len(a["slides"]),
                "masked_iou": m.iou,
                "masked_dice": m.dice,
                "unmasked_iou": u.iou,
                "unmasked_dice": u.dice,
                "masked_counts": m,
                "unmasked_counts": u,
                "loss": a["loss"],
                "color": a["color"],
                "source": f"pooled over {len(a['slides'])} slide(s): " + ", ".join(a["slides"]),
            }
        )
    return rows


def write_metrics_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """Write the Table 2 rows as CSV (atomically, LF line endings); undefined scores are left
    blank. Rows of several slides, and pooled ones, say which in the ``slide`` column."""
    path = Path(path)

    def cell(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return f"{v:.6f}" if isinstance(v, float) else v

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow(
                [
                    r.get("slide") or "",
                    r["name"],
                    *(cell(r.get(k)) for k in SCORE_KEYS),
                    r.get("loss") or "",
                    cell(r.get("band_px_level0")),
                    cell(r.get("band_um")),
                    r.get("source") or "",
                ]
            )
    return path


def draw_legend(image: np.ndarray, entries: Sequence[tuple[str, str]]) -> np.ndarray:
    """A copy of an RGB(A) screenshot with a boxed legend (swatch + name) in the top-left."""
    from PIL import Image, ImageColor, ImageDraw, ImageFont

    img = Image.fromarray(np.ascontiguousarray(image))
    if not entries:
        return np.asarray(img)
    mode = img.mode
    img = img.convert("RGBA")
    font = ImageFont.load_default(size=max(11, img.height // 60))
    draw = ImageDraw.Draw(img)
    line = int(font.size * 1.5) if hasattr(font, "size") else 16
    sw = line * 2
    pad = line // 2
    text_w = max(draw.textlength(t, font=font) for t, _ in entries)
    box_w, box_h = int(pad * 3 + sw + text_w), int(pad * 2 + line * len(entries))
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    od = ImageDraw.Draw(overlay)
    od.rectangle((pad, pad, pad + box_w, pad + box_h), fill=(255, 255, 255, 215))
    img = Image.alpha_composite(img, overlay)
    draw = ImageDraw.Draw(img)
    for i, (text, color) in enumerate(entries):
        y = pad * 2 + i * line + line // 2
        rgb = ImageColor.getrgb(color)[:3]
        draw.line((pad * 2, y, pad * 2 + sw, y), fill=rgb, width=max(3, line // 5))
        draw.text((pad * 3 + sw, y), text, fill=(0, 0, 0), font=font, anchor="lm")
    return np.asarray(img.convert(mode if mode in ("RGB", "RGBA") else "RGB"))


def write_figure(
    path: str | os.PathLike, image: np.ndarray, entries: Sequence[tuple[str, str]] = ()
) -> Path:
    """Save a screenshot as PNG, with the legend drawn in when ``entries`` are given."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    arr = draw_legend(image, entries) if entries else np.asarray(image)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")
    return path
