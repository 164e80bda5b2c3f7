"""The demo pipeline, headless and tiny: sample -> train -> predict -> evaluate."""

from __future__ import annotations

import json

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
