"""Tests of napari_lsr.learn.models: the registry of trained checkpoints and their JSON cards."""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

from napari_lsr.learn.models import INCOMPLETE, ModelCard, list_models


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
    # an older card (NAME.json) is still read
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
    with zipfile.ZipFile(bare, "w") as zf:  # what torch.save writes: a zip archive
        zf.writestr("running/data.pkl", b"")
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


def test_a_prediction_beside_a_model_keeps_the_card(tmp_path: Path) -> None:
    """Issue 14: `predict --out m.tiff` beside `m.pt` replaced the card `m.json`."""
    from napari_lsr.io.formats import (
        existing_prediction_sidecar,
        model_card_path,
        prediction_sidecar,
        read_prediction_sidecar,
    )
    from napari_lsr.learn.training import card_path

    pt = tmp_path / "m.pt"
    pt.write_bytes(b"weights")
    card = {"name": "m", "checkpoint": "m.pt", "status": "done", "loss": "intra"}
    (tmp_path / "m.card.json").write_text(json.dumps(card))
    side = {"slide": "s.tif", "downsample": 2, "mpp": 1.0, "model": "m.pt", "loss": "intra"}
    prediction_sidecar(tmp_path / "m.tiff").write_text(json.dumps(side))
    assert card_path(pt) == model_card_path(pt) != prediction_sidecar(tmp_path / "m.tiff")
    [m] = list_models(tmp_path)
    assert m.card["status"] == "done" and m.card_path.name == "m.card.json"
    assert read_prediction_sidecar(tmp_path / "m.tiff")["slide"] == "s.tif"
    # an older prediction sidecar (NAME.json) is read, and never taken for a model card
    (tmp_path / "m.card.json").unlink()
    prediction_sidecar(tmp_path / "m.tiff").unlink()
    (tmp_path / "m.json").write_text(json.dumps(side))
    assert existing_prediction_sidecar(tmp_path / "m.tiff").name == "m.json"
    assert list_models(tmp_path) == []


def test_a_text_file_named_pt_is_unreadable_in_words_and_never_resumable(tmp_path):
    """Issue 24.10: no Python internals in the message; listed, but not for Resume."""
    import pytest

    from napari_lsr.learn.models import UNREADABLE, list_models
    from napari_lsr.learn.training import TrainingError, load_checkpoint

    fake = tmp_path / "models" / "notes.pt"
    fake.parent.mkdir()
    fake.write_text("these are my notes, not a model\n")
    with pytest.raises(TrainingError) as err:
        load_checkpoint(fake)
    msg = str(err.value)
    assert msg == f"{fake}: not a readable checkpoint (not written by torch.save, or damaged)"
    assert "pop" not in msg and "list" not in msg
    [card] = list_models(fake.parent, include_incomplete=True)
    assert card.status == UNREADABLE and not card.resumable
    assert "not a checkpoint" in card.summary()
