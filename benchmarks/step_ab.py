"""The training step against a bare step, alone (speed.py's part 2), for A/B runs across trees.

Runs against any checkout, before or after the subpackages of issue 26 (it imports from
either layout), so two trees can be compared back to back on the same machine; the trees
before it lack this script, so run this one with each tree first on the path:

    for t in OLD NEW OLD NEW OLD NEW; do PYTHONPATH=$t python benchmarks/step_ab.py \
        --sample DIR; done

``--sample`` is a project folder that ``speed.py`` wrote (``bench_out/sample-8192``). Prints
one line: the median trainer step, the median bare step (forward, backward and RMSprop on the
same batch, interleaved with the trainer's steps so both see the same machine) and their ratio.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

try:  # the layout since issue 26
    from napari_lsr.io.project import Project
    from napari_lsr.learn.blocks import GroupSampler, SlideBlocks, augment, extract_blocks
    from napari_lsr.learn.training import TrainConfig, train
    from napari_lsr.learn.unet import UNetConfig, build_model
except ImportError:  # the flat layout before it
    from napari_lsr.blocks import GroupSampler, SlideBlocks, augment, extract_blocks
    from napari_lsr.project import Project
    from napari_lsr.training import TrainConfig, train
    from napari_lsr.unet import UNetConfig, build_model

import napari_lsr


def time_steps(
    blocks: object, prior: object, steps: int, checkpoint: Path
) -> tuple[list[float], list[float]]:
    """Seconds of each of ``steps`` trainer steps (intra+inter, after 5 of warm-up) and of a
    bare step (forward, backward and RMSprop of a same-size U-Net on one fixed batch) timed
    right after it, so both see the same machine state."""
    cfg = TrainConfig(loss="intra+inter", steps=steps + 5, checkpoint_every=0, lr=3e-3)
    bare_model = build_model(UNetConfig(depth=cfg.depth, width=cfg.width))
    opt = torch.optim.RMSprop(bare_model.parameters(), lr=3e-3, alpha=0.9)
    rng = np.random.default_rng(0)
    idx, _gid = GroupSampler(blocks.z, 2, 15).sample(rng)
    x = torch.from_numpy(augment(np.asarray(blocks.images[idx]), rng)).permute(0, 3, 1, 2)
    ours: list[float] = []
    bare: list[float] = []
    resumed = None
    for ev in train(blocks, prior, cfg, checkpoint):
        if ev.kind != "step":
            continue
        if resumed is not None and ev.step > 5:
            ours.append(time.perf_counter() - resumed)
        t0 = time.perf_counter()
        loss = torch.sigmoid(bare_model(x)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ev.step > 5:
            bare.append(time.perf_counter() - t0)
        resumed = time.perf_counter()
    return ours, bare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", required=True, help="a project folder speed.py wrote")
    ap.add_argument("--steps", type=int, default=60, help="measured steps (after 5 warm-up)")
    args = ap.parse_args()

    project = Project.open(args.sample)
    entry = project.slides[0]
    prior = project.prior()
    with entry.open() as slide:
        labels = entry.read_labels(slide, prior.bins)
    work = Path(tempfile.mkdtemp(prefix="step-ab-"))
    try:
        blocks = extract_blocks([SlideBlocks(entry.path, labels)], work / "cache", 64, 4.0)
        ours, bare = time_steps(blocks, prior, args.steps, work / "model.pt")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mo, mb = statistics.median(ours), statistics.median(bare)
    where = Path(napari_lsr.__file__).parent.parent
    print(
        f"{where}: trainer step {mo * 1e3:.0f} ms, bare step {mb * 1e3:.0f} ms, "
        f"ours/bare {mo / mb:.3f} ({machine()})"
    )


if __name__ == "__main__":
    main()
