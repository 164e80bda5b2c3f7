"""Reproduce the paper's Table 2 on synthetic and real tissue: every loss x distance x seed.

Every run uses napari-lsr's defaults (``config.TrainConfig()``, the recipe a user gets from
the command line and the widget) with only the loss, the distance and the seed changed; it
trains with the engine, predicts every image with the tiled predictor and is scored with
masked/unmasked IoU and DICE pooled over images; the table shows mean +- std over seeds next
to the low-resolution model (blocks painted with their probability, threshold 0.5). Pixel
truth is never used in training: evaluating on the training images is label
super-resolution's own task (super-resolve the labels you have).

Data sets:
  synthetic  the demo sample (4096 px at 1 um/px, 256 um blocks), trained at 4 um/px (64 px),
             scored on its truth grid (4 um/px) in a 64 px band;
  ocdc, camelyon  the real-tissue benchmark of ``real_tissue.py`` (tiles at 0.5 um/px, 128 px
             label blocks, the held-out check's simulated classifier, trained at 1 um/px on
             64 px blocks, scored at full resolution in a one-block band); skipped when
             ../shared/data is absent.

Runs go to a process pool (one torch thread each), so both cores train.

Usage: python benchmarks/table2.py [--quick] [--steps N] [--seeds K] [--distances ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402

LOSSES = ("intra", "inter", "intra+inter")
DISTANCES = ("paper", "gaussian", "kl")
SCORES = ("masked_iou", "masked_dice", "unmasked_iou", "unmasked_dice")


def build_synthetic(work: Path, size: int, block_px: int) -> dict:
    """Blocks and evaluation images of the synthetic sample."""
    from napari_lsr.evaluate.evaluation import paint_labels
    from napari_lsr.io.formats import read_truth
    from napari_lsr.io.project import Project
    from napari_lsr.learn.blocks import SlideBlocks, extract_blocks
    from napari_lsr.sample.synthetic import write_sample

    folder = work / f"synthetic-{size}"
    if not (folder / "project.toml").exists():
        write_sample(folder, size=size)
    p = Project.open(folder)
    prior = p.prior()
    images = []
    sources = []
    for e in p.slides:
        with e.open() as s:
            labels = e.read_labels(s, prior.bins)
            truth = read_truth(e.truth, s.dimensions)
            rgb = s.read_region(0, 0, s.width, s.height, downsample=truth.downsample)
        lowres = paint_labels(labels, truth.mask.shape, truth.downsample) >= 0.5
        images.append((rgb, truth.mask, lowres))
        sources.append(SlideBlocks(e.path, labels))
    # blocks are 256 um; trained at block_px px, scored on the truth grid (4 um/px)
    blocks = extract_blocks(sources, work / "cache", block_px, 256.0 / block_px)
    return _dataset("synthetic", prior, blocks, images, block_px)


def _dataset(name: str, prior, blocks, images: list, block_px: int) -> dict:  # noqa: ANN001
    """What a run needs of a data set: 64 px (truth grid) blocks, scored in a 64 px band."""
    return {
        "scale": 64 / block_px,
        "name": name,
        "prior": prior,
        "blocks": str(blocks.folder),
        "images": images,
        "band": 64.0,
        "n_blocks": len(blocks),
    }


def score(images: list, preds: list[np.ndarray] | None, band: float) -> dict:
    from napari_lsr.evaluate.metrics import evaluate_many

    pairs = [((p if preds is None else preds[i]), t) for i, (_rgb, t, p) in enumerate(images)]
    res = evaluate_many(pairs, band)
    return {k: res["pooled"][k] for k in SCORES} | {f"mean_{k}": res["mean"][k] for k in SCORES}


def predict_at_scale(model: object, rgb: np.ndarray, scale: float) -> np.ndarray:
    """Predict at the model's resolution (``scale`` x coarser than rgb), back on rgb's grid."""
    from PIL import Image

    from napari_lsr.predict.inference import predict_array

    if scale == 1:
        return predict_array(model, rgb, tile=256)
    h, w = rgb.shape[:2]
    small = np.asarray(
        Image.fromarray(rgb).resize((round(w / scale), round(h / scale)), Image.Resampling.BILINEAR)
    )
    p = predict_array(model, small, tile=256)
    return np.asarray(Image.fromarray(p).resize((w, h), Image.Resampling.BILINEAR))


def train_and_predict(blocks, prior, cfg, ckpt: Path, data: dict) -> tuple[list, float, float]:  # noqa: ANN001
    """Train ``cfg`` with the engine, then predict every image of ``data`` at the model's
    scale: (probability maps, last loss, training seconds). The one run of table2.py and
    ablation.py, so both measure the same thing."""
    from napari_lsr.learn.training import train

    t0 = time.perf_counter()
    last = math.nan
    for ev in train(blocks, prior, cfg, ckpt):
        if ev.kind == "step":
            last = ev.loss
    seconds = time.perf_counter() - t0
    return predict_images(ckpt, data), last, seconds


def predict_images(ckpt: Path, data: dict) -> list[np.ndarray]:
    """A checkpoint's probability maps of every image of ``data``, at the model's scale."""
    from napari_lsr.learn.training import load_model

    model, _ = load_model(ckpt)
    return [predict_at_scale(model, rgb, data["scale"]) for rgb, _t, _l in data["images"]]


def run_one(job: dict) -> dict:
    """Train one configuration and score it (in a worker process)."""
    import torch

    torch.set_num_threads(1)
    from napari_lsr.config import TrainConfig
    from napari_lsr.io.formats import Prior
    from napari_lsr.learn.blocks import load_block_set

    data = job["data"]
    blocks = load_block_set(data["blocks"])
    prior = Prior.from_dict(data["prior"])
    cfg = TrainConfig(
        loss=job["loss"],
        distance=job["distance"],
        steps=job["steps"],
        seed=job["seed"],
        checkpoint_every=0,
        device="cpu",
    )
    ckpt = (
        Path(job["work"]) / "runs" / f"{data['name']}-{job['loss']}-{job['distance']}-"
        f"{job['seed']}.pt"
    )
    probs, last, seconds = train_and_predict(blocks, prior, cfg, ckpt, data)
    preds = [p >= 0.5 for p in probs]
    out = score(data["images"], preds, data["band"])
    out.update(
        dataset=data["name"],
        loss=job["loss"],
        distance=job["distance"],
        seed=job["seed"],
        final_loss=last,
        seconds=seconds,
        mean_prob=float(np.mean([p.mean() for p in preds])),
    )
    return out


def summarise(results: list[dict], lowres: dict[str, dict]) -> str:
    lines = []
    for ds in sorted({r["dataset"] for r in results}):
        rows = [["Low resolution model", "-", *(f"{lowres[ds][k]:.4f}" for k in SCORES[:3]), "-"]]
        for loss in LOSSES:
            for dist in DISTANCES:
                rs = [
                    r
                    for r in results
                    if r["dataset"] == ds and r["loss"] == loss and r["distance"] == dist
                ]
                if not rs:
                    continue
                cells = []
                for k in SCORES[:3]:
                    v = np.array([r[k] for r in rs], float)
                    cells.append(f"{np.nanmean(v):.4f} ± {np.nanstd(v):.4f}")
                collapsed = sum(1 for r in rs if r["mean_prob"] < 0.01 or r["mean_prob"] > 0.99)
                rows.append([loss, dist, *cells, f"{len(rs)} ({collapsed} degenerate)"])
        lines.append(f"\n### {ds}\n")
        lines.append(
            table(["model", "distance", "masked IoU", "masked DICE", "IoU", "seeds"], rows)
        )
    return "\n".join(lines)


def main() -> None:
    from real_tissue import build_real

    from napari_lsr.config import DEFAULTS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="synthetic only, gaussian only, 1 seed (a few minutes)",
    )
    ap.add_argument(
        "--steps", type=int, default=DEFAULTS["steps"], help="steps per run (the default's)"
    )
    ap.add_argument("--seeds", type=int, default=3, help="seeds per configuration (3)")
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--distances", default=",".join(DISTANCES))
    ap.add_argument("--size", type=int, default=4096, help="synthetic slide side (4096)")
    ap.add_argument("--datasets", default="synthetic,ocdc,camelyon")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="bench_out", help="work folder")
    args = ap.parse_args()
    losses, distances = args.losses.split(","), args.distances.split(",")
    seeds, steps, names = range(args.seeds), args.steps, args.datasets.split(",")
    if args.quick:
        distances, seeds, names = ("gaussian",), range(1), ["synthetic"]
    work = Path(args.out).resolve() / "table2"
    (work / "runs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    datasets = []
    for name in names:
        d = build_synthetic(work, args.size, 64) if name == "synthetic" else build_real(name, work)
        if d is not None:
            datasets.append(d)
    lowres = {d["name"]: score(d["images"], None, d["band"]) for d in datasets}
    jobs = []
    for d in datasets:
        data = {k: v for k, v in d.items() if k != "prior"} | {"prior": d["prior"].to_dict()}
        for loss in losses:
            for dist in distances:
                for seed in seeds:
                    jobs.append(
                        {
                            "data": data,
                            "loss": loss,
                            "distance": dist,
                            "seed": seed,
                            "steps": steps,
                            "work": str(work),
                        }
                    )
    results = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for i, r in enumerate(pool.map(run_one, jobs), start=1):
            results.append(r)
            print(
                f"[{i}/{len(jobs)}] {r['dataset']} {r['loss']}/{r['distance']} seed "
                f"{r['seed']}: masked DICE {r['masked_dice']:.4f} ({r['seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.perf_counter() - t0
    print(f"machine: {machine()}")
    print(
        f"settings: napari-lsr's defaults (TrainConfig()), {steps} steps per run, seeds "
        f"{list(seeds)}, {args.workers} worker processes x 1 torch thread; blocks: "
        + ", ".join(f"{d['name']} {d['n_blocks']}" for d in datasets)
        + f"; total {elapsed / 60:.1f} min"
    )
    print(summarise(results, lowres))
    (work / "results.json").write_text(json.dumps({"lowres": lowres, "runs": results}, indent=1))
    print(f"\nraw results: {work / 'results.json'}")


if __name__ == "__main__":
    main()
