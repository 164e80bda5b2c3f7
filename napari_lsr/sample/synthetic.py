"""Write the synthetic sample project: an H&E-like pyramidal TIFF, its truth, labels and prior."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import SAMPLE_BLOCK_UM, SAMPLE_MPP, SAMPLE_SIZE, SAMPLE_TRAIN_MPP
from ..elicit.prior import prior_from_values
from ..io.formats import (
    Bins,
    LowResLabels,
    atomic_path,
    write_lowres_csv,
    write_prior_csv,
)
from ..io.project import Project, SlideEntry

TILE = 256
TRUTH_DOWNSAMPLE = 4

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class ClassifierModel:
    """A simulated patch classifier: probability = sigmoid(slope * (f - centre) + noise).

    f is the block's true tumour fraction; lymphocyte-rich blocks get a confounder boost
    (dense dark nuclei fool real classifiers too). Noise makes some bins wrong.
    """

    slope: float = 9.0
    centre: float = 0.25
    noise_sd: float = 1.1
    lymph_boost: float = 2.5

    def probability(
        self, fraction: np.ndarray, lymph: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        logit = self.slope * (fraction - self.centre) + self.lymph_boost * lymph
        logit = logit + rng.normal(0.0, self.noise_sd, size=fraction.shape)
        return 1.0 / (1.0 + np.exp(-logit))


def write_pyramid_tiff(
    path: str | os.PathLike,
    width: int,
    height: int,
    render_rows: Callable[[int, int], np.ndarray],
    mpp: float | None,
    tile: int = TILE,
    quality: int = 90,
    progress: Progress | None = None,
    description: str = "napari-lsr synthetic slide",
) -> None:
    """Write a tiled pyramidal JPEG RGB TIFF that OpenSlide opens as generic-tiff.

    ``render_rows(y0, y1)`` returns level-0 rows y0..y1 (RGB uint8, full width). Rows are
    rendered one tile row at a time; lower levels are accumulated in memory-mapped temporary
    files, so memory does not grow with the slide. Levels are successive TIFF directories
    (reduced-resolution subfile type), each half the previous, down to one tile.
    """
    import tifffile

    levels = [(height, width)]
    while max(levels[-1]) > tile:
        h, w = levels[-1]
        levels.append((h // 2, w // 2))
    tmpdir = tempfile.mkdtemp(prefix="lsr-pyr-")
    lower = [
        np.lib.format.open_memmap(
            os.path.join(tmpdir, f"l{i}.npy"), mode="w+", dtype=np.uint8, shape=(h, w, 3)
        )
        for i, (h, w) in enumerate(levels[1:], start=1)
    ]
    res = {}
    if mpp:
        res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}

    def level0_tiles() -> Iterator[np.ndarray]:
        n_rows = math.ceil(height / tile)
        for r in range(n_rows):
            y0, y1 = r * tile, min((r + 1) * tile, height)
            rows = render_rows(y0, y1)
            _push_down(rows, y0, lower)
            for x0 in range(0, width, tile):
                t = np.full((tile, tile, 3), 255, np.uint8)
                part = rows[:, x0 : x0 + tile]
                t[: part.shape[0], : part.shape[1]] = part
                yield t
            if progress:
                progress("writing slide", (r + 1) / n_rows)

    def array_tiles(arr: np.ndarray) -> Iterator[np.ndarray]:
        h, w = arr.shape[:2]
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                t = np.full((tile, tile, 3), 255, np.uint8)
                part = arr[y0 : y0 + tile, x0 : x0 + tile]
                t[: part.shape[0], : part.shape[1]] = part
                yield t

    try:
        with (
            atomic_path(path) as tmp,
            tifffile.TiffWriter(tmp, bigtiff=width * height > 2**30) as tif,
        ):
            for i, (h, w) in enumerate(levels):
                data = level0_tiles() if i == 0 else array_tiles(lower[i - 1])
                tif.write(
                    data,
                    shape=(h, w, 3),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    photometric="rgb",
                    compression="jpeg",
                    compressionargs={"level": quality},
                    subfiletype=1 if i else 0,
                    description=description if i == 0 else None,
                    metadata=None,
                    **res,
                )
    finally:
        for m in lower:
            m._mmap.close()  # type: ignore[attr-defined]
        for f in os.listdir(tmpdir):
            os.unlink(os.path.join(tmpdir, f))
        os.rmdir(tmpdir)


def _push_down(rows: np.ndarray, y0: int, lower: list[np.ndarray]) -> None:
    """Downsample a strip of level-0 rows by 2, 4, 8... into the lower-level arrays."""
    cur, cy = rows, y0
    for arr in lower:
        h2 = cur.shape[0] // 2
        y2 = cy // 2
        h2 = min(h2, arr.shape[0] - y2)
        w2 = arr.shape[1]
        if h2 <= 0:
            return
        block = cur[: h2 * 2, : w2 * 2].reshape(h2, 2, w2, 2, 3).mean(axis=(1, 3))
        arr[y2 : y2 + h2] = np.round(block).astype(np.uint8)
        cur, cy = arr[y2 : y2 + h2], y2


def block_grid(width: int, height: int, block_px: int) -> np.ndarray:
    """(n, 4) boxes (x, y, w, h) of a grid of square blocks inside the slide."""
    ys, xs = np.mgrid[0 : height - block_px + 1 : block_px, 0 : width - block_px + 1 : block_px]
    n = xs.size
    return np.stack([xs.ravel(), ys.ravel(), np.full(n, block_px), np.full(n, block_px)], axis=1)


def block_fractions(mask: np.ndarray, downsample: int, boxes: np.ndarray) -> np.ndarray:
    """Mean of a (downsampled) mask inside each level-0 box."""
    integral = np.pad(mask.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    x0 = boxes[:, 0] // downsample
    y0 = boxes[:, 1] // downsample
    x1 = (boxes[:, 0] + boxes[:, 2]) // downsample
    y1 = (boxes[:, 1] + boxes[:, 3]) // downsample
    s = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return s / np.maximum((x1 - x0) * (y1 - y0), 1)


def write_sample(
    out_dir: str | os.PathLike,
    size: int = SAMPLE_SIZE,
    mpp: float = SAMPLE_MPP,
    seed: int = 0,
    block_um: float = SAMPLE_BLOCK_UM,
    n_slides: int = 1,
    tumour_fraction: float = 0.25,
    classifier: ClassifierModel | None = None,
    progress: Progress | None = None,
) -> Project:
    """Write a synthetic project to ``out_dir`` and return it opened.

    Files: ``slide_<i>.tiff`` (pyramidal JPEG, mpp in the resolution tags),
    ``slide_<i>_truth.png`` (tumour mask at 1/4 of level 0), ``slide_<i>_lowres.csv`` (a
    simulated patch classifier's probability for a grid of ``block_um`` blocks), ``prior.csv``
    (the p(c|z) measured from the truth over blocks holding tissue), ``project.toml``.
    """
    from PIL import Image

    from .tissue import TissueModel

    if size < 256:
        raise ValueError(f"sample size must be at least 256 px, got {size}")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classifier = classifier or ClassifierModel()
    rng = np.random.default_rng(seed)
    block_px = max(8, int(round(block_um / mpp)))
    if block_px > size:
        raise ValueError(f"blocks of {block_um} um ({block_px} px) do not fit a {size} px slide")
    bins = Bins()
    entries, all_z, all_pct = [], [], []
    for i in range(n_slides):
        model = TissueModel(
            size, size, mpp=mpp, seed=seed * 1000 + i, tumour_fraction=tumour_fraction
        )
        slide_path = out / f"slide_{i}.tiff"

        def rows(y0: int, y1: int, model: TissueModel = model) -> np.ndarray:
            return model.region(0, y0, size, y1 - y0)[0]

        def report(what: str, frac: float, i: int = i) -> None:
            if progress:
                progress(f"slide {i + 1}/{n_slides}: {what}", frac)

        write_pyramid_tiff(slide_path, size, size, rows, mpp, progress=report)
        truth = model.tumour_mask(downsample=TRUTH_DOWNSAMPLE)
        tissue = model.tissue_mask(downsample=TRUTH_DOWNSAMPLE)
        lymph = _lymph_mask(model, TRUTH_DOWNSAMPLE, tissue.shape)
        truth_path = out / f"slide_{i}_truth.png"
        with atomic_path(truth_path) as tmp:
            Image.fromarray((truth * 255).astype(np.uint8)).save(tmp, format="PNG")
        boxes = block_grid(size, size, block_px)
        frac = block_fractions(truth, TRUTH_DOWNSAMPLE, boxes)
        tissue_frac = block_fractions(tissue, TRUTH_DOWNSAMPLE, boxes)
        lymph_frac = block_fractions(lymph, TRUTH_DOWNSAMPLE, boxes)
        prob = classifier.probability(frac, lymph_frac, rng)
        # Background blocks: a real classifier sees glass and answers "no cancer".
        prob = np.where(tissue_frac < 0.05, rng.uniform(0.0, 0.05, len(prob)), prob)
        z = bins.assign(prob)
        labels = LowResLabels(None, boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], prob, z)
        labels_path = out / f"slide_{i}_lowres.csv"
        write_lowres_csv(labels_path, labels)
        keep = tissue_frac >= 0.5
        all_z.append(z[keep])
        all_pct.append(100.0 * frac[keep])
        entries.append(SlideEntry(slide_path, labels_path, truth_path, None))
    prior = prior_from_values(bins, np.concatenate(all_z), np.concatenate(all_pct))
    prior_path = out / "prior.csv"
    write_prior_csv(prior_path, prior)
    extra = {
        "sample": {
            "size": size,
            "mpp": mpp,
            "seed": seed,
            "block_um": block_um,
            "n_slides": n_slides,
        },
        "training": {
            "mpp": SAMPLE_TRAIN_MPP,
            "block_size": int(round(block_um / SAMPLE_TRAIN_MPP)),
        },
    }
    return Project.create(out, entries, prior_path, extra)


def _lymph_mask(model: object, downsample: int, shape: tuple[int, int]) -> np.ndarray:
    fn = getattr(model, "lymph_mask", None)
    if fn is None:
        return np.zeros(shape, bool)
    m = np.asarray(fn(downsample=downsample), bool)
    return m[: shape[0], : shape[1]]
