"""Prior table dock widget in a real napari viewer: sources, flags, edits, save and load."""

from __future__ import annotations

import numpy as np
import pytest
import tomllib

from napari_lsr.elicit.review import ReviewSession
from napari_lsr.io.formats import paper_prior, read_prior_csv
from napari_lsr.io.project import Project, SlideEntry
from napari_lsr.widgets import prior_table
from napari_lsr.widgets.prior_table import (
    ANNOTATOR,
    COL_CHANGE,
    COL_MEAN,
    COL_NOTES,
    COL_RANGE,
    COL_SOURCE,
    COL_STD,
    FILE,
    PAPER,
    POOLED,
    SAVED,
    PriorTableWidget,
    range_text,
)

pytestmark = pytest.mark.gui


def test_range_text_says_when_every_block_is_estimated():
    from napari_lsr.elicit.certainty import mean_range

    assert range_text(*mean_range(67.5, 7.5, 2, blocks=2)) == "68 (all blocks)"
    assert range_text(*mean_range(67.5, 7.5, 2, blocks=40)) == "52–83"
    assert range_text(float("nan"), float("nan")) == "–"


def _estimate(project, annotator: str, values: dict[int, list[float]]) -> None:
    """Enter estimates bin by bin through a review session (as the block review does)."""
    s = ReviewSession(project, annotator, k=12, seed=0, check_tissue=False)
    for z, vals in values.items():
        assert s.goto_bin(z)
        for v in vals:
            assert s.current.bin == z
            s.enter(v)
    s.slides.close()


def test_prior_table(make_napari_viewer, project_copy, tmp_path, qtbot, monkeypatch):
    # nothing in this test replaces a measured value with the paper's: no question is asked
    monkeypatch.setattr(prior_table, "confirm_replace", lambda *a: pytest.fail("asked"))
    # ana: bins 0, 1, 2 (bin 2 falls below bin 1) and one estimate in bin 9; ben: bin 0
    _estimate(project_copy, "ana", {0: [2, 4, 6], 1: [30, 40], 2: [10, 20], 9: [80]})
    _estimate(project_copy, "ben", {0: [4, 8, 6]})
    viewer = make_napari_viewer()
    w = PriorTableWidget(viewer)
    viewer.window.add_dock_widget(w, name="Prior table")
    assert w.project is None
    assert w.open_project(str(project_copy.folder))
    t = w.table
    assert w.source() == (POOLED, "")
    assert t.rowCount() == 10
    assert [t.item(0, c).text() for c in range(6)] == [
        "0–20",
        "6",
        "5.0",
        "8.2",  # the 6 estimates' 1.9 pooled with a typical 15 (issue 25)
        "0–10",  # issue 25: where the bin's average likely lies, from 6 estimates
        "0 ± 0.1",
    ]
    assert "widened toward a typical 15" in t.item(0, COL_STD).toolTip()
    assert "widened" not in t.item(5, COL_STD).toolTip()  # a measured row keeps its own
    assert t.horizontalHeaderItem(COL_RANGE).text() == "Mean likely in %"
    assert "9 times in 10" in t.item(0, COL_RANGE).toolTip()
    # rows from estimates or measurements have a range; the paper's and typed values none
    for b in range(10):
        has_range = t.item(b, COL_RANGE).text() != "–"
        assert has_range == (t.item(b, COL_SOURCE).text() in ("reviewed here", "measured"))
    assert t.item(1, 1).text() == "2" and t.item(1, 2).text() == "35.0"
    # a bin nobody reviewed keeps the value prior.csv measured for it (issue 14)
    measured = read_prior_csv(project_copy.prior_path)
    assert t.item(5, 1).text() == str(int(measured.n[5]))
    assert t.item(5, COL_SOURCE).text() == "measured" and t.item(5, COL_CHANGE).text() == ""
    assert "kept from prior.csv" in t.item(5, COL_NOTES).text()
    assert t.item(0, COL_SOURCE).text() == "reviewed here" and "→" in t.item(0, COL_CHANGE).text()
    assert "0 of 10 bins from the paper's Table 1, 10 from this data" in w.flags_label.text()
    # flags: bins with fewer than 2 estimates, and means that fall
    assert "< 2 estimates" in t.item(9, COL_NOTES).text()
    assert "not monotonic" in t.item(2, COL_NOTES).text()
    assert "fewer than 2 estimates: 3–4" not in w.flags_label.text()
    assert "95–100" in w.flags_label.text() and "not monotonic): 20–30" not in w.flags_label.text()
    drops = [ln for ln in w.flags_label.text().split("\n") if "not monotonic" in ln]
    assert "30–40" in drops[0]
    # one Gaussian per bin, and the paper's dashed beside it
    assert len(w.figure.axes[0].lines) == 20

    # per-annotator tables and agreement
    a = w.annotator_table
    headers = [a.horizontalHeaderItem(c).text() for c in range(a.columnCount())]
    assert headers == ["Bin %", "ana", "ben", "Blocks ≥2", "Mean |diff|", "ICC"]
    assert a.item(0, 1).text() == "4.0 ± 1.6 (3)" and a.item(0, 2).text() == "6.0 ± 1.6 (3)"
    assert a.item(0, 3).text() == "3"  # both annotated the same three blocks (same seed)
    assert a.item(0, 4).text() == "2.0"
    assert "2 annotators" in w.agreement_label.text()
    assert w.set_source(ANNOTATOR, "ben")
    assert t.item(0, 1).text() == "3" and t.item(1, COL_SOURCE).text() == "measured"

    # edits through the table, recorded with who and when
    assert w.set_source(POOLED)
    w.name_edit.setText("dr_x")
    t.item(5, COL_MEAN).setText("25")
    edits = project_copy.store.prior_edits()
    assert edits[5][:3] == (25.0, w.base.std_pct[5], "dr_x")
    assert t.item(5, COL_MEAN).text() == "25.0" and "edited by dr_x" in t.item(5, COL_NOTES).text()
    assert t.item(5, COL_SOURCE).text() == "edited"
    t.item(5, COL_STD).setText("abc")  # refused, visibly, and the cell is put back
    assert "not a number" in w.message.text() and w.message.isVisibleTo(w)
    assert t.item(5, COL_STD).text() == f"{w.prior.std_pct[5]:.1f}"
    t.item(5, COL_MEAN).setText("150")
    assert "0–100" in w.message.text()
    assert len(project_copy.store.prior_edit_history()) == 1
    w.name_edit.setText("")
    assert not w.edit_bin(6, 10, 1)
    assert "your name" in w.message.text()
    w.name_edit.setText("dr_x")

    # save writes prior.csv atomically; the saved table reloads as it was
    path = w.save_prior()
    assert path == project_copy.prior_path
    saved = read_prior_csv(path)
    assert saved.mean_pct[5] == 25.0 and saved.source[5] == "edited"
    assert saved.source[0] == "reviewed" and saved.source[6] == "measured"
    assert saved.n[0] == 6 and saved.mean_pct[0] == pytest.approx(5.0)
    assert not list(path.parent.glob(".prior.csv.*"))  # no temporary file left behind
    assert w.set_source(SAVED)
    assert t.item(5, COL_MEAN).text() == "25.0" and t.item(0, 1).text() == "6"

    # revert the edit; load the paper default, a file, a bad file
    assert w.set_source(POOLED)
    t.selectRow(5)
    assert w.revert_edit()
    assert 5 not in w.edits and t.item(5, COL_MEAN).text() == f"{paper_prior().mean_pct[5]:.1f}"
    assert not w.revert_edit(5)
    assert w.load_prior(None) and w.source() == (PAPER, "")
    assert t.item(9, COL_MEAN).text() == "70.0"
    assert w.load_prior(path) and w.source() == (FILE, "")
    bad = tmp_path / "bad.csv"
    bad.write_text("bin,p_low,p_high,mean_pct,std_pct,n\n0,0,100,abc,1,\n")
    assert not w.load_prior(bad)
    assert "abc" in w.message.text() and "row 1" in w.message.text()


def test_save_into_a_project_without_a_prior(make_napari_viewer, project_copy, tmp_path):
    entry = project_copy.slides[0]
    proj = Project.create(tmp_path / "p", [SlideEntry(entry.path, entry.labels)])
    assert proj.prior_path is None
    _estimate(proj, "ana", {0: [10, 20]})
    viewer = make_napari_viewer()
    w = PriorTableWidget(viewer)
    w.set_project(proj)
    assert w.table.item(0, 1).text() == "2"
    path = w.save_prior()
    assert path == proj.folder / "prior.csv" and path.exists()
    cfg = tomllib.loads((proj.folder / "project.toml").read_text())
    assert cfg["prior"]["path"] == "prior.csv"
    assert Project.open(proj.folder).prior().mean_pct[0] == pytest.approx(15.0)


def test_a_partial_review_never_replaces_measured_values_unasked(
    make_napari_viewer, project_copy, monkeypatch
):
    """Issue 14: on a project whose prior.csv was measured from the masks, one bin was
    reviewed and Save prior wrote the paper's Table 1 over the 9 other bins, unasked."""
    measured = read_prior_csv(project_copy.prior_path)
    assert set(measured.source) == {"measured"}
    _estimate(project_copy, "ana", {9: [70, 80, 90]})
    asked: list[str] = []
    answer = [False]

    def confirm(parent, title, text):
        asked.append(text)
        return answer[0]

    monkeypatch.setattr(prior_table, "confirm_replace", confirm)
    viewer = make_napari_viewer()
    w = PriorTableWidget(viewer)
    w.set_project(project_copy)
    t = w.table
    assert w.source() == (POOLED, "")
    for b in range(9):  # shown as measured, and the save leaves them as they are
        assert t.item(b, COL_SOURCE).text() == "measured"
        assert t.item(b, COL_CHANGE).text() == ""
        assert t.item(b, COL_MEAN).text() == f"{measured.mean_pct[b]:.1f}"
    assert t.item(9, COL_SOURCE).text() == "reviewed here"
    assert "measured" in t.item(9, COL_CHANGE).text() and "reviewed" in t.item(9, COL_CHANGE).text()
    path = w.save_prior()
    assert path is not None and asked == []
    saved = read_prior_csv(path)
    assert saved.source == ["measured"] * 9 + ["reviewed"]
    np.testing.assert_allclose(saved.mean_pct[:9], measured.mean_pct[:9], rtol=1e-3)
    np.testing.assert_array_equal(saved.n[:9], measured.n[:9])
    assert saved.mean_pct[9] == pytest.approx(80.0) and saved.n[9] == 3
    # the paper's table over this data: the save says what it replaces and asks first
    before = path.read_bytes()
    assert w.set_source(PAPER)
    assert t.item(0, COL_SOURCE).text() == "paper Table 1"
    assert "measured" in t.item(0, COL_CHANGE).text() and "paper" in t.item(0, COL_CHANGE).text()
    assert "10 of 10 bins from the paper's Table 1, 0 from this data" in w.flags_label.text()
    assert w.save_prior() is None
    assert len(asked) == 1 and "10 bin(s)" in asked[0] and "95–100" in asked[0]
    assert path.read_bytes() == before and "Not saved" in w.message.text()
    answer[0] = True
    assert w.save_prior() == path and len(asked) == 2
    assert read_prior_csv(path).source == ["paper"] * 10


# -- issue 24.11 ----------------------------------------------------------------------------


def test_a_bin_without_blocks_is_never_flagged_and_prior_csv_has_lf(make_napari_viewer, tmp_path):
    """Bins 1-8 hold no block: no 'not monotonic' there, nor 'fewer than 2 estimates';
    bin 9 is compared with bin 0. prior.csv is written with LF line endings."""
    from napari_lsr.sample.synthetic import write_sample

    src = write_sample(tmp_path / "src", size=512, mpp=2.0, seed=2, block_um=128.0)
    csv = tmp_path / "two_bins.csv"
    rows = ["x,y,width,height,probability"]
    rows += [f"{x},0,64,64,0.05" for x in range(0, 192, 64)]  # bin 0
    rows += [f"{x},64,64,64,0.97" for x in range(0, 192, 64)]  # bin 9
    csv.write_text("\n".join(rows) + "\n")
    proj = Project.create(tmp_path / "p", [SlideEntry(src.slides[0].path, csv)])
    _estimate(proj, "ana", {0: [30, 40, 35], 9: [90, 95, 85]})
    viewer = make_napari_viewer()
    w = PriorTableWidget(viewer)
    viewer.window.add_dock_widget(w, name="Prior table")
    assert w.open_project(str(proj.folder))
    assert w.source() == (POOLED, "")
    assert w.flags.not_monotonic == [] and w.flags.few_estimates == []
    notes = [w.table.item(b, COL_NOTES).text() for b in range(10)]
    assert not any("not monotonic" in n for n in notes), notes
    path = w.save_prior()
    data = path.read_bytes()
    assert b"\r\n" not in data and data.count(b"\n") == 11


def test_the_task_list_call_makes_no_future_warning(make_napari_viewer):
    """A widget from the Plugins menu gets napari's proxy of the viewer, which warned on the
    private task-list call at every run."""
    import warnings

    from napari_lsr.widgets import _napari

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-lsr", "Prior table")
    assert type(widget.viewer).__name__ == "PublicOnlyProxy"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        task = _napari.register_task(widget.viewer, "napari-lsr", "test", lambda: None)
        _napari.end_task(widget.viewer, task, "done")
    assert task is not None
    assert not [w for w in seen if issubclass(w.category, FutureWarning)], [
        str(w.message) for w in seen
    ]
