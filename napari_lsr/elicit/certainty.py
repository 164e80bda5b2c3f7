"""How certain each bin's mean is, which bin to review next, and when the prior is good enough.

The pathologist's estimates are the scarce resource of label super-resolution (issue 25). Each
bin z of the prior p(c|z) is a mean (and spread) of the cancer percentages estimated on a
sample of the bin's blocks; this module says how far that mean could still be from the mean
over all of the bin's blocks, and uses it twice:

**Certainty of a bin's mean.** With n estimates of a bin holding N blocks, the mean's standard
error is ``s / sqrt(n) * sqrt((N - n) / (N - 1))`` (sampling without replacement: a bin whose
every block is estimated is certain). The spread ``s`` of a few estimates is itself uncertain
(one estimate has none), so it is pooled with a typical within-bin spread ``SPREAD_PCT`` worth
``SPREAD_WEIGHT`` estimates. The interval shown is the mean ± 1.645 standard errors (9 in 10).
A bin without estimates uses the paper's value, which may be off by a lot (on OCDC the paper
says 20 % for bin 80-90 %, its blocks hold 66 %): it is reviewed first.

**Which bin next (the guided order).** The next block comes from the bin whose next estimate
narrows its mean's uncertainty most, ``se(n) - se(n + 1)``, doubled for a bin whose mean is out
of order with its reviewed neighbours (it falls where the bins rise), so a contradiction is
checked first; a bin with no block left to show is never chosen. Every bin counts alike,
whatever its size: the boundaries a model draws lie in the mixed blocks of the middle bins, and
weighting bins by their block count (the first version, ``N * (se(n) - se(n + 1))``) sent the
first estimates to the two big extreme bins and trained worse models at 10 and 20 estimates on
OCDC and CAMELYON16 (BENCHMARKS.md "Review fewer blocks"). With every bin alike the order falls
back to the stratified one: one block of each bin, in bin order, then a second of each (the
same blocks as K = 1 and K = 2 per bin); from the third estimate of a bin on, a wide bin gets
more and a bin of near-identical blocks fewer. Ties go to the lower bin. Within a bin, blocks
come in the bin's own seeded, slide-stratified order (``review.BinSampler``), so the order is
deterministic given the seed and the estimates, and never shows a block twice.

**Stop rule.** The prior is good enough when, in every bin that holds blocks, ``STOP_MORE``
more estimates would move the mean by less than ``STOP_PCT`` percentage points, 9 times in 10.
Further estimates then cannot change what the model is trained towards by more than that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: A typical spread of a bin's estimates (percentage points) before the bin's own estimates say
#: otherwise: real tissue's within-bin spread is 7-14 points (CAMELYON16 and OCDC, measured from
#: the masks), and an annotator adds ~5-15 more.
SPREAD_PCT = 15.0
#: How many estimates' worth ``SPREAD_PCT`` counts for when pooled with a bin's own spread.
SPREAD_WEIGHT = 2.0
#: 9 in 10 of a normal distribution lies within this many standard deviations of its mean.
Z90 = 1.645
#: The stop rule: this many more estimates would move no bin's mean by more than STOP_PCT.
STOP_MORE = 5
STOP_PCT = 5.0
#: A bin whose mean falls where the bins rise is reviewed with this much more priority.
OUT_OF_ORDER_BOOST = 2.0

ORDERS = ("guided", "stratified")
#: The order Block review starts with (benchmarks/prior_budget.py: guided reaches a prior as
#: close to the masks' with fewer estimates; BENCHMARKS.md "Review fewer blocks").
DEFAULT_ORDER = "guided"


@dataclass(frozen=True)
class BinCertainty:
    """How certain one bin's mean is (see the module docstring)."""

    bin: int
    blocks: int  # blocks of the bin in the project (N)
    n: int  # estimates
    mean: float  # mean of the estimates (NaN when none)
    spread: float  # the pooled spread used (percentage points)
    se: float  # standard error of the mean (inf when no estimate and blocks to review)
    move: float  # 9-in-10 bound on how far STOP_MORE more estimates would move the mean
    out_of_order: bool  # the mean falls below a lower bin's or above a higher bin's
    gain: float  # how much the next estimate of this bin lowers the expected error

    @property
    def low(self) -> float:
        return max(0.0, self.mean - Z90 * self.se) if self.n else math.nan

    @property
    def high(self) -> float:
        return min(100.0, self.mean + Z90 * self.se) if self.n else math.nan

    @property
    def settled(self) -> bool:
        """The stop rule holds for this bin (a bin without blocks is always settled)."""
        return self.blocks == 0 or self.move < STOP_PCT

    @property
    def word(self) -> str:
        """The bin's certainty in a word a pathologist reads: ``no blocks``, ``not reviewed``,
        ``settled``, ``nearly settled`` or ``unsure``."""
        if self.blocks == 0:
            return "no blocks"
        if self.n == 0:
            return "not reviewed"
        if self.settled:
            return "settled"
        return "nearly settled" if self.move < 2 * STOP_PCT else "unsure"

    def text(self) -> str:
        """``46 % (likely 38-54 %), 6 of 9 blocks: unsure``, for the Block review's bin list."""
        if self.blocks == 0:
            return "no blocks"
        if self.n == 0:
            return f"not reviewed ({self.blocks} blocks)"
        return (
            f"{self.mean:.0f} % (likely {self.low:.0f}–{self.high:.0f} %), "
            f"{self.n} of {self.blocks} blocks: {self.word}"
        )


def pooled_spread(std: float, n: int) -> float:
    """A bin's spread (population std of ``n`` estimates) pooled with ``SPREAD_PCT``: the
    squared deviations of ``n`` estimates carry ``n - 1`` degrees of freedom, ``SPREAD_PCT``
    ``SPREAD_WEIGHT`` more (one estimate alone says nothing of the spread)."""
    if n < 2 or not math.isfinite(std):
        return SPREAD_PCT
    return math.sqrt(
        (float(std) ** 2 * n + SPREAD_WEIGHT * SPREAD_PCT**2) / (n - 1 + SPREAD_WEIGHT)
    )


def standard_error(spread: float, n: float, blocks: int) -> float:
    """Standard error of a mean of ``n`` of ``blocks`` values (without replacement); ``n`` may
    be fractional (the paper's weight); 0 once every block is estimated."""
    if blocks <= 0 or n >= blocks:
        return 0.0
    if n <= 0:
        return math.inf
    fpc = (blocks - n) / max(blocks - 1, 1)
    return spread / math.sqrt(n) * math.sqrt(max(fpc, 0.0))


def mean_move(spread: float, n: int, blocks: int, more: int = STOP_MORE) -> float:
    """9-in-10 bound on how far ``more`` further estimates move the mean of ``n`` estimates of
    a bin of ``blocks`` blocks; inf when the bin has none yet and blocks to review.

    The change is ``m / (n + m)`` times the gap between the new estimates' mean and the
    current mean: the new ones are drawn (without replacement) from the ``R = N - n`` blocks
    not seen, whose mean differs from the current mean by the current mean's own error, so
    ``var = (m / (n + m))^2 s^2 [(R - m) / (m (R - 1)) + N^2 / (n R (N - 1))]`` (exact for a
    population of N with variance s^2; ``m = R`` gives the current mean's whole error).
    """
    big_n = int(blocks)
    m = min(int(more), big_n - n)
    if big_n <= 0 or m <= 0:
        return 0.0
    if n <= 0:
        return math.inf
    r = big_n - n
    new_part = 0.0 if r == m else (r - m) / (m * (r - 1))
    old_part = big_n**2 / (n * r * max(big_n - 1, 1))
    var = (m / (n + m)) ** 2 * spread**2 * (new_part + old_part)
    return Z90 * math.sqrt(var)


def bin_certainty(
    blocks: Sequence[int],
    values: Mapping[int, Sequence[float]],
    exhausted: Iterable[int] = (),
) -> list[BinCertainty]:
    """The certainty of every bin's mean from its estimates.

    ``blocks``: blocks per bin in the project (tissue blocks: those the review can show);
    ``values``: each bin's estimates (%); ``exhausted``: bins with no block left to show
    (gain 0). The paper's values of bins without estimates are not evidence: they take no
    part in the out-of-order check.
    """
    nb = len(blocks)
    done = set(exhausted)
    vals = [np.asarray(values.get(z, ()), float) for z in range(nb)]
    means = [float(v.mean()) if len(v) else math.nan for v in vals]
    spreads = [pooled_spread(float(v.std()) if len(v) else math.nan, len(v)) for v in vals]
    ses = [
        standard_error(spreads[z], len(vals[z]), int(blocks[z]))
        if len(vals[z])
        else (math.inf if blocks[z] else 0.0)
        for z in range(nb)
    ]
    out = _out_of_order(means, ses)
    rows = []
    for z in range(nb):
        v, spread, se = vals[z], spreads[z], ses[z]
        n, big_n = len(v), int(blocks[z])
        if z in done or n >= big_n:
            gain = 0.0
        elif n == 0:  # every bin gets its first estimate before any gets a second
            gain = math.inf
        else:  # (without the finite-population factor, so bins of any size count alike)
            gain = spread * (1 / math.sqrt(n) - 1 / math.sqrt(n + 1))
            gain *= OUT_OF_ORDER_BOOST if out[z] else 1.0
        rows.append(
            BinCertainty(
                z, big_n, n, means[z], spread, se, mean_move(spread, n, big_n), out[z], gain
            )
        )
    return rows


def _out_of_order(means: Sequence[float], ses: Sequence[float]) -> list[bool]:
    """Reviewed bins whose mean is below a lower reviewed bin's (or above a higher one's) by
    more than the two means' combined standard error: a fall beyond what a few estimates'
    noise explains (a real fall, rare bins on real tissue, stays flagged until settled)."""
    reviewed = [z for z, m in enumerate(means) if math.isfinite(m) and math.isfinite(ses[z])]
    flags = [False] * len(means)
    for i, a in enumerate(reviewed):
        for b in reviewed[i + 1 :]:
            if means[a] - means[b] > math.hypot(ses[a], ses[b]) and (ses[a] or ses[b]):
                flags[a] = flags[b] = True
    return flags


def next_bin(rows: Sequence[BinCertainty]) -> int | None:
    """The bin whose next estimate helps most (the lowest on a tie); None when no bin has a
    block left to show."""
    best = max((r for r in rows if r.gain > 0), key=lambda r: (r.gain, -r.bin), default=None)
    return None if best is None else best.bin


def good_enough(rows: Sequence[BinCertainty]) -> bool:
    """The stop rule: every bin with blocks is settled."""
    return all(r.settled for r in rows) and any(r.blocks for r in rows)


def stop_message(rows: Sequence[BinCertainty]) -> str:
    """What the Block review says about the stop rule, in plain words."""
    if not any(r.blocks for r in rows):
        return "No blocks to review."
    open_bins = [r for r in rows if not r.settled]
    if not open_bins:
        return (
            f"The prior is good enough: {STOP_MORE} more estimates would move no bin's "
            f"average by more than {STOP_PCT:g} percentage points. You can train now."
        )
    unseen = [r for r in open_bins if r.n == 0]
    parts = []
    if unseen:
        parts.append(f"{len(unseen)} bin(s) not reviewed yet")
    if len(open_bins) > len(unseen):
        parts.append(f"{len(open_bins) - len(unseen)} bin(s) still unsure")
    return "Keep going: " + " and ".join(parts) + "."


def mean_range(
    mean: float, std: float, n: float, blocks: int | None = None, pooled: bool = False
) -> tuple[float, float]:
    """Where the bin's mean over all its blocks likely lies (9 in 10), from a prior row's
    mean, std and n (``blocks``: the bin's blocks in the project, None when unknown); NaNs
    when the row has no estimates (n missing or 0). ``pooled``: the row's std is already
    pooled (reviewed rows: ``prior.prior_from_values``), else it is pooled here."""
    if not (n and math.isfinite(n) and n > 0):
        return math.nan, math.nan
    k = int(round(n))
    big_n = int(blocks) if blocks else 10**9
    spread = float(std) if pooled else pooled_spread(std, k)
    se = standard_error(spread, k, max(big_n, k))
    return max(0.0, mean - Z90 * se), min(100.0, mean + Z90 * se)
