"""Training blocks: tissue rule, the on-disk cache, augmentation and the samplers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lsr.io.slide import Slide
from napari_lsr.learn.blocks import (
    BlockError,
    GroupSampler,
    IntraSampler,
    SlideBlocks,
    augment,
    extract_blocks,
    resolve_geometry,
    tissue_fraction,
)

from conftest import f32_tolerance


def test_tissue_rule():
    white = np.full((8, 8, 3), 245, np.uint8)
    pink = np.zeros((8, 8, 3), np.uint8)
    pink[:] = (230, 150, 200)
    grey = np.full((8, 8, 3), 120, np.uint8)  # dark but unsaturated: not tissue
    assert tissue_fraction(white) == 0 and tissue_fraction(pink) == 1
    assert tissue_fraction(grey) == 0


def test_extract_skips_background_and_reuses_cache(tiny_project, tmp_path):
    entry = tiny_project.slides[0]
    with entry.open() as slide:
        labels = entry.read_labels(slide)
    src = [SlideBlocks(entry.path, labels)]
    bs = extract_blocks(src, tmp_path, 32, 4.0)
    assert bs.images.shape[1:] == (32, 32, 3) and bs.images.dtype == np.uint8
    assert 0 < len(bs) < len(labels), "background blocks are skipped"
    assert tissue_fraction(np.asarray(bs.images)).min() >= 0.25
    # a kept block holds the pixels of its box, resampled
    k = 0
    x, y, w, h = bs.boxes[k]
    with Slide(entry.path) as s:
        ref = s.read_region(int(x), int(y), int(w), int(h), size=(32, 32))
    assert np.array_equal(bs.images[k], ref)
    folders = list(tmp_path.glob("blocks-*"))
    assert len(folders) == 1 and not list(tmp_path.glob(".blocks-*"))
    again = extract_blocks(src, tmp_path, 32, 4.0)
    assert again.folder == bs.folder
    other = extract_blocks(src, tmp_path, 16, 8.0)
    assert other.folder != bs.folder and other.images.shape[1] == 16


def test_resolve_geometry(tiny_project):
    entry = tiny_project.slides[0]
    with entry.open() as slide:
        labels = entry.read_labels(slide)
    src = [SlideBlocks(entry.path, labels)]
    assert resolve_geometry(src, 4.0, None) == (32, pytest.approx(4.0))
    assert resolve_geometry(src, None, 16) == (16, pytest.approx(8.0))
    # neither: blocks of any size in microns become DEFAULT_BLOCK_PX (64) px
    assert resolve_geometry(src, None, None) == (64, pytest.approx(2.0))


def test_slide_without_mpp_needs_one(tmp_path):
    from PIL import Image

    from napari_lsr.io.formats import read_lowres_csv
    from napari_lsr.io.slide import MppUnknownError

    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "s.png")
    (tmp_path / "l.csv").write_text("x,y,width,height,probability\n0,0,32,32,0.5\n")
    lab = read_lowres_csv(tmp_path / "l.csv")
    with pytest.raises(MppUnknownError, match="--mpp"):
        resolve_geometry([SlideBlocks(tmp_path / "s.png", lab)], 4.0, None)
    assert resolve_geometry([SlideBlocks(tmp_path / "s.png", lab, mpp=1.0)], 4.0, None)[0] == 8
    # a block size alone (or the default) needs no mpp: blocks are resampled to it
    assert resolve_geometry([SlideBlocks(tmp_path / "s.png", lab)], None, None)[0] == 64


def test_unwritable_cache(tiny_project, tmp_path):
    entry = tiny_project.slides[0]
    with entry.open() as slide:
        labels = entry.read_labels(slide)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BlockError, match="cannot create the block cache"):
        extract_blocks([SlideBlocks(entry.path, labels)], blocker / "cache", 32, 4.0)


def test_augment_shapes_and_range():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    out = augment(batch, rng)
    assert out.shape == (5, 16, 16, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    # geometry only permutes pixels: per-block sorted values match up to the colour jitter
    plain = augment(batch, np.random.default_rng(1), colour=0.0)
    np.testing.assert_allclose(
        np.sort(plain.reshape(5, -1, 3), 1),
        np.sort(batch.reshape(5, -1, 3) / 255.0, 1),
        rtol=0,
        atol=f32_tolerance(1.0, 8),  # float32 values in [0, 1]
    )


def test_intra_sampler():
    s = IntraSampler(np.zeros(50, int), 30)
    idx, gid = s.sample(np.random.default_rng(0))
    assert len(set(idx.tolist())) == 30 and (gid == np.arange(30)).all()


def test_group_sampler_rules():
    z = np.array([0] * 20 + [1] * 9 + [2] * 3 + [3] * 1)
    s = GroupSampler(z, n_groups=2, group_size=15)
    assert s.eligible.tolist() == [0, 1]  # >= ceil(15/2) = 8 blocks
    assert s.skipped_bins == [2, 3]
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx, gid = s.sample(rng)
        for g in np.unique(gid):
            bins = set(z[idx[gid == g]].tolist())
            assert len(bins) == 1
            size = (gid == g).sum()
            assert size == (15 if bins == {0} else 9)
        assert len(set(idx.tolist())) == len(idx)
    with pytest.raises(BlockError, match="no bin holds a full group of 30"):
        GroupSampler(z, 2, 30)
