"""Peak memory and time of whole-slide prediction as the slide grows (issue 6).

Builds pyramidal JPEG TIFF slides of growing size at 1 um/px by tiling one rendered
4096 px synthetic patch (mirrored, so tissue everywhere and no seams), then runs
``napari-lsr predict`` on each in a fresh process and reads its peak resident memory
(``ru_maxrss``). Memory that stays flat while the pixel count grows 16x is the claim.

Usage: python benchmarks/inference_memory.py [--sizes 10000,20000,40000] [--out bench_out]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402


def make_slide(path: Path, size: int, patch: np.ndarray) -> None:
    from napari_lsr.sample.synthetic import write_pyramid_tiff

    ph = patch.shape[0]
    tiled_row = np.concatenate([patch, patch[:, ::-1]], axis=1)
    period = np.concatenate([tiled_row, tiled_row[::-1]], axis=0)  # 2ph x 2ph, seamless

    def rows(y0: int, y1: int) -> np.ndarray:
        ys = np.arange(y0, y1) % (2 * ph)
        xs = np.arange(size) % (2 * ph)
        return period[ys][:, xs]

    write_pyramid_tiff(path, size, size, rows, mpp=1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,20000,40000")
    ap.add_argument("--out", default="bench_out")
    args = ap.parse_args()
    from napari_lsr.io.project import Project
    from napari_lsr.learn.blocks import SlideBlocks, extract_blocks
    from napari_lsr.learn.training import TrainConfig, train
    from napari_lsr.sample.synthetic import write_sample
    from napari_lsr.sample.tissue import TissueModel

    out = Path(args.out).resolve() / "memory"
    out.mkdir(parents=True, exist_ok=True)
    sample = out / "sample"
    if not (sample / "project.toml").exists():
        write_sample(sample, size=2048)
    proj = Project.open(sample)
    e = proj.slides[0]
    model = out / "model.pt"
    if not model.exists():
        with e.open() as s:
            lab = e.read_labels(s)
        # 8 um/px (32 px blocks) keeps the 40k slide's prediction to 25 Mpx on a 2-core CPU
        blocks = extract_blocks([SlideBlocks(e.path, lab)], out / "cache", 32, 8.0)
        for _ in train(blocks, proj.prior(), TrainConfig(steps=5, group_size=4), model):
            pass
    patch = TissueModel(4096, 4096, mpp=1.0, seed=3).region(0, 0, 4096, 4096)[0]
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        slide = out / f"slide-{size}.tiff"
        t0 = time.perf_counter()
        if not slide.exists():
            make_slide(slide, size, patch)
        t_make = time.perf_counter() - t0
        pred = out / f"pred-{size}.tiff"
        code = (
            "import resource, time, sys\n"
            "from napari_lsr.predict.inference import predict_slide\n"
            "t0 = time.perf_counter()\n"
            f"info = predict_slide({str(model)!r}, {str(slide)!r}, {str(pred)!r})\n"
            "dt = time.perf_counter() - t0\n"
            "print(info['width'], info['height'], info['tiles'], info['skipped'], dt,"
            " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        w, h, tiles, skipped, dt, rss_kb = res.stdout.split()
        rows.append(
            [
                f"{size} x {size}",
                f"{size * size / 1e9:.2f} Gpx",
                f"{w} x {h}",
                f"{tiles} ({skipped} skipped)",
                f"{float(dt):.1f} s",
                f"{int(w) * int(h) / float(dt) / 1e6:.2f} Mpx/s",
                f"{int(rss_kb) / 1024:.0f} MiB",
                f"{t_make:.0f} s",
            ]
        )
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"machine: {machine()}")
    print(
        "model: U-Net depth 3 width 16 at 8 um/px; slides at 1 um/px (JPEG pyramid); "
        "tiles 512 px + margin, batch 8, local Dask threads"
    )
    print(
        table(
            [
                "slide (level 0)",
                "pixels",
                "prediction",
                "tiles",
                "predict time",
                "throughput (output)",
                "peak RSS",
                "slide build",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
