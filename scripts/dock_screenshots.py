"""Screenshots of napari with all four napari-lsr docks, as `make demo` opens them.

Run under Xvfb at each screen size (the window is fitted to the screen, as on a laptop):

    QT_API=pyqt6 xvfb-run -a -s "-screen 0 1366x768x24" python scripts/dock_screenshots.py
    QT_API=pyqt6 xvfb-run -a -s "-screen 0 1920x1080x24" python scripts/dock_screenshots.py

Writes ``docs/images/docks_<width>x<height>.png`` and prints whether the block image and
the Record/Skip/Undo buttons are inside the window and the dock's visible area.
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
    viewer.close()
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
