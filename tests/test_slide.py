"""Slide access: OpenSlide and plain images, mpp, regions at an mpp, the lazy pyramid."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from napari_lsr.io.slide import MppUnknownError, Slide, SlideError

from conftest import shared_file


def test_synthetic_slide_opens_with_openslide(tiny_project):
    with Slide(tiny_project.slides[0].path) as s:
        assert s.vendor == "generic-tiff"
        assert s.dimensions == (768, 768)
        assert s.mpp == pytest.approx(2.0)
        assert len(s.native_downsamples) >= 2
        assert s.tile_size == (256, 256)


def test_read_region_at_mpp_matches_downsample(tiny_project):
    with Slide(tiny_project.slides[0].path) as s:
        a = s.read_region(128, 128, 256, 256, mpp=4.0)
        b = s.read_region(128, 128, 256, 256, downsample=2.0)
        c = s.read_region(128, 128, 256, 256, size=(128, 128))
        full = s.read_level0(128, 128, 256, 256)
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(a, c)
    small = full.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    assert np.abs(a.astype(float) - small).mean() < 12  # resampled, not another region


def test_region_outside_is_background(tiny_project):
    with Slide(tiny_project.slides[0].path) as s:
        r = s.read_level0(700, 700, 200, 200)
    assert r.shape == (200, 200, 3)
    assert (r[150:, 150:] == 255).all()  # beyond the slide: white background, not black


def test_pyramid_lazy_and_tile_aligned(tiny_project):
    with Slide(tiny_project.slides[0].path) as s:
        pyr = s.pyramid()
        assert pyr[0].shape == (768, 768, 3) and pyr[0].dtype == np.uint8
        assert pyr[0].chunks[0][0] % 256 == 0
        lvl0 = np.asarray(pyr[0][:256, :256])
        assert np.array_equal(lvl0, s.read_level0(0, 0, 256, 256))
        assert [p.shape[0] for p in pyr] == sorted((p.shape[0] for p in pyr), reverse=True)


def test_threaded_reads_agree(tiny_project):
    with Slide(tiny_project.slides[0].path) as s:
        ref = s.read_region(0, 0, 512, 512, mpp=4.0)
        out, errors = [], []

        def work():
            try:
                for _ in range(5):
                    out.append(s.read_region(0, 0, 512, 512, mpp=4.0))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        ts = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
    assert not errors and len(out) == 20
    assert all(np.array_equal(o, ref) for o in out)


def test_closed_slide_refuses_reads(tiny_project):
    s = Slide(tiny_project.slides[0].path)
    s.close()
    s.close()  # twice is fine
    with pytest.raises(SlideError, match="closed"):
        s.read_level0(0, 0, 10, 10)


def test_plain_png_without_mpp(tmp_path):
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:10, :10, 3] = 0  # transparent corner composited onto white
    Image.fromarray(rgba).save(tmp_path / "img.png")
    s = Slide(tmp_path / "img.png")
    assert s.dimensions == (60, 40) and s.mpp is None and s.vendor == "image"
    px = s.read_level0(0, 0, 60, 40)
    assert tuple(px[0, 0]) == (255, 255, 255) and tuple(px[20, 20]) == (200, 0, 0)
    with pytest.raises(MppUnknownError, match="--mpp"):
        s.read_region(0, 0, 10, 10, mpp=2.0)
    assert Slide(tmp_path / "img.png", mpp=0.5).read_region(0, 0, 60, 40, mpp=1.0).shape == (
        20,
        30,
        3,
    )


def test_plain_tiff_resolution_in_cm(tmp_path):
    import tifffile

    tifffile.imwrite(
        tmp_path / "p.tif",
        np.zeros((20, 20, 3), np.uint8),
        resolution=(1e4 / 0.5, 1e4 / 0.5),
        resolutionunit="CENTIMETER",
    )
    s = Slide(tmp_path / "p.tif")
    assert s.vendor == "image" and s.mpp == pytest.approx(0.5)


def test_bad_files(tmp_path):
    with pytest.raises(SlideError, match="no such file"):
        Slide(tmp_path / "missing.svs")
    fake = tmp_path / "fake.svs"
    fake.write_bytes(b"not a slide at all")
    with pytest.raises(SlideError) as info:
        Slide(fake)
    assert str(fake) in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "x.docx").write_bytes(b"")
    with pytest.raises(SlideError, match="unsupported"):
        Slide(tmp_path / "x.docx")


def test_real_svs():
    path = shared_file("cmu-1-small-region.svs")
    with Slide(path) as s:
        assert s.vendor == "aperio"
        assert s.dimensions == (2220, 2967)
        assert s.mpp == pytest.approx(0.499, abs=1e-3)
        r = s.read_region(0, 0, 1000, 1000, mpp=4.0)
        assert r.shape[:2] == (125, 125) and r.std() > 5


def test_real_broken_svs():
    path = shared_file("broken.svs")
    with pytest.raises(SlideError) as info:
        Slide(path)
    assert "broken.svs" in str(info.value) and "\n" not in str(info.value)
