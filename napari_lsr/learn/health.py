"""Model health without ground truth: does the predicted cancer fraction follow the bins?

During and after training, the model's predicted cancer fraction on the training blocks is
compared, bin by bin, with the prior's mean and std. A model that learnt the labels predicts
low fractions in low bins and high ones in high bins; a degenerate one predicts the same
everywhere (all blocks below 5 % or above 95 %), fractions that do not rise with the bin
(a rank correlation between bin and predicted fraction below 0.5), fractions that rise with
the bins but sit far from the prior in every bin (calibration: a block's bin mean is on average
more than 2 prior standard deviations from the prior's mean), in total under half or over twice
the cancer the prior expects in those blocks (cancer ratio), or fractions that rise with the
bins but barely (slope: the bins' predicted means spread less than a quarter as much as the
prior's). No pixel truth is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Below this rank correlation between bin and predicted fraction a run is degenerate.
MIN_RANK_CORRELATION = 0.5
#: A run whose blocks all predict below LOW or all above HIGH (fractions) is degenerate.
LOW, HIGH = 0.05, 0.95
#: Above this calibration error (see :func:`calibration_error`) a run is degenerate. On the
#: real-tissue benchmark (BENCHMARKS.md) the recipe's runs measured 0.26-1.15 and the paper
#: preset's 2.2-4.2 (masked DICE 0.765, 0 and 0).
MAX_CALIBRATION_ERROR = 2.0
#: Below this slope (see :func:`slope`) a run is degenerate: its bins' predicted means barely
#: rise with the prior's. On the benchmarks (BENCHMARKS.md) the 72 runs that beat their block
#: labels measured 0.68-1.04, and the lowest of any run that found cancer 0.43; the paper
#: preset's intra run that predicted none (masked DICE 0) measured 0.01 with a rank
#: correlation of 0.61, and the printed ``paper`` distance's runs 0.00.
MIN_SLOPE = 0.25
#: Outside these bounds of the cancer ratio (see :func:`cancer_ratio`) a run is degenerate. On
#: the real-tissue benchmark and the synthetic sample the 72 runs that beat their block labels
#: measured 0.81-1.27; the two runs that predicted no cancer and passed the other rules, 0.27
#: and 0.48.
CANCER_RATIO = (0.5, 2.0)
#: A bin's prior std is taken as at least this (fraction) when measuring calibration, so a
#: bin estimated with one value (std 0) does not make every small deviation count as huge.
MIN_PRIOR_STD = 0.05
#: What to try when a run is degenerate and nothing more specific is known (one line, shown
#: by the widget, the CLI and the card); training replaces it with advice that names what
#: differs from the recipe (``Health.advice``).
ADVICE = (
    "try the napari-lsr preset (BatchNorm, lr 1e-3), more steps, or check the prior: "
    "its means must rise with the bins"
)
#: A loss whose level (the median of the last JUMP_LAST steps) rises over the mean of the
#: JUMP_WINDOW steps before by more than MAX_JUMP of their stds has jumped (BENCHMARKS.md,
#: issue 22: the BatchNorm switch of session 6 made jumps of 50 and more; see loss_jump).
MAX_JUMP = 10.0
JUMP_WINDOW = 50
#: The loss's level is the median of this many last steps (see :func:`loss_jump`).
JUMP_LAST = 3


@dataclass
class BinHealth:
    bin: int
    n: int
    pred_mean: float  # predicted cancer fraction, mean over the bin's blocks (0..1)
    pred_std: float
    prior_mean: float  # the prior's eta and rho for the bin (0..1)
    prior_std: float


@dataclass
class Health:
    """Per-bin predicted fractions against the prior, and the verdict."""

    bins: list[BinHealth] = field(default_factory=list)
    rank_correlation: float = math.nan
    calibration_error: float = math.nan
    slope: float = math.nan
    cancer_ratio: float = math.nan
    degenerate: bool = False
    reason: str = ""
    #: Every block under LOW or over HIGH: the model predicts no cancer (or only cancer).
    collapsed: bool = False
    #: What to try, when degenerate (set by training from its settings; else ADVICE).
    advice: str = ""
    #: A check during training (``final`` False, at ``step``) is provisional: early in a run
    #: a healthy model has not learnt the bins yet, so it is reported, not flagged.
    final: bool = True
    step: int | None = None

    @property
    def message(self) -> str:
        """One line for the user."""
        rho = "n/a" if math.isnan(self.rank_correlation) else f"{self.rank_correlation:.2f}"
        if self.degenerate and not self.final:
            return (
                f"not following the bins yet at step {self.step}: {self.reason} "
                "(the verdict comes when the run ends)"
            )
        if self.degenerate:
            return f"degenerate model: {self.reason}; {self.advice or ADVICE}"
        cal = (
            ""
            if math.isnan(self.calibration_error)
            else f"; {self.calibration_error:.2f} prior std from the prior's means"
        )
        slope = "" if math.isnan(self.slope) else f", slope {self.slope:.2f}"
        found = (
            ""
            if math.isnan(self.cancer_ratio)
            else f"; {self.cancer_ratio:.0%} of the cancer the prior expects"
        )
        return (
            f"healthy: predicted cancer follows the bins (rank correlation {rho}{slope}{cal}"
            f"{found})"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["message"] = self.message
        for key in ("rank_correlation", "calibration_error", "slope", "cancer_ratio"):
            if math.isnan(d[key]):
                d[key] = None
        return d


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either is constant."""
    from scipy.stats import rankdata

    if len(a) < 3:
        return math.nan
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def calibration_error(rows: list[BinHealth]) -> float:
    """How far the predicted fractions sit from the prior: over blocks, the mean distance
    between their bin's predicted mean and the prior's mean, in the bin's prior standard
    deviations (at least :data:`MIN_PRIOR_STD`). NaN without blocks."""
    n = sum(r.n for r in rows)
    if n == 0:
        return math.nan
    return (
        sum(r.n * abs(r.pred_mean - r.prior_mean) / max(r.prior_std, MIN_PRIOR_STD) for r in rows)
        / n
    )


def cancer_ratio(rows: list[BinHealth]) -> float:
    """The cancer the model predicts in the checked blocks over the cancer the prior expects
    there (the sum of their bins' means): 1 when it finds as much as the prior says. NaN when
    the prior expects none."""
    expected = sum(r.n * r.prior_mean for r in rows)
    if expected < 1e-9:
        return math.nan
    return sum(r.n * r.pred_mean for r in rows) / expected


def slope(rows: list[BinHealth]) -> float:
    """How much the predicted fractions rise with the prior: the least-squares slope of the
    bins' predicted means on the prior's means, each bin weighted by its blocks (1: they rise
    as the prior does, 0: flat). NaN when the bins' prior means do not differ."""
    n = np.array([r.n for r in rows], np.float64)
    if n.sum() == 0:
        return math.nan
    w = n / n.sum()
    pred = np.array([r.pred_mean for r in rows])
    prior = np.array([r.prior_mean for r in rows])
    dp = prior - (w * prior).sum()
    var = float((w * dp * dp).sum())
    if var < 1e-12:
        return math.nan
    return float((w * dp * (pred - (w * pred).sum())).sum() / var)


def assess(fractions: np.ndarray, z: np.ndarray, eta: np.ndarray, rho: np.ndarray) -> Health:
    """Health of predicted block fractions ``fractions`` (0..1) of blocks in bins ``z``."""
    fractions = np.asarray(fractions, dtype=np.float64)
    z = np.asarray(z, dtype=np.int64)
    eta, rho = np.asarray(eta, np.float64), np.asarray(rho, np.float64)
    rows = []
    for b in range(len(eta)):
        v = fractions[z == b]
        if len(v):
            rows.append(
                BinHealth(b, len(v), float(v.mean()), float(v.std()), float(eta[b]), float(rho[b]))
            )
    h = Health(bins=rows)
    if len(fractions) == 0:
        h.degenerate, h.reason = True, "no blocks to check"
        return h
    h.rank_correlation = _rank_correlation(z, fractions)
    h.calibration_error = calibration_error(rows)
    h.slope = slope(rows)
    h.cancer_ratio = cancer_ratio(rows)
    if fractions.max() < LOW:
        h.degenerate, h.collapsed = True, True
        h.reason = f"every block predicts under {LOW:.0%} cancer"
    elif fractions.min() > HIGH:
        h.degenerate, h.collapsed = True, True
        h.reason = f"every block predicts over {HIGH:.0%} cancer"
    elif len(np.unique(z)) > 1 and not h.rank_correlation >= MIN_RANK_CORRELATION:
        rc = "undefined" if math.isnan(h.rank_correlation) else f"{h.rank_correlation:.2f}"
        h.degenerate = True
        h.reason = (
            f"predicted cancer does not follow the bins (rank correlation {rc}, "
            f"under {MIN_RANK_CORRELATION})"
        )
    elif h.calibration_error > MAX_CALIBRATION_ERROR:
        h.degenerate = True
        h.reason = (
            f"predicted cancer is {h.calibration_error:.1f} prior std from the prior's means "
            f"(over {MAX_CALIBRATION_ERROR:g})"
        )
    elif h.cancer_ratio < CANCER_RATIO[0] or h.cancer_ratio > CANCER_RATIO[1]:  # NaN passes
        h.degenerate = True
        h.reason = (
            f"it predicts {h.cancer_ratio:.0%} of the cancer the prior expects in the "
            f"training blocks (outside {CANCER_RATIO[0]:.0%}-{CANCER_RATIO[1]:.0%})"
        )
    elif h.slope < MIN_SLOPE:
        top = max(rows, key=lambda r: r.prior_mean)
        h.degenerate = True
        h.reason = (
            f"predicted cancer barely rises with the bins (slope {h.slope:.2f} on the prior's "
            f"means, under {MIN_SLOPE:g}; bin {top.bin}: {top.pred_mean:.0%} against "
            f"{top.prior_mean:.0%})"
        )
    return h


def sample_blocks(z: np.ndarray, per_bin: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``per_bin`` blocks of every bin (fixed for a run: same every check)."""
    rng = np.random.default_rng(seed)
    out = []
    for b in np.unique(z):
        m = np.flatnonzero(z == b)
        out.append(np.sort(rng.choice(m, size=min(per_bin, len(m)), replace=False)))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def block_fractions(model: Any, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Mean predicted probability of each (N, S, S, 3) uint8 block, the model in eval mode."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        with torch.inference_mode():
            for a in range(0, len(images), batch):
                x = torch.from_numpy(np.asarray(images[a : a + batch], np.float32) / 255.0)
                x = x.permute(0, 3, 1, 2).to(device)
                out.append(torch.sigmoid(model(x).float()).mean(dim=(1, 2)).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def check_model(model: Any, blocks: Any, eta: np.ndarray, rho: np.ndarray, per_bin: int = 32):
    """Health of a model on (a fixed sample of) its training blocks."""
    idx = sample_blocks(blocks.z, per_bin)
    fr = block_fractions(model, np.asarray(blocks.images[idx]))
    return assess(fr, blocks.z[idx], eta, rho)


def loss_jump(history: Sequence[float], window: int = JUMP_WINDOW, last: int = JUMP_LAST) -> float:
    """How far the loss has risen: the median of the ``last`` losses over the mean of the
    ``window`` losses before them, in their stds (0 when it has not risen); NaN while there
    are fewer than ``window + last`` losses. The median makes it a level that moved, not one
    batch: a batch holding a block the model gets badly wrong in a bin with a narrow prior
    costs one step (single steps of up to 13 spreads in healthy runs, BENCHMARKS.md), a
    jump lasts."""
    if len(history) < window + last:
        return math.nan
    h = np.asarray(history[-window - last :], np.float64)
    before = h[:window]
    spread = max(float(before.std()), 1e-6)
    return max(0.0, float(np.median(h[window:]) - before.mean()) / spread)


@dataclass
class Alarm:
    """Something went wrong during a run, reported at once (red), not at its end."""

    step: int
    kind: str  # "loss jump" or "collapse"
    message: str
    #: The step whose weights the run went back to (automatic recovery), None when it did not.
    restored: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Watch:
    """Watches a run as it goes, with no ground truth: a loss that jumps (MAX_JUMP spreads of
    the last JUMP_WINDOW steps), and predictions that fall to no cancer (or all cancer) in
    every block after the model had followed the bins."""

    def __init__(self, window: int = JUMP_WINDOW, max_jump: float = MAX_JUMP) -> None:
        self.window, self.max_jump = window, max_jump
        self.losses: list[float] = []
        self.followed = False  # a check found the model healthy
        self.jumping = False  # the loss is up after a jump (already reported)

    def loss(self, step: int, value: float) -> Alarm | None:
        """Record a step's loss; an alarm when it jumped."""
        self.losses.append(float(value))
        del self.losses[: -self.window - JUMP_LAST]
        jump = loss_jump(self.losses, self.window)
        if jump > self.max_jump and not self.jumping:
            self.jumping = True  # one alarm per jump
            before = float(np.mean(self.losses[: self.window]))
            return Alarm(
                step,
                "loss jump",
                f"the loss jumped by step {step} (from about {before:.3g} to "
                f"{float(np.median(self.losses[-JUMP_LAST:])):.3g}, {jump:.0f} times its "
                "recent spread)",
            )
        if not jump > self.max_jump:
            self.jumping = False
        return None

    def health(self, step: int, h: Health) -> Alarm | None:
        """Record a check; an alarm when the model collapsed after following the bins."""
        if not h.degenerate:
            self.followed = True
            return None
        if h.collapsed and self.followed:
            return Alarm(step, "collapse", f"at step {step} {h.reason}, after following the bins")
        return None

    def restart(self) -> None:
        """Forget the losses (after the run went back to earlier weights)."""
        self.losses.clear()
        self.jumping = False
