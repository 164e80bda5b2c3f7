"""Screenshots of napari with all four napari-lsr docks, as `make demo` opens them.

Run under Xvfb at each screen size (the window is fitted to the screen, as on a laptop):

    QT_API=pyqt6 xvfb-run -a -s "-screen 0 1366x768x24" python scripts/dock_screenshots.py
    QT_API=pyqt6 xvfb-run -a -s "-screen 0 1920x1080x24" python scripts/dock_screenshots.py

Writes ``docs/images/docks_<width>x<height>.png`` and prints whether the block image and
the Record/Skip/Undo buttons are inside the window and the dock's visible area. Then, with
the Training dock in front (a model-health report and three models listed) and with the
Comparison dock in front after a comparison of two stand-in predictions, writes
``docks_<size>_training.png`` and ``docks_<size>_comparison.png`` and prints whether their
contents fit: the health verdict's whole text, every bin of the health table, the Models
table without sideways scrolling, the Comparison dock no wider than its area.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "docs" / "images"


def _visible(widget, window) -> bool:
    """True when the whole of ``widget`` is on screen inside ``window`` and its scroll area."""
    from qtpy.QtCore import QPoint, QRect

    if not widget.isVisible():
        return False
    top_left = widget.mapTo(window, QPoint(0, 0))
    rect = QRect(top_left, widget.size())
    if not window.rect().contains(rect):
        return False
    parent = widget.parentWidget()
    while parent is not None and parent is not window:  # clipped by a scroll area?
        clip = QRect(parent.mapTo(window, QPoint(0, 0)), parent.size())
        if not clip.contains(rect):
            return False
        parent = parent.parentWidget()
    return True


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_lsr.io.project import Project
    from napari_lsr.sample.synthetic import write_sample
    from napari_lsr.widgets._docks import fit_window, open_docks
    from napari_lsr.widgets._napari import main_window

    folder = Path(tempfile.mkdtemp(prefix="lsr-docks-")) / "project"
    write_sample(folder, size=1536, mpp=1.0, seed=3, block_um=128.0)
    project = Project.open(folder)
    viewer = napari.Viewer(title="napari-lsr demo", show=True)
    viewer.open(str(project.slides[0].path), plugin="napari-lsr")
    widgets = open_docks(viewer, project)
    window = main_window(viewer)  # found above the docks, now that they are open
    review = widgets["Block review"]
    review.annotator_edit.setText("pathologist")
    review.start_session()
    avail = window.screen().availableGeometry()
    window.setGeometry(avail)  # maximised (Xvfb has no window manager to do it)
    for _ in range(20):
        QApplication.processEvents()
    fit_window(viewer)
    for _ in range(20):
        QApplication.processEvents()
    screen = window.screen().availableGeometry()
    size = f"{screen.width()}x{screen.height()}"
    ok = {
        "window fits": window.frameGeometry().height() <= screen.height()
        and window.frameGeometry().width() <= screen.width(),
        "block image": _visible(review.image_label, window),
        **{
            b.text(): _visible(b, window)
            for b in (review.record_button, review.skip_button, review.undo_button)
        },
    }
    print(size, f"window {window.width()}x{window.height()}", ok)
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"docks_{size}.png"
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}")
    review.shutdown()
    ok.update(_training_shot(viewer, widgets["Training"], project, size))
    ok.update(_comparison_shot(viewer, widgets["Comparison"], project, size))
    print(size, ok)
    viewer.close()
    return 0 if all(ok.values()) else 1


def _settle(n: int = 20) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(n):
        QApplication.processEvents()


def _front(widget) -> None:
    from qtpy.QtWidgets import QDockWidget

    dock = widget.parentWidget()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    if dock is not None:
        dock.show()
        dock.raise_()
    _settle()


def _fake_models(folder: Path) -> None:
    """Three stand-in models (a zip .pt and a card each), as a project's models/ holds."""
    import json
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    for name, loss, status, steps in (
        ("intra+inter-gaussian", "intra+inter", "done", 500),
        ("intra-gaussian", "intra", "done", 500),
        ("intra+inter-gaussian-2", "intra+inter", "cancelled", 212),
    ):
        with zipfile.ZipFile(folder / f"{name}.pt", "w") as zf:
            zf.writestr(f"{name}/data.pkl", b"")
        card = {
            "name": name,
            "checkpoint": f"{name}.pt",
            "status": status,
            "loss": loss,
            "distance": "gaussian",
            "steps": steps,
            "steps_planned": 500,
            "final_loss": 0.01234,
        }
        (folder / f"{name}.card.json").write_text(json.dumps(card))


def _training_shot(viewer, training, project, size: str) -> dict[str, bool]:
    import numpy as np

    from napari_lsr.learn.health import assess

    _fake_models(project.models_dir)
    training.refresh_models()
    prior = project.prior()
    rng = np.random.default_rng(0)
    z = np.repeat(np.arange(10), 12)
    fr = np.clip(np.asarray(prior.eta)[z] + rng.normal(0, 0.05, len(z)), 0, 1)
    training.show_health(assess(fr, z, np.asarray(prior.eta), np.asarray(prior.rho)).to_dict())
    _front(training)
    label, table, tree = training.health_label, training.health_table, training.models_tree
    need = label.heightForWidth(label.width()) if label.hasHeightForWidth() else 0
    rows = table.columnCount()  # one column per bin
    head = table.horizontalHeader()
    used = sum(head.sectionSize(c) for c in range(rows))
    hbar = tree.horizontalScrollBar()
    ok = {
        "health text": label.height() >= need,
        "every health bin": rows == 10
        and used <= table.viewport().width()
        and table.viewport().height() >= sum(table.rowHeight(r) for r in range(table.rowCount())),
        "models without scrolling sideways": not (hbar.isVisible() and hbar.maximum() > 0),
    }
    print(
        size,
        f"training: health text {label.height()}/{need} px, "
        f"table {rows} bins in {used}/{table.viewport().width()} px",
        ok,
    )
    out = OUT / f"docks_{size}_training.png"
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}")
    return ok


def _comparison_shot(viewer, comparison, project, size: str) -> dict[str, bool]:
    import numpy as np
    from scipy import ndimage as ndi

    from napari_lsr.demo import show_comparison
    from napari_lsr.io.formats import read_truth, write_prediction
    from napari_lsr.io.slide import Slide
    from napari_lsr.widgets.comparison import ENTRY_ROLE

    entry = project.slides[0]
    with Slide(entry.path) as slide:
        dims, mpp = slide.dimensions, slide.mpp
    truth = read_truth(entry.truth, dims)
    ds = float(truth.downsample)
    for name, loss, grow in (
        ("intra+inter-gaussian", "intra+inter/gaussian", 2),
        ("intra-gaussian", "intra/gaussian", -2),
    ):
        op = ndi.binary_dilation if grow > 0 else ndi.binary_erosion
        mask = op(truth.mask, iterations=abs(grow))
        info = {
            "slide": str(entry.path.resolve()),
            "slide_width": dims[0],
            "slide_height": dims[1],
            "downsample": ds,
            "mpp": (mpp or 1.0) * ds,
            "model": name,
            "loss": loss,
        }
        pred = project.predictions_dir / "stand-in" / f"{name}.tiff"
        write_prediction(pred, np.where(mask, 230, 20).astype(np.uint8), info)
        comparison.add_prediction_file(pred)
    for i in reversed(range(comparison.models_list.count())):  # only the stand-ins
        item = comparison.models_list.item(i)
        if item.data(ENTRY_ROLE).checkpoint is not None:
            comparison.models_list.takeItem(i)
    _front(comparison)  # as a user runs it: the dock in front
    show_comparison(comparison)
    _settle()
    from qtpy.QtWidgets import QScrollArea

    scroll = comparison.findChild(QScrollArea)
    inner_width, view = scroll.widget().width(), scroll.viewport().width()
    area = comparison.width()
    table = comparison.table
    header = table.horizontalHeader()
    used = sum(header.sectionSize(c) for c in range(header.count()))
    ok = {
        "comparison fits its dock": inner_width <= view,
        "score table fits": used <= table.viewport().width(),
        "band line below the table": comparison.band_label.geometry().top()
        >= table.geometry().bottom(),
        "Regions to QuPath button whole": comparison.export_regions_button.width()
        >= comparison.export_regions_button.sizeHint().width(),
    }
    print(
        size,
        f"comparison: contents {inner_width} px in {view} px (dock {area} px), "
        f"table {used}/{table.viewport().width()} px",
        ok,
    )
    scroll.ensureWidgetVisible(comparison.export_regions_button)  # the scores in view
    _settle()
    out = OUT / f"docks_{size}_comparison.png"
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
