"""The napari reader contribution, without a viewer (the GUI tests open it in one)."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_lsr._reader import napari_get_reader, read_slide_layers

from conftest import shared_file


def test_reader_opens_synthetic_slide(tiny_project):
    path = str(tiny_project.slides[0].path)
    reader = napari_get_reader(path)
    assert reader is not None
    [(data, meta, kind)] = reader(path)
    assert kind == "image" and meta["rgb"] and meta["multiscale"]
    assert meta["scale"] == (2.0, 2.0) and meta["units"] == "um"
    assert data[0].shape == (768, 768, 3)


def test_reader_declines_grey_tiff_and_takes_rgb_images(tmp_path):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, np.zeros((16, 16), np.uint8))  # grey strips: not a slide, not H&E
    assert napari_get_reader(str(p)) is None
    rgb = tmp_path / "tile.tif"
    tifffile.imwrite(rgb, np.zeros((16, 16, 3), np.uint8))  # an RGB tile (issue 24.3)
    assert napari_get_reader(str(rgb)) is not None
    assert napari_get_reader(str(tmp_path / "x.png")) is not None
    assert napari_get_reader(str(tmp_path / "x.czi")) is None


def test_reader_reports_bad_slide_in_one_line(tmp_path, monkeypatch):
    shown = []
    import napari.utils.notifications as notes

    monkeypatch.setattr(notes, "show_error", shown.append)
    p = tmp_path / "fake.svs"
    p.write_bytes(b"garbage")
    reader = napari_get_reader(str(p))
    assert reader is not None
    assert reader(str(p)) == [(None,)]
    assert len(shown) == 1 and "fake.svs" in shown[0] and "\n" not in shown[0]


def test_reader_real_svs():
    path = str(shared_file("cmu-1-small-region.svs"))
    [(data, meta, _)] = read_slide_layers(path)
    assert data[0].shape == (2967, 2220, 3)
    assert abs(meta["scale"][0] - 0.499) < 1e-3


def test_reader_real_broken_svs(monkeypatch):
    import napari.utils.notifications as notes

    shown = []
    monkeypatch.setattr(notes, "show_error", shown.append)
    path = str(shared_file("broken.svs"))
    assert read_slide_layers(path) == [(None,)]
    assert "broken.svs" in shown[0]
