"""Tests of napari_lsr.models: the registry of trained checkpoints and their JSON cards."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from napari_lsr.models import INCOMPLETE, ModelCard, list_models


def _model(folder: Path, name: str, mtime: float, **card: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pt = folder / f"{name}.pt"
    pt.write_bytes(b"not really a checkpoint")
    data = {
        "name": name,
        "checkpoint": pt.name,
        "status": "done",
        "loss": "intra+inter",
        "distance": "gaussian",
        "steps": 100,
        "steps_planned": 100,
        "final_loss": -0.25,
    }
    data.update(card)
    js = folder / f"{name}.json"
    js.write_text(json.dumps(data))
    os.utime(js, (mtime, mtime))
    os.utime(pt, (mtime, mtime))
    return pt


def test_missing_or_empty_folder_holds_no_models(tmp_path: Path) -> None:
    assert list_models(tmp_path / "nope") == []
    assert list_models(tmp_path) == []


def test_models_newest_first_with_card_fields(tmp_path: Path) -> None:
    _model(tmp_path, "old", 1_000_000, loss="intra", distance="kl", final_loss=0.5)
    new = _model(tmp_path, "new", 2_000_000, status="cancelled", steps=40)
    models = list_models(tmp_path)
    assert [m.name for m in models] == ["new", "old"]
    m = models[0]
    assert isinstance(m, ModelCard)
    assert m.checkpoint == new and m.card_path == new.with_suffix(".json")
    assert (m.status, m.loss, m.distance, m.steps, m.steps_planned) == (
        "cancelled",
        "intra+inter",
        "gaussian",
        40,
        100,
    )
    assert m.final_loss == -0.25
    assert m.resumable and not models[1].resumable
    assert models[1].loss == "intra" and models[1].distance == "kl"
    assert "40/100 steps" in m.summary() and "cancelled" in m.summary()


def test_cards_without_checkpoint_bad_json_hidden_and_other_json_are_skipped(
    tmp_path: Path,
) -> None:
    _model(tmp_path, "good", 1_000_000)
    _model(tmp_path, "orphan", 1_000_001).unlink()  # the checkpoint was deleted
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "broken.pt").write_bytes(b"x")
    (tmp_path / "notes.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / ".good.json.tmp.json").write_text("{}")
    assert [m.name for m in list_models(tmp_path)] == ["good"]


def test_include_incomplete_lists_bare_checkpoints(tmp_path: Path) -> None:
    _model(tmp_path, "done", 1_000_000)
    bare = tmp_path / "running.pt"
    bare.write_bytes(b"x")
    os.utime(bare, (2_000_000, 2_000_000))
    (tmp_path / ".running.pt.abc.tmp").write_bytes(b"x")
    assert [m.name for m in list_models(tmp_path)] == ["done"]
    models = list_models(tmp_path, include_incomplete=True)
    assert [m.name for m in models] == ["running", "done"]
    assert models[0].status == INCOMPLETE and models[0].resumable
    assert math.isnan(models[0].final_loss) and models[0].steps == 0
    assert "without a card" in models[0].summary()


def test_card_naming_another_checkpoint_file(tmp_path: Path) -> None:
    pt = _model(tmp_path, "a", 1_000_000, checkpoint="weights.pt")
    pt.rename(tmp_path / "weights.pt")
    (m,) = list_models(tmp_path)
    assert m.checkpoint == tmp_path / "weights.pt"
    assert list_models(tmp_path, include_incomplete=True) == [m]


def test_real_engine_card_is_listed(tiny_model: Path) -> None:
    models = list_models(tiny_model.parent)
    (m,) = [m for m in models if m.checkpoint == tiny_model]
    assert m.name == tiny_model.stem
    assert (m.status, m.loss, m.steps) == ("done", "intra+inter", 4)
    assert math.isfinite(m.final_loss)
    for key in ("distance", "prior", "slides", "duration_s", "device"):
        assert key in m.card
