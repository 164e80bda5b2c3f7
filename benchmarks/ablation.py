"""Ablation of the training recipe on the real-tissue benchmark (and the synthetic sample).

Each named variant is the recipe (``TrainConfig()``'s defaults) with a few settings changed;
each run trains with the engine (``training.train``), predicts every tile with the tiled
predictor and is scored pooled over tiles (masked DICE, band one label block), as
``real_tissue.py`` builds the data. Runs go to a process pool (one torch thread each) and every
result is appended to ``bench_out/ablation/results.jsonl`` as it arrives, so a long screen can
be stopped and summarised at any time (``--summary``).

Usage:
  python benchmarks/ablation.py --variants recipe,channel,paper --losses intra,intra+inter \
      --datasets ocdc,camelyon --seeds 0 [--steps 500]
  python benchmarks/ablation.py --summary
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402

#: variant name -> TrainConfig overrides (on top of the recipe, the defaults); "train_mpp"
#: changes the training resolution of the real sets.
#: The screen's baseline: the recipe's engine (BatchNorm, output started at the prior, no
#: colour jitter, RMSprop lr 1e-3) with the paper's groups (2 x 15 blocks, bins of 8 or more).
BASE: dict = {
    "groups": 2,
    "group_size": 15,
    "min_group": 0,
    "group_draw": "uniform",
    "lr_schedule": "constant",
    "ema": 0.0,
    "bn_freeze": 0,
}
#: Small groups from every bin (the first change the screen found).
G48: dict = {**BASE, "groups": 4, "group_size": 8, "min_group": 2}

VARIANTS: dict[str, dict] = {
    "recipe": {},  # napari-lsr's defaults (TrainConfig())
    "base": BASE,
    # the engine as first written (per-pixel norm, bias -2, colour jitter, lr 3e-3)
    "engine-v1": {**BASE, "norm": "channel", "init_bias": "fixed", "colour": 0.05, "lr": 3e-3},
    # the paper preset, as `train --preset "paper (Sec. 3.3)"` gives it
    "paper": {**BASE, "norm": "channel", "init_bias": "fixed", "colour": 0.05, "lr": "paper"},
    # normalisation
    "channel": {**BASE, "norm": "channel"},
    "group": {**BASE, "norm": "group"},
    # output bias
    "bias-fixed": {**BASE, "init_bias": "fixed"},
    # optimiser and schedule
    "lr3e-3": {**BASE, "lr": 3e-3},
    "lr3e-4": {**BASE, "lr": 3e-4},
    "adam": {**BASE, "optimizer": "adam", "lr": 1e-3},
    "adamw": {**BASE, "optimizer": "adamw", "lr": 1e-3},
    "warmup": {**BASE, "warmup": 50},
    "cosine": {**BASE, "lr_schedule": "cosine"},
    "ema": {**BASE, "ema": 0.99},
    "cosine-ema": {**BASE, "lr_schedule": "cosine", "ema": 0.99},
    "2000-steps": {**BASE, "steps": 2000},
    # resolution of the training blocks
    "0.5um": {**BASE, "train_mpp": 0.5},
    "2um": {**BASE, "train_mpp": 2.0},
    # colour augmentation
    "colour0.05": {**BASE, "colour": 0.05},
    "colour0.1": {**BASE, "colour": 0.1},
    "no-augment": {**BASE, "augment": False},
    # pixel variance
    "exact": {**BASE, "pixel_variance": "exact"},
    # groups of the inter statistic
    "groups-4x8": {**BASE, "groups": 4, "group_size": 8},
    "groups-blocks": {**BASE, "group_draw": "blocks"},
    "groups-min2": {**BASE, "min_group": 2},
    "groups-4x8-min2": G48,
    "groups-6x5-min2": {**BASE, "groups": 6, "group_size": 5, "min_group": 2},
    "intra-first": {**BASE, "intra_steps": 250},
    "intra-first-cosine-ema": {**BASE, "intra_steps": 250, "lr_schedule": "cosine", "ema": 0.99},
    "groups-4x8-min2-cosine-ema": {**G48, "lr_schedule": "cosine", "ema": 0.99},
    "groups-4x8-min2-freeze150": {**G48, "bn_freeze": 150},
    "groups-4x8-min2-freeze150-cosine-ema": {
        **G48,
        "bn_freeze": 150,
        "lr_schedule": "cosine",
        "ema": 0.99,
    },
    # the recipe (TrainConfig()) with one change
    "recipe-channel": {"norm": "channel", "bn_freeze": 0},
    "recipe-group": {"norm": "group", "bn_freeze": 0},
    "recipe-bias-fixed": {"init_bias": "fixed"},
    "recipe-adam": {"optimizer": "adam"},
    "recipe-adamw": {"optimizer": "adamw"},
    "recipe-warmup": {"warmup": 50},
    "recipe-lr3e-3": {"lr": 3e-3},
    "recipe-lr3e-4": {"lr": 3e-4},
    "recipe-constant": {"lr_schedule": "constant", "ema": 0.0},
    "recipe-2000-steps": {"steps": 2000},
    "recipe-0.5um": {"train_mpp": 0.5},
    "recipe-2um": {"train_mpp": 2.0},
    "recipe-colour0.05": {"colour": 0.05},
    "recipe-exact": {"pixel_variance": "exact"},
    "recipe-uniform": {"group_draw": "uniform"},
    "recipe-recalibrate": {"recalibrate": True},
    "recipe-kl": {"distance": "kl"},
    "recipe-paper-distance": {"distance": "paper"},
    # intra+inter warm-started with the intra statistic (per-block gradients first)
    "recipe-intra150": {"intra_steps": 150},
    "recipe-intra250": {"intra_steps": 250},
    # group size: 1 block per group would be intra exactly; the paper's 15
    "recipe-groups2x15": {"groups": 2, "group_size": 15},
    "recipe-groups8x4": {"groups": 8, "group_size": 4},
}


def build(name: str, work: Path, train_mpp: float) -> dict | None:
    from real_tissue import build_real

    if name == "synthetic":
        from table2 import build_synthetic

        return build_synthetic(work, 4096, 64)
    return build_real(name, work, train_mpp)


def run_one(job: dict) -> dict:
    """Train one variant on one data set and score it (in a worker process)."""
    import torch

    torch.set_num_threads(1)
    from table2 import train_and_predict

    from napari_lsr.config import PAPER_LR, TrainConfig
    from napari_lsr.evaluate.metrics import evaluate_many

    over = dict(job["overrides"])
    train_mpp = over.pop("train_mpp", 1.0)
    data = build(job["dataset"], Path(job["work"]), train_mpp)
    from napari_lsr.learn.blocks import load_block_set

    blocks = load_block_set(data["blocks"])
    if over.get("lr") == "paper":
        over["lr"] = PAPER_LR[job["loss"]]
    cfg = TrainConfig(
        **{
            "steps": job["steps"],
            **over,
            "loss": job["loss"],
            "seed": job["seed"],
            "checkpoint_every": 0,
            "device": "cpu",
        }
    )
    tag = f"{job['dataset']}-{job['variant']}-{job['loss']}-{job['seed']}"
    ckpt = Path(job["work"]) / "runs" / f"{tag}.pt"
    probs, last, train_s = train_and_predict(blocks, data["prior"], cfg, ckpt, data)
    preds = [p >= 0.5 for p in probs]
    res = evaluate_many(((p, t) for p, (_r, t, _l) in zip(preds, data["images"])), data["band"])
    inside = [
        float(p[t].mean()) if t.any() else math.nan for p, (_r, t, _l) in zip(probs, data["images"])
    ]
    outside = [
        float(p[~t].mean()) if (~t).any() else math.nan
        for p, (_r, t, _l) in zip(probs, data["images"])
    ]
    return {
        "dataset": job["dataset"],
        "variant": job["variant"],
        "overrides": job["overrides"],
        "loss": job["loss"],
        "seed": job["seed"],
        "steps": cfg.steps,
        "masked_dice": res["pooled"]["masked_dice"],
        "masked_iou": res["pooled"]["masked_iou"],
        "lowres_dice": evaluate_many(((low, t) for _r, t, low in data["images"]), data["band"])[
            "pooled"
        ]["masked_dice"],
        "mean_prob": float(np.mean([p.mean() for p in preds])),
        "p_in": float(np.nanmean(inside)),
        "p_out": float(np.nanmean(outside)),
        "final_loss": last,
        "train_s": train_s,
    }


def time_variants(args: argparse.Namespace, work: Path) -> str:
    """Seconds per training step of each variant and loss (after 5 warm-up steps)."""
    from napari_lsr.config import PAPER_LR, TrainConfig
    from napari_lsr.learn.blocks import load_block_set
    from napari_lsr.learn.training import train

    rows = []
    for ds in args.datasets.split(","):
        for v in args.variants.split(","):
            over = dict(VARIANTS[v])
            data = build(ds, work, over.pop("train_mpp", 1.0))
            blocks = load_block_set(data["blocks"])
            for loss in args.losses.split(","):
                if over.get("lr") == "paper":
                    over["lr"] = PAPER_LR[loss]
                n = args.time_steps + 5
                cfg = TrainConfig(
                    **{**over, "steps": n, "loss": loss, "checkpoint_every": 0, "device": "cpu"}
                )
                stamps = []
                for ev in train(blocks, data["prior"], cfg, work / "runs" / "timing.pt"):
                    if ev.kind == "step":
                        stamps.append(time.perf_counter())
                per = (stamps[-1] - stamps[4]) / (len(stamps) - 5)
                rows.append([ds, v, loss, f"{per:.3f}", f"{per * 500 / 60:.1f}"])
    return table(["data set", "variant", "loss", "s per step", "min per 500 steps"], rows)


def degenerate(r: dict) -> bool:
    """A run that predicts (almost) no cancer, cancer everywhere, or the same probability
    inside and outside tumour (scored against the truth: the benchmark's view, not health's)."""
    if r["mean_prob"] < 0.01 or r["mean_prob"] > 0.99:
        return True
    p_in, p_out = r.get("p_in", math.nan), r.get("p_out", math.nan)
    return bool(abs(p_in - p_out) < 0.05)


def table2(path: Path) -> str:
    """Table 2 from the recipe's runs: loss x distance, masked IoU and DICE, mean +- std."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    distance_of = {"recipe": "gaussian", "recipe-kl": "kl", "recipe-paper-distance": "paper"}
    out = []
    for ds in sorted({r["dataset"] for r in rows}):
        rs = [r for r in rows if r["dataset"] == ds and r["variant"] in distance_of]
        if not rs:
            continue
        lines = [["Low resolution model", "-", "-", "-", f"{rs[0]['lowres_dice']:.4f}", "-"]]
        for loss in ("intra", "inter", "intra+inter"):
            for v, dist in distance_of.items():
                sel = [r for r in rs if r["loss"] == loss and r["variant"] == v]
                if not sel:
                    continue
                iou = np.array([r["masked_iou"] for r in sel])
                dice = np.array([r["masked_dice"] for r in sel])
                deg = sum(map(degenerate, sel))
                lines.append(
                    [
                        loss,
                        dist,
                        len(sel),
                        f"{iou.mean():.4f} ± {iou.std():.4f}",
                        f"{dice.mean():.4f} ± {dice.std():.4f}",
                        deg,
                    ]
                )
        out.append(f"\n### {ds}\n")
        out.append(
            table(["model", "distance", "seeds", "masked IoU", "masked DICE", "degenerate"], lines)
        )
    return "\n".join(out)


def summarise(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for ds in sorted({r["dataset"] for r in rows}):
        rs = [r for r in rows if r["dataset"] == ds]
        low = rs[0]["lowres_dice"]
        keys = sorted({(r["variant"], r["loss"]) for r in rs})
        lines = []
        for v, loss in keys:
            sel = [r for r in rs if r["variant"] == v and r["loss"] == loss]
            sel.sort(key=lambda r: r["seed"])
            d = np.array([r["masked_dice"] for r in sel])
            deg = sum(map(degenerate, sel))
            lines.append(
                [
                    v,
                    loss,
                    len(sel),
                    f"{d.mean():.4f}",
                    f"{d.std():.4f}" if len(d) > 1 else "-",
                    f"{d.mean() - low:+.4f}",
                    " ".join(f"{x:.3f}" for x in d),
                    deg,
                    f"{np.mean([r['train_s'] for r in sel]):.0f}",
                ]
            )
        out.append(f"\n### {ds} (low-resolution model: masked DICE {low:.4f})\n")
        out.append(
            table(
                [
                    "variant",
                    "loss",
                    "seeds",
                    "masked DICE",
                    "std",
                    "vs low-res",
                    "runs",
                    "degenerate",
                    "train s",
                ],
                lines,
            )
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="recipe")
    ap.add_argument("--losses", default="intra,intra+inter")
    ap.add_argument("--datasets", default="ocdc,camelyon")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--summary", action="store_true", help="only print the table so far")
    ap.add_argument("--rerun", action="store_true", help="train runs already in the results too")
    ap.add_argument(
        "--time-steps",
        type=int,
        default=0,
        help="only time this many training steps of each variant (one process, all threads)",
    )
    args = ap.parse_args()
    work = Path(args.out).resolve() / "ablation"
    (work / "runs").mkdir(parents=True, exist_ok=True)
    results = work / "results.jsonl"
    if args.summary:
        print(f"machine: {machine()}")
        print(summarise(results))
        print("\n## Table 2 (the recipe's runs)")
        print(table2(results))
        return
    if args.time_steps:
        print(f"machine: {machine()}")
        print(time_variants(args, work))
        return
    for name in args.datasets.split(","):  # build (and cache) before the pool starts
        for v in args.variants.split(","):
            build(name, work, VARIANTS[v].get("train_mpp", 1.0))
    jobs = [
        {
            "dataset": ds,
            "variant": v,
            "overrides": VARIANTS[v],
            "loss": loss,
            "seed": int(seed),
            "steps": args.steps,
            "work": str(work),
        }
        for seed in args.seeds.split(",")
        for ds in args.datasets.split(",")
        for v in args.variants.split(",")
        for loss in args.losses.split(",")
    ]
    key = ("dataset", "variant", "loss", "seed", "steps")  # what names a run on record
    done = set()
    if results.exists() and not args.rerun:  # a run already on record is not trained again
        for line in results.read_text().splitlines():
            r = json.loads(line)
            done.add(tuple(r[k] for k in key))
    jobs = [j for j in jobs if tuple(j[k] for k in key) not in done]
    print(f"machine: {machine()}; {len(jobs)} runs", file=sys.stderr)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futs = [pool.submit(run_one, j) for j in jobs]
        for f in as_completed(futs):
            r = f.result()
            with results.open("a") as fh:
                fh.write(json.dumps(r) + "\n")
            print(
                f"{r['dataset']} {r['variant']} {r['loss']} seed {r['seed']}: masked DICE "
                f"{r['masked_dice']:.4f} (low-res {r['lowres_dice']:.4f}; p in/out "
                f"{r['p_in']:.2f}/{r['p_out']:.2f}; {r['train_s']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    print(summarise(results))


if __name__ == "__main__":
    main()
