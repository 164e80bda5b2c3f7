"""Block review logic without Qt: sampling, the session state machine, prefetch, geometry."""

from __future__ import annotations

import math
import shutil
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_lsr.elicit.prior import (
    REVERT_NOTE,
    agreement_rows,
    effective_edits,
    estimates_prior,
    prior_for_saving,
)
from napari_lsr.elicit.review import (
    BinSampler,
    BlockImages,
    ReviewBlock,
    ReviewError,
    ReviewSession,
    SlideSet,
    has_tissue,
    load_blocks,
    parse_percent,
    release_review,
)
from napari_lsr.io.formats import Prior, paper_prior
from napari_lsr.io.project import Project, SlideEntry
from napari_lsr.io.store import Store
from napari_lsr.layers import camera_zoom, world_box, world_center
from napari_lsr.learn.blocks import TISSUE_MIN_FRACTION, tissue_fraction
from napari_lsr.state import project_for_slide, state_for

# -- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("35", 35.0), (" 35 % ", 35.0), ("2,5", 2.5), ("0", 0.0), ("100", 100.0), (42, 42.0)],
)
def test_parse_percent_accepts(text, value):
    assert parse_percent(text) == value


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("abc", "not a number"),
        ("", "first"),
        ("150", "outside 0–100"),
        ("-1", "outside 0–100"),
        ("nan", "not a number"),
        ("inf", "not a number"),
        (101.0, "outside 0–100"),
    ],
)
def test_parse_percent_refuses_with_a_readable_message(text, words):
    with pytest.raises(ValueError, match=words):
        parse_percent(text)


# -- sampling ------------------------------------------------------------------------------------


def _blocks(n_slides: int, per_slide: int, z: int = 3) -> list[ReviewBlock]:
    out = []
    for s in range(n_slides):
        for i in range(per_slide):
            bid = s * 1000 + i
            out.append(ReviewBlock(bid, s, i * 10, 0, 10, 10, 0.45, z))
    return out


def _draw(sampler: BinSampler, k: int) -> list[int]:
    out = []
    for _ in range(k):
        b = sampler.draw()
        if b is None:
            break
        out.append(b.id)
    return out


def test_sampler_is_reproducible_by_seed_and_bin():
    blocks = _blocks(3, 20)
    a = _draw(BinSampler(blocks, 7, 3), 12)
    assert a == _draw(BinSampler(list(reversed(blocks)), 7, 3), 12)  # input order is irrelevant
    assert a != _draw(BinSampler(blocks, 8, 3), 12)
    assert a != _draw(BinSampler(blocks, 7, 4), 12)
    assert len(set(a)) == 12


def test_sampler_is_stratified_across_slides():
    blocks = _blocks(3, 20) + _blocks(1, 2)[:0]
    ids = _draw(BinSampler(blocks, 0, 3), 12)
    per_slide = np.bincount([i // 1000 for i in ids], minlength=3)
    assert per_slide.tolist() == [4, 4, 4]
    # A slide with few blocks gives what it has; the others fill the rest.
    small = [b for b in _blocks(3, 20) if b.slide != 1 or b.x < 20]
    ids = _draw(BinSampler(small, 0, 3), 12)
    per_slide = np.bincount([i // 1000 for i in ids], minlength=3)
    assert per_slide[1] == 2 and per_slide.sum() == 12 and abs(per_slide[0] - per_slide[2]) <= 1


def test_sampler_skips_background_and_put_back_replays():
    blocks = _blocks(2, 10)

    def is_tissue(b):
        return b.x % 20 == 0  # every other block is "background"

    s = BinSampler(blocks, 1, 3, is_tissue)
    first = [s.draw() for _ in range(3)]
    assert all(is_tissue(b) for b in first)
    assert s.put_back(first[-1])
    assert not s.put_back(first[0])  # only the last draw can be put back
    assert s.draw() == first[-1]
    everything = _draw(s, 100)
    assert len(everything) + 3 == sum(is_tissue(b) for b in blocks)
    assert s.background >= sum(not is_tissue(b) for b in blocks)
    assert s.draw() is None


def test_load_blocks_registers_every_block(project_copy):
    slides = SlideSet(project_copy)
    try:
        blocks, labels = load_blocks(project_copy, slides)
    finally:
        slides.close()
    assert len(blocks) == len(labels[0]) == 144
    assert len({b.id for b in blocks}) == len(blocks)
    rows = project_copy.store.query("SELECT COUNT(*) FROM blocks")
    assert rows[0][0] == 144


def test_project_without_lowres_labels_is_refused(project_copy):
    project_copy.slides[0].labels = None
    with pytest.raises(ReviewError, match="no low-resolution labels"):
        ReviewSession(project_copy, "ana")


def test_session_needs_an_annotator(project_copy):
    with pytest.raises(ReviewError, match="name"):
        ReviewSession(project_copy, "  ")


# -- the session ---------------------------------------------------------------------------------


@pytest.fixture
def session(project_copy):
    s = ReviewSession(project_copy, "ana", k=12, seed=0)
    yield s
    s.slides.close()


def test_session_samples_k_tissue_blocks_per_bin(session):
    slide = session.slides[0]
    background = [b for b in session.all_blocks if b.bin == 0 and not has_tissue(slide, b)]
    assert background, "the tiny project should hold background blocks"
    for z, sample in session.samples.items():
        assert len(sample) == min(12, session.bin_sizes[z] - session.samplers[z].background)
        for b in sample:
            assert b.bin == z
            rgb = slide.read_region(b.x, b.y, b.width, b.height, size=(32, 32))
            assert tissue_fraction(rgb) >= TISSUE_MIN_FRACTION
    assert not {b.id for b in background} & {b.id for b in session.samples[0]}


def test_same_seed_same_sample(project_copy, session):
    other = ReviewSession(project_copy, "ben", k=12, seed=0, slides=session.slides)
    assert other.samples == session.samples
    third = ReviewSession(project_copy, "ben", k=12, seed=5, slides=session.slides)
    assert third.samples[0] != session.samples[0]


def test_enter_commits_and_moves_on(session, project_copy):
    z = session.current_bin
    first = session.current
    expected_next = session.peek_next()
    eid = session.enter("35")
    assert session.current == expected_next != first
    # committed: a separate connection sees it at once
    con = sqlite3.connect(project_copy.store.path)
    row = con.execute("SELECT block_id, annotator, percent FROM estimates WHERE id=?", (eid,))
    assert row.fetchone() == (first.id, "ana", 35.0)
    con.close()
    p = session.progress(z)
    assert (p.done, p.target, p.n) == (1, 12, 1)
    assert p.text() == f"bin {p.label} %: 1/12"
    assert p.mean == 35.0 and p.std == 0.0


def test_running_mean_and_std(session):
    values = [10, 20, 30, 40]
    for v in values:
        session.enter(v)
    p = session.progress(0)
    assert p.mean == pytest.approx(np.mean(values))
    assert p.std == pytest.approx(np.std(values))
    assert "mean 25.0 ± 11.2 % (n = 4)" == p.stats_text()


def test_undo_goes_back_and_restores_the_store(session, project_copy):
    first = session.current
    eid = session.enter(50)
    assert session.undo() == first
    assert session.current == first
    assert session.progress(0).done == 0
    assert eid not in [e.id for e in project_copy.store.estimates("ana")]
    assert session.undo() is None


def test_undo_of_a_changed_estimate_reinstates_the_old_one(session, project_copy):
    first = session.current
    session.enter(20)
    assert session.prev()
    assert session.current == first
    session.enter(60)
    assert session.estimate_of(first) == 60
    session.undo()
    assert session.estimate_of(first) == 20
    live = [e for e in project_copy.store.estimates("ana") if e.block_id == first.id]
    assert [e.percent for e in live] == [20.0]


def test_skip_draws_a_replacement_and_undo_gives_it_back(session):
    z = session.current_bin
    sample_before = list(session.samples[z])
    skipped = session.current
    session.skip()
    assert session.status(skipped) == "skipped"
    assert len(session.samples[z]) == len(sample_before) + 1
    p = session.progress(z)
    assert (p.done, p.target, p.skipped) == (0, 12, 1)
    session.undo()
    assert session.samples[z] == sample_before
    assert session.current == skipped and session.status(skipped) == "pending"


def test_a_whole_bin_then_the_next(session):
    z = session.current_bin
    for i in range(12):
        assert session.current.bin == z
        session.enter(i)
    assert session.last_move == "bin done"
    assert session.current_bin != z
    assert session.progress(z).done == 12


def test_all_done_and_resume(project_copy):
    s = ReviewSession(project_copy, "ana", k=1, seed=3)
    n_bins_with_blocks = sum(1 for z in s.samples if s.samples[z])
    for _ in range(n_bins_with_blocks):
        s.enter(5)
    assert s.finished and s.current is None and s.last_move == "all done"
    with pytest.raises(ReviewError):
        s.enter(5)
    again = ReviewSession(project_copy, "ana", k=1, seed=3, slides=s.slides)
    assert again.finished
    assert all(again.progress(z).done == 1 for z in again.samples if again.samples[z])
    more = ReviewSession(project_copy, "ana", k=2, seed=3, slides=s.slides)
    assert not more.finished and more.progress(more.current_bin).done == 1
    s.slides.close()


def test_navigation(session):
    z = session.current_bin
    assert not session.prev()
    assert session.next() and session.position == 1
    assert session.prev() and session.position == 0
    nb = session.next_bin()
    assert nb is not None and nb != z and session.current_bin == nb
    assert session.goto_bin(z) and session.current_bin == z


def test_bin_without_blocks_says_so(project_copy, tmp_path):
    csv = tmp_path / "low.csv"
    csv.write_text("x,y,width,height,probability\n0,0,64,64,0.05\n64,0,64,64,0.97\n")
    entry = project_copy.slides[0]
    proj = Project.create(tmp_path / "p", [SlideEntry(entry.path, csv)])
    s = ReviewSession(proj, "ana", check_tissue=False)
    assert not s.goto_bin(4)
    assert "no blocks" in s.bin_message(4)
    assert s.bin_message(9) is None
    assert s.next_bin() == 9
    s.slides.close()


# -- images and prefetch -------------------------------------------------------------------------


def test_block_images_at_the_preview_resolution(session, project_copy):
    """Issue 24.7: with [training] block_size = 32 the preview was 32 px; it is read at the
    size it is shown at, here level 0's 64 px (never upsampled)."""
    assert project_copy.training_geometry() == (32, 4.0)
    images = BlockImages(project_copy, session.slides)
    try:
        b = session.current
        assert (b.width, b.height) == (64, 64)
        direct = images.read(b)
        assert direct.shape == (64, 64, 3) and direct.dtype == np.uint8
        level0 = session.slides[b.slide].read_region(b.x, b.y, b.width, b.height)
        assert np.array_equal(direct, level0)
        small = BlockImages(project_copy, session.slides, side=48)
        assert small.read(b).shape == (48, 48, 3)
        small.close()
        images.prefetch(b)
        assert np.array_equal(images.get(b), direct)
        images.enabled = False
        assert np.array_equal(images.get(session.peek_next()), images.read(session.peek_next()))
        fut = images.submit(lambda: 7)
        assert fut.result() == 7
    finally:
        images.close()
    assert images.submit(lambda: 7) is None


def test_release_review_closes_each_resource_once(session, project_copy):
    """The dock's teardown (a close, then Qt's ``destroyed``): the store's connection closed on
    the view log's own thread, the reader shut, the slides closed; a second call finds nothing
    to close."""

    class LogStore:  # the store's close, seen from the thread that calls it
        threads: list[str] = []

        def close(self) -> None:
            self.threads.append(threading.current_thread().name)

    images = BlockImages(project_copy, session.slides)
    slides = SlideSet(project_copy)
    assert slides[0].width > 0  # opened
    store = LogStore()
    resources = {"images": images, "slides": slides, "store": store}
    release_review(resources)
    assert resources == {}
    assert [t.startswith("napari-lsr-log") for t in store.threads] == [True]
    assert images.submit(lambda: 7) is None  # the reader and the log thread are shut
    assert slides._open == {}
    release_review(resources, "destroyed's argument")  # nothing left: no error
    assert len(store.threads) == 1


def test_block_images_without_training_geometry(session, project_copy):
    project_copy.config.pop("training")
    images = BlockImages(project_copy, session.slides)
    try:
        assert images.read(session.current).shape == (64, 64, 3)
    finally:
        images.close()


# -- geometry ------------------------------------------------------------------------------------


def test_world_geometry_follows_napari_pixel_centres():
    b = ReviewBlock(1, 0, x=10, y=20, width=4, height=6, probability=0.5, bin=3)
    box = world_box(b, 2.0)
    assert box[0].tolist() == [39.0, 19.0]  # (y - 0.5) * 2, (x - 0.5) * 2
    assert box[2].tolist() == [51.0, 27.0]
    assert world_center(b, 2.0) == (45.0, 23.0)
    assert camera_zoom(b, 2.0, (600, 900)) == pytest.approx(600 / 3 / 12)


# -- projects, prior, state ----------------------------------------------------------------------


def test_project_for_slide_creates_then_reopens(project_copy, tmp_path):
    slide = tmp_path / "s.tiff"
    shutil.copy(project_copy.slides[0].path, slide)
    proj = project_for_slide(slide, project_copy.slides[0].labels)
    assert proj.folder == (tmp_path / "s_lsr").resolve()
    assert Project.open(proj.folder).slides[0].path.resolve() == slide.resolve()
    assert project_for_slide(slide, project_copy.slides[0].labels).folder == proj.folder
    with pytest.raises(ReviewError, match="no such"):
        project_for_slide(slide, tmp_path / "missing.csv")


def test_estimates_prior_edits_and_agreement(session, project_copy):
    s2 = ReviewSession(project_copy, "ben", k=12, seed=0, slides=session.slides)
    for v in (10, 20, 30):
        b = session.current
        session.enter(v)
        assert s2.current == b
        s2.enter(v + 4)
    pooled = estimates_prior(project_copy)
    assert pooled.n[0] == 6 and pooled.mean_pct[0] == pytest.approx(22.0)
    ana = estimates_prior(project_copy, "ana")
    assert ana.n[0] == 3 and ana.mean_pct[0] == pytest.approx(20.0)
    assert pooled.n[5] == 0 and pooled.mean_pct[5] == paper_prior().mean_pct[5]
    saved = prior_for_saving(pooled)
    assert math.isnan(saved.n[5]) and saved.n[0] == 6
    rows = agreement_rows(project_copy)
    assert rows[0]["blocks"] == 3 and rows[0]["mean_abs_diff"] == pytest.approx(4.0)
    store = project_copy.store
    store.add_prior_edit(5, 40.0, 9.0, "ana")
    store.add_prior_edit(6, 41.0, 9.0, "ana")
    store.add_prior_edit(6, 0.0, 1.0, "ben", REVERT_NOTE)
    edits = effective_edits(project_copy)
    assert set(edits) == {5} and edits[5][:3] == (40.0, 9.0, "ana")


def test_state_is_per_viewer_and_forgets_deleted_listeners():
    class Viewer:
        pass

    class Listener:
        def __init__(self):
            self.got = []

        def on_project(self, project):
            self.got.append(("project", project))

        def on_estimates(self):
            self.got.append("estimates")

    v1, v2 = Viewer(), Viewer()
    state = state_for(v1)
    assert state_for(v1) is state and state_for(v2) is not state
    a, b = Listener(), Listener()
    state.connect(a, project=a.on_project, estimates_changed=a.on_estimates)
    state.connect(b, project=b.on_project, estimates_changed=b.on_estimates)
    state_for(v2).estimates_changed.emit()  # another viewer's: not heard here
    state.estimates_changed.emit()
    assert a.got == b.got == ["estimates"]
    del b  # held weakly: a listener that is gone is forgotten
    state.prior, state.models = object(), ("card",)
    state.project = "p"
    assert a.got == ["estimates", ("project", "p")]
    assert state.prior is None and state.models == ()  # nothing of the previous project
    state.project = "p"  # no change, no event
    assert len(a.got) == 2
    with pytest.raises(TypeError, match="method of the owner"):
        state.connect(a, project=print)


def test_store_opens_fresh_and_reopens(tmp_path: Path):
    # Store() on a new file once failed: executescript() committed the schema transaction.
    s = Store(tmp_path / "a.sqlite")
    s.close()
    Store(tmp_path / "a.sqlite").close()


def test_prior_for_saving_keeps_measured_rows():
    p = paper_prior()
    measured = Prior(p.bins, p.mean_pct, p.std_pct, np.arange(10, dtype=float))
    out = prior_for_saving(measured)
    assert math.isnan(out.n[0]) and out.n[9] == 9


# -- portable projects (issue 14) ------------------------------------------------------------------


def _review(project: Project, n: int) -> list[int]:
    s = ReviewSession(project, "ana", k=4, seed=0, check_tissue=False)
    done = []
    for _ in range(n):
        done.append(s.current.id)
        s.enter(40)
    s.slides.close()
    return done


def _progress(project: Project) -> tuple[int, int]:
    s = ReviewSession(project, "ana", k=4, seed=0, check_tissue=False)
    done = sum(s.progress(z).done for z in range(len(project.bins)))
    s.slides.close()
    return done, len(project.store.estimates())


def test_a_copied_project_keeps_its_review_progress(project_copy, tmp_path):
    """Issue 14: the store keyed slides by absolute path, so a copied or moved project offered
    its reviewed blocks again while the prior still counted the old estimates."""
    _review(project_copy, 5)
    assert _progress(project_copy) == (5, 5)
    assert {r[1] for r in project_copy.store.slide_rows()} == {"slide_0.tiff"}
    project_copy.close()
    copy = tmp_path / "elsewhere" / "copied project"
    shutil.copytree(project_copy.folder, copy)
    shutil.rmtree(project_copy.folder)  # moved, not only copied
    moved = Project.open(copy)
    assert _progress(moved) == (5, 5)  # nothing offered again, nothing counted twice
    _review(moved, 3)  # and the review goes on in the copy
    assert _progress(moved) == (8, 8)
    assert estimates_prior(moved).n.sum() == 8


def test_an_older_store_with_absolute_slide_keys_is_migrated(project_copy, tmp_path):
    _review(project_copy, 4)
    store = project_copy.store
    [(sid, _key, _w, _h)] = store.slide_rows()
    # as stores were written before: the slide keyed by its absolute path on another machine
    store.rename_slide(sid, "/home/someone/old place/project/slide_0.tiff")
    project_copy.close()
    copy = tmp_path / "copy"
    shutil.copytree(project_copy.folder, copy)
    moved = Project.open(copy)
    assert [r[1] for r in moved.store.slide_rows()] == ["slide_0.tiff"]
    assert _progress(moved) == (4, 4)
    _review(moved, 1)
    assert _progress(moved) == (5, 5)


# -- Use slide follows the CSV chosen last (issue 14) ----------------------------------------------


def test_use_slide_never_stays_bound_to_a_bad_csv(project_copy, tmp_path):
    import tomllib

    entry = project_copy.slides[0]
    slide = tmp_path / "s.tiff"
    shutil.copy(entry.path, slide)
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,width,height,probability\n0,0,64,64,7\n")
    with pytest.raises(ReviewError, match="outside"):
        project_for_slide(slide, bad)
    folder = tmp_path / "s_lsr"
    assert not (folder / "project.toml").exists()  # nothing written for a CSV that fails
    proj = project_for_slide(slide, entry.labels)
    assert proj.slides[0].labels == entry.labels.resolve()
    # a project bound to a bad CSV (as older versions left it) follows the good one chosen
    Project.create(tmp_path / "old", [SlideEntry(slide, bad)])
    proj = project_for_slide(slide, entry.labels, folder=tmp_path / "old")
    assert proj.slides[0].labels == entry.labels.resolve()
    cfg = tomllib.loads((tmp_path / "old" / "project.toml").read_text())
    assert Path(cfg["slides"][0]["labels"]).name == entry.labels.name
    blocks, _ = load_blocks(proj, SlideSet(proj))
    assert blocks


def test_undo_reaches_estimates_of_an_earlier_session(project_copy):
    """Issue 24.9: the store has them, so Undo goes back past the session's start."""
    from napari_lsr.elicit.review import ReviewSession

    first = ReviewSession(project_copy, "ana", check_tissue=False)
    a = first.current
    first.enter(20)
    b = first.current
    first.enter(30)
    assert first.prev() and first.current == b
    first.enter(45)  # replaces 30
    later = ReviewSession(project_copy, "ana", check_tissue=False)
    assert later.undo_stack == []
    assert later.undo() == b and later.undid_stored
    assert later.current == b and later.estimate_of(b) == 30  # the replaced estimate is back
    assert later.undo() == a and later.status(a) == "pending"
    live = {e.block_id: e.percent for e in project_copy.store.estimates("ana")}
    assert live == {b.id: 30.0}
    assert later.undo() is None  # 30 was brought back by an undo: not undone again


def test_a_fully_reviewed_session_rests_on_a_block(project_copy):
    from napari_lsr.elicit.review import ReviewSession

    s = ReviewSession(project_copy, "ana", k=1, check_tissue=False)
    assert s.resting_block is None
    while s.current is not None:
        s.enter(10)
    again = ReviewSession(project_copy, "ana", k=1, check_tissue=False)
    assert again.finished and again.current is None
    assert again.resting_block is not None
