"""Model health without ground truth: a constant model is flagged, one following the bins passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_lsr.learn.health import assess, block_fractions, check_model, sample_blocks

ETA = np.linspace(0.02, 0.9, 10)
RHO = np.full(10, 0.1)


class _Constant(torch.nn.Module):
    """Predicts the same logit everywhere."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = torch.nn.Parameter(torch.tensor(float(logit)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit.expand(x.shape[0], x.shape[2], x.shape[3])


class _Redness(torch.nn.Module):
    """Predicts cancer where the red channel is high: follows blocks painted by bin."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * (x[:, 0] - 0.5)


class _Blocks:
    def __init__(self, images: np.ndarray, z: np.ndarray) -> None:
        self.images, self.z = images, z


def _blocks_following_bins(n_per_bin: int = 6, size: int = 16) -> _Blocks:
    """Blocks whose red fraction is the bin's eta: a model reading red follows the bins."""
    rng = np.random.default_rng(0)
    images, z = [], []
    for b, eta in enumerate(ETA):
        for _ in range(n_per_bin):
            img = np.zeros((size, size, 3), np.uint8)
            red = rng.random((size, size)) < eta
            img[red, 0] = 255
            images.append(img)
            z.append(b)
    return _Blocks(np.stack(images), np.array(z))


def test_constant_models_are_degenerate() -> None:
    blocks = _blocks_following_bins()
    for logit, word in ((-8.0, "under"), (8.0, "over")):
        h = check_model(_Constant(logit), blocks, ETA, RHO)
        assert h.degenerate
        assert word in h.reason
        assert h.message.startswith("degenerate model:") and "try" in h.message
        assert "\n" not in h.message


def test_a_model_that_follows_the_bins_is_healthy() -> None:
    blocks = _blocks_following_bins()
    h = check_model(_Redness(), blocks, ETA, RHO)
    assert not h.degenerate, h.message
    assert h.rank_correlation > 0.9
    assert [r.bin for r in h.bins] == list(range(10))
    pred = np.array([r.pred_mean for r in h.bins])
    assert np.all(np.abs(pred - ETA) < 0.15)
    d = h.to_dict()
    assert d["message"].startswith("healthy") and len(d["bins"]) == 10


def test_fractions_that_do_not_rise_with_the_bins_are_degenerate() -> None:
    z = np.repeat(np.arange(10), 5)
    rng = np.random.default_rng(1)
    h = assess(rng.uniform(0.2, 0.8, size=len(z)), z, ETA, RHO)
    assert h.degenerate and "rank correlation" in h.reason
    falling = assess(1 - (z + 0.5) / 10, z, ETA, RHO)
    assert falling.degenerate and falling.rank_correlation < 0


def test_block_fractions_keep_the_training_mode_and_sample_is_fixed() -> None:
    m = _Redness().train()
    images = np.zeros((3, 8, 8, 3), np.uint8)
    fr = block_fractions(m, images)
    assert m.training and fr.shape == (3,)
    z = np.array([0, 0, 0, 1, 1, 2])
    a, b = sample_blocks(z, 2), sample_blocks(z, 2)
    assert np.array_equal(a, b) and np.bincount(z[a]).tolist() == [2, 2, 1]


def test_fractions_that_follow_the_bins_far_from_the_prior_are_degenerate() -> None:
    """All bins predicted low, in the right order (the 0.598 seed of BENCHMARKS.md's ablation):
    the rank correlation passes, the calibration error does not."""
    z = np.repeat(np.arange(10), 5)
    low = ETA[z] * 0.2  # a fifth of the prior's mean in every bin
    h = assess(low, z, ETA, RHO)
    assert h.rank_correlation > 0.9
    assert h.calibration_error > 2
    assert h.degenerate and "prior std" in h.reason and "try" in h.message
    near = assess(np.clip(ETA[z] + 0.05, 0, 1), z, ETA, RHO)  # half a std off: healthy
    assert not near.degenerate, near.message
    assert near.calibration_error == pytest.approx(0.5)
    assert "prior std" in near.message and near.to_dict()["calibration_error"] == pytest.approx(0.5)


def test_a_one_value_bin_does_not_count_tiny_deviations_as_huge() -> None:
    z = np.repeat(np.arange(10), 5)
    rho = np.zeros(10)  # every bin estimated from one value
    h = assess(np.clip(ETA[z] + 0.02, 0, 1), z, ETA, rho)
    assert h.calibration_error == pytest.approx(0.02 / 0.05)
    assert not h.degenerate


def test_a_nearly_flat_model_is_degenerate() -> None:
    """21-23 % in every bin (the screenshot run of session 5): the bins are in order and the
    calibration error stays under 2 prior std, but the predictions barely rise: the slope
    flags it, while a model that follows the prior at half its spread passes."""
    z = np.repeat(np.arange(10), 5)
    eta = np.linspace(0.02, 0.5, 10)
    rho = np.full(10, 0.2)
    flat = assess(0.21 + 0.002 * z, z, eta, rho)
    assert flat.rank_correlation > 0.9 and flat.calibration_error < 2
    assert flat.slope < 0.1
    assert flat.degenerate and "slope" in flat.reason and "try" in flat.message
    half = assess(eta.mean() + 0.5 * (eta[z] - eta.mean()), z, eta, rho)
    assert half.slope == pytest.approx(0.5)
    assert not half.degenerate, half.message
    assert "slope 0.50" in half.message and half.to_dict()["slope"] == pytest.approx(0.5)
    one_bin = assess(np.full(5, 0.3), np.zeros(5, np.int64), eta, rho)
    assert np.isnan(one_bin.slope) and one_bin.to_dict()["slope"] is None


def test_a_model_that_finds_a_fraction_of_the_expected_cancer_is_degenerate() -> None:
    """Every bin under the prior, in order, within 2 prior std on average (the synthetic
    intra-first run of BENCHMARKS.md that predicted no cancer): it finds a quarter of the
    cancer the prior expects, which flags it; 0.9-1.1 of it passes."""
    z = np.repeat(np.arange(10), 5)
    eta = np.array([0.03, 0.07, 0.08, 0.2, 0.2, 0.25, 0.3, 0.36, 0.51, 0.78])
    rho = np.full(10, 0.25)
    pred = np.array([0.0, 0.0, 0.0, 0.03, 0.06, 0.07, 0.07, 0.13, 0.18, 0.22])
    h = assess(pred[z], z, eta, rho)
    assert h.rank_correlation > 0.8 and h.calibration_error < 2 and h.slope > 0.25
    assert h.cancer_ratio == pytest.approx(pred.sum() / eta.sum())
    assert h.degenerate and "of the cancer the prior expects" in h.reason
    for scale in (0.9, 1.1):
        ok = assess(np.clip(eta[z] * scale, 0, 1), z, eta, rho)
        assert not ok.degenerate, ok.message
        assert f"{scale:.0%} of the cancer" in ok.message
    none_expected = assess(np.full(5, 0.1), np.zeros(5, np.int64), np.zeros(10), rho)
    assert np.isnan(none_expected.cancer_ratio) and not none_expected.degenerate


def test_a_check_during_training_is_provisional() -> None:
    """Early in a healthy run the model has not learnt the bins yet: the check says so without
    calling the model degenerate or advising another preset; the final check does."""
    z = np.repeat(np.arange(10), 5)
    flat = assess(np.full(len(z), 0.2), z, ETA, RHO)
    assert flat.degenerate and flat.final
    flat.final, flat.step = False, 50
    msg = flat.message
    assert msg.startswith("not following the bins yet at step 50: ") and "verdict" in msg
    assert "degenerate model" not in msg and "try" not in msg
    d = flat.to_dict()
    assert d["final"] is False and d["step"] == 50 and d["degenerate"] and d["message"] == msg


def test_loss_jumps_are_measured_against_the_recent_spread() -> None:
    from napari_lsr.learn.health import JUMP_WINDOW, MAX_JUMP, Watch, loss_jump

    rng = np.random.default_rng(0)
    noise = list(1.0 + 0.1 * rng.standard_normal(JUMP_WINDOW))
    assert np.isnan(loss_jump([*noise, 1.0, 1.0]))  # too little history
    assert loss_jump([*noise, -4.0, -4.0, -4.0]) == 0.0  # a fall is no jump
    mean, spread = np.mean(noise), np.std(noise)
    assert loss_jump([*noise, 0.0, mean + 3 * spread, mean + 4 * spread]) == pytest.approx(3.0)
    # one hard batch is no jump: the level (median of the last 3 steps) did not move
    assert loss_jump([*noise, mean, mean + 50 * spread, mean]) == 0.0
    watch = Watch()
    # 2000 steps of noisy, slowly falling loss with a few single-batch spikes: no alarm
    series = 1.0 - np.linspace(0, 0.5, 2000) + 0.1 * rng.standard_normal(2000)
    series[[300, 900, 1500]] += 3.0
    assert all(watch.loss(i + 1, v) is None for i, v in enumerate(series))
    up = series[-1] + (MAX_JUMP + 5) * 0.1
    assert watch.loss(2001, up) is None  # one step up: not yet a level
    alarm = watch.loss(2002, up)
    assert alarm is not None and alarm.kind == "loss jump" and alarm.step == 2002
    assert "the loss jumped by step 2002" in alarm.message
    assert watch.loss(2003, up) is None  # one alarm per jump
    watch.restart()
    assert watch.loss(2004, 100.0) is None  # after going back: no history, no verdict


def test_a_collapse_alarms_only_after_the_model_followed_the_bins() -> None:
    from napari_lsr.learn.health import Watch

    z = np.repeat(np.arange(10), 3)
    nothing = assess(np.full(len(z), 0.01), z, ETA, RHO)
    assert nothing.degenerate and nothing.collapsed
    watch = Watch()
    assert watch.health(50, nothing) is None  # early: not learnt yet, not a collapse
    healthy = assess(ETA[z], z, ETA, RHO)
    assert not healthy.collapsed and watch.health(100, healthy) is None
    alarm = watch.health(150, nothing)
    assert alarm is not None and alarm.kind == "collapse" and alarm.step == 150
    assert "every block predicts under 5% cancer, after following the bins" in alarm.message
    everything = assess(np.full(len(z), 0.99), z, ETA, RHO)
    assert everything.collapsed and watch.health(200, everything).kind == "collapse"
    flat = assess(np.full(len(z), 0.4), z, ETA, RHO)
    assert flat.degenerate and not flat.collapsed and watch.health(250, flat) is None


def test_falling_bins_ignore_bins_without_blocks() -> None:
    from napari_lsr.elicit.prior import check_prior
    from napari_lsr.io.formats import Bins, Prior

    eta = [0.0, 0.04, 0.02, 0.05, 0.06, 0.35, 0.10, 0.50, 0.20, 0.94]
    prior = Prior(Bins(), [100 * e for e in eta], [1.0] * 10)

    def falling_bins(present: list[int]) -> list[int]:
        empty = set(range(10)) - set(present)
        return check_prior(prior, empty_bins=empty).not_monotonic

    assert falling_bins([0, 1, 2, 5, 6, 7, 8, 9]) == [2, 6, 8]
    assert falling_bins([0, 1, 5, 7, 9]) == []  # 2, 6 and 8 hold no blocks
    assert falling_bins([3]) == []


def test_degenerate_advice_names_what_differs_never_the_settings_in_use() -> None:
    from napari_lsr.config import PAPER_PRESET, PRESETS, TrainConfig
    from napari_lsr.elicit.prior import prior_from_values
    from napari_lsr.io.formats import Bins
    from napari_lsr.learn.training import advice, recipe_differences

    z = np.repeat(np.arange(10), 30)
    rising = prior_from_values(Bins(), z, 100 * ETA[z])
    tip = advice(TrainConfig(seed=3), rising, z, 500)
    assert tip == "try another seed (this run: 3)"  # the recipe: no preset, no prior, no steps
    assert recipe_differences(TrainConfig()) == []
    paper = PRESETS[PAPER_PRESET]
    cfg = TrainConfig(
        loss="intra", lr=paper["lr"]["intra"], norm="channel", lr_schedule="constant", ema=0.0
    )
    tip = advice(cfg, rising, z[:60], 100)
    assert tip.startswith("try the napari-lsr preset (this run differs in lr, lr schedule, ema")
    assert "add slides: 60 training blocks is few" in tip
    assert "train longer (this run: 100 steps; the default is 500)" in tip
    pct = 100 * ETA[z]
    pct[z == 6] = 1.0  # a bin left at a low value: the prior falls there
    tip = advice(TrainConfig(), prior_from_values(Bins(), z, pct), z, 500)
    assert "check the prior: its mean falls in bin 70-80" in tip
