"""The p(c|z) table: built from estimates or measured fractions, compared, checked, flagged."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .formats import Bins, Prior, paper_prior

#: A bin's std when it has fewer than two estimates (percent), so training still has a width.
FALLBACK_STD_PCT = 1.0


def prior_from_values(
    bins: Bins, z: Iterable[int], pct: Iterable[float], fallback: Prior | None = None
) -> Prior:
    """Mean, std (population, ddof=0) and n of percentages per bin.

    Bins with no value take the ``fallback`` prior's row (default: the paper's Table 1 when it
    has the same bins, else 0 ± FALLBACK_STD_PCT) and n = 0.
    """
    z = np.asarray(list(z), dtype=np.int64)
    pct = np.asarray(list(pct), dtype=np.float64)
    nb = len(bins)
    if fallback is None:
        paper = paper_prior()
        fallback = paper if paper.bins == bins else None
    mean = np.zeros(nb)
    std = np.full(nb, FALLBACK_STD_PCT)
    n = np.zeros(nb)
    for b in range(nb):
        v = pct[z == b]
        n[b] = len(v)
        if len(v):
            mean[b] = v.mean()
            std[b] = v.std() if len(v) > 1 else FALLBACK_STD_PCT
        elif fallback is not None:
            mean[b] = fallback.mean_pct[b]
            std[b] = fallback.std_pct[b]
    return Prior(bins, mean, std, n)


@dataclass(frozen=True)
class PriorFlags:
    """What a reviewer should look at before training with a prior."""

    few_estimates: list[int]  # bins with fewer than 2 estimates
    not_monotonic: list[int]  # bins whose mean is below the previous bin's mean

    def messages(self, bins: Bins) -> list[str]:
        out = [f"bin {bins.labels[b]} %: fewer than 2 estimates" for b in self.few_estimates]
        out += [
            f"bin {bins.labels[b]} %: mean is lower than the bin below (not monotonic)"
            for b in self.not_monotonic
        ]
        return out


def check_prior(prior: Prior) -> PriorFlags:
    """Flag bins with fewer than two estimates and means that fall as the bin rises."""
    n = np.nan_to_num(prior.n, nan=np.inf)
    few = [int(b) for b in np.flatnonzero(n < 2)]
    drops = [int(b) for b in range(1, len(prior.bins)) if prior.mean_pct[b] < prior.mean_pct[b - 1]]
    return PriorFlags(few, drops)


def agreement(
    estimates: Iterable[tuple[int, int, str, float]], n_bins: int
) -> list[dict[str, float]]:
    """Inter-annotator agreement per bin from (block_id, bin, annotator, percent) tuples.

    For each bin: the number of blocks with two or more annotators, the mean absolute
    difference between annotators over those blocks (pairwise, in percent points), and the
    one-way random-effects ICC(1,1) over them (NaN when undefined).
    """
    per_block: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    for block_id, z, annotator, pct in estimates:
        per_block[(z, block_id)][annotator] = float(pct)
    out = []
    for b in range(n_bins):
        groups = [list(v.values()) for (z, _), v in per_block.items() if z == b and len(v) >= 2]
        mad = np.nan
        icc = np.nan
        if groups:
            diffs = [abs(a - c) for g in groups for i, a in enumerate(g) for c in g[i + 1 :]]
            mad = float(np.mean(diffs))
            icc = _icc1(groups)
        out.append({"bin": b, "blocks": len(groups), "mean_abs_diff": mad, "icc": icc})
    return out


def _icc1(groups: list[list[float]]) -> float:
    """ICC(1,1) for targets with possibly unequal numbers of ratings (one-way ANOVA)."""
    k_i = np.array([len(g) for g in groups], dtype=np.float64)
    n = len(groups)
    if n < 2:
        return float("nan")
    allv = np.concatenate([np.asarray(g, float) for g in groups])
    grand = allv.mean()
    means = np.array([np.mean(g) for g in groups])
    ssb = float(np.sum(k_i * (means - grand) ** 2))
    ssw = float(sum(np.sum((np.asarray(g) - m) ** 2) for g, m in zip(groups, means)))
    dfb, dfw = n - 1, float(k_i.sum() - n)
    if dfw <= 0:
        return float("nan")
    msb, msw = ssb / dfb, ssw / dfw
    k0 = (k_i.sum() - np.sum(k_i**2) / k_i.sum()) / (n - 1)
    denom = msb + (k0 - 1) * msw
    return float((msb - msw) / denom) if denom > 0 else float("nan")


def apply_edits(prior: Prior, edits: dict[int, tuple[float, float, str, float]]) -> Prior:
    """A copy of ``prior`` with per-bin (mean, std) edits applied."""
    mean = prior.mean_pct.copy()
    std = prior.std_pct.copy()
    for b, (m, s, *_rest) in edits.items():
        if 0 <= b < len(prior.bins):
            mean[b], std[b] = m, s
    return Prior(prior.bins, mean, std, prior.n.copy())
