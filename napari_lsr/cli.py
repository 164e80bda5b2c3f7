"""The ``napari-lsr`` command line: sample, train, predict, evaluate, export, demo (SPEC 5)."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import config
from .progress import Progress

EPILOG_TRAIN = """\
defaults: napari-lsr's recipe (BENCHMARKS.md, "Real tissue"): BatchNorm U-Net (running
statistics from step 150) with its output started at the prior's mean, RMSprop (smoothing
0.9) at lr 1e-3 for every loss with a cosine decay and EMA weights, flips and rotations
without colour jitter, distance gaussian; intra batches of 30 blocks, inter groups of 4 x 8
blocks of one bin each, from every bin with 2 or more blocks, drawn by block count.
--preset "paper (Sec. 3.3)" gives the paper's settings (lr 1e-5 intra, 1e-3 inter and
intra+inter, constant; 2 x 15 groups) on the first engine's per-pixel norm.
""" + textwrap.fill(config.PAPER_PRESET_NOTE[0].upper() + config.PAPER_PRESET_NOTE[1:] + ".", 90)

TRUST_HELP = (
    "open a checkpoint that is not plain data (an older napari-lsr file) with the unsafe "
    "loader, which can run code in the file: only for files from a source you trust"
)


class CliError(config.LSRError):
    """A one-line error for the user; exit status 2."""


# -- sample ------------------------------------------------------------------------------------


def cmd_sample(args: argparse.Namespace) -> int:
    from .sample.synthetic import write_sample

    bar = Progress("sample")
    project = write_sample(
        args.out_dir,
        size=args.size,
        mpp=args.mpp,
        seed=args.seed,
        block_um=args.block_um,
        n_slides=args.slides,
        progress=bar,
    )
    print(f"wrote a synthetic project to {project.folder}")
    for s in project.slides:
        print(f"  slide  {s.path.name}\n  labels {s.labels.name}\n  truth  {s.truth.name}")
    print(f"  prior  {project.prior_path.name}\n  project.toml")
    return 0


# -- train -------------------------------------------------------------------------------------


def _load_training_inputs(args: argparse.Namespace) -> tuple[list, Any]:
    from .io.formats import read_prior_csv
    from .io.interop import read_lowres
    from .io.slide import Slide
    from .learn.blocks import SlideBlocks

    if len(args.slide) != len(args.labels):
        raise CliError(
            f"give one --labels per --slide ({len(args.slide)} slides, {len(args.labels)} labels)"
        )
    prior = read_prior_csv(args.prior)
    sources = []
    for s, lab in zip(args.slide, args.labels):
        with Slide(s, mpp=args.slide_mpp) as slide:
            labels = read_lowres(
                lab,
                slide.dimensions,
                prior.bins,
                class_name=getattr(args, "class_name", None),
                columns=getattr(args, "columns", None),
            )
        sources.append(SlideBlocks(s, labels, args.slide_mpp))
    return sources, prior


def _trust(path: str | None, trusted: bool) -> None:
    """--trust-checkpoint: the user trusts ``path``'s source; the unsafe loader may open it."""
    if path and trusted and Path(path).is_file():
        from .learn.training import trust_checkpoint

        trust_checkpoint(path)


#: TrainConfig fields that the preset fills unless given on the command line.
_PRESET_FIELDS = (
    "lr_schedule",
    "warmup",
    "optimizer",
    "ema",
    "batch_size",
    "groups",
    "group_size",
    "group_draw",
    "min_group",
    "intra_steps",
    "norm",
    "init_bias",
    "colour",
)


def train_config(args: argparse.Namespace) -> Any:
    """The TrainConfig of a ``train`` command line: the preset, then the explicit options."""
    from .config import LEGACY, PAPER_PRESET, PRESETS, TrainConfig

    preset = PRESETS[args.preset]
    values: dict[str, Any] = {k: v for k, v in preset.items() if k != "lr"}
    values["lr"] = preset["lr"][args.loss]
    if args.preset == PAPER_PRESET:  # the first engine's companions of ChannelNorm
        values.update({k: LEGACY[k] for k in ("init_bias", "colour")})
    for key in ("lr", *_PRESET_FIELDS):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    return TrainConfig(
        loss=args.loss,
        distance=args.distance,
        pixel_variance=args.pixel_variance,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        depth=args.depth,
        width=args.width,
        augment=not args.no_augment,
        checkpoint_every=args.checkpoint_every,
        **values,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from .learn.blocks import extract_blocks, resolve_geometry
    from .learn.training import card_path, load_checkpoint, train

    if args.resume:  # refuse a checkpoint that is not plain data before any long work
        _trust(args.resume, args.trust_checkpoint)
        load_checkpoint(args.resume)
    sources, prior = _load_training_inputs(args)
    config = train_config(args)
    block_size, mpp = resolve_geometry(sources, args.mpp, args.block_size)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out.parent / "cache"
    blocks = extract_blocks(sources, cache, block_size, mpp, progress=Progress("blocks"))
    if args.epochs:
        per_step = (
            config.batch_size if config.loss == "intra" else config.groups * config.group_size
        )
        config.steps = max(1, math.ceil(args.epochs * len(blocks) / per_step))
    counts = blocks.counts(len(prior.bins))
    print(
        f"{len(blocks)} tissue blocks of {block_size} px at {mpp:.3g} um/px; per bin: "
        + " ".join(f"{lab}:{c}" for lab, c in zip(prior.bins.labels, counts) if c),
        file=sys.stderr,
    )
    print(f"{prior.source_line()} ({Path(args.prior).name})", file=sys.stderr)
    stop = threading.Event()
    old = signal.signal(signal.SIGINT, lambda *_: stop.set())
    bar = Progress("train")
    t0 = time.perf_counter()
    info = {
        "prior_path": str(Path(args.prior).resolve()),
        "labels": [str(Path(p).resolve()) for p in args.labels],
    }
    last = None
    try:
        for ev in train(blocks, prior, config, out, cancel=stop, resume=args.resume, info=info):
            last = ev
            if ev.kind == "start":
                print(f"training on {ev.device}: {ev.message}", file=sys.stderr)
            elif ev.kind == "step":
                bar(
                    "steps",
                    ev.step / ev.total,
                    f"step {ev.step}/{ev.total} loss {ev.loss:.4f} {ev.blocks_per_s:.0f} blocks/s",
                )
            if ev.extra.get("alarm"):  # at once, on its own line (health.Watch)
                print(f"\nalarm: {ev.extra['alarm']['message']}", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGINT, old)
    assert last is not None
    dt = time.perf_counter() - t0
    state = "cancelled (Ctrl+C)" if last.kind == "cancelled" else "finished"
    print(
        f"{state}: {last.step}/{last.total} steps in {dt:.0f} s on {last.device}, final loss "
        f"{last.loss:.4f}\ncheckpoint {out}\nmodel card {card_path(out)}"
    )
    health = last.extra.get("health")
    if health:  # one line: healthy, or degenerate with what to try
        print(f"model health: {health['message']}")
    if last.kind == "cancelled":
        print(f"resume with: napari-lsr train ... --resume {out} --out {out}")
    return 130 if last.kind == "cancelled" else 0


# -- predict and evaluate ----------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict.inference import predict_slide

    bar = Progress("predict")
    info = predict_slide(
        args.model,
        args.slide,
        args.out,
        device=args.device,
        scheduler=args.scheduler,
        slide_mpp=args.slide_mpp,
        batch_size=args.batch_size,
        progress=bar,
        trust_checkpoint=args.trust_checkpoint,
    )
    print(
        f"wrote {args.out} ({info['width']}x{info['height']} px at {info['mpp']:.3g} um/px, "
        f"{info['tiles']} tiles, {info['skipped']} background tiles skipped) in "
        f"{info['seconds']:.1f} s"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate.evaluation import evaluate_files, format_table

    if (args.pred is None) == (args.labels is None):
        raise CliError("give exactly one of --pred PRED.tiff or --labels S.csv")
    if args.pred and args.trust_checkpoint:
        from .io.formats import read_prediction_sidecar

        _trust(read_prediction_sidecar(args.pred).get("model"), True)
    result = evaluate_files(
        truth=args.truth,
        slide=args.slide,
        pred=args.pred,
        labels=args.labels,
        band_um=args.band_um,
        band_px=args.band_px,
        slide_mpp=args.slide_mpp,
        class_name=args.class_name,
        columns=args.columns,
        truth_class=args.truth_class,
        truth_objects=args.truth_objects,
        mask_threshold=args.mask_threshold,
    )
    print(format_table([result]))
    if args.json:
        from .io.formats import write_json

        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


# -- export ------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from .io.interop import export_geojson, write_estimates_csv

    if args.pred is None and args.estimates is None:
        raise CliError("give --pred PRED.tiff --geojson OUT.geojson, or --estimates OUT.csv")
    if (args.pred is None) != (args.geojson is None):
        raise CliError("--pred and --geojson go together: the prediction and the file to write")
    if args.pred is not None:
        info = export_geojson(
            args.pred,
            args.geojson,
            threshold=args.threshold,
            min_area_um2=args.min_area_um2,
            simplify_um=args.simplify_um,
            slide_mpp=args.slide_mpp,
            min_hole_um2=args.min_hole_um2,
            smooth=args.smooth,
        )
        area = f", {info['area_um2'] / 1e6:.3g} mm²" if info["area_um2"] is not None else ""
        print(
            f"wrote {args.geojson}: {info['features']} tumour region(s) with {info['holes']} "
            f"hole(s){area} at threshold {args.threshold:g} (drag it onto the slide in QuPath)"
        )
    if args.estimates is not None:
        from .io.project import Project

        project = Project.open(args.project)
        try:
            n = write_estimates_csv(project, args.estimates)
        finally:
            project.close()
        print(f"wrote {args.estimates}: {n} estimate(s) of {project.folder}")
    return 0


# -- demo --------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out_dir), headless=args.headless, steps=args.steps, size=args.size)


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="napari-lsr",
        description="Label super-resolution: train a cancer segmentation network from "
        "low-resolution block labels and a p(c|z) prior, predict whole slides, evaluate.",
    )
    p.add_argument("--version", action="version", version=f"napari-lsr {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("sample", help="write a synthetic project (slide, labels, truth, prior)")
    s.add_argument("out_dir", help="folder to write the project to")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument(
        "--size",
        type=int,
        default=config.SAMPLE_SIZE,
        help=f"slide side in pixels (default {config.SAMPLE_SIZE})",
    )
    s.add_argument(
        "--mpp",
        type=float,
        default=config.SAMPLE_MPP,
        help=f"microns per pixel (default {config.SAMPLE_MPP:g})",
    )
    s.add_argument(
        "--block-um",
        type=float,
        default=config.SAMPLE_BLOCK_UM,
        help=f"low-res block side in microns (default {config.SAMPLE_BLOCK_UM:g})",
    )
    s.add_argument("--slides", type=int, default=1, help="number of slides (default 1)")
    s.set_defaults(func=cmd_sample)

    t = sub.add_parser(
        "train",
        help="train a U-Net with an LSR loss",
        epilog=EPILOG_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--slide", action="append", required=True, help="slide file (repeatable)")
    t.add_argument(
        "--labels",
        action="append",
        required=True,
        help="low-res CSV of the slide given at the same position (repeatable)",
    )
    t.add_argument("--prior", required=True, help="prior.csv: p(c|z) per bin (mean, std in %%)")
    d = config.DEFAULTS
    t.add_argument(
        "--loss",
        required=True,
        choices=config.LOSSES,
        help="intra: per block (Malkin et al.); inter: across blocks of a bin; "
        "intra+inter: both (the paper's proposal)",
    )
    t.add_argument(
        "--preset",
        default=config.RECIPE_PRESET,
        choices=list(config.PRESETS),
        help="settings to start from (default: napari-lsr's recipe, from BENCHMARKS.md); the "
        "paper's preset trained worse than the block labels on real tissue; any option "
        "given explicitly overrides the preset",
    )
    t.add_argument(
        "--distance",
        default=d["distance"],
        choices=config.DISTANCES,
        help="paper: Eq. 5/9 as printed (collapses alone); gaussian: Malkin et al. "
        f"statistics matching; kl: KL divergence (default {d['distance']})",
    )
    t.add_argument(
        "--pixel-variance",
        default=d["pixel_variance"],
        choices=config.PIXEL_VARIANCES,
        help=f"paper: mean p(1-p) (Eq. 3); exact: divided by the pixel count "
        f"(default {d['pixel_variance']})",
    )
    t.add_argument(
        "--mpp",
        type=float,
        default=None,
        help="training microns per pixel (paper: 4.2); the block size then follows from the "
        "blocks' size in microns",
    )
    t.add_argument(
        "--block-size",
        type=int,
        default=None,
        help=f"training block side in px (default {config.DEFAULT_BLOCK_PX} when --mpp is not "
        "given; paper: 240)",
    )
    t.add_argument(
        "--slide-mpp", type=float, default=None, help="mpp of slides that lack it in their metadata"
    )
    g = t.add_mutually_exclusive_group()
    g.add_argument(
        "--steps", type=int, default=d["steps"], help=f"optimiser steps (default {d['steps']})"
    )
    g.add_argument("--epochs", type=float, default=None, help="passes over the blocks instead")
    t.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"learning rate (default {d['lr']:g} for every loss, from the benchmarks; the "
        "paper's preset: 1e-5 intra, 1e-3 inter/intra+inter)",
    )
    t.add_argument(
        "--lr-schedule",
        default=None,
        choices=config.LR_SCHEDULES,
        help=f"constant or cosine decay to lr/20 (default {d['lr_schedule']})",
    )
    t.add_argument("--warmup", type=int, default=None, help="steps of linear lr warm-up")
    t.add_argument(
        "--optimizer", default=None, choices=config.OPTIMIZERS, help="default " + d["optimizer"]
    )
    t.add_argument(
        "--ema", type=float, default=None, help=f"weight-averaging decay (default {d['ema']:g})"
    )
    t.add_argument("--batch-size", type=int, default=None, help="intra: blocks per batch")
    t.add_argument("--groups", type=int, default=None, help="inter: groups per batch")
    t.add_argument("--group-size", type=int, default=None, help="inter: blocks per group")
    t.add_argument(
        "--group-draw",
        default=None,
        choices=config.GROUP_DRAWS,
        help=f"bins of the inter groups: uniform or by block count (default {d['group_draw']})",
    )
    t.add_argument(
        "--min-group",
        type=int,
        default=None,
        help=f"smallest bin that may form a group (default {d['min_group']}; 0: half the "
        "group size)",
    )
    t.add_argument(
        "--intra-steps",
        type=int,
        default=None,
        help="inter losses: train with intra for this many steps first (default "
        f"{d['intra_steps']})",
    )
    t.add_argument(
        "--norm", default=None, choices=config.NORMS, help=f"normalisation (default {d['norm']})"
    )
    t.add_argument(
        "--init-bias",
        default=None,
        choices=config.INIT_BIASES,
        help=f"output start: the prior's mean or p=0.12 (default {d['init_bias']})",
    )
    t.add_argument(
        "--colour",
        type=float,
        default=None,
        help=f"colour jitter strength (default {d['colour']:g})",
    )
    t.add_argument("--depth", type=int, default=d["depth"], help="U-Net pooling levels")
    t.add_argument("--width", type=int, default=d["width"], help="U-Net first-level channels")
    t.add_argument("--no-augment", action="store_true", help="no flips/rotations/colour jitter")
    t.add_argument("--seed", type=int, default=d["seed"], help="random seed")
    t.add_argument("--device", default=d["device"], help="auto (CUDA, MPS, CPU), cpu, cuda, mps")
    t.add_argument(
        "--checkpoint-every",
        type=int,
        default=d["checkpoint_every"],
        help="steps between checkpoints",
    )
    t.add_argument("--cache", default=None, help="block cache folder (default: beside --out)")
    t.add_argument("--resume", default=None, help="continue from this checkpoint")
    t.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    t.add_argument("--out", required=True, help="checkpoint to write (MODEL.pt)")
    _add_lowres_options(t)
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="tiled whole-slide prediction to a pyramidal TIFF")
    pr.add_argument("--model", required=True, help="checkpoint from train")
    pr.add_argument("--slide", required=True, help="slide to predict")
    pr.add_argument(
        "--out", required=True, help="prediction TIFF (a .pred.json sidecar is written)"
    )
    pr.add_argument(
        "--scheduler",
        default=None,
        help="Dask scheduler: tcp://HOST:PORT, tls://HOST:PORT (certificates from Dask's "
        "config) or a security file FILE.yaml (address, ca-file, cert, key; or Dask's config "
        "layout); default: local threads",
    )
    pr.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    pr.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass (8)")
    pr.add_argument("--slide-mpp", type=float, default=None, help="mpp of a slide that lacks it")
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="masked IoU/DICE against ground truth (Table 2)")
    ev.add_argument("--truth", required=True, help="mask image or QuPath GeoJSON")
    ev.add_argument("--slide", required=True, help="the slide the truth belongs to")
    ev.add_argument("--pred", default=None, help="prediction TIFF from predict")
    ev.add_argument(
        "--labels",
        default=None,
        help="evaluate the low-res model: blocks painted with their probability",
    )
    bg = ev.add_mutually_exclusive_group()
    bg.add_argument("--band-um", type=float, default=None, help="band half-width in microns")
    bg.add_argument(
        "--band-px",
        type=float,
        default=None,
        help="band half-width in level-0 px (default: one block width)",
    )
    ev.add_argument("--slide-mpp", type=float, default=None, help="mpp of a slide that lacks it")
    ev.add_argument(
        "--truth-class",
        default=None,
        help="class of the GeoJSON truth, by its full name (Tumor: Positive) or first name "
        "(Tumor matches its derived classes); default: the tumour/tumor/cancer class",
    )
    ev.add_argument(
        "--truth-objects",
        default=None,
        help="QuPath object types of the GeoJSON truth, comma-separated: annotation, "
        "detection (with cells), cell, tile, tmacore or all (default: annotation)",
    )
    ev.add_argument(
        "--mask-threshold",
        type=float,
        default=None,
        help="mask truth: cancer where a pixel is above this (default: half the range of the "
        "image's type, 127 for 8-bit, so JPEG noise is not cancer; 0: every non-zero pixel)",
    )
    ev.add_argument("--json", default=None, help="write the scores as JSON here")
    ev.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    _add_lowres_options(ev)
    ev.set_defaults(func=cmd_evaluate)

    ex = sub.add_parser(
        "export",
        help="prediction regions to QuPath GeoJSON; every estimate to CSV for audit",
    )
    ex.add_argument("--pred", default=None, help="prediction TIFF from predict")
    ex.add_argument("--geojson", default=None, help="GeoJSON to write (QuPath annotations)")
    ex.add_argument(
        "--threshold",
        type=float,
        default=config.CANCER_THRESHOLD,
        help=f"cancer where probability >= this ({config.CANCER_THRESHOLD:g})",
    )
    ex.add_argument(
        "--min-area-um2", type=float, default=0.0, help="drop regions smaller than this (um²)"
    )
    ex.add_argument(
        "--min-hole-um2",
        type=float,
        default=None,
        help="fill holes smaller than this (um²; default: --min-area-um2, and at least 2 "
        "prediction pixels; 0 keeps every hole)",
    )
    ex.add_argument(
        "--smooth",
        action="store_true",
        help="smooth the staircase of the prediction grid (corner cutting; the outline moves "
        "by a quarter of a prediction pixel at most)",
    )
    ex.add_argument(
        "--simplify-um",
        type=float,
        default=None,
        help="outline simplification tolerance in um (default: half a prediction pixel)",
    )
    ex.add_argument("--slide-mpp", type=float, default=None, help="mpp of a slide that lacks it")
    ex.add_argument("--estimates", default=None, help="CSV to write every estimate of --project to")
    ex.add_argument("--project", default=".", help="project folder (default: here)")
    ex.set_defaults(func=cmd_export)

    d = sub.add_parser("demo", help="sample -> train -> predict -> evaluate, then napari")
    d.add_argument("out_dir", nargs="?", default="demo_out", help="folder (default demo_out)")
    d.add_argument("--headless", action="store_true", help="do not open napari")
    d.add_argument(
        "--steps",
        type=int,
        default=config.DEFAULTS["steps"],
        help=f"training steps per model (default {config.DEFAULTS['steps']}, as train's)",
    )
    d.add_argument(
        "--size",
        type=int,
        default=config.SAMPLE_SIZE,
        help=f"sample slide side in px ({config.SAMPLE_SIZE})",
    )
    d.set_defaults(func=cmd_demo)
    return p


def _add_lowres_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--class",
        dest="class_name",
        default=None,
        help="class of a WSInfer CSV/GeoJSON to read (default: the tumour/tumor/cancer one)",
    )
    p.add_argument(
        "--columns",
        default=None,
        help="columns of another CSV: x=COL,y=COL,width=COL,height=COL,probability=COL",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .io.formats import FormatError
    from .io.slide import SlideError
    from .learn.blocks import BlockError

    known: tuple[type[BaseException], ...] = (
        CliError,
        FormatError,
        SlideError,
        BlockError,
        ValueError,
        PermissionError,
        FileNotFoundError,
    )
    try:
        from .learn.training import TrainingError

        known = (*known, TrainingError)
    except ImportError:  # torch missing: train/predict will say so below
        pass
    try:
        return int(args.func(args) or 0)
    except known as exc:
        print(f"napari-lsr {args.command}: error: {config.first_line(exc)}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"napari-lsr {args.command}: error: missing dependency ({exc})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-lsr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
