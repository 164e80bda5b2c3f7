"""The reader and the sample-data contribution inside a real napari viewer (Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file

pytestmark = pytest.mark.gui


def test_viewer_opens_synthetic_slide_in_microns(make_napari_viewer, tiny_project):
    viewer = make_napari_viewer()
    layers = viewer.open(str(tiny_project.slides[0].path), plugin="napari-lsr")
    [layer] = layers
    assert layer.rgb and layer.multiscale
    assert tuple(layer.scale) == (2.0, 2.0)
    assert layer.data[0].shape == (768, 768, 3)


def test_viewer_opens_real_svs(make_napari_viewer):
    path = shared_file("cmu-1-small-region.svs")
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-lsr")
    assert layer.data[0].shape == (2967, 2220, 3)
    assert np.asarray(layer.data[-1]).std() > 5  # real pixels, not a blank canvas


def test_viewer_broken_slide_is_a_notification_not_a_crash(
    make_napari_viewer, tmp_path, monkeypatch
):
    import napari.utils.notifications as notes

    shown = []
    monkeypatch.setattr(notes, "show_error", shown.append)
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"\x00" * 100)
    viewer = make_napari_viewer()
    viewer.open(str(bad), plugin="napari-lsr")
    assert len(viewer.layers) == 0
    assert len(shown) == 1 and "bad.svs" in shown[0]


def test_sample_data_contribution(make_napari_viewer, monkeypatch, tmp_path):
    import napari_lsr._sample_data as sd

    monkeypatch.setattr(sd, "SAMPLE_MENU_SIZE", 512)
    monkeypatch.setattr(sd.tempfile, "gettempdir", lambda: str(tmp_path))
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-lsr", "synthetic_slide")
    kinds = sorted(type(lay).__name__ for lay in layers)
    assert kinds == ["Image", "Labels", "Labels"]
    heat = next(lay for lay in layers if "low-res" in lay.name)
    assert heat.data.max() >= 1  # bins painted


# -- issue 24.3: plain JPEG/PNG/TIFF images through the plugin's reader ----------------------


def _tile(path, dpi=None):
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    img.save(path, dpi=dpi) if dpi else img.save(path)
    return path


def test_plain_images_go_through_the_plugin_reader(make_napari_viewer, tmp_path):
    from npe2 import PluginManager
    from PIL import Image

    from napari_lsr._reader import napari_get_reader

    files = [
        _tile(tmp_path / "tile.png"),
        _tile(tmp_path / "tile.jpg", dpi=(50800, 50800)),  # 0.5 um/px
        _tile(tmp_path / "tile.jpeg"),
        _tile(tmp_path / "tile.tif"),
    ]
    pm = PluginManager.instance()
    for f in files:
        assert napari_get_reader(str(f)) is not None, f.name
        readers = [r.plugin_name for r in pm.iter_compatible_readers([str(f)])]
        assert "napari-lsr" in readers, (f.name, readers)
    # a grey TIFF stack stays with napari's (or another plugin's) reader
    stack = tmp_path / "stack.tif"
    frames = [Image.fromarray(np.zeros((8, 8), np.uint8)) for _ in range(3)]
    frames[0].save(stack, save_all=True, append_images=frames[1:])
    assert napari_get_reader(str(stack)) is None

    viewer = make_napari_viewer()
    [layer] = viewer.open(str(files[1]), plugin="napari-lsr")
    assert layer.rgb and layer.metadata["napari_lsr"]["path"] == str(files[1])
    assert tuple(layer.scale) == pytest.approx((0.5, 0.5))  # in microns


def test_real_ocdc_tile_opens_with_the_plugin(make_napari_viewer):
    tiles = shared_file("ocdc_tiles", "images")
    tile = sorted(tiles.glob("*.jpg"))[0]
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tile), plugin="napari-lsr")
    assert layer.data[0].shape == (640, 640, 3)


def test_use_slide_takes_a_tile_opened_by_napari_s_own_reader(make_napari_viewer, tmp_path):
    from napari_lsr.widgets.block_review import BlockReviewWidget

    tile = _tile(tmp_path / "tile.png")
    viewer = make_napari_viewer()
    viewer.open(str(tile), plugin="napari")  # scale 1, no napari-lsr metadata
    csv = tmp_path / "tile.csv"
    csv.write_text("x,y,width,height,probability\n0,0,64,64,0.1\n64,0,64,64,0.9\n")
    w = BlockReviewWidget(viewer)
    w.annotator_edit.setText("ana")
    assert w.use_viewer_slide(str(csv)), w.message.text()
    assert w.project is not None and w.project.slides[0].path.name == "tile.png"
    w.shutdown()
