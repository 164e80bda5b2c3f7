"""One short device check for a GPU machine: a few hundred training steps and inference, timed.

Writes its own small synthetic sample, trains intra+inter for --steps on CUDA (bf16 autocast)
and on the CPU for a handful of steps as the baseline, then times whole-slide prediction on
both. Prints a table for BENCHMARKS.md. Skips with a message when CUDA is absent.

Usage: python benchmarks/gpu_check.py [--steps 300] [--out bench_out]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--out", default="bench_out")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return
    from napari_lsr.evaluate.evaluation import evaluate_files
    from napari_lsr.io.project import Project
    from napari_lsr.learn.blocks import SlideBlocks, extract_blocks
    from napari_lsr.learn.training import TrainConfig, train
    from napari_lsr.predict.inference import predict_slide
    from napari_lsr.sample.synthetic import write_sample

    out = Path(args.out).resolve() / "gpu"
    folder = out / "sample"
    if not (folder / "project.toml").exists():
        write_sample(folder, size=args.size)
    p = Project.open(folder)
    e = p.slides[0]
    with e.open() as s:
        lab = e.read_labels(s)
    blocks = extract_blocks([SlideBlocks(e.path, lab)], out / "cache", 64, 4.0)
    rows = []
    for device, steps in (("cuda", args.steps), ("cpu", 10)):
        ckpt = out / f"{device}.pt"
        stamps = []
        cfg = TrainConfig(
            loss="intra+inter", steps=steps, lr=3e-3, device=device, checkpoint_every=0
        )
        for ev in train(blocks, p.prior(), cfg, ckpt):
            if ev.kind == "step":
                stamps.append(time.perf_counter())
        per_step = (stamps[-1] - stamps[2]) / max(1, len(stamps) - 3)
        t0 = time.perf_counter()
        info = predict_slide(ckpt, e.path, out / f"{device}.tiff", device=device)
        t_pred = time.perf_counter() - t0
        score = evaluate_files(truth=e.truth, slide=e.path, pred=out / f"{device}.tiff")
        rows.append(
            [
                device,
                steps,
                f"{per_step * 1e3:.1f} ms",
                f"{30 / per_step:.0f}",
                f"{info['width'] * info['height'] / t_pred / 1e6:.2f} Mpx/s",
                f"{score['masked_dice']:.3f}" if score["masked_dice"] is not None else "n/a",
            ]
        )
    print(f"machine: {machine()}")
    print(
        table(
            ["device", "steps", "step time", "blocks/s", "predict throughput", "masked DICE"], rows
        )
    )


if __name__ == "__main__":
    main()
