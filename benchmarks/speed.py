"""Engine speed against baselines measured in the same run (issues 3 and 6).

1. block extraction: Dask-parallel cached extraction vs a naive read_region loop;
2. training step: the trainer's step vs a bare forward + backward + RMSprop step of the same
   U-Net on the same batch;
3. block loading: cached batches (sample + read + augment) per second vs what training eats;
4. inference: predict_slide vs the bare forward over the same input tiles, vs a naive
   single-threaded tile loop with the same model (as ``load_model`` gives it), and vs our own
   tile function (the model's inference form) on one thread (one Dask worker's work: the
   parallel scaling).

Usage: python benchmarks/speed.py [--size 8192] [--steps 30] [--out bench_out] [--rounds 3]
       [--inference-only]
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_out", help="work folder (default bench_out)")
    ap.add_argument("--size", type=int, default=8192, help="sample slide side, px at 1 um/px")
    ap.add_argument("--steps", type=int, default=30, help="measured training steps")
    ap.add_argument("--block-size", type=int, default=64, help="training block px (64)")
    ap.add_argument(
        "--inference-only",
        action="store_true",
        help="only part 4, with the model a previous full run left in --out",
    )
    ap.add_argument("--rounds", type=int, default=3, help="timed inference rounds (3)")
    args = ap.parse_args()

    import torch
    from step_ab import time_steps

    from napari_lsr.io.project import Project
    from napari_lsr.io.slide import Slide
    from napari_lsr.learn.blocks import (
        GroupSampler,
        SlideBlocks,
        augment,
        extract_blocks,
    )
    from napari_lsr.learn.training import load_model
    from napari_lsr.predict.inference import predict_chunk, predict_slide, tissue_tiles
    from napari_lsr.sample.synthetic import write_sample

    out = Path(args.out).resolve()
    folder = out / f"sample-{args.size}"
    if not (folder / "project.toml").exists():
        print(f"writing a {args.size} px sample to {folder} ...", file=sys.stderr)
        write_sample(folder, size=args.size)
    project = Project.open(folder)
    entry = project.slides[0]
    prior = project.prior()
    with entry.open() as slide:
        labels = entry.read_labels(slide, prior.bins)
    bs = args.block_size
    mpp = 256.0 / bs
    rows = []

    import dask  # noqa: F401  (imported before timing: its import is not extraction)

    ckpt = out / "bench-model.pt"
    if args.inference_only:
        if not ckpt.exists():
            sys.exit(f"{ckpt} is missing: run once without --inference-only")
        model, _ = load_model(ckpt)
    else:
        # 1. extraction (naive first, so the Dask run gets no warmer OpenSlide cache) -----------
        t0 = time.perf_counter()
        with Slide(entry.path) as s:
            for x, y, w, h in labels.boxes():
                s.read_region(int(x), int(y), int(w), int(h), size=(bs, bs))
        t_naive = time.perf_counter() - t0
        cache = out / "cache-bench"
        shutil.rmtree(cache, ignore_errors=True)
        t0 = time.perf_counter()
        blocks = extract_blocks([SlideBlocks(entry.path, labels)], cache, bs, mpp)
        t_dask = time.perf_counter() - t0
        n = len(labels)
        rows.append(
            [
                "block extraction into the cache (Dask threads, tissue check)",
                f"{n / t_dask:.0f} blocks/s",
                "naive read_region loop (no check, nothing written)",
                f"{n / t_naive:.0f} blocks/s",
                t_naive / t_dask,
            ]
        )

        # 2. training step vs bare step, interleaved so both see the same machine state ---------
        trainer_steps, bare = time_steps(blocks, prior, args.steps, ckpt)
        model, _ = load_model(ckpt)
        med_tr, med_bare = statistics.median(trainer_steps), statistics.median(bare)
        rows.append(
            [
                "training step (intra+inter, 2x15)",
                f"{med_tr * 1e3:.0f} ms",
                "bare fwd+bwd+RMSprop, same batch",
                f"{med_bare * 1e3:.0f} ms",
                med_tr / med_bare,
            ]
        )
        consumed = 30 / med_tr

        # 3. cached block loading -----------------------------------------------------------------
        sampler = GroupSampler(blocks.z, 2, 15)
        rng = np.random.default_rng(0)
        k = 50
        t0 = time.perf_counter()
        for _ in range(k):
            idx, _ = sampler.sample(rng)
            augment(np.asarray(blocks.images[np.sort(idx)]), rng)
        loader = 30 * k / (time.perf_counter() - t0)
        rows.append(
            [
                "cached batches (sample+read+augment)",
                f"{loader:.0f} blocks/s",
                "training consumption",
                f"{consumed:.0f} blocks/s",
                loader / consumed,
            ]
        )

    # 4. inference ----------------------------------------------------------------------------
    # Three methods over the same output, each run once untimed (model loaded, oneDNN primed,
    # OpenSlide cache warm), then --rounds timed rounds in rotating order so that all three
    # see the same machine; medians reported (this VM's speed drifts by 30 % from minute to
    # minute, so single runs mislead).
    model.eval()
    pred = out / "bench-pred.tiff"
    tile, batch = 512, 8
    info = predict_slide(ckpt, entry.path, pred, tile=tile, batch_size=batch, skip_background=False)
    d = info["downsample"]
    margin = int(math.ceil(model.receptive_radius / model.multiple) * model.multiple)
    size = tile + 2 * margin
    with Slide(entry.path) as s:
        tiles = [
            s.read_region(
                int((tx - margin) * d),
                int((ty - margin) * d),
                int(size * d),
                int(size * d),
                size=(size, size),
            )
            for ty in range(0, info["height"], tile)
            for tx in range(0, info["width"], tile)
        ]

    def run_ours() -> None:
        predict_slide(ckpt, entry.path, pred, tile=tile, batch_size=batch, skip_background=False)

    def run_bare() -> None:
        # the model's forward over the same input tiles (already in memory), torch's threads
        with torch.inference_mode():
            for a in range(0, len(tiles), batch):
                xb = torch.from_numpy(np.stack(tiles[a : a + batch])).permute(0, 3, 1, 2)
                torch.sigmoid(model(xb.float() / 255.0))

    def run_naive() -> None:
        # what a user writes: the model as load_model gives it, one torch thread, each tile
        # read with its margin, forward, centre kept, row after row, into one array
        h, w = info["height"], info["width"]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            full = np.zeros((h, w), np.uint8)
            with Slide(entry.path) as s, torch.inference_mode():
                for ty in range(0, h, tile):
                    for tx in range(0, w, tile):
                        rgb = s.read_region(
                            int((tx - margin) * d),
                            int((ty - margin) * d),
                            int(size * d),
                            int(size * d),
                            size=(size, size),
                        )
                        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
                        p = torch.sigmoid(model(x))[
                            0, margin : margin + tile, margin : margin + tile
                        ]
                        ch, cw = min(tile, h - ty), min(tile, w - tx)
                        full[ty : ty + ch, tx : tx + cw] = (p[:ch, :cw] * 255 + 0.5).byte().numpy()
        finally:
            torch.set_num_threads(threads)

    def run_one_worker() -> None:
        # our own tile function (predict_chunk: the inference form, crop) on one thread,
        # row after row: what one Dask worker does, so ours / this is the parallel scaling
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            full = np.zeros((info["height"], info["width"]), np.uint8)
            for ty in range(0, info["height"], tile):
                row = predict_chunk(
                    str(ckpt),
                    str(entry.path),
                    None,
                    "cpu",
                    d,
                    ty,
                    0,
                    min(tile, info["height"] - ty),
                    info["width"],
                    tile,
                    margin,
                    [True] * math.ceil(info["width"] / tile),
                )
                full[ty : ty + row.shape[0]] = row
        finally:
            torch.set_num_threads(threads)

    methods = {"ours": run_ours, "bare": run_bare, "naive": run_naive, "one": run_one_worker}
    for fn in methods.values():  # warm-up, untimed
        fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    order = list(methods)
    for r in range(args.rounds):
        k = r % len(order)
        for name in order[k:] + order[:k]:
            t0 = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - t0)
    t_ours, t_bare, t_loop, t_one = (
        statistics.median(times[k]) for k in ("ours", "bare", "naive", "one")
    )
    per_round = [n / o for n, o in zip(times["naive"], times["ours"])]
    px = info["width"] * info["height"]
    rows.append(
        [
            "inference (predict_slide, Dask threads)",
            f"{px / t_ours / 1e6:.2f} Mpx/s",
            "bare forward, same input tiles",
            f"{px / t_bare / 1e6:.2f} Mpx/s",
            t_bare / t_ours,
        ]
    )
    rows.append(
        [
            "inference (predict_slide, Dask threads)",
            f"{px / t_ours / 1e6:.2f} Mpx/s",
            "naive 1-thread tile loop (the model as loaded)",
            f"{px / t_loop / 1e6:.2f} Mpx/s",
            t_loop / t_ours,
        ]
    )
    rows.append(
        [
            "inference (predict_slide, Dask threads)",
            f"{px / t_ours / 1e6:.2f} Mpx/s",
            "one worker: our tile function on 1 thread",
            f"{px / t_one / 1e6:.2f} Mpx/s",
            t_one / t_ours,
        ]
    )
    with Slide(entry.path) as s:
        act = tissue_tiles(s, info["downsample"], info["height"], info["width"], tile, margin)
    print(f"machine: {machine()}")
    print(
        f"sample: {args.size} px at 1 um/px, "
        + ("" if args.inference_only else f"{n} blocks ({len(blocks)} tissue), ")
        + f"training "
        f"blocks {bs} px at {mpp:g} um/px, U-Net depth 3 width 16; inference output "
        f"{info['width']}x{info['height']} px at {info['mpp']:g} um/px, tiles {tile}+2x{margin} "
        f"px, batch {batch}, {int(act.sum())}/{act.size} tiles hold tissue"
    )
    print(
        table(
            [
                "what",
                "ours",
                "baseline",
                "baseline figure",
                "ratio (higher = ours better, except training step: ours/bare)",
            ],
            rows,
        )
    )
    print(
        f"inference: median of {args.rounds} rounds after a warm-up; seconds per round: "
        + "; ".join(f"{k} " + ", ".join(f"{t:.2f}" for t in v) for k, v in times.items())
        + "; naive/ours per round: "
        + ", ".join(f"{x:.2f}" for x in per_round)
        + "; one worker/ours per round: "
        + ", ".join(f"{o / t:.2f}" for o, t in zip(times["one"], times["ours"]))
    )


if __name__ == "__main__":
    main()
