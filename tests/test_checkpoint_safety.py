"""Model files are data: checkpoints open with the safe loader, a crafted file is refused at
every entry point (nothing in it runs), older files open only when the user trusts them, cards
and sidecars are size-limited, schema-checked JSON, and --scheduler takes TLS settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_lsr.cli import main
from napari_lsr.io.formats import (
    FormatError,
    read_model_card,
    read_prediction_sidecar,
    write_prediction,
)
from napari_lsr.learn.models import list_models
from napari_lsr.learn.training import (
    CHECKPOINT_VERSION,
    TrainingError,
    UntrustedCheckpoint,
    _plain,
    checkpoint_needs_trust,
    load_checkpoint,
    load_model,
)
from napari_lsr.predict.inference import InferenceError, predict_slide, scheduler_security

from conftest import tiny_plan

PLAIN = "not a plain napari-lsr checkpoint"


class _Payload:
    """Unpickling this creates ``marker``: what a crafted model file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """A .pt whose unpickling would create a file, and that file's path."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "models" / "evil.pt"
    path.parent.mkdir()
    torch.save({"format": "napari-lsr-checkpoint", "version": 1, "x": _Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


@pytest.fixture
def legacy(tiny_model: Path, tmp_path: Path) -> Path:
    """An older-style checkpoint: right keys, but numpy scalars and a Path among them."""
    ckpt = torch.load(tiny_model, weights_only=True)
    ckpt["version"] = 1
    ckpt["train_mpp"] = np.float64(ckpt["train_mpp"])
    ckpt["info"] = {"prior_path": Path("/somewhere/prior.csv")}
    out = tmp_path / "legacy.pt"
    torch.save(ckpt, out)
    shutil.copy(tiny_model.with_suffix(".card.json"), out.with_suffix(".card.json"))
    return out


def refused(msg: str, path: Path) -> None:
    assert "\n" not in msg.strip(), msg
    assert str(path) in msg and PLAIN in msg, msg


# -- the format ----------------------------------------------------------------------------


def test_new_checkpoints_are_plain_data(tiny_model: Path) -> None:
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tiny_model) == []
    ckpt = torch.load(tiny_model, weights_only=True)
    assert ckpt["version"] == CHECKPOINT_VERSION == 2
    assert isinstance(ckpt["rng"]["numpy"], dict) and isinstance(ckpt["rng"]["torch"], torch.Tensor)
    assert checkpoint_needs_trust(tiny_model) == []


def test_plain_converts_numpy_and_paths_and_refuses_objects(tmp_path: Path) -> None:
    got = _plain(
        {"a": np.float64(2.5), "b": [np.int64(3), Path("/x")], "c": (np.ones(2),)}, tmp_path
    )
    assert got == {"a": 2.5, "b": [3, "/x"], "c": ([1.0, 1.0],)}
    assert type(got["a"]) is float and type(got["b"][0]) is int
    with pytest.raises(TrainingError, match="plain data only"):
        _plain({"x": object()}, tmp_path)


def test_no_unsafe_load_in_the_package() -> None:
    root = Path(__file__).resolve().parents[1] / "napari_lsr"
    hits = [
        f"{p.name}:{i}"
        for p in root.rglob("*.py")
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "weights_only=False" in line
    ]
    assert len(hits) <= 1 and all(h.startswith("training.py:") for h in hits)  # the opt-in path
    loads = [p.name for p in root.rglob("*.py") if "torch.load(" in p.read_text(encoding="utf-8")]
    assert loads == ["training.py"]


# -- a crafted file is refused at every entry point ----------------------------------------


def test_load_model_and_checkpoint_refuse_a_payload(evil) -> None:
    path, marker = evil
    for fn in (load_model, load_checkpoint):
        with pytest.raises(UntrustedCheckpoint) as err:
            fn(path)
        refused(str(err.value), path)
        assert "builtins.exec" in str(err.value)
    assert checkpoint_needs_trust(path) == ["builtins.exec"]
    assert not marker.exists()


def test_predict_refuses_a_payload(evil, tiny_project, tmp_path, capsys) -> None:
    path, marker = evil
    with pytest.raises(UntrustedCheckpoint):
        predict_slide(path, tiny_project.slides[0].path, tmp_path / "p.tiff", device="cpu")
    argv = ["predict", "--model", str(path), "--slide", str(tiny_project.slides[0].path)]
    assert main([*argv, "--out", str(tmp_path / "q.tiff")]) == 2
    err = capsys.readouterr().err.strip()
    refused(err, path)
    assert err.startswith("napari-lsr predict: error:")
    assert not marker.exists() and not (tmp_path / "q.tiff").exists()


def test_train_resume_refuses_a_payload(evil, tiny_project, tmp_path, capsys) -> None:
    path, marker = evil
    e = tiny_project.slides[0]
    argv = ["train", "--slide", str(e.path), "--labels", str(e.labels)]
    argv += ["--prior", str(tiny_project.prior_path), "--loss", "intra+inter"]
    argv += ["--resume", str(path), "--out", str(path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    refused(err, path)
    assert not marker.exists()
    assert not (tmp_path / "models" / "cache").exists()  # refused before any block extraction


def test_run_resume_refuses_a_payload(evil, project_copy) -> None:
    from napari_lsr.learn.run import RunPlan, TrainingFailed, run_training
    from napari_lsr.learn.training import TrainConfig

    path, marker = evil
    plan = RunPlan(out=path, cache_dir=project_copy.cache_dir, config=TrainConfig(), resume=path)
    with pytest.raises(TrainingFailed) as err:
        list(run_training(plan, threading.Event()))
    refused(str(err.value), path)
    assert "UntrustedCheckpoint" not in str(err.value)
    assert not marker.exists()


def test_comparison_refuses_a_payload(evil, project_copy) -> None:
    from napari_lsr.compare import CompareRequest, project_models, run_comparison

    path, marker = evil
    models = project_copy.models_dir
    models.mkdir(exist_ok=True)
    shutil.copy(path, models / "evil.pt")
    card = {"name": "evil", "checkpoint": "evil.pt", "loss": "intra", "status": "done"}
    (models / "evil.json").write_text(json.dumps(card))
    (entry,) = [m for m in project_models(models) if m.name == "evil"]
    e = project_copy.slides[0]
    req = CompareRequest(
        slide=e.path,
        truth=e.truth,
        labels=None,
        models=[entry],
        predictions_dir=project_copy.predictions_dir,
        band_um=100.0,
    )
    with pytest.raises(UntrustedCheckpoint) as err:
        list(run_comparison(req))
    refused(str(err.value), models / "evil.pt")
    assert not marker.exists()


# -- older checkpoints: opened only when trusted; the next save is plain -------------------


def test_older_checkpoint_needs_explicit_trust(legacy, tiny_project, tmp_path, capsys) -> None:
    with pytest.raises(UntrustedCheckpoint) as err:
        load_checkpoint(legacy)
    refused(str(err.value), legacy)
    assert "--trust-checkpoint" in str(err.value)
    ckpt = load_checkpoint(legacy, trust=True)
    assert isinstance(ckpt["train_mpp"], np.floating)
    slide = str(tiny_project.slides[0].path)
    out = tmp_path / "p.tiff"
    argv = ["predict", "--model", str(legacy), "--slide", slide, "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 2
    assert PLAIN in capsys.readouterr().err
    assert main([*argv, "--device", "cpu", "--trust-checkpoint"]) == 0
    assert out.exists()


def test_resuming_a_trusted_older_checkpoint_saves_the_safe_format(legacy, project_copy) -> None:
    from napari_lsr.learn.run import RunPlan, TrainingFailed, run_training
    from napari_lsr.learn.training import TrainConfig

    base = tiny_plan(project_copy, "legacy", steps=6)
    out = project_copy.models_dir / "legacy.pt"
    out.parent.mkdir(exist_ok=True)
    ckpt = torch.load(legacy, weights_only=False)
    ckpt["info"] = {"sources": [s.to_dict() for s in base.sources], "prior_path": "p"}
    ckpt["config"]["steps"] = 6
    torch.save(ckpt, out)
    plan = RunPlan(out=out, cache_dir=base.cache_dir, config=TrainConfig(), resume=out)
    with pytest.raises(TrainingFailed, match=PLAIN):
        list(run_training(plan, threading.Event()))
    plan.trust_checkpoint = True
    events = list(run_training(plan, threading.Event()))
    assert events[-1].kind == "done" and events[-1].step == 6
    assert torch.serialization.get_unsafe_globals_in_checkpoint(out) == []
    assert load_checkpoint(out)["version"] == CHECKPOINT_VERSION


# -- cards and sidecars: JSON, size-limited and schema-checked -----------------------------


def test_card_schema_size_and_checkpoint_name(tmp_path: Path) -> None:
    card = tmp_path / "m.json"
    card.write_text(json.dumps({"name": "m", "checkpoint": "m.pt", "steps": 5}))
    assert read_model_card(card)["steps"] == 5
    for bad, words in (
        ({"checkpoint": "m.pt", "steps": "many"}, "'steps' should be an integer"),
        ({"checkpoint": "../../etc/m.pt"}, "not a file name"),
        ({"checkpoint": "/abs/m.pt"}, "not a file name"),
        ({"loss": "intra", "final_loss": True}, "'final_loss' should be"),
        ([1, 2], "expected a JSON object"),
    ):
        card.write_text(json.dumps(bad))
        with pytest.raises(FormatError) as err:
            read_model_card(card)
        assert words in str(err.value) and str(card) in str(err.value)
        assert "\n" not in str(err.value)
    card.write_text('{"loss": "' + "x" * (2 << 20) + '"}')
    with pytest.raises(FormatError, match="too large"):
        read_model_card(card)


def test_malformed_cards_are_skipped_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "ok.pt").write_bytes(b"x")
    (tmp_path / "ok.json").write_text(json.dumps({"checkpoint": "ok.pt", "loss": "intra"}))
    (tmp_path / "bad.pt").write_bytes(b"x")
    (tmp_path / "bad.json").write_text(json.dumps({"checkpoint": "bad.pt", "steps": [1]}))
    (tmp_path / "out.json").write_text(json.dumps({"checkpoint": "../ok.pt", "loss": "intra"}))
    errors: list[str] = []
    assert [m.name for m in list_models(tmp_path, errors=errors)] == ["ok"]
    assert len(errors) == 2 and all("\n" not in e for e in errors)
    assert any("bad.json" in e and "'steps'" in e for e in errors)


def test_sidecar_schema(tmp_path: Path) -> None:
    pred = tmp_path / "p.tiff"
    meta = {"slide": "s.tiff", "downsample": 2.0, "mpp": 4.0, "model": "m.pt", "loss": "intra"}
    write_prediction(pred, np.zeros((8, 8), np.uint8), meta)
    assert read_prediction_sidecar(pred)["downsample"] == 2.0
    pred.with_suffix(".pred.json").write_text(json.dumps({**meta, "downsample": "2"}))
    with pytest.raises(FormatError, match="'downsample' should be"):
        read_prediction_sidecar(pred)
    pred.with_suffix(".pred.json").write_text(json.dumps({"downsample": 2}))
    with pytest.raises(FormatError, match="sidecar lacks 'slide'"):
        read_prediction_sidecar(pred)


# -- --scheduler: addresses, Dask's config, security files ---------------------------------


def test_scheduler_addresses_and_security_files(tmp_path: Path) -> None:
    addr, sec = scheduler_security("tcp://127.0.0.1:8786")
    assert addr == "tcp://127.0.0.1:8786" and not sec.require_encryption
    assert scheduler_security("127.0.0.1:8786")[0] == "tcp://127.0.0.1:8786"
    with pytest.raises(InferenceError, match="needs certificates"):
        scheduler_security("tls://127.0.0.1:8786")
    with pytest.raises(InferenceError, match="tcp://HOST:PORT"):
        scheduler_security("ws://127.0.0.1:8786")
    f = tmp_path / "cluster.yaml"
    with pytest.raises(InferenceError, match="cannot read"):
        scheduler_security(str(f))
    f.write_text("address: [unclosed\n")
    with pytest.raises(InferenceError, match="not a valid YAML"):
        scheduler_security(str(f))
    f.write_text("address: tls://10.0.0.1:8786\nca-file: ca.pem\ncert: cert.pem\n")
    with pytest.raises(InferenceError, match="ca-file .*ca.pem does not exist"):
        scheduler_security(str(f))
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "cert.pem").write_text("x")
    addr, sec = scheduler_security(str(f))
    assert addr == "tls://10.0.0.1:8786" and sec.require_encryption
    assert sec.tls_ca_file == str(tmp_path / "ca.pem")
    f.write_text("address: tcp://10.0.0.1:8786\nca-file: ca.pem\ncert: cert.pem\n")
    with pytest.raises(InferenceError, match="tls:// address"):
        scheduler_security(str(f))
    dask_cfg = {
        "scheduler-address": "tls://10.0.0.2:8786",
        "distributed": {"comm": {"tls": {"ca_file": "ca.pem", "client": {"cert": "cert.pem"}}}},
    }
    f.write_text(json.dumps(dask_cfg))  # JSON is YAML
    addr, sec = scheduler_security(str(f))
    assert addr == "tls://10.0.0.2:8786" and sec.tls_client_cert == str(tmp_path / "cert.pem")


def _self_signed(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=napari-lsr-test"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_predict_over_a_tls_cluster(tiny_project, tiny_model, tmp_path) -> None:
    from distributed import LocalCluster
    from distributed.security import Security

    from napari_lsr.io.formats import read_prediction

    cert, key = _self_signed(tmp_path)
    sec = Security(
        tls_ca_file=str(cert),
        tls_scheduler_cert=str(cert),
        tls_scheduler_key=str(key),
        tls_worker_cert=str(cert),
        tls_worker_key=str(key),
        tls_client_cert=str(cert),
        tls_client_key=str(key),
        require_encryption=True,
    )
    slide = tiny_project.slides[0].path
    local = tmp_path / "local.tiff"
    predict_slide(tiny_model, slide, local, tile=64, device="cpu")
    with LocalCluster(
        n_workers=1,
        processes=False,
        threads_per_worker=2,
        protocol="tls://",
        host="127.0.0.1",
        security=sec,
        dashboard_address=":0",
        local_directory=str(tmp_path),
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        with pytest.raises(InferenceError, match="needs certificates"):
            predict_slide(tiny_model, slide, tmp_path / "x.tiff", device="cpu", scheduler=address)
        cfg = tmp_path / "cluster.yaml"
        cfg.write_text(f"address: {address}\nca-file: cert.pem\ncert: cert.pem\nkey: key.pem\n")
        out = tmp_path / "tls.tiff"
        predict_slide(tiny_model, slide, out, tile=64, device="cpu", scheduler=str(cfg))
    np.testing.assert_array_equal(read_prediction(out)[0], read_prediction(local)[0])


# -- the widgets ---------------------------------------------------------------------------

HAS_DISPLAY = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@pytest.mark.gui
def test_comparison_widget_refuses_a_payload(
    make_napari_viewer, project_copy, tiny_model, evil, monkeypatch
) -> None:
    from napari.utils import notifications

    from napari_lsr.widgets import _common
    from napari_lsr.widgets.comparison import ComparisonWidget

    path, marker = evil
    models = project_copy.models_dir
    models.mkdir(exist_ok=True)
    shutil.copy(path, models / "evil.pt")
    card = {"name": "evil", "checkpoint": "evil.pt", "loss": "intra", "status": "done"}
    (models / "evil.json").write_text(json.dumps(card))
    (models / "broken.json").write_text(json.dumps({"checkpoint": "x.pt", "steps": "lots"}))
    asked: list[Path] = []
    shown: list[str] = []
    monkeypatch.setattr(_common, "ask_trust", lambda parent, p, needs: asked.append(p) or False)
    monkeypatch.setattr(notifications, "show_error", shown.append)
    viewer = make_napari_viewer()
    widget = ComparisonWidget(viewer)
    assert widget.open_project(project_copy.folder)
    assert any("broken.json" in s and "'steps'" in s for s in shown)  # a card error, no crash
    assert [e.name for e in widget.entries()] == ["evil"]
    assert widget.run() is None
    assert asked == [models / "evil.pt"]
    text = widget.status.text()
    refused(text, models / "evil.pt")
    assert not marker.exists() and widget.worker is None and widget.run_button.isEnabled()


@pytest.mark.gui
def test_training_widget_resume_refuses_a_payload(
    make_napari_viewer, project_copy, evil, monkeypatch
) -> None:
    from napari_lsr.widgets import _common
    from napari_lsr.widgets import training as tw

    path, marker = evil
    shown: list[str] = []
    asked: list[Path] = []
    monkeypatch.setattr(_common, "ask_trust", lambda parent, p, needs: asked.append(p) or False)
    monkeypatch.setattr(tw, "show_error", shown.append)
    viewer = make_napari_viewer()
    widget = tw.TrainingWidget(viewer)
    widget.set_project(project_copy.folder)
    assert widget.resume(path) is False
    assert asked == [path] and not widget.is_running
    assert len(shown) == 1
    refused(shown[0], path)
    assert not marker.exists()
