"""What the Block review dock says and which typed estimates it accepts, tested without Qt."""

from __future__ import annotations

import math

import pytest

from napari_lsr.elicit import review_text as say
from napari_lsr.elicit.review import BinProgress, ReviewBlock, ReviewSession, bin_label
from napari_lsr.io.project import Project, SlideEntry

# -- the typed estimate --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", ".", "3", "35", "35.", "2,5", "100", "100 %", "7%"])
def test_partial_percent_accepts_what_may_become_a_percentage(text):
    assert say.partial_percent(text)
    assert say.typed_error(text) is None


@pytest.mark.parametrize("text", ["101", "150", "-1", "abc", "5%%", "5%3", "1e5"])
def test_partial_percent_refuses_the_rest_at_once(text):
    assert not say.partial_percent(text)
    assert say.typed_error(f" {text} ") == f"{text} is outside 0–100 %: Backspace to correct it."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (True, None)),
        ("  ", (True, None)),
        ("35", (True, 35.0)),
        (" 2,5 % ", (True, 2.5)),
        ("150", (True, None)),  # never a value other than the entry's
        ("abc", (True, None)),
        (".", (False, None)),  # the start of a number: the controls keep what they show
        (",", (False, None)),
        ("%", (False, None)),
        (" . %", (False, None)),
    ],
)
def test_entry_controls(text, expected):
    assert say.entry_controls(text) == expected


@pytest.mark.parametrize(
    ("text", "shown", "delta", "value"),
    [
        ("40", 3, 5.0, 45.0),  # what is typed wins over the spin box
        ("", 20, -5.0, 15.0),  # nothing typed: the spin box's value
        ("", -1, 5.0, 5.0),  # "–" counts as 0
        ("abc", 30, 5.0, 35.0),
        ("98", 0, 5.0, 100.0),  # within 0-100
        ("2", 0, -5.0, 0.0),
        ("2,5", 0, 5.0, 7.5),
    ],
)
def test_stepped(text, shown, delta, value):
    assert say.stepped(text, shown, delta) == value


def test_default_annotator_falls_back_to_user(monkeypatch):
    monkeypatch.setattr(say.getpass, "getuser", lambda: "login")
    assert say.default_annotator() == "login"

    def no_login() -> str:
        raise KeyError("no login name")

    monkeypatch.setattr(say.getpass, "getuser", no_login)
    monkeypatch.setenv("USER", "from-env")
    assert say.default_annotator() == "from-env"
    monkeypatch.delenv("USER")
    assert say.default_annotator() == ""


def test_labels_classes(tmp_path):
    wsinfer = tmp_path / "w.csv"
    wsinfer.write_text("minx,miny,width,height,prob_notumor,prob_Tumor\n0,0,64,64,0.2,0.8\n")
    assert say.labels_classes(f"  {wsinfer}  ") == (["notumor", "Tumor"], "Tumor")
    plain = tmp_path / "p.csv"
    plain.write_text("x,y,width,height,probability\n0,0,64,64,0.5\n")
    assert say.labels_classes(str(plain)) == ([], None)
    assert say.labels_classes(str(tmp_path / "missing.csv")) == ([], None)
    assert say.labels_classes("") == ([], None)
    assert say.labels_classes(str(tmp_path)) == ([], None)  # a folder


# -- texts ---------------------------------------------------------------------------------------


def test_fixed_texts():
    block = ReviewBlock(17, 0, 0, 0, 64, 64, 0.5, 3)
    assert say.recorded_text(35.0, block) == "Recorded 35 % for block 17."
    assert say.recorded_text(2.5, block) == "Recorded 2.5 % for block 17."
    assert say.skipped_text(block) == "Skipped block 17."
    assert say.undone_text(block, False) == "Undone: block 17 is back for a new estimate."
    assert say.undone_text(block, True) == (
        "Undone (an estimate of an earlier session): block 17 is back for a new estimate."
    )
    assert say.choose_labels_text("s1") == "Choose the low-res CSV of s1 first."
    assert say.ALL_DONE_REVISE == (
        "Every sampled block of every bin has an estimate. Undo, N/P or B to revise."
    )


def test_bin_item_text():
    p = BinProgress(2, "10–20", 3, 12, 1, 40, math.nan, math.nan, 0)
    assert say.bin_item_text(p) == "10–20 %: 3/12  (40 blocks)"
    empty = BinProgress(2, "10–20", 0, 0, 0, 0, math.nan, math.nan, 0)
    assert say.bin_item_text(empty) == "10–20 %: no blocks"


@pytest.fixture
def session(project_copy):
    s = ReviewSession(project_copy, "ana", k=12, seed=0)
    yield s
    s.slides.close()


def test_review_status_follows_the_session(session):
    assert say.review_status(None) is None
    z = session.current_bin
    first = session.current
    st = say.review_status(session)
    assert st.title == f"bin {bin_label(session.bins, z)} %: 0/12"
    assert (st.done, st.target, st.current_bin) == (0, 12, z)
    assert st.stats == "no estimates yet · annotator: ana"
    assert len(st.bin_items) == len(session.bins)
    assert (
        st.bin_items[z] == f"{bin_label(session.bins, z)} %: 0/12  ({session.bin_sizes[z]} blocks)"
    )
    name = session.project.slides[first.slide].name
    assert st.block == (
        f"block 1 of 12 · {name} ({first.x}, {first.y}) {first.width}×{first.height} px · "
        f"p = {first.probability:.3f} · pending"
    )
    session.enter("35")
    st = say.review_status(session)
    assert (st.done, st.title) == (1, f"bin {bin_label(session.bins, z)} %: 1/12")
    assert st.stats == "mean 35.0 ± 0.0 % (n = 1) · annotator: ana"
    assert st.block.startswith("block 2 of 12 · ") and st.block.endswith(" · pending")
    assert session.prev()
    assert say.block_text(session, first).endswith(" · estimated 35 %")
    assert say.review_status(session).block.startswith("block 1 of 12 · ")


def test_moved_text(session):
    z = session.current_bin
    session.enter(10)
    assert session.last_move == "next"
    assert say.moved_text("Recorded.", session, z) == "Recorded."
    for i in range(11):
        session.enter(i)
    assert session.last_move == "bin done"
    label, now = bin_label(session.bins, z), bin_label(session.bins, session.current_bin)
    assert say.moved_text("Recorded.", session, z) == (
        f"Recorded. Bin {label} % is complete (12/12); now bin {now} %."
    )
    assert say.moved_text("Recorded.", session, None) == "Recorded."


def test_all_done_texts(project_copy):
    s = ReviewSession(project_copy, "ana", k=1, seed=3)
    n_slides = len(project_copy.slides)
    assert say.session_text(s, n_slides) == (
        f"{project_copy.folder.name}: {len(s.all_blocks)} blocks in {n_slides} slide(s); "
        "1 per bin, seed 3."
    )
    for _ in range(sum(1 for z in s.samples if s.samples[z])):
        s.enter(5)
    assert s.last_move == "all done"
    assert say.moved_text("Recorded 5 %.", s, 0) == (
        "Recorded 5 %. Every sampled block of every bin has an estimate."
    )
    st = say.review_status(s)
    assert st is not None and st.block == say.ALL_REVIEWED
    s.slides.close()


def test_bin_texts(project_copy, tmp_path):
    csv = tmp_path / "low.csv"
    csv.write_text("x,y,width,height,probability\n0,0,64,64,0.05\n64,0,64,64,0.97\n")
    entry = project_copy.slides[0]
    proj = Project.create(tmp_path / "p", [SlideEntry(entry.path, csv)])
    s = ReviewSession(proj, "ana", check_tissue=False)
    assert say.bin_text(s.bins, 9) == f"Bin {bin_label(s.bins, 9)} %."
    assert say.empty_bin_text(s, 4) == s.bin_message(4)
    assert "no blocks" in say.empty_bin_text(s, 4)
    assert say.bin_item_text(s.progress(4)) == f"{bin_label(s.bins, 4)} %: no blocks"
    s.slides.close()
