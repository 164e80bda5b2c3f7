"""The p(c|z) table: built from estimates, edits or measured fractions, checked and flagged."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..io.formats import (
    FALLBACK_STD_PCT,
    PRIOR_NOT_DATA,
    Bins,
    FormatError,
    Prior,
    default_prior,
    read_prior_csv,
)
from .certainty import SPREAD_PCT, pooled_spread

#: The spread given to a bin with a single value: one value says where the bin's mean is but
#: nothing of how its blocks spread, so the bin takes a typical within-bin spread rather than
#: none (a spread of 0 tells the losses every block of the bin holds exactly that much cancer,
#: and the health check then calls a good model degenerate: BENCHMARKS.md, issue 25).
ONE_VALUE_STD_PCT = SPREAD_PCT
#: Sources whose rows carry a pooled spread (``certainty.pooled_spread``): estimates by eye;
#: rows of other sources keep their values' own spread.
POOLED_SOURCES = ("reviewed",)

if TYPE_CHECKING:
    from ..io.project import Project


def prior_from_values(
    bins: Bins,
    z: Iterable[int],
    pct: Iterable[float],
    fallback: Prior | None = None,
    source: str = "measured",
) -> Prior:
    """Mean, std and n of percentages per bin.

    Bins with values get ``source`` (``measured``, or ``reviewed`` for block-review estimates).
    A measured bin's std is its values' (population, ddof=0). A reviewed bin's std is its
    estimates' pooled with a typical within-bin spread (``certainty.pooled_spread``, the rule
    Block review's certainty uses): a few estimates by eye, rounded to 5, spread less than the
    bin's blocks do, and too narrow a spread costs the model (BENCHMARKS.md, issue 25).
    A bin with a single value gets the spread :data:`ONE_VALUE_STD_PCT`.
    Bins with no value take the ``fallback`` prior's row and source (default: the paper's
    Table 1 when it has the same bins, else 0 ± FALLBACK_STD_PCT, source ``default``) and
    n = 0.
    """
    z = np.asarray(list(z), dtype=np.int64)
    pct = np.asarray(list(pct), dtype=np.float64)
    nb = len(bins)
    if fallback is None:
        fallback = default_prior(bins)
    mean = np.zeros(nb)
    std = np.full(nb, FALLBACK_STD_PCT)
    n = np.zeros(nb)
    sources = ["default"] * nb
    for b in range(nb):
        v = pct[z == b]
        n[b] = len(v)
        if len(v):
            mean[b] = v.mean()
            if len(v) < 2:
                std[b] = ONE_VALUE_STD_PCT
            elif source in POOLED_SOURCES:
                std[b] = pooled_spread(float(v.std()), len(v))
            else:
                std[b] = v.std()
            sources[b] = source
        else:
            mean[b] = fallback.mean_pct[b]
            std[b] = fallback.std_pct[b]
            sources[b] = fallback.source[b]
    return Prior(bins, mean, std, n, source=sources)


def fill_missing(prior: Prior, saved: Prior | None, keep: Iterable[str] = ("measured",)) -> Prior:
    """``prior`` with its bins without estimates (n = 0) taken from ``saved``'s row where that
    row's source is in ``keep``: reviewing some bins keeps the values measured for the others.

    Rows of other sources are not carried over: estimates and edits live in the project's
    store, so a saved ``reviewed`` or ``edited`` row whose estimates or edit are gone shows the
    paper's value (and saving asks before replacing it).
    """
    if saved is None or saved.bins != prior.bins:
        return prior
    keep = tuple(keep)
    mean, std, n = prior.mean_pct.copy(), prior.std_pct.copy(), prior.n.copy()
    source = list(prior.source)
    for b in range(len(prior.bins)):
        if not (n[b] > 0) and saved.source[b] in keep:
            mean[b], std[b], n[b], source[b] = (
                saved.mean_pct[b],
                saved.std_pct[b],
                saved.n[b],
                saved.source[b],
            )
    return Prior(prior.bins, mean, std, n, source=source)


def _same_row(a: Prior, b: Prior, i: int) -> bool:
    """Rows equal as prior.csv writes them (4 significant digits)."""
    return (
        f"{a.mean_pct[i]:.4g}" == f"{b.mean_pct[i]:.4g}"
        and f"{a.std_pct[i]:.4g}" == f"{b.std_pct[i]:.4g}"
        and a.source[i] == b.source[i]
    )


def row_text(prior: Prior, b: int) -> str:
    """``77.75 ± 15.74 % measured, n = 32``: a row as the Prior table's preview shows it."""
    n = prior.n[b]
    count = f", n = {int(n)}" if n > 0 else ""
    return f"{prior.mean_pct[b]:.4g} ± {prior.std_pct[b]:.4g} % {prior.source[b]}{count}"


def save_changes(saved: Prior | None, new: Prior) -> list[str]:
    """Per bin, what saving ``new`` over ``saved`` changes ("" where nothing does)."""
    nb = len(new.bins)
    if saved is None or saved.bins != new.bins:
        return ["new file"] * nb
    return [
        "" if _same_row(saved, new, b) else f"{row_text(saved, b)} → {row_text(new, b)}"
        for b in range(nb)
    ]


def paper_replacements(saved: Prior | None, new: Prior) -> list[int]:
    """Bins where saving ``new`` would replace a value from this data (reviewed, measured or
    edited) in ``saved`` with the paper's (or a default): the save asks first."""
    if saved is None or saved.bins != new.bins:
        return []
    return [
        b
        for b in range(len(new.bins))
        if saved.source[b] not in PRIOR_NOT_DATA
        and new.source[b] in PRIOR_NOT_DATA
        and not _same_row(saved, new, b)
    ]


@dataclass(frozen=True)
class PriorFlags:
    """What a reviewer should look at before training with a prior."""

    few_estimates: list[int]  # bins with fewer than 2 estimates
    not_monotonic: list[int]  # bins whose mean is below the previous bin's mean


def check_prior(prior: Prior, empty_bins: Iterable[int] = ()) -> PriorFlags:
    """Flag bins with fewer than two estimates and means that fall as the bin rises.

    ``empty_bins`` (bins no block of the project falls in: nothing to review, nothing to
    train) are never flagged, and a mean is compared with the nearest lower bin that has
    blocks.
    """
    empty = {int(b) for b in empty_bins}
    n = np.nan_to_num(prior.n, nan=np.inf)
    few = [int(b) for b in np.flatnonzero(n < 2) if int(b) not in empty]
    drops = []
    previous: int | None = None
    for b in range(len(prior.bins)):
        if b in empty:
            continue
        if previous is not None and prior.mean_pct[b] < prior.mean_pct[previous]:
            drops.append(b)
        previous = b
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
    """A copy of ``prior`` with per-bin (mean, std) edits applied (source ``edited``)."""
    mean = prior.mean_pct.copy()
    std = prior.std_pct.copy()
    source = list(prior.source)
    for b, (m, s, *_rest) in edits.items():
        if 0 <= b < len(prior.bins):
            mean[b], std[b], source[b] = m, s, "edited"
    return Prior(prior.bins, mean, std, prior.n.copy(), source=source)


# -- the prior from estimates --------------------------------------------------------------------


#: A prior edit with this note withdraws the bin's earlier edits.
REVERT_NOTE = "revert"


def effective_edits(project: Project) -> dict[int, tuple[float, float, str, float]]:
    """The latest prior edit per bin, leaving out bins whose latest edit is a revert."""
    latest: dict[int, tuple] = {}
    for _id, z, mean, std, who, when, note in project.store.prior_edit_history():
        latest[z] = (mean, std, who, when, note)
    return {z: (m, s, w, t) for z, (m, s, w, t, note) in latest.items() if note != REVERT_NOTE}


def estimates_prior(
    project: Project, annotator: str | None = None, saved: Prior | None = None
) -> Prior:
    """p(c|z) from the live estimates (all annotators pooled, or one), source ``reviewed``.

    Bins without estimates take ``saved``'s row where it was measured (see
    ``prior.fill_missing``; pass ``saved_prior(project)`` so a partial review keeps the
    values measured for the other bins), else the paper's Table 1 row (when the bins match)
    with n = 0.
    """
    est = project.store.estimates(annotator)
    prior = prior_from_values(
        project.bins, [e.bin for e in est], [e.percent for e in est], source="reviewed"
    )
    return fill_missing(prior, saved)


def saved_prior(project: Project) -> Prior | None:
    """The project's saved prior.csv when it exists, can be read and has the project's bins."""
    path = project.prior_path
    if path is None or not path.exists():
        return None
    try:
        prior = read_prior_csv(path)
    except (FormatError, OSError):
        return None
    return prior if prior.bins == project.bins else None


def prior_for_saving(prior: Prior) -> Prior:
    """The prior as prior.csv stores it: n blank for rows no estimate produced (n = 0)."""
    n = np.where(prior.n > 0, prior.n, np.nan)
    return Prior(prior.bins, prior.mean_pct.copy(), prior.std_pct.copy(), n, source=prior.source)


def agreement_rows(project: Project) -> list[dict[str, float]]:
    """Per-bin inter-annotator agreement (blocks, mean abs difference, ICC) of live estimates."""
    est = project.store.estimates()
    return agreement(((e.block_id, e.bin, e.annotator, e.percent) for e in est), len(project.bins))
