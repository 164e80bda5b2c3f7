"""Next-block latency of the block review widget: Enter pressed -> next block on screen.

A real napari viewer (shown, 1400 x 900) with the block review docked reviews the synthetic
sample. For each block the benchmark types digits, then times the Enter key event (QTest) to:

* ``commit``: the estimate is committed to the SQLite store (its own transaction, fsync'd);
* ``image``: the next block's image (training resolution) is set in the widget;
* ``camera``: the viewer's camera is centred and zoomed on it. **This is the latency**
  (the goal: within 30 ms);
* ``handler``: the key handler returned (status labels, prefetch of the following block);
* ``outline``: the yellow outline moved (a napari layer update, done on the next turn of the
  event loop so it does not hold up the block);
* ``repaint``: every pending event processed, the canvas repainted with the new tiles. Under
  Xvfb this is software OpenGL (llvmpipe) and says more about the machine than the widget.

Modes: ``prefetch`` (the widget's default: the next block's image is read in a background
thread while the annotator looks at the current block) and ``no prefetch`` (the baseline: the
image is read on Enter), alternated in rounds on fresh slide handles (so
OpenSlide's tile cache starts cold each round), the same blocks in every round. Between blocks
the benchmark waits ``--think`` ms (an annotator looks at a block for seconds).

Run::

    napari-lsr sample /tmp/rev_sample            # once: a 4096 px synthetic project
    xvfb-run -a .venv/bin/python benchmarks/next_block.py --sample /tmp/rev_sample

The sample is copied to a temporary folder; the original is not written to.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, table  # noqa: E402

GOAL_MS = 30.0
#: The baseline first, then the widget's default.
MODES = ("no prefetch", "prefetch")
COLUMNS = ("commit", "image", "camera", "handler", "outline", "repaint")


def run_round(viewer, widget, folder: Path, annotator: str, n: int, think_ms: int, mode: str):
    """Review ``n`` blocks; per block the times (ms after Enter) of COLUMNS."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_lsr.io.project import Project

    app = QApplication.instance()
    widget.annotator_edit.setText(annotator)
    if not widget.set_project(Project.open(folder)):
        raise SystemExit(f"cannot open {folder}: {widget.message.text()}")
    widget.images.enabled = mode == "prefetch"
    QTest.qWait(500)
    rows = []
    for i in range(n):
        QTest.qWait(think_ms)
        QTest.keyClicks(widget, str(10 + i % 80))
        widget.timings.clear()
        t0 = time.perf_counter()
        QTest.keyClick(widget, Qt.Key.Key_Return)
        t_handler = time.perf_counter()
        app.processEvents()
        app.processEvents()
        t_repaint = time.perf_counter()
        tm = widget.timings
        if "camera" not in tm:
            raise SystemExit(f"block {i}: no next block ({widget.message.text()})")
        rows.append(
            [
                (tm["committed"] - t0) * 1e3,
                (tm["image"] - t0) * 1e3,
                (tm["camera"] - t0) * 1e3,
                (t_handler - t0) * 1e3,
                (tm.get("outline", t_repaint) - t0) * 1e3,
                (t_repaint - t0) * 1e3,
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=Path, required=True, help="project from `napari-lsr sample`")
    ap.add_argument("--blocks", type=int, default=30, help="blocks per mode (default 30)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per mode (default 2)")
    ap.add_argument("--think", type=int, default=300, help="ms between blocks (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.sample / "project.toml").exists():
        ap.error(f"{args.sample}: no project.toml (make one with `napari-lsr sample DIR`)")

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_lsr.widgets.block_review import BlockReviewWidget

    tmp = Path(tempfile.mkdtemp(prefix="next_block_"))
    folder = tmp / "project"
    shutil.copytree(
        args.sample, folder, ignore=shutil.ignore_patterns("annotations.sqlite*", "cache")
    )
    viewer = napari.Viewer(show=True)
    widget = BlockReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Block review")
    viewer.window.resize(1400, 900)
    QApplication.instance().processEvents()
    widget.k_spin.setValue(12)
    widget.seed_spin.setValue(args.seed)

    per_round = max(1, args.blocks // args.rounds)
    results: dict[str, list[list[float]]] = {m: [] for m in MODES}
    try:
        for r in range(args.rounds):
            for mode in MODES:
                who = f"bench-{mode.replace(' ', '-')}-{r}"
                results[mode] += run_round(viewer, widget, folder, who, per_round, args.think, mode)
                print(f"round {r + 1}/{args.rounds} {mode}: {per_round} blocks", file=sys.stderr)
    finally:
        widget.shutdown()
        viewer.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"Machine: {machine()}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"Display: {os.environ.get('DISPLAY', '?')} (Xvfb: software OpenGL)")
    print(
        f"Sample: {args.sample} ; {per_round * args.rounds} blocks per mode in {args.rounds} "
        f"rounds, think time {args.think} ms, seed {args.seed}\n"
    )
    rows = []
    for mode, vals in results.items():
        a = np.asarray(vals)
        for stat, fn in (
            ("median", np.median),
            ("p95", lambda x, axis: np.percentile(x, 95, axis=axis)),
            ("max", np.max),
        ):
            v = fn(a, axis=0)
            rows.append([mode, stat, *[round(float(x), 1) for x in v]])
    print(table(["mode", "stat", *[f"{c} ms" for c in COLUMNS]], rows))
    cam = {m: np.asarray(v)[:, 2] for m, v in results.items()}
    ok = float(np.percentile(cam["prefetch"], 95)) <= GOAL_MS
    print(
        f"\nLatency (Enter -> image set and camera moved), prefetch: median "
        f"{np.median(cam['prefetch']):.1f} ms, p95 {np.percentile(cam['prefetch'], 95):.1f} ms; "
        f"no prefetch: median {np.median(cam['no prefetch']):.1f} ms, p95 "
        f"{np.percentile(cam['no prefetch'], 95):.1f} ms. Goal p95 <= {GOAL_MS:.0f} ms: "
        f"{'met' if ok else 'NOT met'}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
