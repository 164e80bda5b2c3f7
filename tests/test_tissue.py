"""Tests of the procedural H&E tissue renderer (napari_lsr.sample.tissue)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_lsr.sample import tissue
from napari_lsr.sample.tissue import (
    BACKGROUND,
    FAT,
    LYMPHOCYTES,
    STROMA,
    TUMOUR,
    TissueModel,
)


@pytest.fixture(scope="module")
def small() -> TissueModel:
    return TissueModel(512, 512, mpp=2.0, seed=3)


@pytest.fixture(scope="module")
def small_render(small: TissueModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb, mask = small.region(0, 0, 512, 512)
    return rgb, mask, small.class_map()


def test_region_types_and_shapes(small: TissueModel) -> None:
    rgb, mask = small.region(10, 20, 33, 17)
    assert rgb.shape == (17, 33, 3) and rgb.dtype == np.uint8
    assert mask.shape == (17, 33) and mask.dtype == bool
    assert small.tumour_mask().shape == (512, 512)
    assert small.tissue_mask(4).shape == (128, 128)
    assert small.class_map(3).shape == (170, 170)
    assert small.lymph_mask(2).dtype == bool


def test_deterministic_per_seed(small_render: tuple[np.ndarray, ...]) -> None:
    again, mask = TissueModel(512, 512, mpp=2.0, seed=3).region(0, 0, 512, 512)
    assert np.array_equal(again, small_render[0])
    assert np.array_equal(mask, small_render[1])
    other, other_mask = TissueModel(512, 512, mpp=2.0, seed=4).region(0, 0, 512, 512)
    assert np.mean(other != small_render[0]) > 0.3
    assert not np.array_equal(other_mask, small_render[1])


@pytest.mark.parametrize("mpp", [2.0, 0.5])
def test_tiles_agree_with_larger_region(mpp: float, monkeypatch: pytest.MonkeyPatch) -> None:
    model = TissueModel(700, 700, mpp=mpp, seed=11)
    x, y, w, h = 41, 23, 300, 300
    full, full_mask = model.region(x, y, w, h)
    assert full_mask.any() or mpp == 0.5  # the mpp 2 window holds tumour
    cuts = [
        (0, 0, 137, 151),
        (137, 0, w - 137, 151),
        (0, 151, 137, h - 151),
        (137, 151, w - 137, h - 151),
        (3, 5, 1, 1),
        (250, 299, 50, 1),
    ]
    for a, b, c, d in cuts:
        part, part_mask = model.region(x + a, y + b, c, d)
        assert np.array_equal(part, full[b : b + d, a : a + c]), (a, b, c, d)
        assert np.array_equal(part_mask, full_mask[b : b + d, a : a + c]), (a, b, c, d)
    # region() renders large requests in blocks: block seams must not show either.
    monkeypatch.setattr(tissue, "BLOCK", 64)
    blocked, blocked_mask = model.region(x, y, w, h)
    assert np.array_equal(blocked, full)
    assert np.array_equal(blocked_mask, full_mask)


def test_region_mask_is_the_tumour_mask(small: TissueModel, small_render) -> None:
    rgb, mask, classes = small_render
    assert np.array_equal(mask, small.tumour_mask())
    assert np.array_equal(mask, classes == TUMOUR)
    assert np.array_equal(small.tissue_mask(), classes != BACKGROUND)
    assert mask.any() and not mask.all()


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.4])
def test_tumour_fraction_of_tissue(fraction: float) -> None:
    model = TissueModel(4096, 4096, mpp=1.0, seed=5, tumour_fraction=fraction)
    tumour, tissue_ = model.tumour_mask(8), model.tissue_mask(8)
    assert not (tumour & ~tissue_).any()
    assert tumour.sum() / tissue_.sum() == pytest.approx(fraction, abs=0.03)
    assert tissue_.mean() == pytest.approx(0.8, abs=0.05)
    # Background at some edges, tissue in the middle.
    edges = np.concatenate([tissue_[0], tissue_[-1], tissue_[:, 0], tissue_[:, -1]])
    assert (~edges).mean() > 0.2


def test_blocks_mix_empty_partial_and_full_tumour() -> None:
    fracs = []
    for seed in (0, 1):
        model = TissueModel(4096, 4096, mpp=1.0, seed=seed)  # 16 x 16 blocks of 256 um
        t = model.tumour_mask(8).reshape(16, 32, 16, 32).mean((1, 3))
        s = model.tissue_mask(8).reshape(16, 32, 16, 32).mean((1, 3))
        fracs.append(t[s > 0.5] / s[s > 0.5])
    f = np.concatenate(fracs)
    assert (f < 0.01).mean() > 0.15
    assert ((f > 0.05) & (f < 0.8)).mean() > 0.2
    assert (f > 0.9).mean() > 0.02


def test_mpp_changes_resolution_not_anatomy() -> None:
    fine = TissueModel(1024, 1024, mpp=1.0, seed=2)
    coarse = TissueModel(512, 512, mpp=2.0, seed=2)
    m1, m2 = fine.tumour_mask(), coarse.tumour_mask()
    assert m2.any()
    # Same sample points (block centres): identical.
    assert np.array_equal(fine.tumour_mask(2), m2)
    assert np.array_equal(fine.class_map(2), coarse.class_map())
    # The level-0 mask downsampled by 2 agrees up to boundary pixels.
    down = m1.reshape(512, 2, 512, 2).mean((1, 3)) >= 0.5
    assert (down == m2).mean() > 0.97


def _od(rgb: np.ndarray) -> np.ndarray:
    return -np.log((rgb.astype(np.float64) + 1.0) / 256.0)


def test_colours_read_as_h_and_e(small_render) -> None:
    rgb, mask, classes = small_render
    od = _od(rgb)
    h_vec = tissue.H_OD / np.linalg.norm(tissue.H_OD)
    hem = od @ h_vec
    f = rgb.astype(np.float64)
    blue_minus_green = f[..., 2] - f[..., 1]
    stroma, tumour = classes == STROMA, classes == TUMOUR
    assert stroma.sum() > 1000 and tumour.sum() > 1000
    # Tumour: purple and dark; stroma: pink (red above green, lighter).
    assert hem[tumour].mean() > hem[stroma].mean() + 0.2
    assert blue_minus_green[tumour].mean() > blue_minus_green[stroma].mean() + 10
    assert f[tumour].mean() < f[stroma].mean() - 20
    r, g, b = (f[stroma][:, i].mean() for i in range(3))
    assert r > g + 30 and b > g and r > 180
    # Glass: near (240, 240, 240), grey.
    glass = f[classes == BACKGROUND]
    assert glass.size and np.abs(glass.mean(0) - 240).max() < 4 and glass.std(0).max() < 4


def test_lymphocyte_aggregates_are_dark_and_not_tumour() -> None:
    model = TissueModel(1024, 1024, mpp=2.0, seed=1)
    classes = model.class_map()
    lymph = classes == LYMPHOCYTES
    tumour = model.tumour_mask()
    assert lymph.sum() > 500 and tumour.any()
    assert not (lymph & tumour).any()
    assert np.array_equal(model.lymph_mask(), lymph)
    # Separate from tumour: no lymphocyte aggregate within 10 um of it.
    dist_um = ndi.distance_transform_edt(~tumour) * model.mpp
    assert dist_um[lymph].min() > 10
    rgb, _ = model.region(0, 0, 1024, 1024)
    hem = _od(rgb) @ (tissue.H_OD / np.linalg.norm(tissue.H_OD))
    stroma = classes == STROMA
    assert hem[lymph].mean() > hem[stroma].mean() + 0.3
    fat = classes == FAT
    assert fat.any()
    assert rgb[fat].mean() > rgb[stroma].mean() + 25  # fat: mostly empty, white


def test_outside_slide_is_glass(small: TissueModel) -> None:
    rgb, mask = small.region(-40, 500, 60, 30)
    assert not mask[:, :40].any() and not mask[12:].any()
    assert np.abs(rgb[:, :40].astype(int) - 240).max() < 12


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width": 0, "height": 10},
        {"width": 10, "height": 10, "mpp": 0.0},
        {"width": 10, "height": 10, "tumour_fraction": 1.5},
    ],
)
def test_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TissueModel(**kwargs)


def test_rejects_bad_region_and_downsample(small: TissueModel) -> None:
    with pytest.raises(ValueError):
        small.region(0, 0, 0, 5)
    with pytest.raises(ValueError):
        small.tumour_mask(0)


def test_extreme_tumour_fractions() -> None:
    none = TissueModel(256, 256, mpp=2.0, seed=0, tumour_fraction=0.0)
    assert not none.tumour_mask().any()
    assert not none.region(0, 0, 64, 64)[1].any()
    every = TissueModel(256, 256, mpp=2.0, seed=0, tumour_fraction=1.0)
    assert np.array_equal(every.tumour_mask(), every.tissue_mask())
