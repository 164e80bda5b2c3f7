"""GUI stall benchmark: how long napari's event loop stalls while the training widget trains.

A QTimer probe fires every 10 ms on the GUI thread and records when it actually ran; a *stall*
is how much later than 10 ms a tick came. The probe runs with nothing training (baselines:
nothing at all; a napari progress bar open, i.e. napari's activity spinner; the widget's
once-a-second display refresh fed made-up steps), then while the widget extracts blocks
(fresh cache), trains and saves its checkpoint on cancel, once per ``--runs`` setting (a child
process at some CPU priority, or a thread in napari's process; torch threads; napari's
progress bar or not). Under Xvfb OpenGL is software (llvmpipe): every window flush then
composites the whole window on the CPU (25-40 ms here), which is what the stalls left are.

Run under a display, e.g. (one line)::

    napari-lsr sample /tmp/stall_sample   # once: a 4096 px synthetic project
    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/gui_stall.py

Goal (issue 5): no stall above 50 ms while training.

``--screenshot PATH`` instead trains until the loss curve has ``--steps-shown`` points and
saves a screenshot of the whole window (the README's docs/images/training.png).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

INTERVAL_MS = 10
#: Window size: with software OpenGL, compositing costs grow with the window's area.
WINDOW = (1400, 900)
GOAL_MS = 50.0


class Probe:
    """Records the time of every tick of a 10 ms precise QTimer, tagged with a phase name."""

    def __init__(self) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self._tick)
        self.phase = "idle"
        self.ticks: list[tuple[float, str]] = []

    def _tick(self) -> None:
        self.ticks.append((time.perf_counter(), self.phase))

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        elif self._gc_t0 is not None:
            self.gc_pauses.append((info["generation"], time.perf_counter() - self._gc_t0))
            self._gc_t0 = None

    def start(self) -> None:
        import gc

        self.ticks.clear()
        self.marks: list[float] = []
        self.gc_pauses: list[tuple[int, float]] = []
        self._gc_t0: float | None = None
        gc.callbacks.append(self._gc)
        self.timer.start()

    def stop(self) -> None:
        import gc

        self.timer.stop()
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)

    def gc_note(self) -> str:
        """Garbage collections in napari's process during the probe, and the longest."""
        if not self.gc_pauses:
            return "no garbage collection"
        full = [t for g, t in self.gc_pauses if g == 2]
        longest = max(t for _, t in self.gc_pauses)
        return (
            f"{len(self.gc_pauses)} garbage collections ({len(full)} full), longest "
            f"{1000 * longest:.1f} ms"
        )

    def mark(self) -> None:
        """Note a display refresh of the widget (connected to its refresh timer)."""
        self.marks.append(time.perf_counter())

    def over_goal_at_refresh(self) -> dict[str, tuple[int, int]]:
        """Per phase: (stalls over the goal, of which a widget refresh started in the gap)."""
        marks = np.asarray(self.marks)
        out: dict[str, list[int]] = {}
        for (t0, _), (t1, phase) in zip(self.ticks, self.ticks[1:]):
            if (t1 - t0) * 1000 - INTERVAL_MS > GOAL_MS:
                hit = bool(((marks >= t0) & (marks <= t1)).any()) if len(marks) else False
                c = out.setdefault(phase, [0, 0])
                c[0] += 1
                c[1] += hit
        return {k: (v[0], v[1]) for k, v in out.items()}

    def stalls(self) -> dict[str, np.ndarray]:
        """Per phase: lateness of each tick beyond the interval, in ms (a gap belongs to the
        phase of the tick that ends it)."""
        out: dict[str, list[float]] = {}
        for (t0, _), (t1, phase) in zip(self.ticks, self.ticks[1:]):
            out.setdefault(phase, []).append(max(0.0, (t1 - t0) * 1000 - INTERVAL_MS))
        return {k: np.asarray(v) for k, v in out.items()}


def spin(app, seconds: float, until=None) -> None:  # noqa: ANN001
    """Run a real (nested) Qt event loop for ``seconds``, or until ``until()`` is true.

    A loop of ``processEvents()`` would not do: it never runs deferred deletions, so napari's
    activity spinner would go on after its progress bar is closed.
    """
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    end = time.perf_counter() + seconds

    def check() -> None:
        if time.perf_counter() >= end or (until is not None and until()):
            loop.quit()

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(check)
    timer.start()
    loop.exec()
    timer.stop()


def machine() -> list[str]:
    import napari
    import qtpy
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return [
        f"platform: {platform.platform()} ({platform.machine()})",
        f"CPUs: {os.cpu_count()}; load average at start: " + ", ".join(f"{x:.2f}" for x in load),
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"(default intra-op threads {torch.get_num_threads()}), napari {napari.__version__}, "
        f"{qtpy.API_NAME} {qtpy.QT_VERSION}",
        f"display: {os.environ.get('DISPLAY', '?')} (xvfb-run gives a virtual one)",
    ]


_gc_frozen = 0


def _gc_freeze() -> None:
    """Move every object that exists now out of the garbage collector's sight (nestable).

    A full collection in a training thread walks every Python object of napari (hundreds of
    ms) while holding the GIL: the GUI stalls. Frozen objects are not walked, so the
    collections a run triggers stay short. Unfrozen when the run ends, so that cyclic garbage
    made before the run (a closed layer, say) is still collected afterwards. GUI thread only.
    """
    global _gc_frozen
    import gc

    if _gc_frozen == 0:
        gc.freeze()
    _gc_frozen += 1


def _gc_unfreeze() -> None:
    global _gc_frozen
    import gc

    _gc_frozen = max(0, _gc_frozen - 1)
    if _gc_frozen == 0:
        gc.unfreeze()


def training_widget_class():  # noqa: ANN201 (a class made on demand: napari imported late)
    """The training widget, able to train in napari's own process too (``in_process``): in
    its generator worker, a thread, instead of the widget's child process (its one mode)."""
    from napari_lsr.learn.run import run_training
    from napari_lsr.widgets.training import TrainingWidget
    from napari_lsr.widgets.training_run import TrainWorker

    class InProcessTrainingWidget(TrainingWidget):
        in_process = False

        def make_worker(self, plan, handle):  # noqa: ANN001, ANN202
            if not self.in_process:
                return super().make_worker(plan, handle)
            worker = TrainWorker(handle, run_training, plan, handle.cancel, handle.finished)
            _gc_freeze()  # the training thread allocates in this process: short GC pauses
            worker.finished.connect(_gc_unfreeze)  # a function: runs even if the widget is gone
            return worker

    return InProcessTrainingWidget


def torch_threads_used(setting: int | None, mode: str) -> int:
    """What the widget's torch_threads setting means on this machine (see napari_lsr.learn.run)."""
    import torch

    default = torch.get_num_threads()
    if setting is None and mode != "thread":
        return default
    if setting is None:
        return min(default, max(1, (os.cpu_count() or 2) - 1))
    return setting or default


def gl_renderer(widget) -> str:  # noqa: ANN001
    """The OpenGL renderer of napari's canvas (llvmpipe: software, CPU-bound compositing)."""
    from napari_lsr.widgets._napari import canvas_gl

    renderer, version = canvas_gl(widget)
    return f"{renderer} ({version})" if renderer else "unknown"


def screenshot(project, path: Path, steps_shown: int, finish: int = 0) -> int:  # noqa: ANN001
    """Train on the sample in a shown viewer and save the window once the curve has points
    (or, with ``finish`` steps, once a whole run has ended: its model-health view filled)."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_lsr._reader import read_slide
    from napari_lsr.layers import labels_layer_data
    from napari_lsr.widgets.training import TrainingWidget

    viewer = napari.Viewer(show=True)
    # taller than the stall runs' window, so the model-health table shows every bin
    viewer.window.resize(WINDOW[0], 1180 if finish else WINDOW[1])
    entry = project.slides[0]
    data, meta, _ = read_slide(str(entry.path))[0]
    viewer.add_image(data, **meta)
    with entry.open() as slide:
        raster, lmeta, _ = labels_layer_data(
            entry.read_labels(slide, project.bins), slide, project.bins
        )
    viewer.add_labels(raster, **lmeta)
    widget = TrainingWidget(viewer)
    widget.napari_progress = True  # show napari's activity bar as on a desktop with a GPU
    viewer.window.add_dock_widget(widget, name="Training", area="right")
    widget.set_project(project)
    widget.steps_spin.setValue(finish or 300)
    if finish:
        widget.splitter.setSizes([250, 900])
    app = QApplication.instance()
    spin(app, 120.0, until=lambda: widget.warmed_up)
    name = "intra+inter-gaussian"
    for suffix in (".pt", ".json", ".card.json"):
        (project.models_dir / f"{name}{suffix}").unlink(missing_ok=True)
    widget.name_edit.setText(name)
    assert widget.start(), "the widget refused to start"
    if finish:
        spin(app, 3600.0, until=lambda: not widget.is_running)
    else:
        spin(app, 600.0, until=lambda: len(widget.curve) >= steps_shown)
    spin(app, 1.5)  # a refresh tick or two
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path} at step {len(widget.curve)}")
    widget.cancel()
    spin(app, 60.0, until=lambda: not widget.is_running)
    for suffix in (".pt", ".json", ".card.json"):
        (project.models_dir / f"{name}{suffix}").unlink(missing_ok=True)
    viewer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", default="/tmp/stall_sample", help="project folder (made if absent)")
    ap.add_argument("--seconds", type=float, default=30.0, help="probe time per run")
    ap.add_argument(
        "--runs",
        default="idle:auto:auto,low:auto:auto,idle:auto:bar,thread:auto:auto",
        help="training runs, MODE:THREADS:BAR each: MODE idle, low or normal (a child process "
        "at that CPU priority; idle is the widget's default) or thread (in napari's process); "
        "THREADS auto (the "
        "widget's default: every core in a process, all but one in a thread), 0 (torch's "
        "default) or a number; BAR auto (the widget's default: napari's progress bar unless "
        "OpenGL is software), bar, nobar, or quiet (no bar, and the widget's once-a-second "
        "display refresh off: the engine's own effect)",
    )
    ap.add_argument("--screenshot", help="save a screenshot of the window mid-training here")
    ap.add_argument("--steps-shown", type=int, default=40, help="steps before the screenshot")
    ap.add_argument(
        "--finish", type=int, default=0, help="with --screenshot: train this many steps to the end"
    )
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--width", type=int, default=16)
    args = ap.parse_args(argv)

    import napari
    from napari.utils import progress
    from qtpy.QtWidgets import QApplication

    from napari_lsr._reader import read_slide
    from napari_lsr.io.project import Project
    from napari_lsr.sample.synthetic import write_sample

    folder = Path(args.sample)
    if not (folder / "project.toml").exists():
        print(f"writing a synthetic sample to {folder} ...", file=sys.stderr)
        write_sample(folder)
    project = Project.open(folder)
    lines = machine()
    if args.screenshot:
        return screenshot(project, Path(args.screenshot), args.steps_shown, args.finish)

    viewer = napari.Viewer(show=True)
    viewer.window.resize(*WINDOW)
    data, meta, _ = read_slide(str(project.slides[0].path))[0]
    viewer.add_image(data, **meta)
    TrainingWidget = training_widget_class()  # noqa: N806 (a class)
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Training")
    widget.set_project(project)
    _, _, width, height = viewer.window.geometry()
    lines.append(f"OpenGL renderer: {gl_renderer(widget)}; window {width}x{height}")
    widget.depth_spin.setValue(args.depth)
    widget.width_spin.setValue(args.width)
    widget.steps_spin.setValue(1_000_000)  # never finishes inside the probe window
    app = QApplication.instance()
    spin(app, 120.0, until=lambda: widget.warmed_up)  # torch imported and warmed up
    spin(app, 3.0)  # let the window and the first paint settle

    probe = Probe()
    widget._timer.timeout.connect(probe.mark)  # when the widget redraws its live display
    rows: list[tuple[str, str, np.ndarray, tuple[int, int]]] = []
    notes: list[str] = []

    def control(label: str, with_bar: bool, redraw: bool = False) -> None:
        bar = progress(total=100, desc="control") if with_bar else None
        feeder = None
        if redraw:  # the widget's display refresh with made-up steps, nothing training
            from qtpy.QtCore import QTimer

            from napari_lsr.learn.training import TrainEvent

            widget.curve.clear()
            widget.curve.total = 1000
            k = [0]

            def feed() -> None:
                k[0] += 1
                loss = 1.0 / (1 + 0.1 * k[0])
                widget._on_event(TrainEvent("step", k[0], 1000, loss, 1e-3, 50.0, 60.0, "cpu"))

            feeder = QTimer()
            feeder.setInterval(500)  # two steps a second, as training does here
            feeder.timeout.connect(feed)
            feeder.start()
            widget._timer.start()
        cpu0, t0 = time.process_time(), time.perf_counter()
        probe.start()
        probe.phase = "idle"
        spin(app, args.seconds)
        probe.stop()
        if feeder is not None:
            feeder.stop()
            widget._timer.stop()
            widget.curve.clear()
        cpu = (time.process_time() - cpu0) / (time.perf_counter() - t0)
        if bar is not None:
            bar.close()
        at = probe.over_goal_at_refresh()
        rows.extend((label, k, v, at.get(k, (0, 0))) for k, v in probe.stalls().items())
        notes.append(f"{label}: napari process CPU {100 * cpu:.0f} % of a core; {probe.gc_note()}")

    control("no training", with_bar=False)
    control("no training, a napari progress bar open", with_bar=True)
    control("no training, the widget's display refresh (made-up steps)", False, redraw=True)

    for run in args.runs.split(","):
        mode, setting, bar = run.split(":")
        threads = None if setting == "auto" else int(setting)
        TrainingWidget.in_process = mode == "thread"
        TrainingWidget.priority = mode if mode in ("idle", "low", "normal") else "idle"
        TrainingWidget.torch_threads = threads
        TrainingWidget.napari_progress = {"bar": True, "nobar": False, "quiet": False}.get(bar)
        shutil.rmtree(project.cache_dir, ignore_errors=True)  # measure extraction too
        spin(app, 10.0)  # the widget readies the next run's child process after each run
        name = f"stall-{mode}-{setting}-{bar or 'bar'}"
        for suffix in (".pt", ".json", ".card.json"):
            (project.models_dir / f"{name}{suffix}").unlink(missing_ok=True)
        widget.name_edit.setText(name)
        steps: list[float] = []
        bps: list[float] = []

        def on_event(ev, steps=steps, bps=bps) -> None:  # noqa: ANN001
            if getattr(ev, "kind", "") == "start":
                probe.phase = "train"
            elif getattr(ev, "kind", "") == "step":
                steps.append(time.perf_counter())
                bps.append(ev.blocks_per_s)

        widget.run_event.connect(on_event)
        probe.start()
        probe.phase = "extract+load"
        t0, cpu0 = time.perf_counter(), time.process_time()
        assert widget.start(), "the widget refused to start"
        if bar == "quiet":
            widget._timer.stop()  # no labels, bars or curve redrawn while it trains
        spin(app, args.seconds)
        probe.phase = "cancel"
        t_cancel = time.perf_counter()
        cpu = (time.process_time() - cpu0) / (t_cancel - t0)
        widget.cancel()
        spin(app, 60.0, until=lambda: not widget.is_running)
        probe.stop()
        widget.run_event.disconnect(on_event)
        for suffix in (".pt", ".json", ".card.json"):  # leave the sample's models folder as it was
            (project.models_dir / f"{name}{suffix}").unlink(missing_ok=True)
        shown = widget._use_napari_progress()
        label = (
            f"training in {'a thread' if mode == 'thread' else f'a process ({mode} priority)'}, "
            f"torch threads {setting} "
            f"(= {torch_threads_used(threads, mode)}), napari "
            f"progress bar {bar} (= {'shown' if shown else 'not shown'})"
            + (", display refresh off" if bar == "quiet" else "")
        )
        at = probe.over_goal_at_refresh()
        rows.extend((label, k, v, at.get(k, (0, 0))) for k, v in probe.stalls().items())
        train_s = (steps[-1] - steps[0]) if len(steps) > 1 else float("nan")
        rate = (len(steps) - 1) / train_s if train_s > 0 else float("nan")
        notes.append(
            f"{label}: {len(steps)} steps ({rate:.2f} steps/s, median "
            f"{np.median(bps) if bps else float('nan'):.0f} blocks/s); first step "
            f"{steps[0] - t0 if steps else float('nan'):.1f} s after Train; cancel took "
            f"{time.perf_counter() - t_cancel:.2f} s; "
            f"napari process CPU {100 * cpu:.0f} % of a core; {probe.gc_note()}"
        )

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print("\n".join(lines))
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in load)}")
    print(
        f"sample: {folder} ({project.config.get('sample', {}).get('size', '?')} px), "
        f"U-Net depth {args.depth} width {args.width}, "
        f"blocks {project.config.get('training', {})}; probe {INTERVAL_MS} ms, "
        f"{args.seconds:.0f} s per run; stall = lateness of a tick beyond {INTERVAL_MS} ms\n"
    )
    print(
        f"| run | phase | ticks | median ms | p99 ms | max ms | > {GOAL_MS:.0f} ms "
        "(at a widget redraw) |\n"
        "|---|---|---:|---:|---:|---:|---:|"
    )
    for run, phase, v, (over, at_redraw) in rows:
        if len(v):
            print(
                f"| {run} | {phase} | {len(v)} | {np.median(v):.2f} | "
                f"{np.percentile(v, 99):.1f} | {v.max():.1f} | {over} ({at_redraw}) |"
            )
    print()
    for n in notes:
        print(n)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
