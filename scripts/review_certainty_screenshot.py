"""Screenshots of Block review in the guided order and of the Prior table's ranges (issue 25).

Run under Xvfb:

    QT_API=pyqt6 xvfb-run -a -s "-screen 0 1600x1000x24" \
        python scripts/review_certainty_screenshot.py

Writes the demo's synthetic sample to a temporary folder, opens Block review (the guided
order, its default) and the Prior table, and types the estimates of a simulated pathologist
(each block's true tumour percentage from the sample's truth, plus Gaussian noise of sd 10,
rounded to 5) by keyboard, as a user does, for ``--estimates`` blocks. Then writes
``docs/images/block_review_guided.png`` (the dock with each bin's certainty in the legend,
the current bin's likely range and the stop rule's message) and ``prior_table_ranges.png``,
and prints what the dock says, bin by bin.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "docs" / "images"


def _settle(n: int = 20) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(n):
        QApplication.processEvents()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--estimates", type=int, default=30)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    from napari_lsr.io.formats import read_truth
    from napari_lsr.io.project import Project
    from napari_lsr.sample.synthetic import write_sample
    from napari_lsr.widgets.block_review import BlockReviewWidget
    from napari_lsr.widgets.prior_table import PriorTableWidget

    folder = Path(tempfile.mkdtemp(prefix="lsr-guided-")) / "project"
    write_sample(folder, size=1536, mpp=1.0, seed=3, block_um=128.0)
    project = Project.open(folder)
    entry = project.slides[0]
    with entry.open() as s:
        truth = read_truth(entry.truth, s.dimensions)
    rng = np.random.default_rng(0)

    def true_pct(block) -> float:  # noqa: ANN001
        ds = truth.downsample
        cut = truth.mask[
            int(block.y / ds) : int(math.ceil((block.y + block.height) / ds)),
            int(block.x / ds) : int(math.ceil((block.x + block.width) / ds)),
        ]
        return 100.0 * float(cut.mean())

    viewer = napari.Viewer(title="napari-lsr: guided review", show=True)
    viewer.window.resize(1500, 980)
    review = BlockReviewWidget(viewer)
    viewer.window.add_dock_widget(review, name="Block review")
    table = PriorTableWidget(viewer)
    viewer.window.add_dock_widget(table, name="Prior table", tabify=True)
    review.annotator_edit.setText("dr_a")
    assert review.set_project(project), review.message.text()
    assert review.order == "guided", review.order
    review.raise_()
    _settle()
    for _ in range(args.estimates):
        block = review.session.current
        if block is None:
            break
        value = int(np.clip(5 * round((true_pct(block) + rng.normal(0, 10)) / 5), 0, 100))
        review.setFocus()
        QTest.keyClicks(review, str(value))
        QTest.keyClick(review, Qt.Key.Key_Return)
        _settle(3)
    _settle(40)
    OUT.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    review.parentWidget().raise_()
    _settle(20)
    viewer.screenshot(str(out / "block_review_guided.png"), canvas_only=False, flash=False)
    print(f"wrote {out / 'block_review_guided.png'}")
    print(review.progress_label.text())
    print(review.certainty_label.text())
    for label in review._legend_labels:
        print(f"  {label.text():12s} {label.toolTip()}")
    table.refresh()
    table.parentWidget().raise_()
    _settle(40)
    viewer.screenshot(str(out / "prior_table_ranges.png"), canvas_only=False, flash=False)
    print(f"wrote {out / 'prior_table_ranges.png'}")
    t = table.table
    for b in range(t.rowCount()):
        print("  " + " | ".join(t.item(b, c).text() for c in range(6)))
    review.shutdown()
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
