"""Certainty of a bin's mean, the guided review order and the stop rule (issue 25)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_lsr.elicit.certainty import (
    SPREAD_PCT,
    STOP_MORE,
    STOP_PCT,
    Z90,
    bin_certainty,
    good_enough,
    mean_move,
    next_bin,
    pooled_spread,
    standard_error,
    stop_message,
)
from napari_lsr.elicit.review import ReviewError, ReviewSession

# -- the numbers ---------------------------------------------------------------------------------


def test_standard_error_without_replacement():
    assert standard_error(10.0, 4, 10_000) == pytest.approx(5.0, rel=1e-3)
    assert standard_error(10.0, 5, 5) == 0.0  # every block estimated: certain
    assert standard_error(10.0, 4, 5) < standard_error(10.0, 4, 50)
    assert standard_error(10.0, 0, 5) == math.inf
    assert standard_error(10.0, 0, 0) == 0.0


def test_pooled_spread_needs_two_estimates_to_move():
    assert pooled_spread(math.nan, 0) == SPREAD_PCT
    assert pooled_spread(0.0, 1) == SPREAD_PCT  # one estimate has no spread of its own
    assert pooled_spread(2.0, 200) == pytest.approx(2.0, abs=0.5)
    assert pooled_spread(30.0, 4) > SPREAD_PCT


def test_mean_move_matches_a_simulation():
    """The 9-in-10 bound of how far 5 more estimates move the mean, against sampling."""
    rng = np.random.default_rng(1)
    big_n, n, m = 40, 6, STOP_MORE
    moves = []
    for _ in range(4000):
        pop = rng.normal(50, 12, big_n)
        order = rng.permutation(big_n)
        moves.append(abs(pop[order[: n + m]].mean() - pop[order[:n]].mean()))
    bound = mean_move(12.0, n, big_n)
    assert np.quantile(moves, 0.9) == pytest.approx(bound, rel=0.1)
    # the last blocks of a bin: the move is the current mean's whole error
    assert mean_move(12.0, 37, 40) == pytest.approx(Z90 * standard_error(12.0, 37, 40))
    assert mean_move(12.0, 40, 40) == 0.0
    assert mean_move(12.0, 0, 40) == math.inf


# -- which bin next ------------------------------------------------------------------------------


def test_every_bin_first_then_the_widest():
    rows = bin_certainty([10, 200, 0, 50], {})
    assert next_bin(rows) == 0  # unreviewed bins first, in bin order, whatever their size
    assert rows[2].gain == 0.0 and rows[2].word == "no blocks"
    rows = bin_certainty([10, 200, 0, 50], {0: [5], 1: [90, 95, 92, 91, 94, 93]})
    assert next_bin(rows) == 3  # bin 3 not seen yet
    # a wide bin needs more estimates than a narrow one, whatever their sizes
    rows = bin_certainty([50, 5], {0: [0, 5, 0, 5], 1: [10, 60, 30, 90]})
    assert next_bin(rows) == 1
    # bins of any size with the same estimates count alike: the lower bin (round-robin)
    rows = bin_certainty([300, 8], {0: [20, 30], 1: [20, 30]})
    assert rows[0].gain == rows[1].gain and next_bin(rows) == 0


def test_ties_go_to_the_lower_bin_and_exhausted_bins_are_never_chosen():
    rows = bin_certainty([30, 30, 30], {})
    assert next_bin(rows) == 0
    rows = bin_certainty([30, 30, 30], {}, exhausted=[0, 1])
    assert next_bin(rows) == 2
    assert next_bin(bin_certainty([30, 30], {}, exhausted=[0, 1])) is None


def test_a_bin_out_of_order_is_checked_first():
    values = {0: [5, 5, 10], 1: [60, 55, 65], 2: [20, 25, 15], 3: [90, 95, 90]}
    rows = bin_certainty([40, 40, 40, 40], values)
    assert [r.out_of_order for r in rows] == [False, True, True, False]
    assert next_bin(rows) in (1, 2)
    # a fall within the noise of two estimates is not a contradiction
    rows = bin_certainty([40, 40], {0: [30, 40], 1: [30, 35]})
    assert not any(r.out_of_order for r in rows)


def test_the_stop_rule():
    rows = bin_certainty([20, 0, 10], {0: [5] * 20, 2: [90] * 10})
    assert good_enough(rows) and "good enough" in stop_message(rows)
    rows = bin_certainty([20, 3, 10], {0: [5] * 20, 2: [90] * 10})
    assert not good_enough(rows)
    assert stop_message(rows) == "Keep going: 1 bin(s) not reviewed yet."
    wide = {0: [0, 50, 100, 20, 80], 2: [90] * 10}
    rows = bin_certainty([200, 0, 10], wide)
    assert rows[0].move > STOP_PCT and rows[0].word == "unsure"
    assert stop_message(rows) == "Keep going: 1 bin(s) still unsure."
    assert not good_enough(bin_certainty([0, 0], {}))


def test_texts_are_plain_words():
    rows = bin_certainty([200, 9, 0], {0: [10, 20, 30, 20]})
    text = " ".join(r.text() for r in rows) + stop_message(rows)
    assert "20 % (likely" in rows[0].text() and "4 of 200 blocks" in rows[0].text()
    assert rows[1].text() == "not reviewed (9 blocks)"
    for jargon in ("confidence", "interval", "standard", "error", "sigma", "CI"):
        assert jargon not in text


# -- the guided order in a review session -----------------------------------------------------


def guided(project, seed=0, slides=None):
    return ReviewSession(project, "ana", seed=seed, order="guided", slides=slides)


def run_guided(session, values, limit=1000):
    shown = []
    while session.current is not None and len(shown) < limit:
        b = session.current
        shown.append(b)
        session.enter(values(b))
    return shown


def test_guided_order_is_deterministic_by_seed_and_never_shows_a_block_twice(project_copy):
    s = guided(project_copy)
    try:
        value = lambda b: round(100 * b.probability)  # noqa: E731
        first = run_guided(s, value)
        assert s.finished and s.last_move == "all done"
        ids = [b.id for b in first]
        assert len(ids) == len(set(ids))
        tissue = sum(s._tissue_blocks(z) for z in range(len(s.bins)))
        assert len(ids) == tissue  # every tissue block, once
        # the same seed and the same entries give the same order (another annotator)
        other = ReviewSession(project_copy, "ben", seed=0, order="guided", slides=s.slides)
        assert [b.id for b in run_guided(other, value)] == ids
        third = ReviewSession(project_copy, "cy", seed=7, order="guided", slides=s.slides)
        assert [b.id for b in run_guided(third, value, limit=len(ids))] != ids
    finally:
        s.slides.close()


def test_guided_order_falls_back_to_the_stratified_order_for_the_first_rounds(project_copy):
    """With no estimates yet every bin counts alike: one block of each bin in bin order, then
    a second of each: the very blocks the stratified order shows with K = 1 and K = 2."""
    strat = ReviewSession(project_copy, "ben", k=2, seed=0)
    s = guided(project_copy, slides=strat.slides)
    try:
        rows = s.certainty()
        with_blocks = [r.bin for r in rows if r.blocks]
        assert len(with_blocks) >= 3
        shown = run_guided(s, lambda b: round(100 * b.probability), limit=len(with_blocks))
        assert [b.bin for b in shown] == with_blocks
        assert [b.id for b in shown] == [strat.samples[z][0].id for z in with_blocks]
        two = [z for z in with_blocks if len(strat.samples[z]) >= 2]
        more = run_guided(s, lambda b: 50, limit=len(two))
        assert sorted(b.id for b in more) == sorted(strat.samples[z][1].id for z in two)
    finally:
        strat.slides.close()


def test_guided_order_draws_within_a_bin_as_the_stratified_order_does(project_copy):
    """Within a bin the guided order takes the stratified sampler's blocks in its order: it
    falls back to the stratified draw for which block, and changes only which bin."""
    strat = ReviewSession(project_copy, "ana", k=200, seed=3)
    try:
        s = ReviewSession(project_copy, "ben", seed=3, order="guided", slides=strat.slides)
        shown = run_guided(s, lambda b: 50)
        for z in range(len(s.bins)):
            in_bin = [b.id for b in shown if b.bin == z]
            assert in_bin == [b.id for b in strat.samples[z]][: len(in_bin)]
    finally:
        strat.slides.close()


def test_guided_undo_gives_the_drawn_block_back_and_resume_skips_seen_blocks(project_copy):
    s = guided(project_copy)
    try:
        first = s.current
        nxt = s.peek_next()
        s.enter(40)
        assert s.current == nxt
        assert s.undo() == first and s.current == first
        assert all(b != nxt for sample in s.samples.values() for b in sample)
        seen = run_guided(s, lambda b: 30, limit=5)
        again = guided(project_copy, slides=s.slides)
        assert again.current not in seen
        assert {b.id for b in seen} <= {b.id for v in again.samples.values() for b in v}
        assert sum(r.n for r in again.certainty()) == 5
    finally:
        s.slides.close()


def test_guided_goto_bin_draws_a_block_of_that_bin(project_copy):
    s = guided(project_copy)
    try:
        z = next(r.bin for r in s.certainty() if r.blocks and r.bin != s.current_bin)
        assert s.goto_bin(z) and s.current.bin == z
        assert s.next_bin() is not None
    finally:
        s.slides.close()


def test_unknown_order_is_refused(project_copy):
    with pytest.raises(ReviewError, match="order"):
        ReviewSession(project_copy, "ana", order="random")


def test_reviewed_bins_carry_the_pooled_spread_measured_bins_their_own():
    """Issue 25: a few estimates by eye spread less than the bin's blocks do; the prior a
    model trains with takes Block review's pooled spread for reviewed bins (all-equal
    estimates included), the values' own std for measured ones."""
    from napari_lsr.elicit.certainty import SPREAD_PCT, mean_range
    from napari_lsr.elicit.prior import ONE_VALUE_STD_PCT, prior_from_values
    from napari_lsr.io.formats import Bins

    z = np.array([0, 0, 0, 0, 5, 5, 5, 9])
    pct = np.array([0.0, 0.0, 5.0, 5.0, 40.0, 40.0, 40.0, 80.0])
    reviewed = prior_from_values(Bins(), z, pct, source="reviewed")
    measured = prior_from_values(Bins(), z, pct)
    assert reviewed.mean_pct[0] == measured.mean_pct[0] == pytest.approx(2.5)
    assert measured.std_pct[0] == pytest.approx(2.5) and measured.std_pct[5] == 0.0
    assert reviewed.std_pct[0] == pytest.approx(pooled_spread(2.5, 4))
    assert 2.5 < reviewed.std_pct[0] < SPREAD_PCT
    assert reviewed.std_pct[5] == pytest.approx(pooled_spread(0.0, 3))
    assert reviewed.std_pct[5] > 5.0  # all-equal estimates do not say "no spread"
    assert reviewed.std_pct[9] == measured.std_pct[9] == ONE_VALUE_STD_PCT
    # the range of the mean pools a row's spread once: a reviewed row's is pooled already
    row = (reviewed.mean_pct[0], reviewed.std_pct[0], reviewed.n[0], 40)
    assert mean_range(*row, pooled=True) == pytest.approx(mean_range(2.5, 2.5, 4, 40))
    assert mean_range(*row) != pytest.approx(mean_range(*row, pooled=True))
