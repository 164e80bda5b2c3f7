"""The demo pipeline, headless and tiny: sample -> train -> predict -> evaluate."""

from __future__ import annotations

import json

import pytest

from napari_lsr.demo import run_demo


def test_headless_demo(tmp_path, capsys):
    tiny = {"depth": 2, "width": 4, "group_size": 3, "batch_size": 8}
    assert run_demo(tmp_path, headless=True, steps=3, size=1024, train_overrides=tiny) == 0
    out = capsys.readouterr().out
    assert "Low resolution model" in out and "Intra+inter-instance" in out
    for loss in ("intra", "intra+inter"):  # each trained model's health, in one line
        line = next(x for x in out.splitlines() if x.startswith(f"{loss} model health: "))
        assert "healthy" in line or ("degenerate" in line and "try" in line)
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["name"] for r in rows] == [
        "Low resolution model",
        "Intra-instance",
        "Intra+inter-instance",
    ]
    for loss in ("intra", "intra+inter"):
        assert (tmp_path / "project" / "models" / f"{loss}.pt").exists()
        assert (tmp_path / "project" / "predictions" / f"{loss}.tiff").exists()
    # a second run reuses everything
    assert run_demo(tmp_path, headless=True, steps=3, size=1024, train_overrides=tiny) == 0


@pytest.mark.gui
def test_demo_window_has_one_heat_overlay_and_the_model_boundaries(
    make_napari_viewer, project_copy, tiny_model, monkeypatch, qtbot
):
    """Issue 24.4: the demo's window showed the heat overlay twice and no model boundary."""
    import shutil

    import napari

    from napari_lsr import demo

    models = project_copy.models_dir
    models.mkdir(exist_ok=True)
    shutil.copy(tiny_model, models / "intra+inter.pt")
    card = json.loads(tiny_model.with_suffix(".card.json").read_text())
    card.update(name="intra+inter", checkpoint="intra+inter.pt")
    (models / "intra+inter.card.json").write_text(json.dumps(card))
    viewer = make_napari_viewer()
    monkeypatch.setattr(napari, "Viewer", lambda **kw: viewer)
    monkeypatch.setattr(napari, "run", lambda *a, **kw: None)
    assert demo.open_viewer(project_copy) == 0
    names = [layer.name for layer in viewer.layers]
    assert len([n for n in names if "low-res bins" in n]) == 1, names
    kinds = [(layer.metadata or {}).get("napari_lsr", {}).get("kind") for layer in viewer.layers]
    assert "model" in kinds and "truth" in kinds, (names, kinds)
    assert any("intra+inter" in n for n in names), names
