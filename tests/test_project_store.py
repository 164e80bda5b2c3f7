"""Project folders and the SQLite store: schema, transactions, estimates, undo, prior edits."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from napari_lsr.elicit.prior import ONE_VALUE_STD_PCT, agreement, check_prior, prior_from_values
from napari_lsr.elicit.review import SlideSet, load_blocks
from napari_lsr.io.formats import FormatError
from napari_lsr.io.project import Project
from napari_lsr.io.store import Store


def test_project_round_trip(project_copy):
    p = project_copy
    assert (p.folder / "project.toml").exists()
    again = Project.open(p.folder)
    assert [s.path for s in again.slides] == [s.path for s in p.slides]
    assert again.prior_path == p.prior_path
    assert again.prior().bins == p.bins


def test_not_a_project(tmp_path):
    with pytest.raises(FormatError, match="no project.toml"):
        Project.open(tmp_path)
    (tmp_path / "project.toml").write_text("[[slides]\n")
    with pytest.raises(FormatError, match="invalid TOML"):
        Project.open(tmp_path)


def test_store_wal_and_estimates(project_copy):
    p = project_copy
    _slides = SlideSet(p)
    load_blocks(p, _slides)
    _slides.close()
    store = p.store
    mode = store.query("PRAGMA journal_mode")[0][0]
    assert mode == "wal"
    bid = store.query("SELECT id FROM blocks WHERE bin = 0 LIMIT 1")[0][0]
    e1 = store.add_estimate(bid, "ann", 10)
    store.add_estimate(bid, "ann", 20)  # supersedes e1
    live = store.estimates()
    assert [e.percent for e in live] == [20]
    store.undo_estimate(live[0].id)
    assert store.estimates() == []
    assert store.query("SELECT COUNT(*) FROM estimates")[0][0] == 2, "history kept"
    assert e1 > 0
    store.add_estimate(bid, "ann", None, skipped=True)
    assert store.estimates() == [] and len(store.estimates(include_skipped=True)) == 1
    with pytest.raises(ValueError, match="outside 0-100"):
        store.add_estimate(bid, "ann", 120)
    with pytest.raises(ValueError, match="annotator"):
        store.add_estimate(bid, " ", 5)
    # a second connection sees committed writes at once
    other = Store(p.folder / "annotations.sqlite")
    assert len(other.estimates(include_skipped=True)) == 1
    con = sqlite3.connect(p.folder / "annotations.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_load_blocks_is_idempotent(project_copy):
    slides = SlideSet(project_copy)
    load_blocks(project_copy, slides)
    load_blocks(project_copy, slides)
    slides.close()
    n = project_copy.store.query("SELECT COUNT(*) FROM blocks")[0][0]
    assert n == (768 // 64) ** 2


def test_prior_from_values_and_flags(tiny_project):
    bins = tiny_project.bins
    z = np.array([0, 0, 0, 9, 9, 5])
    pct = np.array([0.0, 2.0, 4.0, 80.0, 60.0, 30.0])
    prior = prior_from_values(bins, z, pct)
    assert prior.mean_pct[0] == pytest.approx(2.0) and prior.std_pct[0] == pytest.approx(
        np.std([0, 2, 4])
    )
    assert prior.n.tolist()[:1] == [3] and prior.n[1] == 0
    assert prior.mean_pct[1] == 1.0  # unmeasured bin falls back to the paper's Table 1
    flags = check_prior(prior)
    assert 5 in flags.few_estimates and 1 in flags.few_estimates and 0 not in flags.few_estimates
    assert 6 in flags.not_monotonic  # paper's 10 % after a measured 30 %
    # one estimate says nothing of the spread: the bin gets a typical spread, not none
    assert prior.n[5] == 1 and prior.mean_pct[5] == 30.0
    assert prior.std_pct[5] == ONE_VALUE_STD_PCT >= 10.0


def test_bins_without_blocks_are_not_flagged_and_prior_csv_is_lf(tiny_project, tmp_path):
    """Issue 24.11: a bin no block falls in is never 'not monotonic' (nor 'few'); the next
    bin with blocks is compared with the last one before the gap. prior.csv ends lines LF."""
    from napari_lsr.io.formats import read_prior_csv, write_prior_csv

    bins = tiny_project.bins
    z = np.array([0, 0, 0, 9, 9, 5, 5])
    pct = np.array([20.0, 30.0, 40.0, 80.0, 60.0, 35.0, 45.0])
    prior = prior_from_values(bins, z, pct)
    empty = [1, 2, 3, 4, 6, 7, 8]
    assert 1 in check_prior(prior).not_monotonic  # the paper's 1 % after a measured 30 %
    flags = check_prior(prior, empty_bins=empty)
    assert flags.not_monotonic == [] and flags.few_estimates == []
    prior.mean_pct[9] = 25.0
    assert check_prior(prior, empty_bins=empty).not_monotonic == [9]  # 25 after bin 5's 40
    out = tmp_path / "prior.csv"
    write_prior_csv(out, prior)
    data = out.read_bytes()
    assert b"\r" not in data and data.count(b"\n") == len(bins) + 1
    assert read_prior_csv(out).mean_pct[9] == pytest.approx(25.0)


def test_agreement_between_annotators():
    est = [(1, 0, "a", 10), (1, 0, "b", 20), (2, 0, "a", 50), (2, 0, "b", 40), (3, 1, "a", 5)]
    ag = agreement(est, 2)
    assert ag[0]["blocks"] == 2 and ag[0]["mean_abs_diff"] == pytest.approx(10.0)
    assert np.isnan(ag[1]["mean_abs_diff"])
    assert ag[0]["icc"] == pytest.approx(ag[0]["icc"])  # defined (not NaN) with two blocks
