"""Block review dock widget driven by keys in a real napari viewer (run under Xvfb)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_lsr._reader import slide_layer_data
from napari_lsr.io.formats import read_prior_csv
from napari_lsr.io.project import Project, SlideEntry
from napari_lsr.layers import world_box, world_center
from napari_lsr.widgets.block_review import OUTLINE_NAME, BlockReviewWidget
from napari_lsr.widgets.prior_table import SAVED, PriorTableWidget

pytestmark = pytest.mark.gui


def _count(path, annotator: str | None = None) -> int:
    """Live estimates as a separate connection sees them (what is committed)."""
    con = sqlite3.connect(path)
    try:
        sql = "SELECT COUNT(*) FROM estimates WHERE undone_time IS NULL"
        if annotator:
            return con.execute(sql + " AND annotator=?", (annotator,)).fetchone()[0]
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def _type(qtbot, widget, text: str) -> None:
    qtbot.keyClicks(widget, text)
    qtbot.keyClick(widget, Qt.Key.Key_Return)


@pytest.fixture
def review(make_napari_viewer, project_copy):
    """The dock reviewing in the stratified order (K per bin), as before issue 25."""
    viewer = make_napari_viewer()
    widget = BlockReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Block review")
    widget.set_order("stratified")
    assert widget.set_project(project_copy, annotator="ana"), widget.message.text()
    yield viewer, widget
    widget.shutdown()


def _outline(viewer):
    return next((la for la in viewer.layers if la.name == OUTLINE_NAME), None)


def test_review_widget_on_screen(make_napari_viewer, project_copy, qtbot):
    """Layers, legend, camera, the yellow outline on screen, keys, value controls, bad input."""
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1300, 850)
    w = BlockReviewWidget(viewer)
    viewer.window.add_dock_widget(w, name="Block review")
    w.set_order("stratified")
    qtbot.wait(50)
    assert w.set_project(project_copy, annotator="ana"), w.message.text()
    qtbot.waitUntil(lambda: _outline(viewer) is not None, timeout=10000)
    names = [layer.name for layer in viewer.layers]
    assert names == ["slide_0", "slide_0 low-res bins", OUTLINE_NAME]
    assert len(w._legend_labels) == 10 and w._legend_labels[9].text().startswith("95–100")
    assert w.bin_combo.count() == 10
    assert w.progress_label.text() == "bin 0–20 %: 0/12"
    assert "annotator: ana" in w.stats_label.text()
    pix = w.image_label.pixmap()
    assert pix is not None and not pix.isNull()

    # the camera is on the block, which fills about a third of the canvas ...
    s = w.session
    block = s.current
    mpp = w.slides[0].mpp
    assert np.allclose(viewer.camera.center[-2:], world_center(block, mpp))
    assert viewer.camera.zoom == pytest.approx(min(viewer.canvas.size) / 3 / (block.width * mpp))
    assert np.allclose(_outline(viewer).translate, world_box(block, mpp)[0])
    # ... and the outline is yellow there on screen
    viewer.layers["slide_0 low-res bins"].visible = False
    shot = viewer.screenshot(canvas_only=True, flash=False)
    viewer.layers["slide_0 low-res bins"].visible = True
    rgb = shot[..., :3].astype(int)
    yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 200) & (rgb[..., 2] < 90)
    ys, xs = np.nonzero(yellow)
    assert len(ys) > 100
    h, wd = yellow.shape
    assert abs(np.median(xs) - wd / 2) < wd * 0.1 and abs(np.median(ys) - h / 2) < h * 0.1
    span = xs.max() - xs.min()
    assert 0.25 * min(h, wd) < span < 0.45 * min(h, wd)

    # navigation: N, P, B
    z = s.current_bin
    qtbot.keyClick(w, Qt.Key.Key_N)
    assert s.position == 1
    qtbot.keyClick(w, Qt.Key.Key_P)
    assert s.position == 0
    qtbot.keyClick(w, Qt.Key.Key_P)
    assert "First block" in w.message.text()
    qtbot.keyClick(w, Qt.Key.Key_B)
    assert s.current_bin != z and w.bin_combo.currentIndex() == s.current_bin
    assert np.allclose(viewer.camera.center[-2:], world_center(s.current, mpp))
    s.goto_bin(z)
    w._show_current()

    # bad input is refused with a visible message and nothing is stored
    for typed, words in [
        ("abc", "not a number"),
        ("150", "outside 0–100"),
        ("", "first"),
        ("-5", "outside"),
        ("1e9", "outside"),
    ]:
        block = s.current
        w.entry.setText(typed)
        qtbot.keyClick(w.entry, Qt.Key.Key_Return)
        assert words in w.message.text(), typed
        assert w.message.isVisible() and "ff6b6b" in w.message.styleSheet()
        assert s.current == block and s.status(block) == "pending"
    w.entry.clear()
    _type(qtbot, w, "150")  # digits typed on the widget itself
    assert "outside 0–100" in w.message.text()
    assert _count(project_copy.store.path) == 0
    w.entry.clear()

    # Up/Down ±5, and the spin box and slider stay in step with what is typed
    qtbot.keyClicks(w, "30")
    qtbot.keyClick(w, Qt.Key.Key_Up)
    assert w.entry.text() == "35" and w.spin.value() == 35 and w.slider.value() == 35
    qtbot.keyClick(w, Qt.Key.Key_Down)
    qtbot.keyClick(w, Qt.Key.Key_Down)
    assert w.entry.text() == "25"
    w.entry.setText("98")
    qtbot.keyClick(w, Qt.Key.Key_Up)
    assert w.entry.text() == "100"  # clamped
    w.slider.setValue(40)
    assert w.entry.text() == "40" and w.spin.value() == 40
    block = s.current
    qtbot.keyClick(w, Qt.Key.Key_Return)
    assert s.estimate_of(block) == 40
    assert w.message.styleSheet() != "" and "ff6b6b" not in w.message.styleSheet()
    w.spin.setValue(65)
    assert w.entry.text() == "65" and w.slider.value() == 65
    block = s.current
    w.record_button.click()
    assert s.estimate_of(block) == 65
    # typing into the entry field itself: Up there, Enter there
    block = s.current
    qtbot.keyClicks(w.entry, "12")
    qtbot.keyClick(w.entry, Qt.Key.Key_Up)
    assert w.entry.text() == "17"
    qtbot.keyClick(w.entry, Qt.Key.Key_Return)
    assert s.estimate_of(block) == 17
    assert _count(project_copy.store.path, "ana") == 3
    w.shutdown()


def test_a_whole_bin_by_keyboard_then_save_prior_and_reload(
    review, qtbot, make_napari_viewer, project_copy
):
    viewer, w = review
    table = PriorTableWidget(viewer)  # finds the block review's project
    viewer.window.add_dock_widget(table, name="Prior table")
    assert table.project is project_copy
    s = w.session
    z = s.current_bin
    store_path = project_copy.store.path
    seen: list[bool] = []  # is the last entry committed when the next block appears?

    def committed(_block) -> None:
        if s.undo_stack:
            con = sqlite3.connect(store_path)  # another connection sees only what is committed
            row = con.execute(
                "SELECT COUNT(*) FROM estimates WHERE id=?", (s.undo_stack[-1].estimate_id,)
            ).fetchone()
            con.close()
            seen.append(row[0] == 1)

    w.block_shown.connect(committed)

    entered: list[float] = []
    skipped = None
    while s.current_bin == z and s.current is not None:
        i = len(entered)
        block = s.current
        if i == 2 and skipped is None:  # S: skip; a replacement joins the bin
            skipped = block
            qtbot.keyClick(w, Qt.Key.Key_S)
            assert s.status(block) == "skipped"
            continue
        if i == 4:  # enter 99, Backspace undoes it, the same block comes back
            _type(qtbot, w, "99")
            assert s.estimate_of(block) == 99
            qtbot.keyClick(w, Qt.Key.Key_Backspace)
            assert s.current == block and s.status(block) == "pending"
        if i == 6:  # Ctrl+Z undoes too
            _type(qtbot, w, "1")
            qtbot.keyClick(w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
            assert s.current == block
        value = 5.0 * (i + 1)
        _type(qtbot, w, f"{value:g}")
        entered.append(value)
        assert s.estimate_of(block) == value
        if s.current_bin == z:
            p = s.progress(z)
            assert w.progress_label.text() == f"bin 0–20 %: {len(entered)}/12"
            assert f"mean {np.mean(entered):.1f} ± {np.std(entered):.1f} %" in w.stats_label.text()
            assert p.done == len(entered)

    # the bin is complete and the review moved on by itself
    assert len(entered) == 12 and s.current_bin != z
    assert "complete (12/12)" in w.message.text()
    assert w.bin_combo.itemText(z).startswith("0–20 %: 12/12")
    # every entry was committed before the next block appeared
    assert len(seen) >= 13 and all(seen)
    assert _count(store_path, "ana") == 13
    stored = [e.percent for e in project_copy.store.estimates("ana") if e.bin == z]
    assert sorted(stored) == sorted(entered)

    # the prior table follows (debounced) and saves the pooled table
    qtbot.waitUntil(lambda: table.prior is not None and table.prior.n[z] == 12, timeout=10000)
    assert table.table.item(z, 1).text() == "12"
    assert table.table.item(z, 2).text() == f"{np.mean(entered):.1f}"
    path = table.save_prior()
    assert path == project_copy.prior_path
    saved = read_prior_csv(path)
    assert saved.n[z] == 12 and saved.mean_pct[z] == pytest.approx(np.mean(entered), abs=0.01)

    # reload: a new viewer opens the folder; progress and the saved prior come back
    w.shutdown()
    viewer2 = make_napari_viewer()
    w2 = BlockReviewWidget(viewer2)
    w2.annotator_edit.setText("ana")
    assert w2.open_project(str(project_copy.folder))
    assert w2.session.progress(z).done == 12
    assert w2.session.current_bin != z
    t2 = PriorTableWidget(viewer2)
    assert t2.set_source(SAVED)
    assert t2.table.item(z, 2).text() == f"{np.mean(entered):.1f}"
    assert t2.table.item(z, 1).text() == "12"
    w2.shutdown()


def test_bad_projects_say_so(make_napari_viewer, project_copy, tmp_path):
    """No low-res labels, a missing folder, a bin with no blocks, no slide in the viewer."""
    viewer = make_napari_viewer()
    # as napari makes them from napari.yaml: each gets its own proxy of the viewer
    _, w = viewer.window.add_plugin_dock_widget("napari-lsr", "Block review")
    _, table = viewer.window.add_plugin_dock_widget("napari-lsr", "Prior table")
    assert isinstance(w, BlockReviewWidget) and isinstance(table, PriorTableWidget)
    assert w.state is table.state
    w.annotator_edit.setText("ana")
    assert w.record("10") is None and "Open a project" in w.message.text()
    assert not w.use_viewer_slide("x.csv")
    assert "No slide in the viewer" in w.message.text()
    entry = project_copy.slides[0]
    proj = Project.create(tmp_path / "nolabels", [SlideEntry(entry.path)])
    assert not w.set_project(proj)
    assert "no low-resolution labels" in w.message.text()
    assert w.session is None
    assert not w.open_project(tmp_path / "missing")
    assert "project.toml" in w.message.text()

    csv = tmp_path / "low.csv"
    csv.write_text("x,y,width,height,probability\n256,256,64,64,0.05\n320,256,64,64,0.97\n")
    proj = Project.create(tmp_path / "p", [SlideEntry(entry.path, csv)])
    assert w.set_project(proj)
    assert table.project is proj  # the prior table follows the block review
    w.bin_combo.setCurrentIndex(4)
    w.bin_combo.activated.emit(4)
    assert "no blocks" in w.message.text()
    assert w.bin_combo.itemText(4) == "50–60 %: no blocks"
    w.shutdown()


def test_use_the_slide_already_in_the_viewer(make_napari_viewer, project_copy):
    from napari_lsr.io.slide import Slide

    viewer = make_napari_viewer()
    entry = project_copy.slides[0]
    slide = Slide(entry.path)
    data, meta, _ = slide_layer_data(slide)
    viewer.add_image(data, **meta)
    w = BlockReviewWidget(viewer)
    assert not w.use_viewer_slide("")
    assert "CSV" in w.message.text()
    w.annotator_edit.setText("ana")
    assert w.use_viewer_slide(str(entry.labels)), w.message.text()
    assert w.project.folder.name == "slide_0_lsr"
    rgb_layers = [layer for layer in viewer.layers if getattr(layer, "rgb", False)]
    assert len(rgb_layers) == 1  # the open slide is reused, not added twice
    w.shutdown()
    slide.close()


def test_second_viewer_on_the_same_project(make_napari_viewer, project_copy, qtbot):
    folder = str(project_copy.folder)
    widgets = []
    for name in ("ana", "ben"):
        viewer = make_napari_viewer()
        w = BlockReviewWidget(viewer)
        w.annotator_edit.setText(name)
        assert w.open_project(folder), w.message.text()
        widgets.append(w)
    assert widgets[0].project.store is not widgets[1].project.store
    for i in range(8):
        for w in widgets:
            _type(qtbot, w, str(10 + i))
    path = project_copy.folder / "annotations.sqlite"
    assert _count(path, "ana") == 8 and _count(path, "ben") == 8
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    for w in widgets:
        w.shutdown()


def test_enter_in_a_field_does_only_what_the_field_means(make_napari_viewer, project_copy, qtbot):
    """Issue 14: Enter in the Project or Annotator field opened the project, then said "Type a
    cancer percentage from 0 to 100 first."; after an entry the spin box and slider kept the
    previous value while the entry field was empty."""
    viewer = make_napari_viewer(show=True)
    w = BlockReviewWidget(viewer)
    viewer.window.add_dock_widget(w, name="Block review")
    w.annotator_edit.setText("ana")
    w.path_edit.setText(str(project_copy.folder))
    w.path_edit.setFocus()
    qtbot.keyClick(w.path_edit, Qt.Key.Key_Return)
    assert w.session is not None, w.message.text()
    assert "first" not in w.message.text() and "ff6b6b" not in w.message.styleSheet()
    for field in (w.annotator_edit, w.path_edit, w.k_spin, w.seed_spin):
        field.setFocus()
        qtbot.keyClick(field, Qt.Key.Key_Return)
        assert "percentage" not in w.message.text(), field
    assert _count(project_copy.store.path) == 0
    # an entry empties the entry field, the spin box and the slider together
    w.setFocus()
    _type(qtbot, w, "35")
    assert _count(project_copy.store.path) == 1
    assert w.entry.text() == "" and w.spin.text() == "–" and w.slider.value() == 0
    qtbot.keyClick(w, Qt.Key.Key_Up)  # from nothing, Up starts at 5
    assert w.entry.text() == "5" and w.spin.value() == 5 and w.slider.value() == 5
    w.shutdown()


def test_use_slide_follows_the_csv_chosen_last(make_napari_viewer, project_copy, tmp_path):
    """Issue 14: once Use slide had seen a bad CSV, the slide stayed bound to it."""
    from napari_lsr.io.slide import Slide

    viewer = make_napari_viewer()
    entry = project_copy.slides[0]
    slide = Slide(entry.path)
    data, meta, _ = slide_layer_data(slide)
    viewer.add_image(data, **meta)
    w = BlockReviewWidget(viewer)
    w.annotator_edit.setText("ana")
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,width,height,probability\n0,0,64,64,abc\n")
    assert not w.use_viewer_slide(str(bad))
    text = w.message.text()
    assert "not a number" in text and text.rstrip().endswith("bad.csv")  # reason first
    w.csv_edit.setText(str(entry.labels))
    w.csv_edit.returnPressed.emit()  # Enter in the Labels field: Use slide
    assert w.session is not None, w.message.text()
    assert "bad.csv" not in w.message.text()
    assert w.project.slides[0].labels == entry.labels.resolve()
    w.shutdown()
    slide.close()


def test_the_four_docks_open_tabbed_and_fit_the_screen(make_napari_viewer, project_copy, qtbot):
    """Issue 14: with all four docks open, as `make demo` opens them, the window grew to
    2070 px on a 1080-px screen and Block review shrank to a few rows."""
    from napari_lsr.widgets._docks import DOCKS, open_docks
    from napari_lsr.widgets._napari import main_window

    viewer = make_napari_viewer(show=True)
    widgets = open_docks(viewer, project_copy)
    window = main_window(viewer)
    assert list(widgets) == list(DOCKS)
    review = widgets["Block review"]
    review.annotator_edit.setText("ana")
    assert review.start_session(), review.message.text()
    qtbot.waitUntil(review.image_label.isVisible, timeout=5000)
    avail = window.screen().availableGeometry()
    assert window.height() <= avail.height() and window.width() <= avail.width()
    for w in (review.image_label, review.record_button, review.skip_button, review.undo_button):
        assert w.isVisible() and w.visibleRegion().boundingRect().size() == w.size(), w
    review.shutdown()


def test_entry_and_spin_box_always_agree(review, qtbot):
    """Issue 24.8: Backspace after Up/Down, and a third digit past 100."""
    viewer, w = review
    w.setFocus()
    qtbot.keyClicks(w, "35")
    qtbot.keyClick(w, Qt.Key.Key_Down)
    assert (w.entry.text(), w.spin.value()) == ("30", 30)
    qtbot.keyClick(w, Qt.Key.Key_Backspace)
    assert (w.entry.text(), w.spin.value(), w.slider.value()) == ("3", 3, 3)
    qtbot.keyClick(w, Qt.Key.Key_Backspace)
    assert w.entry.text() == "" and w.spin.text() == "–"
    qtbot.keyClicks(w, "150")
    assert (w.entry.text(), w.spin.text()) == ("150", "–")  # never 15 % beside 150
    assert "outside 0–100" in w.message.text()
    block = w.session.current
    qtbot.keyClick(w, Qt.Key.Key_Return)
    assert w.session.status(block) == "pending"  # refused
    qtbot.keyClick(w, Qt.Key.Key_Backspace)
    assert (w.entry.text(), w.spin.value()) == ("15", 15)
    qtbot.keyClick(w, Qt.Key.Key_Return)
    assert w.session.estimate_of(block) == 15
    # typed straight into the focused entry: a value out of range leaves the spin box empty
    w.entry.setFocus()
    w.entry.clear()
    qtbot.keyClicks(w.entry, "150")
    assert w.entry.text() == "150" and w.spin.text() == "–"


def test_reopening_a_reviewed_project_shows_the_slide_and_undo_reaches_back(
    make_napari_viewer, project_copy, qtbot
):
    """Issue 24.9: the canvas is not empty, Undo reaches the earlier session, and a hint
    says where the keys went once the canvas has them."""
    from qtpy.QtWidgets import QApplication

    from napari_lsr.elicit.review import ReviewSession

    s = ReviewSession(project_copy, "ana", k=1)
    while s.current is not None:
        s.enter(10)
    viewer = make_napari_viewer(show=True)
    w = BlockReviewWidget(viewer)
    viewer.window.add_dock_widget(w, name="Block review")
    w.set_order("stratified")
    w.k_spin.setValue(1)
    assert w.set_project(project_copy, annotator="ana"), w.message.text()
    assert w.session.finished and w.session.current is None
    images = [la for la in viewer.layers if getattr(la, "rgb", False) and la.visible]
    assert images, [la.name for la in viewer.layers]  # the slide is on the canvas
    assert any("low-res bins" in la.name and la.visible for la in viewer.layers)
    block = w.undo()
    assert block is not None and w.session.current == block
    assert "earlier session" in w.message.text()

    from qtpy.QtOpenGLWidgets import QOpenGLWidget

    [other] = w.window().findChildren(QOpenGLWidget)  # napari's canvas takes the keyboard
    other.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
    QApplication.setActiveWindow(w.window())
    w.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is w, timeout=5000)
    other.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is other, timeout=5000)
    assert "click this dock" in w.message.text()
    w.setFocus()
    qtbot.waitUntil(lambda: "click this dock" not in w.message.text(), timeout=5000)
    w.shutdown()


def test_docks_added_from_the_plugins_menu_are_tabbed(make_napari_viewer, project_copy, qtbot):
    """Issue 24.6: added one by one (Plugins menu), the docks stacked, three got about 69 px
    each and the window grew off a 1366x768 screen. Each new one is now a tab of the others,
    in front."""
    from qtpy.QtWidgets import QDockWidget

    from napari_lsr.widgets._docks import DOCKS
    from napari_lsr.widgets._napari import main_window

    viewer = make_napari_viewer(show=True)
    docks = []
    for key in DOCKS:
        dock, _ = viewer.window.add_plugin_dock_widget("napari-lsr", key)  # as the menu does
        qtbot.wait(20)
        docks.append(dock)
    window = main_window(viewer)
    first = docks[0]
    tabbed = set(window.tabifiedDockWidgets(first))
    assert tabbed == set(docks[1:]), [d.windowTitle() for d in tabbed]
    assert all(isinstance(d, QDockWidget) for d in docks)
    # the last one added is in front, and the window stays within the screen
    assert docks[-1].visibleRegion().boundingRect().height() > 300
    avail = window.screen().availableGeometry()
    assert window.height() <= avail.height() and window.width() <= avail.width()
    for dock in docks:
        widget = dock.widget()
        inner = [w for w in widget.findChildren(object) if hasattr(w, "shutdown")]
        for w in inner:
            w.shutdown()


def test_heat_overlay_has_an_off_switch_and_an_opacity(review, qtbot):
    """Issue 24.7: the 0.3-opacity overlay tints H&E; the dock turns it off or down."""
    viewer, w = review
    [heat] = [la for la in viewer.layers if "low-res bins" in la.name]
    assert heat.visible and heat.opacity == pytest.approx(0.3)
    w.overlay_slider.setValue(60)
    assert heat.opacity == pytest.approx(0.6) and w.overlay_opacity() == pytest.approx(0.6)
    w.overlay_check.setChecked(False)
    assert not heat.visible and w.overlay_opacity() == 0.0
    qtbot.keyClick(w, Qt.Key.Key_N)  # moving on keeps it off
    assert not heat.visible
    w.overlay_check.setChecked(True)
    assert heat.visible and heat.opacity == pytest.approx(0.6)
    # the block preview is read at the size it is shown at, not the 32 px training blocks
    block = w.session.current
    assert w.images.read(block).shape[:2] == (block.height, block.width)


# -- the guided order (issue 25) -----------------------------------------------------------------


def test_guided_review_shows_each_bins_certainty_and_says_when_the_prior_is_good_enough(
    make_napari_viewer, project_copy, qtbot
):
    """The dock's default order; the legend marks each bin's certainty, the status line says
    where the current bin's average likely lies, and the stop rule is met in plain words."""
    from napari_lsr.elicit.certainty import good_enough

    viewer = make_napari_viewer(show=True)
    w = BlockReviewWidget(viewer)
    viewer.window.add_dock_widget(w, name="Block review")
    assert w.order == "guided" and not w.k_spin.isEnabled()
    assert w.set_project(project_copy, annotator="ana"), w.message.text()
    assert w.session.guided and "guided order" in w.message.text()
    with_blocks = [c for c in w.session.certainty() if c.blocks]
    assert all(w._legend_labels[c.bin].text().endswith("·") for c in with_blocks)
    assert "not reviewed" in w.certainty_label.text() and "Keep going" in w.certainty_label.text()
    shown = []
    w.setFocus()
    while not good_enough(w.session.certainty()):
        block = w.session.current
        assert block is not None and block.id not in shown
        shown.append(block.id)
        qtbot.keyClicks(w, str(round(100 * block.probability) // 5 * 5))
        qtbot.keyClick(w, Qt.Key.Key_Return)
    assert w.session.current is not None, "the rule holds before every block is seen"
    assert len(shown) < sum(c.blocks for c in with_blocks)
    assert "The prior is good enough" in w.certainty_label.text()
    marks = {label.text().split()[-1] for label in w._legend_labels if label.toolTip()}
    assert "✓" in marks and "?" not in marks and "·" not in marks
    tip = w._legend_labels[with_blocks[0].bin].toolTip()
    assert "likely" in tip and "blocks" in tip
    # the stratified order stays available: K per bin again
    w.set_order("stratified")
    assert not w.session.guided and w.k_spin.isEnabled()
    assert w.progress_label.text().endswith(f"/{w.k_spin.value()}")
    w.shutdown()
