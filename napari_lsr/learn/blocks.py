"""Training blocks: extraction into an on-disk cache (with Dask), augmentation and samplers.

**Which blocks train.** Every block of every slide's low-res CSV is read once at the training
size (the whole block resampled to ``block_size`` x ``block_size``, as the paper resamples
4000 px patches to 240 px) and kept when it holds tissue: a pixel is tissue when its HSV
saturation is at least ``TISSUE_MIN_SATURATION`` and it is not near-white (mean RGB below
``TISSUE_MAX_BRIGHTNESS``); a block holds tissue when at least ``TISSUE_MIN_FRACTION`` of its
pixels are tissue. Glass, dust-free background and pen-free margins are skipped this way.

**Cache.** Blocks live in ``<cache>/<key>/blocks.npy`` (a memory-mapped uint8 array, N x S x
S x 3) with ``index.json``; the key hashes the slides (path, size, mtime), the labels and the
settings, so a changed input makes a new cache and an unchanged one is reused, and epochs never
decode slides again. Extraction runs as Dask tasks (threads by default) that each write their
blocks straight into the memory map; the cache appears under its key only when complete.

**Group sampling** (``inter`` and ``intra+inter``). Each batch holds G groups; a group is
blocks of one bin. A bin is eligible when it holds at least ``min_group`` blocks
(default: half the group size, at least 2): it gives N blocks drawn without replacement, or
all its blocks when it holds fewer than N (a smaller group; its statistics are noisier but
not biased by duplicates). Bins with fewer than ``min_group`` blocks take no part in
group losses. If no bin holds N blocks the settings are refused with a one-line error. The
G bins of a batch are drawn uniformly among eligible bins, distinct while there are enough.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DEFAULT_BLOCK_PX, LSRError
from ..io.formats import LowResLabels, current_umask
from ..io.slide import (
    TISSUE_MAX_BRIGHTNESS,
    TISSUE_MIN_FRACTION,
    TISSUE_MIN_SATURATION,
    Slide,
    shared_slide,
    tissue_fraction,
)

#: Blocks per Dask task: big enough to amortise a task, small enough to balance.
BLOCKS_PER_TASK = 32

Progress = Callable[[str, float], None]


class BlockError(LSRError, ValueError):
    """Training blocks cannot be made from the given inputs."""


@dataclass
class SlideBlocks:
    """One slide's path and low-res labels, with an optional mpp override."""

    slide: str | os.PathLike
    labels: LowResLabels
    mpp: float | None = None


@dataclass
class BlockSet:
    """Cached training blocks: images (memory map) and, for kept blocks, bin and origin."""

    images: np.ndarray  # (N, S, S, 3) uint8, memory-mapped
    z: np.ndarray  # (N,) bin per block
    probability: np.ndarray
    slide_index: np.ndarray
    boxes: np.ndarray  # (N, 4) level-0 x, y, w, h
    slides: list[str]
    block_size: int
    mpp: float  # effective microns per pixel of the cached blocks
    folder: Path

    def __len__(self) -> int:
        return len(self.z)

    def counts(self, n_bins: int) -> np.ndarray:
        return np.bincount(self.z, minlength=n_bins)


def _cache_key(sources: Sequence[SlideBlocks], block_size: int, mpp: float | None) -> str:
    h = hashlib.sha256()
    for s in sources:
        p = Path(s.slide).resolve()
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}|{s.mpp}".encode())
        h.update(s.labels.boxes().tobytes())
        h.update(s.labels.bin.tobytes())
    h.update(
        f"{block_size}|{mpp}|{TISSUE_MIN_SATURATION}|{TISSUE_MAX_BRIGHTNESS}|"
        f"{TISSUE_MIN_FRACTION}".encode()
    )
    return h.hexdigest()[:16]


def resolve_geometry(
    sources: Sequence[SlideBlocks], mpp: float | None, block_size: int | None
) -> tuple[int, float]:
    """The training block size (px) and effective mpp from whichever of the two is given.

    With ``mpp`` only, blocks are resampled to ``mpp`` and the block size follows from the
    median block width in microns; with ``block_size`` only, blocks are resampled to that
    size; with both, ``block_size`` wins and the effective mpp is the median block width in
    microns over ``block_size``; with neither, blocks are resampled to
    ``config.DEFAULT_BLOCK_PX``. Slides without mpp need ``--slide-mpp`` when ``mpp`` is given.
    """
    if mpp is None and block_size is None:
        block_size = DEFAULT_BLOCK_PX
    widths_um = []
    for s in sources:
        with Slide(s.slide, mpp=s.mpp) as slide:
            if slide.mpp is None:
                if mpp is not None:
                    slide.require_mpp("training at a given resolution")
                widths_um.append(np.asarray(s.labels.width, float))
            else:
                widths_um.append(np.asarray(s.labels.width, float) * slide.mpp)
    med_um = float(np.median(np.concatenate(widths_um)))
    if block_size is None:
        block_size = max(8, int(round(med_um / mpp)))
    if block_size < 8:
        raise BlockError(f"block size {block_size} px is too small (at least 8)")
    return int(block_size), med_um / block_size


def _extract_task(
    slide_path: str,
    slide_mpp: float | None,
    boxes: np.ndarray,
    rows: np.ndarray,
    block_size: int,
    out_path: str,
) -> np.ndarray:
    """Read blocks into rows of the memory map; return their tissue fractions."""
    out = np.load(out_path, mmap_mode="r+")
    fracs = np.empty(len(rows), np.float32)
    slide = shared_slide(slide_path, slide_mpp)
    for k, (row, (x, y, w, h)) in enumerate(zip(rows, boxes)):
        img = slide.read_region(int(x), int(y), int(w), int(h), size=(block_size, block_size))
        out[row] = img
        fracs[k] = tissue_fraction(img)
    out.flush()
    del out
    return fracs


def extract_blocks(
    sources: Sequence[SlideBlocks],
    cache_dir: str | os.PathLike,
    block_size: int,
    mpp: float,
    scheduler: Any = "threads",
    progress: Progress | None = None,
) -> BlockSet:
    """Extract (or reuse) the cached training blocks of these slides."""
    import dask

    if not sources:
        raise BlockError("no slides to train on")
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BlockError(f"{cache_dir}: cannot create the block cache ({exc.strerror})") from exc
    if not os.access(cache_dir, os.W_OK):
        raise BlockError(f"{cache_dir}: the block cache directory is not writable")
    key = _cache_key(sources, block_size, mpp)
    folder = cache_dir / f"blocks-{key}"
    if (folder / "index.json").exists():
        if progress:
            progress("blocks cached", 1.0)
        return load_block_set(folder)
    n_total = sum(len(s.labels) for s in sources)
    if n_total == 0:
        raise BlockError("the low-res labels hold no blocks")
    tmp = Path(tempfile.mkdtemp(prefix=f".blocks-{key}-", dir=cache_dir))
    try:
        arr_path = tmp / "all.npy"
        arr = np.lib.format.open_memmap(
            arr_path, mode="w+", dtype=np.uint8, shape=(n_total, block_size, block_size, 3)
        )
        del arr
        tasks, offset = [], 0
        for s in sources:
            boxes = s.labels.boxes()
            for a in range(0, len(boxes), BLOCKS_PER_TASK):
                b = min(a + BLOCKS_PER_TASK, len(boxes))
                rows = np.arange(offset + a, offset + b)
                tasks.append(
                    dask.delayed(_extract_task)(
                        str(s.slide), s.mpp, boxes[a:b], rows, block_size, str(arr_path)
                    )
                )
            offset += len(boxes)
        fracs = _compute_with_progress(tasks, scheduler, progress)
        frac = np.concatenate(fracs)
        keep = np.flatnonzero(frac >= TISSUE_MIN_FRACTION)
        if len(keep) == 0:
            raise BlockError("no block holds tissue: every block looks like background")
        full = np.load(arr_path, mmap_mode="r")
        kept = np.lib.format.open_memmap(
            tmp / "blocks.npy",
            mode="w+",
            dtype=np.uint8,
            shape=(len(keep), block_size, block_size, 3),
        )
        for a in range(0, len(keep), 1024):
            kept[a : a + 1024] = full[keep[a : a + 1024]]
        kept.flush()
        del kept, full
        arr_path.unlink()
        slide_index = np.concatenate([np.full(len(s.labels), i) for i, s in enumerate(sources)])
        z = np.concatenate([s.labels.bin for s in sources])
        prob = np.concatenate([s.labels.probability for s in sources])
        boxes = np.concatenate([s.labels.boxes() for s in sources])
        index = {
            "slides": [str(Path(s.slide).resolve()) for s in sources],
            "block_size": block_size,
            "mpp": mpp,
            "z": z[keep].tolist(),
            "probability": prob[keep].tolist(),
            "slide_index": slide_index[keep].tolist(),
            "boxes": boxes[keep].tolist(),
            "n_total": n_total,
            "n_background": int(n_total - len(keep)),
        }
        (tmp / "index.json").write_text(json.dumps(index))
        with contextlib.suppress(OSError):  # mkdtemp's 0700 would hide the cache from colleagues
            os.chmod(tmp, 0o777 & ~current_umask())
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "index.json").exists():  # another process won the race otherwise
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_block_set(folder)


def _compute_with_progress(tasks: list, scheduler: Any, progress: Progress | None) -> list:
    import dask

    if progress is None:
        return list(dask.compute(*tasks, scheduler=scheduler))
    # Report as chunks of tasks finish; each chunk still runs in parallel.
    out: list = []
    step = max(1, len(tasks) // 20)
    for a in range(0, len(tasks), step):
        out.extend(dask.compute(*tasks[a : a + step], scheduler=scheduler))
        progress("extracting blocks", min(1.0, (a + step) / len(tasks)))
    return out


def load_block_set(folder: str | os.PathLike) -> BlockSet:
    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text())
    images = np.load(folder / "blocks.npy", mmap_mode="r")
    return BlockSet(
        images=images,
        z=np.asarray(index["z"], np.int64),
        probability=np.asarray(index["probability"], np.float64),
        slide_index=np.asarray(index["slide_index"], np.int64),
        boxes=np.asarray(index["boxes"], np.int64).reshape(-1, 4),
        slides=index["slides"],
        block_size=int(index["block_size"]),
        mpp=float(index["mpp"]),
        folder=folder,
    )


# -- augmentation ------------------------------------------------------------------------------


def augment(batch: np.ndarray, rng: np.random.Generator, colour: float = 0.05) -> np.ndarray:
    """Random flips, rot90 and mild colour jitter of (B, S, S, 3) uint8; returns float32 0..1.

    Colour jitter models stain variation: per block, each channel is scaled by 1 + N(0,
    ``colour``) and shifted by N(0, ``colour``/2), then clipped to [0, 1].
    """
    x = batch.astype(np.float32) / 255.0
    b = len(x)
    k = rng.integers(0, 4, size=b)
    flip = rng.random(b) < 0.5
    scale = 1.0 + rng.normal(0.0, colour, size=(b, 1, 1, 3)).astype(np.float32)
    shift = rng.normal(0.0, colour / 2, size=(b, 1, 1, 3)).astype(np.float32)
    out = np.empty_like(x)
    for i in range(b):  # per-block geometric transforms are views; cheap
        xi = np.rot90(x[i], k[i])
        out[i] = xi[:, ::-1] if flip[i] else xi
    np.multiply(out, scale, out=out)
    np.add(out, shift, out=out)
    np.clip(out, 0.0, 1.0, out=out)
    return out


# -- samplers ----------------------------------------------------------------------------------


class IntraSampler:
    """Random batches of ``batch_size`` distinct blocks (the paper: 30) for the intra loss."""

    def __init__(self, z: np.ndarray, batch_size: int) -> None:
        if batch_size < 1:
            raise BlockError("batch size must be at least 1")
        self.n = len(z)
        self.z = z
        self.batch_size = min(batch_size, self.n)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(block indices, group ids); for intra every block is its own comparison."""
        idx = rng.choice(self.n, size=self.batch_size, replace=False)
        return idx, np.arange(len(idx))


class GroupSampler:
    """G groups of N blocks, each group from one bin (the paper: 2 x 15); see module doc."""

    def __init__(
        self,
        z: np.ndarray,
        n_groups: int,
        group_size: int,
        min_group: int | None = None,
        bin_labels: Sequence[str] | None = None,
        draw: str = "uniform",
    ) -> None:
        if draw not in ("uniform", "blocks"):
            raise BlockError(f"unknown group draw {draw!r} (uniform, blocks)")
        self.draw = draw
        if n_groups < 1 or group_size < 2:
            raise BlockError("need at least 1 group of at least 2 blocks")
        self.n_groups = n_groups
        self.group_size = group_size
        self.min_group = max(2, min_group if min_group is not None else math.ceil(group_size / 2))
        counts = np.bincount(z)
        if counts.max(initial=0) < group_size:
            where = ", ".join(
                f"{bin_labels[b] if bin_labels else b}: {c}" for b, c in enumerate(counts) if c
            )
            raise BlockError(
                f"no bin holds a full group of {group_size} blocks (blocks per bin: {where}); "
                "lower --group-size or add slides"
            )
        self.members = [np.flatnonzero(z == b) for b in range(len(counts))]
        self.eligible = np.array(
            [b for b, m in enumerate(self.members) if len(m) >= self.min_group]
        )
        self.skipped_bins = [b for b, m in enumerate(self.members) if 0 < len(m) < self.min_group]
        sizes = np.array([len(self.members[b]) for b in self.eligible], float)
        self.weights = sizes / sizes.sum() if draw == "blocks" else None

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(block indices, group id of each block)."""
        replace = len(self.eligible) < self.n_groups or self.weights is not None
        bins = rng.choice(self.eligible, size=self.n_groups, replace=replace, p=self.weights)
        idx, gid = [], []
        for g, b in enumerate(bins):
            m = self.members[b]
            take = rng.choice(m, size=min(self.group_size, len(m)), replace=False)
            idx.append(take)
            gid.append(np.full(len(take), g))
        return np.concatenate(idx), np.concatenate(gid)
