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
