"""The trainer: events, checkpoints, exact resume, cancel, NaN handling, devices, bad input."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from napari_lsr.learn.blocks import SlideBlocks, extract_blocks
from napari_lsr.learn.training import (
    PAPER_LR,
    TrainConfig,
    TrainingError,
    card_path,
    load_checkpoint,
    load_model,
    select_device,
    train,
)

from conftest import f32_tolerance

TINY = {"depth": 2, "width": 4, "groups": 2, "group_size": 4, "batch_size": 6}


@pytest.fixture(scope="module")
def blocks(tiny_project, tmp_path_factory):
    entry = tiny_project.slides[0]
    with entry.open() as slide:
        labels = entry.read_labels(slide)
    cache = tmp_path_factory.mktemp("cache")
    return extract_blocks([SlideBlocks(entry.path, labels)], cache, 32, 4.0)


def losses(events):
    return [e.loss for e in events if e.kind == "step"]


@pytest.mark.parametrize("loss", ["intra", "inter", "intra+inter"])
def test_each_loss_trains_and_writes_checkpoint_and_card(blocks, tiny_project, tmp_path, loss):
    out = tmp_path / f"{loss}.pt"
    events = list(train(blocks, tiny_project.prior(), TrainConfig(loss=loss, steps=5, **TINY), out))
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("step") == 5
    steps = [e.step for e in events if e.kind == "step"]
    assert steps == [1, 2, 3, 4, 5]
    assert all(math.isfinite(v) for v in losses(events))
    assert all(e.device == "cpu" and e.blocks_per_s > 0 for e in events if e.kind == "step")
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == 5 and ckpt["config"]["loss"] == loss
    assert ckpt["train_mpp"] == pytest.approx(4.0) and ckpt["block_size"] == 32
    card = __import__("json").loads(card_path(out).read_text())
    assert card["loss"] == loss and card["steps"] == 5 and card["status"] == "done"
    model, meta = load_model(out)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 40, 40)).shape == (1, 40, 40)


def test_resume_reproduces_uninterrupted_run(blocks, tiny_project, tmp_path):
    prior = tiny_project.prior()
    full = losses(
        train(blocks, prior, TrainConfig(steps=8, checkpoint_every=4, **TINY), tmp_path / "full.pt")
    )
    # stop after 4 steps by cancelling at step 5
    stop = threading.Event()
    part = []
    for ev in train(
        blocks,
        prior,
        TrainConfig(steps=8, checkpoint_every=0, **TINY),
        tmp_path / "part.pt",
        cancel=stop,
    ):
        if ev.kind == "step":
            part.append(ev.loss)
            if ev.step == 4:
                stop.set()
    assert len(part) == 4 and load_checkpoint(tmp_path / "part.pt")["step"] == 4
    rest = losses(
        train(
            blocks,
            prior,
            TrainConfig(steps=8, **TINY),
            tmp_path / "part.pt",
            resume=tmp_path / "part.pt",
        )
    )
    assert len(rest) == 4
    # the same float32 arithmetic on the same machine: equal to rounding (a resume that lost
    # the sampler's or the optimiser's state is off by far more)
    np.testing.assert_allclose(part + rest, full, rtol=0, atol=f32_tolerance(full, 16))


def test_cancel_is_honoured_within_one_step(blocks, tiny_project, tmp_path):
    stop = threading.Event()
    seen = []
    for ev in train(
        blocks, tiny_project.prior(), TrainConfig(steps=50, **TINY), tmp_path / "c.pt", cancel=stop
    ):
        seen.append(ev)
        if ev.kind == "step" and ev.step == 2:
            stop.set()
    assert seen[-1].kind == "cancelled" and seen[-1].step == 2
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 2
    card = __import__("json").loads(card_path(tmp_path / "c.pt").read_text())
    assert card["status"] == "cancelled"


def test_nan_loss_stops_and_keeps_last_good_checkpoint(blocks, tiny_project, tmp_path, monkeypatch):
    import napari_lsr.learn.training as tr

    out = tmp_path / "n.pt"
    calls = {"n": 0}
    real = tr.lsr_loss

    def poisoned(*a, **k):
        calls["n"] += 1
        v = real(*a, **k)
        return v * float("nan") if calls["n"] == 4 else v

    monkeypatch.setattr(tr, "lsr_loss", poisoned)
    with pytest.raises(TrainingError, match="nan at step 4") as info:
        for _ in train(
            blocks, tiny_project.prior(), TrainConfig(steps=10, checkpoint_every=2, **TINY), out
        ):
            pass
    assert "step 2" in str(info.value)
    assert load_checkpoint(out)["step"] == 2


def test_recipe_defaults_and_the_paper_preset():
    from napari_lsr.config import LEGACY, PAPER_PRESET, PRESETS

    assert PAPER_LR == {"intra": 1e-5, "inter": 1e-3, "intra+inter": 1e-3}
    c = TrainConfig(loss="intra")
    assert c.learning_rate == 1e-3 and c.batch_size == 30 and c.rmsprop_alpha == 0.9
    assert (c.norm, c.init_bias, c.colour) == ("batch", "prior", 0.0)
    c = TrainConfig(loss="intra+inter")
    assert (c.groups, c.group_size, c.min_group) == (4, 8, 2)
    assert TrainConfig(loss="intra", lr=3e-4).learning_rate == 3e-4
    assert PRESETS[PAPER_PRESET]["lr"] == PAPER_LR and PRESETS[PAPER_PRESET]["norm"] == "channel"
    # a checkpoint written before the recipe resumes with the engine it was trained with
    old = TrainConfig.from_dict({"loss": "intra", "lr": None, "steps": 5})
    assert old.learning_rate == 1e-5
    assert all(getattr(old, k) == v for k, v in LEGACY.items() if k != "lr")


def test_bad_config_and_devices():
    with pytest.raises(TrainingError, match="unknown loss"):
        TrainConfig(loss="dice")
    with pytest.raises(TrainingError, match="steps"):
        TrainConfig(steps=0)
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA"):
            select_device("cuda")


def test_group_size_larger_than_every_bin(blocks, tiny_project, tmp_path):
    cfg = TrainConfig(**{**TINY, "group_size": 10_000})
    with pytest.raises(TrainingError, match="no bin holds a full group"):
        list(train(blocks, tiny_project.prior(), cfg, tmp_path / "g.pt"))


def test_prior_with_too_few_bins(blocks, tmp_path):
    from napari_lsr.io.formats import Bins, Prior

    prior = Prior(Bins(((0, 50), (50, 100))), [1, 50], [1, 5])
    with pytest.raises(TrainingError, match="prior has only 2 bins"):
        list(train(blocks, prior, TrainConfig(**TINY), tmp_path / "p.pt"))


def test_unwritable_checkpoint_dir(blocks, tiny_project, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(TrainingError, match="cannot create the output directory"):
        list(train(blocks, tiny_project.prior(), TrainConfig(**TINY), blocker / "m.pt"))


def test_health_during_training_is_provisional_and_the_last_check_final(
    blocks, tiny_project, tmp_path, monkeypatch
):
    import napari_lsr.learn.training as training

    monkeypatch.setattr(training, "HEALTH_EVERY", 2)
    out = tmp_path / "h.pt"
    events = list(train(blocks, tiny_project.prior(), TrainConfig(steps=5, **TINY), out))
    during = [e.extra["health"] for e in events if e.kind == "step" and "health" in e.extra]
    assert [h["step"] for h in during] == [2, 4] and not any(h["final"] for h in during)
    done = events[-1].extra["health"]
    assert events[-1].kind == "done" and done["final"] and done["step"] is None
    card = __import__("json").loads(card_path(out).read_text())
    assert card["health"]["final"] is True


def striped_blocks(n_per_bin: int = 8, size: int = 16, seed: int = 0):
    """A tiny block set a small U-Net learns in a few dozen steps: each block is pink with a
    purple band (the tumour) over about its bin's fraction; and the prior measured on it."""
    from pathlib import Path

    from napari_lsr.elicit.prior import prior_from_values
    from napari_lsr.io.formats import Bins
    from napari_lsr.learn.blocks import BlockSet

    rng = np.random.default_rng(seed)
    fraction = np.array([0.02, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.92, 0.98])
    images, z, pct = [], [], []
    for b, f0 in enumerate(fraction):
        for _ in range(n_per_bin):
            cols = round(size * np.clip(f0 + rng.normal(0, 0.03), 0, 1))
            im = np.empty((size, size, 3), np.float64)
            im[:] = (235, 170, 200)
            im[:, :cols] = (90, 40, 140)
            images.append(np.clip(im + rng.normal(0, 6, im.shape), 0, 255).astype(np.uint8))
            z.append(b)
            pct.append(100 * cols / size)
    z = np.array(z)
    n = len(z)
    blocks = BlockSet(
        np.stack(images), z, fraction[z], np.zeros(n, int), np.zeros((n, 4), int), ["striped"],
        size, 1.0, Path("."),
    )  # fmt: skip
    return blocks, prior_from_values(Bins(), z, pct)


def _collapse_at_switch(monkeypatch):
    """Make the BatchNorm switch leave the network predicting no cancer anywhere (its head's
    bias at -20: every pixel's sigmoid saturated, no gradient to climb back), as the stale
    switch of issue 22 left a real run."""
    import napari_lsr.learn.training as training

    freeze, done = training._freeze_batch_norm, []

    def broken_switch(model):
        freeze(model)
        if not done:
            done.append(True)
            with torch.no_grad():
                model.head.bias.fill_(-20.0)

    monkeypatch.setattr(training, "_freeze_batch_norm", broken_switch)
    monkeypatch.setattr(training, "HEALTH_EVERY", 10)


#: The striped case: healthy by step 20, the switch (and so the collapse) at step 61, when the
#: loss has the 50 steps of history a jump is measured against; the jump shows at step 62.
STRIPED = {"loss": "intra", "lr": 1e-2, "batch_size": 16, "depth": 2, "width": 4, "ema": 0.0}


def test_a_collapse_is_reported_in_red_at_once_not_at_the_end(tmp_path, monkeypatch):
    import napari_lsr.learn.training as training

    _collapse_at_switch(monkeypatch)
    monkeypatch.setattr(training, "MAX_RECOVERIES", 0)  # no going back: the collapse stays
    blocks, prior = striped_blocks()
    out = tmp_path / "c.pt"
    cfg = TrainConfig(steps=90, bn_freeze=60, **STRIPED)
    events = list(train(blocks, prior, cfg, out))
    alarms = [e for e in events if "alarm" in e.extra]
    assert alarms, "no alarm"
    first = alarms[0]
    # one step after the collapse (the loss's level is a median of 3), 28 before the end
    assert first.step == 62 and first.extra["alarm"]["kind"] == "collapse"
    message = first.extra["alarm"]["message"]
    assert "loss jumped by step 62" in message and "every block predicts under 5%" in message
    # the advice names what differs from the recipe, never the preset it already uses as is
    assert "try the napari-lsr preset (this run differs in lr, ema, batch size" in message
    assert "train longer (this run: 90 steps" in message
    checks = [e.extra["health"] for e in events if "health" in e.extra and e.step < 62]
    assert checks and not checks[-1]["degenerate"]  # it had followed the bins
    done = events[-1].extra["health"]
    assert done["degenerate"] and done["collapsed"]  # the collapse is real: no way back
    card = __import__("json").loads(card_path(out).read_text())
    assert card["alarms"][0]["step"] == 62 and card["recoveries"] == []


def test_a_collapse_goes_back_to_the_last_healthy_weights_visibly(tmp_path, monkeypatch):
    _collapse_at_switch(monkeypatch)
    blocks, prior = striped_blocks()
    out = tmp_path / "r.pt"
    events = list(train(blocks, prior, TrainConfig(steps=90, bn_freeze=60, **STRIPED), out))
    alarm = next(e.extra["alarm"] for e in events if "alarm" in e.extra)
    assert alarm["step"] == 62 and alarm["restored"] == 60
    assert "went back to the healthy weights of step 60" in alarm["message"]
    done = events[-1].extra["health"]
    assert not done["degenerate"], done["message"]
    card = __import__("json").loads(card_path(out).read_text())
    assert [r["restored"] for r in card["recoveries"]] == [60]
    assert card["alarms"][0]["restored"] == 60
    assert load_checkpoint(out)["recoveries"][0]["step"] == 62


def test_the_recipe_switch_warms_the_rate_up_again():
    from napari_lsr.learn.training import _lr_lambda

    cfg = TrainConfig(steps=500, lr_schedule="constant")
    f = _lr_lambda(cfg)
    # steps 1-150 at the full rate; step 151 (factor index 150) is the first frozen step
    assert f(149) == 1.0
    assert f(150) == pytest.approx(cfg.bn_lr / (cfg.bn_rewarm + 1))
    assert f(150 + cfg.bn_rewarm - 1) == pytest.approx(
        cfg.bn_lr * cfg.bn_rewarm / (cfg.bn_rewarm + 1)
    )
    assert f(150 + cfg.bn_rewarm) == pytest.approx(cfg.bn_lr) and f(499) == pytest.approx(0.3)
    old = TrainConfig.from_dict({**cfg.to_dict(), "norm": "batch"} | {"bn_lr": 1.0})
    assert old.bn_lr == 1.0
    # a checkpoint written before the second warm-up resumes as it ran
    legacy = {
        k: v for k, v in cfg.to_dict().items() if k not in ("bn_rewarm", "bn_lr", "bn_precise")
    }
    assert TrainConfig.from_dict(legacy).bn_rewarm == 0 and TrainConfig.from_dict(legacy).bn_lr == 1
