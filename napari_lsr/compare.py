"""Qt-free logic of the comparison widget: models, predictions, boundaries, band and Table 2."""

from __future__ import annotations

import colorsys
import csv
import math
import os
import queue
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .evaluation import check_prediction_slide, paint_labels, resample_to_grid
from .formats import (
    FormatError,
    LowResLabels,
    Truth,
    atomic_path,
    existing_prediction_sidecar,
    read_prediction,
    read_prediction_sidecar,
    read_truth,
)
from .interop import read_lowres
from .layers import BOUNDARY_COLORS, OTHER_COLORS, _placement, boundary_layer_data
from .metrics import band_mask, masked_scores
from .slide import Slide, first_line

#: Row name of the low-resolution model in the metrics table (the paper's Table 2).
LOWRES_NAME = "Low resolution model"
#: Table 2 columns: masked scores first (the paper's), then scores over the whole grid.
TABLE_COLUMNS = ("Masked IoU", "Masked DICE", "IoU", "DICE")
SCORE_KEYS = ("masked_iou", "masked_dice", "unmasked_iou", "unmasked_dice")
#: Losses with a fixed boundary colour (SPEC section 4); other models get OTHER_COLORS.
LOSS_COLORS = {"intra+inter": BOUNDARY_COLORS["intra+inter"], "intra": BOUNDARY_COLORS["intra"]}
#: Shading of the evaluation band: a translucent dark veil over the band pixels.
BAND_COLOR = "#000000"
BAND_OPACITY = 0.25
#: Opacity of the probability heat map over the slide.
HEATMAP_OPACITY = 0.5

LayerData = tuple[Any, dict[str, Any], str]


one_line = first_line  # one-line error messages, as the slide reader words them


# -- models and their colours --------------------------------------------------------------


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


def _palette() -> Iterator[str]:
    """OTHER_COLORS, then as many further saturated hues as needed."""
    yield from OTHER_COLORS
    k = 0
    while True:
        h = (0.083 + 0.618034 * k) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.8, 1.0)
        yield f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
        k += 1


def model_colors(models: Sequence[ModelEntry]) -> dict[str, str]:
    """A boundary colour per model name: the first intra+inter model blue, the first intra
    model cyan, every other model a distinct colour from OTHER_COLORS (then further hues)."""
    reserved = {c.lower() for c in BOUNDARY_COLORS.values()}
    used: set[str] = set()
    out: dict[str, str] = {}
    palette = _palette()
    for m in models:
        color = LOSS_COLORS.get(m.statistic or "")
        if color is None or color in used:
            color = next(c for c in palette if c.lower() not in reserved | used)
        used.add(color.lower())
        out[m.name] = color
    return out


def project_models(folder: str | os.PathLike, errors: list[str] | None = None) -> list[ModelEntry]:
    """The trained models of a project's ``models/`` folder (``models.list_models`` order);
    malformed cards are skipped, their one-line reasons appended to ``errors``."""
    from .models import list_models

    out = []
    for card in list_models(folder, errors=errors):
        info = dict(card.card)
        loss = info.get("loss")
        if loss and info.get("distance"):
            loss = f"{loss}/{info['distance']}"
        out.append(ModelEntry(card.name, loss, checkpoint=card.checkpoint, card=info))
    return out


def prediction_entry(path: str | os.PathLike) -> ModelEntry:
    """A prediction TIFF (with its sidecar) as a model to compare; named after the file."""
    path = Path(path)
    if not path.exists():
        raise FormatError(path, "no such file")
    meta = read_prediction_sidecar(path)
    return ModelEntry(path.stem, meta.get("loss"), prediction=path, card=meta)


# -- prediction files ----------------------------------------------------------------------


def prediction_path(
    predictions_dir: str | os.PathLike, model: str, slide: str | os.PathLike, single: bool = True
) -> Path:
    """Where a model's prediction of a slide lands: ``<model>.tiff`` in a one-slide project,
    ``<model>.<slide stem>.tiff`` when the project has several slides."""
    name = model if single else f"{model}.{Path(slide).stem}"
    return Path(predictions_dir) / f"{name}.tiff"


def _same_file(a: Any, b: str | os.PathLike) -> bool:
    if not a:
        return False
    try:
        return Path(str(a)).resolve() == Path(b).resolve()
    except OSError:
        return False


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
    if not (_same_file(meta.get("model"), checkpoint) and _same_file(meta.get("slide"), slide)):
        return False
    return pred.stat().st_mtime >= checkpoint.stat().st_mtime


def model_mpp(entry: ModelEntry) -> float | None:
    """The model's training mpp, from its card or else its checkpoint."""
    if entry.card.get("train_mpp"):
        return float(entry.card["train_mpp"])
    if entry.checkpoint is None:
        return None
    from .training import load_checkpoint

    return float(load_checkpoint(entry.checkpoint)["train_mpp"])


def check_model_for_slide(entry: ModelEntry, slide: Slide) -> None:
    """Refuse (InferenceError, one line) a model whose training mpp the slide cannot supply."""
    from .inference import output_geometry

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
    from .inference import predict_slide

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


def lowres_mask(labels: LowResLabels, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """The low-resolution model's cancer mask: blocks painted with probability, >= 0.5."""
    return paint_labels(labels, shape, downsample) >= 0.5


def prediction_mask(
    values: np.ndarray, pred_downsample: float, shape: tuple[int, int], downsample: float
) -> np.ndarray:
    """A uint8 prediction sampled on the truth grid and thresholded at probability 0.5."""
    return resample_to_grid(values, pred_downsample, shape, downsample) >= 128


def score_row(
    name: str, mask: np.ndarray, truth: np.ndarray, band_grid_px: float, **extra: Any
) -> dict[str, Any]:
    """One Table 2 row: masked and unmasked IoU/DICE of ``mask`` against ``truth``."""
    s = masked_scores(mask, truth, band_grid_px)
    return {"name": name, **{k: float(s[k]) for k in SCORE_KEYS}, **extra}


def _default_band_px(
    labels: LowResLabels | None, models: Sequence[ModelEntry], slide: Slide
) -> float:
    """One block width in level-0 px: the labels' median block, else a model's block size."""
    if labels is not None and len(labels):
        return float(np.median(labels.width))
    for m in models:
        if m.card.get("block_size") and m.card.get("train_mpp"):
            um = float(m.card["block_size"]) * float(m.card["train_mpp"])
            return um / slide.require_mpp("a band of one block width")
    raise FormatError(
        "band", "cannot tell the block width: give the band width or low-resolution labels"
    )


def run_comparison(req: CompareRequest) -> Generator[tuple[str, float], None, Comparison]:
    """Predict (or reuse predictions), then score and draw every boundary on the truth grid.

    Yields ``(message, fraction)`` progress; returns the :class:`Comparison`. Bad input raises
    FormatError / InferenceError / SlideError with a one-line message before any long work.
    """
    yield "reading the ground truth", 0.0
    slide = Slide(req.slide, mpp=req.slide_mpp)
    try:
        truth = read_truth(req.truth, slide.dimensions)
        labels = read_lowres(req.labels, slide.dimensions) if req.labels else None
        models = _unique_names([replace(m, card=dict(m.card)) for m in req.models])
        to_run = []
        for m in models:
            if m.checkpoint is not None:
                check_model_for_slide(m, slide)
                to_run.append(m)
            elif m.prediction is not None:
                check_prediction_slide(_sidecar(m.prediction), slide, m.prediction)
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


def _sidecar(path: Path) -> dict[str, Any]:
    return prediction_entry(path).card


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
        band0 = _default_band_px(labels, models, slide)
    band_grid = band0 / ds
    common = {"band_px_level0": band0, "band_um": band0 * slide.mpp if slide.mpp else None}
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


# -- napari layer data (no Qt) -------------------------------------------------------------


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


def band_layer_data(comp: Comparison) -> LayerData:
    """The evaluation band as a translucent labels layer on the truth grid."""
    from napari.utils.colormaps import DirectLabelColormap

    cmap = DirectLabelColormap(color_dict={0: "transparent", 1: BAND_COLOR, None: "transparent"})
    um = comp.band_um
    width = f"{um:.0f} um" if um else f"{comp.band_px:.0f} px"
    return (
        comp.band.astype(np.uint8),
        {
            "name": f"{comp.slide.name} evaluation band ({width})",
            "colormap": cmap,
            **_placement(comp.slide, comp.truth.downsample),
            "opacity": BAND_OPACITY,
            "units": "um" if comp.slide.mpp else "pixel",
            "metadata": {"napari_lsr": {"kind": "band", "band_px_level0": comp.band_px}},
        },
        "labels",
    )


def heatmap_layer_data(
    values: np.ndarray, downsample: float, slide: Slide, name: str, visible: bool = True
) -> LayerData:
    """A prediction's cancer probability (uint8) as a translucent heat map over the slide."""
    return (
        values,
        {
            "name": f"{name} probability",
            "colormap": "inferno",
            "contrast_limits": (0, 255),
            "opacity": HEATMAP_OPACITY,
            "blending": "translucent",
            "visible": visible,
            **_placement(slide, downsample),
            "units": "um" if slide.mpp else "pixel",
            "metadata": {"napari_lsr": {"kind": "heatmap", "downsample": downsample}},
        },
        "image",
    )


def comparison_layers(
    comp: Comparison, heat: Sequence[tuple[ModelEntry, np.ndarray, float]] = ()
) -> list[LayerData]:
    """Layers bottom to top: band, heat maps (first visible), low-res, models, ground truth."""
    out = [band_layer_data(comp)]
    for i, (m, values, pds) in enumerate(heat):
        out.append(heatmap_layer_data(values, pds, comp.slide, m.name, visible=i == 0))
    ds = comp.truth.downsample
    name = comp.slide.name
    ordered = [b for b in comp.boundaries if b.kind != "truth"]
    ordered += [b for b in comp.boundaries if b.kind == "truth"]
    for b in ordered:
        label = b.entry.label if b.entry is not None else b.name
        out.append(
            boundary_layer_data(b.mask, ds, comp.slide, b.color, f"{name} {label}", kind=b.kind)
        )
    return out


# -- exports -------------------------------------------------------------------------------


def format_score(v: float | None) -> str:
    """A score as the paper prints it (4 decimals); n/a when undefined."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Table 2 cells: the row name then masked IoU, masked DICE, IoU, DICE."""
    return [[str(r["name"]), *(format_score(r.get(k)) for k in SCORE_KEYS)] for r in rows]


CSV_COLUMNS = ("model", *SCORE_KEYS, "loss", "band_px_level0", "band_um", "source")


def write_metrics_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """Write the Table 2 rows as CSV (atomically); undefined scores are left blank."""
    path = Path(path)

    def cell(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return f"{v:.6f}" if isinstance(v, float) else v

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow(
                [
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
