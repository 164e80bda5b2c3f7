"""How overlapping patches (WSInfer's ``--patch-overlap-ratio 0.5``) become label blocks (#23).

The real-tissue sets of ``real_tissue.py`` (OCDC and CAMELYON16 tiles at an assumed 0.5 um/px,
the same simulated patch classifier), with patches laid out as WSInfer lays them: 128 px
patches whose centres are every 64 px (overlap 0.5), from 64 px, row after row.

1. The low-resolution model (no training): the grid of 128 px blocks of ``real_tissue.py``
   against three ways to paint overlapping patches: the last patch painted wins (row order),
   the mean of the patches covering a pixel, and the centre rule (each patch paints the
   64 x 64 cell around its centre: a pixel takes the nearest centre's probability).
2. Training (the engine's defaults, one loss, a few seeds): every overlapping patch a training
   block, against only the non-overlapping quarter of them (every other patch in x and y:
   the grid), with the same probabilities.

Scores: masked DICE and IoU pooled over tiles, band one block (128 px), full-resolution
masks (> 127).

Usage: nice -n 15 python benchmarks/overlap.py [--steps 300] [--seeds 1] [--loss intra]

Result (December 2026, 2 shared cores; ``--steps 300 --seeds 1 --loss intra``; the CAMELYON16
training runs were stopped to keep within the session's CPU budget, so only its low-resolution
rows were measured):

| data set | rule                                   | masked DICE | masked IoU |
|----------|----------------------------------------|-------------|------------|
| ocdc     | low-res: grid of 128 px blocks         | 0.8794      | 0.7847     |
| ocdc     | low-res: overlap, last painted wins    | 0.8885      | 0.7993     |
| ocdc     | low-res: overlap, mean of covering     | 0.9009      | 0.8197     |
| ocdc     | low-res: overlap, centre rule          | 0.9013      | 0.8204     |
| camelyon | low-res: grid of 128 px blocks         | 0.8271      | 0.7052     |
| camelyon | low-res: overlap, last painted wins    | 0.8289      | 0.7078     |
| camelyon | low-res: overlap, mean of covering     | 0.8481      | 0.7363     |
| camelyon | low-res: overlap, centre rule          | 0.8516      | 0.7416     |
| ocdc     | intra, every overlapping patch a block (744 blocks)  | 0.9309 | |
| ocdc     | intra, the non-overlapping quarter (231 blocks)      | 0.9291 | |

Decision: every patch is a training block (it ties the non-overlapping quarter within one
seed's noise and throws nothing away), and the low-resolution model is painted from patch
centres (best of the three rules on both sets).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_tissue import (  # noqa: E402
    LABEL_BLOCK_PX,
    REAL_SETS,
    TILE_MPP,
    TRAIN_MPP,
    classifier,
    read_mask,
)

from common import SHARED_DATA, machine, table  # noqa: E402

STEP = LABEL_BLOCK_PX // 2  # overlap 0.5


def wsinfer_boxes(width: int, height: int, size: int, step: int) -> np.ndarray:
    """WSInfer's layout: centres from size/2 every ``step`` px while inside the image."""
    half = size // 2
    cx, cy = np.meshgrid(np.arange(half, width, step), np.arange(half, height, step))
    x, y = cx.ravel() - half, cy.ravel() - half
    n = len(x)
    return np.stack([x, y, np.full(n, size), np.full(n, size)], axis=1)


def paint_mean(boxes: np.ndarray, prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    acc = np.zeros(shape, np.float64)
    cnt = np.zeros(shape, np.float64)
    for (x, y, w, h), p in zip(boxes, prob):
        acc[y : y + h, x : x + w] += p
        cnt[y : y + h, x : x + w] += 1
    return np.where(cnt > 0, acc / np.maximum(cnt, 1), 0.0)


def paint_last(boxes: np.ndarray, prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, np.float64)
    for (x, y, w, h), p in zip(boxes, prob):
        out[y : y + h, x : x + w] = p
    return out


def build(name: str, work: Path) -> dict | None:
    from PIL import Image

    from napari_lsr.elicit.prior import prior_from_values
    from napari_lsr.evaluate.evaluation import paint_labels
    from napari_lsr.io.formats import Bins, LowResLabels
    from napari_lsr.io.interop import check_layout
    from napari_lsr.learn.blocks import SlideBlocks, extract_blocks
    from napari_lsr.sample.synthetic import block_fractions, block_grid

    folder, kind = REAL_SETS[name]
    root = SHARED_DATA / folder
    if not (root / "images").is_dir():
        print(f"{name}: {root} is absent, skipped", file=sys.stderr)
        return None
    bins = Bins()
    rng = np.random.default_rng(0)
    rng_grid = np.random.default_rng(0)
    images: list = []
    lowres: dict[str, list] = {"grid": [], "last": [], "mean": [], "centre": []}
    variants: dict[str, dict] = {"all": {"src": [], "z": [], "pct": []}}
    variants["grid"] = {"src": [], "z": [], "pct": []}
    for img_path in sorted((root / "images").glob("*.jpg")):
        rgb = np.asarray(Image.open(img_path).convert("RGB"))
        mask = read_mask(root / "masks" / img_path.name, kind)
        h, w = mask.shape
        # the grid of real_tissue.py, as its own baseline
        g = block_grid(w, h, LABEL_BLOCK_PX)
        gp = classifier(block_fractions(mask, 1, g), rng_grid)
        glab = LowResLabels(None, g[:, 0], g[:, 1], g[:, 2], g[:, 3], gp, bins.assign(gp))
        lowres["grid"].append((paint_labels(glab, mask.shape, 1) >= 0.5, mask))
        # WSInfer's overlapping patches
        b = wsinfer_boxes(w, h, LABEL_BLOCK_PX, STEP)
        frac = block_fractions(mask, 1, b)
        prob = classifier(frac, rng)
        z = bins.assign(prob)
        lab = LowResLabels(None, b[:, 0], b[:, 1], b[:, 2], b[:, 3], prob, z)
        check_layout(lab, {k: k for k in ("x", "y", "width", "height")}, _err)
        lowres["last"].append((paint_last(b, prob, mask.shape) >= 0.5, mask))
        lowres["mean"].append((paint_mean(b, prob, mask.shape) >= 0.5, mask))
        lowres["centre"].append((paint_labels(lab, mask.shape, 1) >= 0.5, mask))
        variants["all"]["src"].append(SlideBlocks(img_path, lab, mpp=TILE_MPP))
        variants["all"]["z"].append(z)
        variants["all"]["pct"].append(100 * frac)
        keep = ((b[:, 0] // STEP) % 2 == 0) & ((b[:, 1] // STEP) % 2 == 0)
        sub = LowResLabels(None, *(b[keep, i] for i in range(4)), prob[keep], z[keep])
        variants["grid"]["src"].append(SlideBlocks(img_path, sub, mpp=TILE_MPP))
        variants["grid"]["z"].append(z[keep])
        variants["grid"]["pct"].append(100 * frac[keep])
        images.append((rgb, mask, None))
    block_px = round(LABEL_BLOCK_PX * TILE_MPP / TRAIN_MPP)
    out = {"name": name, "images": images, "lowres": lowres, "variants": {}}
    for v, d in variants.items():
        prior = prior_from_values(bins, np.concatenate(d["z"]), np.concatenate(d["pct"]))
        blocks = extract_blocks(d["src"], work / "cache", block_px, TRAIN_MPP)
        out["variants"][v] = {"prior": prior.to_dict(), "blocks": str(blocks.folder)}
        out["variants"][v]["n_blocks"] = len(blocks)
    return out


def _err(message: str, row: int | None, column: str | None) -> Exception:
    return ValueError(f"row {row} {column}: {message}")


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from table2 import train_and_predict

    from napari_lsr.config import TrainConfig
    from napari_lsr.evaluate.metrics import evaluate_many
    from napari_lsr.io.formats import Prior
    from napari_lsr.learn.blocks import load_block_set

    v = job["variant"]
    blocks = load_block_set(v["blocks"])
    prior = Prior.from_dict(v["prior"])
    cfg = TrainConfig(
        loss=job["loss"], steps=job["steps"], seed=job["seed"], checkpoint_every=0, device="cpu"
    )
    ckpt = Path(job["work"]) / "runs" / f"{job['set']}-{job['name']}-{job['seed']}.pt"
    data = {"images": job["images"], "scale": TRAIN_MPP / TILE_MPP}
    probs, _last, seconds = train_and_predict(blocks, prior, cfg, ckpt, data)
    pairs = [(p >= 0.5, t) for p, (_rgb, t, _l) in zip(probs, job["images"])]
    s = evaluate_many(pairs, float(LABEL_BLOCK_PX))["pooled"]
    return {"set": job["set"], "name": job["name"], "seed": job["seed"], "seconds": seconds, **s}


def main() -> None:
    from napari_lsr.evaluate.metrics import evaluate_many

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--loss", default="intra")
    ap.add_argument("--datasets", default="ocdc,camelyon")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-train", action="store_true", help="only the low-resolution rules")
    ap.add_argument("--out", default="bench_out")
    args = ap.parse_args()
    work = Path(args.out).resolve() / "overlap"
    (work / "runs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows, jobs, sets = [], [], []
    for name in args.datasets.split(","):
        d = build(name, work)
        if d is None:
            continue
        sets.append(d)
        for rule, pairs in d["lowres"].items():
            s = evaluate_many(pairs, float(LABEL_BLOCK_PX))["pooled"]
            rows.append(
                [name, f"low-res: {rule}", f"{s['masked_dice']:.4f}", f"{s['masked_iou']:.4f}"]
            )
        for vname, v in d["variants"].items():
            for seed in range(args.seeds):
                jobs.append(
                    {
                        "set": name,
                        "name": vname,
                        "variant": v,
                        "seed": seed,
                        "loss": args.loss,
                        "steps": args.steps,
                        "work": str(work),
                        "images": d["images"],
                    }
                )
    print(table(["data set", "rule", "masked DICE", "masked IoU"], rows))
    if args.no_train:
        return
    results = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for r in pool.map(run_one, jobs):
            results.append(r)
            print(
                f"{r['set']} {r['name']} seed {r['seed']}: masked DICE {r['masked_dice']:.4f} "
                f"({r['seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    trows = []
    for d in sets:
        for vname, v in d["variants"].items():
            rs = [r for r in results if r["set"] == d["name"] and r["name"] == vname]
            dice = np.array([r["masked_dice"] for r in rs])
            iou = np.array([r["masked_iou"] for r in rs])
            label = "every patch a block" if vname == "all" else "non-overlapping quarter"
            trows.append(
                [
                    d["name"],
                    label,
                    v["n_blocks"],
                    f"{dice.mean():.4f} ± {dice.std():.4f}",
                    f"{iou.mean():.4f} ± {iou.std():.4f}",
                    len(rs),
                ]
            )
    print(f"machine: {machine()}")
    print(
        f"training: {args.loss}, napari-lsr's defaults, {args.steps} steps, seeds "
        f"{list(range(args.seeds))}; total {(time.perf_counter() - t0) / 60:.1f} min"
    )
    print(
        table(
            ["data set", "training blocks", "blocks", "masked DICE", "masked IoU", "seeds"], trows
        )
    )


if __name__ == "__main__":
    main()
