"""Training dock widget: pick slides, prior, loss and settings; train off the GUI thread."""

from __future__ import annotations

import math
import os
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QApplication,
    QFileDialog,
    QFrame,
    QGroupBox,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ..io.formats import Prior, paper_prior, read_prior_csv, resource_path
from ..learn.models import ModelCard, list_models
from ..learn.run import (  # noqa: F401 (Phase, TrainingFailed, readable_error, run_training: API)
    CHILD_PRIORITY,
    Phase,
    RunPlan,
    SlideSource,
    TrainingFailed,
    readable_error,
    run_in_subprocess,
    run_training,
)
from ..state import state_for
from . import _napari
from ._common import layer_slide_path, reason_first, vet_checkpoint
from ._docks import tab_later
from .training_data import DataGroup, labels_for
from .training_form import RunGroup, TrainingForm
from .training_run import (
    STOP_TIMEOUT_S,
    RunHandle,
    TrainWorker,
    model_out,
    ready_next_child,
    start_warm_up,
)
from .training_view import LossCurve, ProgressView, fill_models, models_group  # noqa: F401

if TYPE_CHECKING:
    import napari

    from ..io.project import Project

#: How often the labels, the progress bars and the loss curve are redrawn, all in one tick
#: (one window flush). Every flush makes Qt composite the window with napari's OpenGL
#: canvas: about 25 ms of CPU with software OpenGL (Xvfb, llvmpipe), 40-80 ms of waiting
#: when training keeps the CPUs busy; so once a second (see benchmarks/gui_stall.py).
REFRESH_MS = 1000


# -- the dock widget ---------------------------------------------------------------------------


class TrainingWidget(QWidget):
    """Train a label super-resolution U-Net from the slides, the prior and a loss.

    The run (labels, block extraction, training) happens in a child process at idle CPU
    priority (see ``napari_lsr.learn.run``); a napari generator worker relays its events and the
    GUI only receives them (``make_worker`` makes that worker: a hook for subclasses, such as
    benchmarks/gui_stall.py's, which trains in napari's process). Cancel saves a checkpoint
    and a card (within one step); Resume continues a cancelled run; closing the viewer
    cancels and waits for the checkpoint. Models land in the project's ``models/`` (see
    ``napari_lsr.learn.models.list_models``). The settings are a ``TrainingForm``, the live view a
    ``ProgressView``; their controls are the widget's attributes too.
    """

    #: Tabbed with the other napari-lsr docks when added (``_docks.tab_with_open_docks``).
    napari_lsr_dock = True

    #: Every event of a run (``Phase`` or ``TrainEvent``), on the GUI thread.
    run_event = Signal(object)
    #: A run ended: (checkpoint path or "", status: done, cancelled, failed).
    run_finished = Signal(str, str)

    #: The child process's CPU priority (``run.PRIORITIES``) a new widget starts with: "low"
    #: (nice 10). Training in a child never holds napari's GIL, and napari gets the CPU
    #: first; the Run group's "CPU priority" changes it per widget.
    priority: str = CHILD_PRIORITY

    #: How long after Cancel the button turns into Force stop, if the child has not ended.
    force_stop_after_ms: int = 20_000

    #: torch intra-op threads of a run: None is automatic (in the child process: torch's
    #: default, every core), 0 keeps torch's default, n > 0 uses n.
    torch_threads: int | None = None

    #: Show the run in napari's activity dock too (progress bar with Cancel). None (auto):
    #: yes, unless napari's canvas renders with software OpenGL: napari animates a 33 Hz
    #: spinner while a bar is open, and each frame makes Qt composite the window in software
    #: (about 80 % of a core, training 3x slower, GUI stalls; benchmarks/gui_stall.py).
    napari_progress: bool | None = None

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        tab_later(self, napari_viewer)  # with the napari-lsr docks already open
        self.viewer = napari_viewer
        self.project: Project | None = None
        self.models_dir: Path | None = None
        self._worker: TrainWorker | None = None
        self._handle: RunHandle | None = None
        self._task_id: Any = None
        self._out: Path | None = None
        self._last: Any = None
        #: The last model-health report (health.Health.to_dict()), None before the first.
        self.health: dict[str, Any] | None = None
        self._status = ""
        self._resume_target: Path | None = None
        self._final_status = ""
        self._device = ""
        self._software_gl: bool | None = None
        self._force_offered = False
        #: True once torch is imported and warmed up in the background (devices listed).
        self.warmed_up = False
        self._build()
        self.state = state_for(napari_viewer)  # the project shared with the other widgets
        self.state.connect(self, project=self._on_project)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self._refresh)
        events = self.viewer.layers.events
        events.inserted.connect(self._sync_layers)
        events.removed.connect(self._sync_layers)
        if self.state.project is not None:
            self.set_project(self.state.project, publish=False)
        self._sync_layers()
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._stop_for_exit)
        self._warm_up_thread = self._start_device_probe()

    # -- building ----------------------------------------------------------------------

    def _build(self) -> None:
        # Settings scroll above; progress and models below, always in view (a splitter).
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setChildrenCollapsible(False)
        outer.addWidget(self.splitter)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        body = QWidget()
        scroll.setWidget(body)
        self.splitter.addWidget(scroll)
        lay = QVBoxLayout(body)
        lay.setContentsMargins(4, 4, 4, 4)
        bottom = QWidget()
        low = QVBoxLayout(bottom)
        low.setContentsMargins(4, 0, 4, 4)
        self.splitter.addWidget(bottom)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._scroll, self._body = scroll, body
        lay.addWidget(self._build_data())
        # Loss and hyperparameters: the form, whose controls are the widget's too
        self.form = TrainingForm()
        for name in TrainingForm.CONTROLS:
            setattr(self, name, getattr(self.form, name))
        self.form.basis_changed.connect(self._suggest_name)
        lay.addWidget(self.form)
        low.addWidget(self._build_run())
        # Progress: the view's labels, bars, curve and health table are the widget's too
        self.progress_view = ProgressView()
        for name in ProgressView.CONTROLS:
            setattr(self, name, getattr(self.progress_view, name))
        low.addWidget(self.progress_view, 1)
        models, self.models_tree = models_group()
        self.models_tree.itemSelectionChanged.connect(self._update_buttons)
        self.models_tree.itemSelectionChanged.connect(self._show_selected_health)
        low.addWidget(models)
        lay.addStretch(1)
        scroll.setMinimumHeight(60)  # the run, progress and models below fit 1366x768
        self.splitter.setSizes([450, 550])  # proportions: settings above get 45 % at first
        self._suggest_name()
        self._update_buttons()

    def _build_data(self) -> QGroupBox:
        """The Data group: project, slides, prior (its controls are the widget's too)."""
        data = DataGroup()
        for name in DataGroup.CONTROLS:
            setattr(self, name, getattr(data, name))
        self.project_btn.clicked.connect(self._choose_project)
        self.add_slide_btn.clicked.connect(self._add_slide_dialog)
        return data

    def _build_run(self) -> QGroupBox:
        """The Run group: device, model name, models folder; Train, Cancel, Resume."""
        self.run_group = run = RunGroup()
        for name in RunGroup.CONTROLS:
            setattr(self, name, getattr(run, name))
        run.set_priority(self.priority)
        run.priority_combo.currentIndexChanged.connect(self._on_priority_changed)
        self.train_btn.clicked.connect(self.start)
        self.cancel_btn.clicked.connect(self._on_cancel_clicked)
        self.resume_btn.clicked.connect(self._on_resume_clicked)
        return run

    def set_priority(self, priority: str) -> None:
        """The CPU priority of the next runs' child process (``run.PRIORITIES``)."""
        self.run_group.set_priority(priority)  # _on_priority_changed follows

    def _on_priority_changed(self, *_: Any) -> None:
        priority = self.run_group.priority()
        if priority != self.priority:
            self.priority = priority
            if self.warmed_up and not self.is_running:
                ready_next_child(priority)  # the next run's child, at the new priority

    def _start_device_probe(self) -> threading.Thread:
        """Warm torch up, list the devices and ready a child process in the background, so
        the widget opens at once (``training_run.start_warm_up``)."""
        return start_warm_up(self._set_devices, self.priority)

    def _set_devices(self, devices: list[str]) -> None:
        self.warmed_up = True
        self.run_group.set_devices(devices)

    # -- project, slides and prior -----------------------------------------------------------

    def set_project(self, folder: str | os.PathLike | Project | None, publish: bool = True) -> None:
        """Use a project: its slides, prior, training resolution and models folder.

        With ``publish`` the other napari-lsr widgets of the viewer switch to it too.
        """
        from ..io.project import Project

        if folder is None:
            self.project = None
        else:
            self.project = folder if isinstance(folder, Project) else Project.open(folder)
        p = self.project
        if publish and p is not None:
            self.state.project = p  # (no event when it is the shared one already)
        self.project_label.setText(str(p.folder) if p else "no project")
        self.project_label.setToolTip(str(p.folder) if p else "")
        for i in reversed(range(self.slide_list.count())):
            if self.slide_list.source(self.slide_list.item(i)).origin == "project":
                self.slide_list.takeItem(i)
        if p is not None:
            for entry in p.slides:
                source = SlideSource(entry.path, entry.labels, entry.mpp, "project")
                self.slide_list.add_source(source, checked=True, replace=True)
            block_size, mpp = p.training_geometry()
            if block_size or mpp:  # the project's geometry, as given (block px wins over mpp)
                self.mpp_spin.setValue(mpp or 0.0)
                self.block_spin.setValue(block_size or 0)
            self.set_models_dir(p.models_dir)
        self._sync_layers()
        self.prior_combo.fill(self.project)

    def _on_project(self, project: Project | None) -> None:
        """Another widget opened ``project``: use it too, unless a run is going on."""
        if project is not self.project and not self.is_running:
            self.set_project(project, publish=False)

    def set_models_dir(self, folder: str | os.PathLike) -> None:
        """Where models are written (a project's ``models/``; the block cache goes beside)."""
        self.models_dir = Path(folder)
        self.models_label.setText(f"models folder: {self.models_dir}")
        self._suggest_name()
        self.refresh_models()

    def _choose_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a napari-lsr project")
        if folder:
            try:
                self.set_project(folder)
            except Exception as exc:
                self._report_error(f"cannot open the project: {reason_first(exc)}")

    def add_slide(self, slide: str | os.PathLike, labels: str | os.PathLike | None) -> None:
        """Add a slide (and its labels CSV) to the list, checked."""
        self.slide_list.add_source(
            SlideSource(Path(slide), Path(labels) if labels else None, origin="file"), True
        )

    def _sync_layers(self, event: Any = None) -> None:
        """Slide layers open in the viewer become slide choices (the project is the shared
        one: a layer tells which slide file it shows, not which project to open)."""
        paths = [p for p in map(layer_slide_path, self.viewer.layers) if p is not None]
        keys = {os.path.normcase(str(p.resolve())) for p in paths}
        for i in reversed(range(self.slide_list.count())):
            s = self.slide_list.source(self.slide_list.item(i))
            if s.origin == "layer" and s.key not in keys:
                self.slide_list.takeItem(i)
        for p in paths:
            self.slide_list.add_source(
                SlideSource(p, labels_for(p, self.project), origin="layer"), checked=True
            )
        if self.models_dir is None and paths:
            self.set_models_dir(paths[0].parent / "models")

    def _add_slide_dialog(self) -> None:
        slide, _ = QFileDialog.getOpenFileName(self, "Slide to train on")
        if not slide:
            return
        labels = labels_for(Path(slide), self.project)
        if labels is None:
            found, _ = QFileDialog.getOpenFileName(
                self, "Its low-resolution labels", str(Path(slide).parent), "CSV (*.csv)"
            )
            labels = Path(found) if found else None
        self.add_slide(slide, labels)
        if self.models_dir is None:
            self.set_models_dir(Path(slide).parent / "models")

    def sources(self) -> list[SlideSource]:
        """The checked slides."""
        return self.slide_list.checked()

    def set_prior_file(self, path: str | os.PathLike) -> None:
        """Use a prior CSV file (added to the prior list and selected)."""
        self.prior_combo.set_file(path)

    def set_prior_choice(self, kind: str) -> None:
        """Select ``project``, ``widget`` or ``paper`` in the prior list."""
        self.prior_combo.set_choice(kind)

    def _prior_from_widget(self) -> Prior:
        """The current table of the Prior table dock widget, as it shares it (``state``)."""
        if self.state.prior is None:
            raise ValueError("open the Prior table widget first, or choose another prior")
        return self.state.prior

    def current_prior(self) -> tuple[Prior, str]:
        """The chosen prior and a label for the model card (a path where there is one)."""
        kind, value = self.prior_combo.choice(self.prior_combo.currentIndex())
        if kind == "file":
            return read_prior_csv(value), str(Path(value).resolve())
        if kind == "widget":
            prior = self._prior_from_widget()
            return prior, str(prior.path) if prior.path else ""
        if kind == "choose":
            raise ValueError("choose a prior CSV file")
        return paper_prior(), str(resource_path("prior_paper_table1.csv"))

    # -- settings ------------------------------------------------------------------------

    def apply_preset(self, name: str | None = None) -> None:
        """Fill LR, schedule, EMA and batch layout from a preset (default: the selected one)."""
        self.form.apply_preset(name)

    def _suggest_name(self) -> None:
        if hasattr(self, "run_group"):  # built
            self.run_group.suggest_name(self.form.name_basis(), self.models_dir)

    def config_kwargs(self) -> dict[str, Any]:
        """The form as ``TrainConfig`` keyword arguments (on the chosen device)."""
        return self.form.config_kwargs(self.run_group.device())

    # -- running -------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._worker is not None

    def start(self) -> bool:
        """Start a new run with the form's settings; False (and a notification) if refused."""
        if self.is_running:
            return False
        try:
            plan = self._new_plan()
        except Exception as exc:
            self._report_error(f"cannot start training: {reason_first(exc)}")
            return False
        self._launch(plan, f"training {plan.out.stem}")
        return True

    def _new_plan(self) -> RunPlan:
        from ..learn.training import TrainConfig

        sources = self.sources()
        out = model_out(sources, self.models_dir, self.name_edit.text().strip())
        prior, prior_label = self.current_prior()
        config = TrainConfig(**self.config_kwargs())
        mpp = self.mpp_spin.value() or None
        block = self.block_spin.value() or None
        if mpp is None and block is None:
            raise ValueError("give a training mpp or a block size")
        info = {
            "prior_path": prior_label,
            "labels": [str(s.labels) for s in sources],
            "sources": [s.to_dict() for s in sources],
            "project": str(self.project.folder) if self.project else None,
            "trained_with": "napari-lsr training widget",
        }
        return RunPlan(
            out=out,
            cache_dir=self._cache_dir(),
            config=config,
            sources=sources,
            prior=prior,
            mpp=mpp,
            block_size=block,
            info=info,
            torch_threads=self.torch_threads,
        )

    def _cache_dir(self) -> Path:
        if self.project is not None:
            return self.project.cache_dir
        assert self.models_dir is not None
        return self.models_dir.parent / "cache"

    def resume(self, checkpoint: str | os.PathLike | None = None) -> bool:
        """Continue a run from its checkpoint (default: the selected or last cancelled model)."""
        if self.is_running:
            return False
        from ..learn.training import TrainConfig, is_trusted

        path = Path(checkpoint) if checkpoint else self._resume_candidate()
        if path is None:
            show_error("napari-lsr: select a cancelled model to resume")
            return False
        # a checkpoint that is not plain data: the user confirms (dialog naming it) or refuses
        if not vet_checkpoint(self, path, lambda message: show_error(f"napari-lsr: {message}")):
            return False
        config = TrainConfig(device=self.run_group.device())
        plan = RunPlan(
            out=path,
            cache_dir=self._cache_dir() if self.models_dir else path.parent.parent / "cache",
            config=config,
            resume=path,
            trust_checkpoint=is_trusted(path),
            torch_threads=self.torch_threads,
        )
        self._launch(plan, f"resuming {path.stem}", elapsed_s=_elapsed_before(path))
        return True

    def _on_resume_clicked(self, *_: Any) -> None:
        self.resume()

    def _resume_candidate(self) -> Path | None:
        items = self.models_tree.selectedItems()
        if items:
            card: ModelCard = items[0].data(0, Qt.ItemDataRole.UserRole)
            return card.checkpoint if card.resumable else None
        return self._resume_target

    def make_worker(self, plan: RunPlan, handle: RunHandle) -> TrainWorker:
        """The worker that will run ``plan`` for ``handle``: by default it relays the events
        of a child process at ``priority`` (``run.run_in_subprocess``). A hook: a subclass
        may run the plan otherwise (benchmarks/gui_stall.py trains in napari's process)."""
        relay = {"priority": self.priority, "started": handle.set_child}
        return TrainWorker(handle, run_in_subprocess, plan, handle.cancel, handle.finished, **relay)

    def _launch(self, plan: RunPlan, what: str, elapsed_s: float = 0.0) -> None:
        handle = RunHandle()
        worker = self.make_worker(plan, handle)
        worker.yielded.connect(self._on_event)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker, self._handle, self._out = worker, handle, plan.out
        self._last = None
        self._final_status = "failed"
        self.health = None
        self.progress_view.reset(plan.config.steps if plan.resume is None else 0, elapsed_s)
        prior_line = plan.prior.source_line() if plan.prior is not None else ""
        self._set_status(f"{what}: starting; {prior_line}" if prior_line else f"{what}: starting")
        self.destroyed.connect(lambda *_: handle.stop())  # not a method: self is gone then
        # in napari's task list: closing the window asks first, then cancels the run
        self._task_id = _napari.register_task(self.viewer, "napari-lsr", what, handle.stop)
        if self._use_napari_progress():  # made here, not in a slot: napari processes events
            self.progress_view.open_napari_bar(f"napari-lsr: {what}", self.cancel)
        self._update_buttons()
        self._timer.start()
        worker.start()

    def cancel(self) -> None:
        """Ask the run to stop after the current step (it saves a checkpoint and a card).

        Should a child process not have stopped ``force_stop_after_ms`` later (a step stuck in
        a driver, or starved of CPU), the Cancel button turns into Force stop.
        """
        handle = self._handle
        if handle is not None and not handle.cancel.is_set():
            handle.cancel.set()
            self._set_status("cancelling after this step…")
            self._update_buttons()
            QTimer.singleShot(self.force_stop_after_ms, partial(self._offer_force_stop, handle))

    def _offer_force_stop(self, handle: RunHandle) -> None:
        if self._handle is not handle or handle.finished.is_set() or handle.child_pid is None:
            return
        self._force_offered = True
        self.run_group.offer_force_stop()
        self._set_status("still cancelling: the current step has not finished")
        self._update_buttons()

    def _on_cancel_clicked(self, *_: Any) -> None:
        if self._force_offered:
            self.force_stop()
        else:
            self.cancel()

    def force_stop(self) -> bool:
        """End the run's child process now (the last saved checkpoint is kept)."""
        handle = self._handle
        if handle is None or not handle.kill():
            return False
        self._set_status("force-stopping…")
        self._update_buttons()
        return True

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Block until the run's generator has returned (for scripts and tests)."""
        return self._handle.finished.wait(timeout) if self._handle else True

    def _stop_for_exit(self) -> None:
        if self._handle is not None:
            self._handle.stop()

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        # As wide as the settings need, measured once napari's style sheet applies.
        bar = self._scroll.verticalScrollBar().sizeHint().width()
        self._scroll.setMinimumWidth(self._body.minimumSizeHint().width() + bar + 2)
        super().showEvent(event)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        self._stop_for_exit()
        super().closeEvent(event)

    # -- events from the worker (GUI thread) -----------------------------------------------

    def _on_event(self, ev: Any) -> None:
        self._last = ev
        if isinstance(ev, Phase):
            if ev.kind == "cancelled":
                self._final_status = "cancelled"
            self._set_status(ev.what)
            self.progress_view.show_phase(ev)
        else:
            kind = ev.kind
            if ev.extra.get("alarm"):  # a jump or a collapse: red at once (health.Watch)
                self.progress_view.show_alarm(ev.extra["alarm"])
                self._set_status(f"alarm: {ev.extra['alarm']['message']}")
            if ev.extra.get("health"):
                self.show_health(ev.extra["health"])
            if kind == "step":
                self.progress_view.add_step(ev)
            elif kind == "start":
                self.curve.total = ev.total
                self._device = ev.device
                assert self._out is not None
                desc = f"napari-lsr: training {self._out.stem}"
                self.progress_view.progress_to(ev.step, total=ev.total, desc=desc)
                self._set_status(f"training on {ev.device}: {ev.message}")
            elif kind == "checkpoint":
                self._set_status(f"checkpoint saved at step {ev.step}")
            elif kind in ("done", "cancelled"):
                self._final_status = kind
                self._set_status(
                    f"{'finished' if kind == 'done' else 'cancelled'} at step {ev.step}/"
                    f"{ev.total}; saved {Path(ev.path).name} and its card"
                )
                self.progress_view.mark_dirty()
        self.run_event.emit(ev)

    def show_health(self, health: dict[str, Any]) -> None:
        """Per-bin predicted cancer against the prior, and the one-line verdict."""
        try:
            labels = self.current_prior()[0].bins.labels
        except Exception:  # no prior chosen any more: bin numbers
            labels = []
        self.progress_view.show_health(health, labels)
        self.health = health

    def _use_napari_progress(self) -> bool:
        if self.napari_progress is not None:
            return self.napari_progress
        if self._software_gl is None:
            self._software_gl = _napari.software_opengl(self)
        return not self._software_gl

    def _refresh(self) -> None:
        """Redraw labels, progress bars and curve: on a timer (REFRESH_MS), never per step."""
        self.progress_view.refresh()

    def _on_error(self, exc: BaseException) -> None:
        # Notified here: napari 0.9's worker mixin that would relay errors never initialises
        # (QRunnable does not chain __init__), so nothing else reports them.
        self._final_status = "failed"
        if self._handle is not None and self._handle.killed:
            name = self._out.stem if self._out is not None else "?"
            text = f"training {name!r} force-stopped; the last saved checkpoint, if any, is kept"
            self._set_status(text)
            show_info(f"napari-lsr: {text}")
            return
        self._report_error(f"training failed: {reason_first(exc)}")

    def _report_error(self, text: str) -> None:
        """An error in the dock's status and as a toast, worded reason first (the path last),
        so a toast cut short still says what went wrong."""
        self._set_status(f"⚠ {text}")
        show_error(f"napari-lsr: {text}")

    def _on_finished(self) -> None:
        self._timer.stop()
        self.progress_view.mark_dirty()
        self._refresh()
        self.curve.update()
        self.progress_view.close_napari_bar()
        status = self._final_status
        _napari.end_task(self.viewer, self._task_id, status)
        self._task_id = None
        out = self._out
        saved = out is not None and status in ("done", "cancelled") and out.exists()
        self._resume_target = out if saved and status == "cancelled" else None
        self._worker, self._handle = None, None
        self._force_offered = False
        self.run_group.offer_force_stop(False)
        ready_next_child(self.priority)  # the next run's child, ready in the background
        self.run_group.name_edited = False
        self._suggest_name()
        self.refresh_models(select=out if saved else None)
        self._update_buttons()
        if saved and status == "done":
            show_info(f"napari-lsr: model {out.stem} trained; saved in {out.parent}")
        self.run_finished.emit(str(out) if saved else "", status)

    def _set_status(self, text: str) -> None:
        self._status = text
        self.status_label.setText(text)

    def _update_buttons(self) -> None:
        running = self.is_running
        cancelling = running and self._handle is not None and self._handle.cancel.is_set()
        self.train_btn.setEnabled(not running)
        self.project_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running and (not cancelling or self._force_offered))
        self.resume_btn.setEnabled(not running and self._resume_candidate() is not None)

    # -- models ----------------------------------------------------------------------------

    def refresh_models(self, select: Path | None = None) -> None:
        """Re-read the models folder into the Models list."""
        self.models_tree.clear()
        if self.models_dir is None:
            return
        running = self._out if self.is_running else None
        cards = list_models(self.models_dir, include_incomplete=True)
        listed = [c for c in cards if c.checkpoint != running]
        self.models_tree.blockSignals(True)  # a model selected here is no user's choice
        try:
            fill_models(self.models_tree, listed, select)
        finally:
            self.models_tree.blockSignals(False)
        self._update_buttons()
        p = self.project
        if p is not None and p is self.state.project and self.models_dir == p.models_dir:
            self.state.models = tuple(listed)  # the shared project's: Comparison lists them

    def _show_selected_health(self) -> None:
        """A saved model selected (no run going on): its health report from its card."""
        items = self.models_tree.selectedItems()
        if self.is_running or not items:
            return
        card: ModelCard = items[0].data(0, Qt.ItemDataRole.UserRole)
        health = card.card.get("health") if card is not None else None
        if not isinstance(health, dict) or not health.get("bins"):
            return
        self.show_health(health)
        self.health_label.setText(
            f"model health of {card.name} (from its card): {health.get('message', '')}"
        )

    def models(self) -> list[ModelCard]:
        """The models folder's models (cards), newest first."""
        return list_models(self.models_dir) if self.models_dir else []


def _elapsed_before(checkpoint: Path) -> float:
    """How long the run of ``checkpoint`` has trained so far (its card's ``duration_s``; 0
    without a readable card), so that the elapsed time goes on from there after Resume."""
    from ..io.formats import existing_model_card, read_model_card

    card = existing_model_card(checkpoint)
    try:
        value = float(read_model_card(card).get("duration_s") or 0.0) if card else 0.0
    except Exception:  # a card that cannot say: count from 0
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0
