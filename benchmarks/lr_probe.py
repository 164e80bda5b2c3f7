"""Learning-rate and schedule probe on the synthetic sample (the evidence for the defaults).

Trains one configuration on the sample's cached 64 px blocks (4 um/px) with one torch thread
and prints the loss by fifths of the run, the mean probability inside and outside the tumour,
and masked/unmasked DICE on the truth grid.

Usage: python benchmarks/lr_probe.py LOSS DISTANCE LR STEPS WIDTH SCHEDULE [--sample DIR]
e.g.   python benchmarks/lr_probe.py intra+inter gaussian 3e-3 300 8 constant
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("loss")
    ap.add_argument("distance")
    ap.add_argument("lr", type=float)
    ap.add_argument("steps", type=int)
    ap.add_argument("width", type=int)
    ap.add_argument("schedule", choices=["constant", "cosine"])
    ap.add_argument("--sample", default="bench_out/sample-4096")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from napari_lsr.evaluate.metrics import masked_scores
    from napari_lsr.io.formats import read_truth
    from napari_lsr.io.project import Project
    from napari_lsr.learn.blocks import SlideBlocks, extract_blocks
    from napari_lsr.learn.training import TrainConfig, load_model, train
    from napari_lsr.predict.inference import predict_array
    from napari_lsr.sample.synthetic import write_sample

    folder = Path(args.sample)
    if not (folder / "project.toml").exists():
        write_sample(folder)
    p = Project.open(folder)
    e = p.slides[0]
    with e.open() as s:
        lab = e.read_labels(s)
        rgb = s.read_region(0, 0, s.width, s.height, downsample=4)
        truth = read_truth(e.truth, s.dimensions).mask
    blocks = extract_blocks([SlideBlocks(e.path, lab)], folder / "cache", 64, 4.0)
    cfg = TrainConfig(
        loss=args.loss,
        distance=args.distance,
        lr=args.lr,
        steps=args.steps,
        width=args.width,
        lr_schedule=args.schedule,
        seed=args.seed,
        checkpoint_every=0,
    )
    name = f"{args.loss}-{args.distance}-{args.lr:g}-{args.steps}-w{args.width}-{args.schedule}"
    out = folder / "probe" / f"{name}.pt"
    t0 = time.perf_counter()
    hist = [ev.loss for ev in train(blocks, p.prior(), cfg, out) if ev.kind == "step"]
    model, _ = load_model(out)
    prob = predict_array(model, rgb, tile=256)
    sc = masked_scores(prob >= 0.5, truth, 64)
    k = max(1, len(hist) // 5)
    fifths = " ".join(f"{np.mean(hist[i : i + k]):.3f}" for i in range(0, len(hist), k))
    print(
        f"{name}: loss by fifths {fifths}; p in tumour {prob[truth].mean():.2f}, outside "
        f"{prob[~truth].mean():.2f}; masked DICE {sc['masked_dice']:.3f}, DICE "
        f"{sc['unmasked_dice']:.3f}; {time.perf_counter() - t0:.0f} s",
        file=sys.stdout,
    )


if __name__ == "__main__":
    main()
