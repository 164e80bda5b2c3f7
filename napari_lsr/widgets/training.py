"""Training dock widget: pick slides, prior, loss and settings; train off the GUI thread."""

from __future__ import annotations

import atexit
import gc
import math
import os
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import GeneratorWorker
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, QPointF, QRectF, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QDoubleValidator, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import config
from ..formats import Prior, paper_prior, read_prior_csv, resource_path
from ..models import ModelCard, list_models
from ..run import (  # noqa: F401 (Phase, SlideSource, TrainingFailed, readable_error: the API)
    Phase,
    RunPlan,
    SlideSource,
    TrainingFailed,
    prepare_subprocess,
    readable_error,
    run_in_subprocess,
    run_training,
    warm_up_engine,
)
from ..state import hub_for
from ._common import reason_first, vet_checkpoint

if TYPE_CHECKING:
    import napari

    from ..project import Project
    from ..training import TrainEvent

# Choices, defaults and presets are defined once, in the torch-free ``config`` (the command
# line and the demo use the same); each combo lists its default first.
PAPER_LR = config.PAPER_LR
PRESETS = config.PRESETS
DEFAULTS = config.DEFAULTS
DEFAULT_TRAIN_MPP = config.DEFAULT_TRAIN_MPP


def _default_first(choices: tuple[str, ...], key: str) -> list[str]:
    d = DEFAULTS[key]
    return [d, *(c for c in choices if c != d)]


LOSSES = _default_first(config.LOSSES, "loss")
DISTANCES = _default_first(config.DISTANCES, "distance")
PIXEL_VARIANCES = _default_first(config.PIXEL_VARIANCES, "pixel_variance")
LR_SCHEDULES = _default_first(config.LR_SCHEDULES, "lr_schedule")
NORMS = _default_first(config.NORMS, "norm")
#: How long closing the viewer waits for the run to save its checkpoint and stop.
STOP_TIMEOUT_S = 30.0
#: How often the labels, the progress bars and the loss curve are redrawn, all in one tick
#: (one window flush). Every flush makes Qt composite the window with napari's OpenGL
#: canvas: about 25 ms of CPU with software OpenGL (Xvfb, llvmpipe), 40-80 ms of waiting
#: when training keeps the CPUs busy; so once a second (see benchmarks/gui_stall.py).
REFRESH_MS = 1000
CANCEL_TIP = "stop after this step; a checkpoint and a card are saved"
#: Where a slide layer's labels CSV is looked for beside the slide, ``{stem}`` replaced.
LABEL_CANDIDATES = ("{stem}_lowres.csv", "{stem}_labels.csv", "{stem}.csv")


_gc_frozen = 0


def _gc_freeze() -> None:
    """Move every object that exists now out of the garbage collector's sight (nestable).

    A full collection in the training thread walks every Python object of napari (hundreds
    of ms) while holding the GIL: the GUI stalls. Frozen objects are not walked, so the
    collections a run triggers stay short. Unfrozen when the run ends, so that cyclic garbage
    made before the run (a closed layer, say) is still collected afterwards. GUI thread only.
    """
    global _gc_frozen
    if _gc_frozen == 0:
        gc.freeze()
    _gc_frozen += 1


def _gc_unfreeze() -> None:
    global _gc_frozen
    _gc_frozen = max(0, _gc_frozen - 1)
    if _gc_frozen == 0:
        gc.unfreeze()


#: Background threads and runs still going, stopped and joined at interpreter exit: a thread
#: left inside torch while Python and C++ tear down aborts the process.
_WARM_UPS: list[threading.Thread] = []
_RUNS: set[RunHandle] = set()


@atexit.register
def _stop_background_work(timeout: float = STOP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    runs = list(_RUNS)
    for handle in runs:
        handle.cancel.set()
    for handle in runs:
        handle.finished.wait(max(0.0, deadline - time.monotonic()))
    if runs:  # and let the Qt worker emit its last signals before Python goes away
        from qtpy.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(int(1000 * max(0.0, deadline - time.monotonic())))
    for thread in list(_WARM_UPS):
        thread.join(max(0.0, deadline - time.monotonic()))


class RunHandle:
    """Cancel and wait for one run, from any thread (Qt-free; outlives the widget)."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.finished = threading.Event()
        #: The training child's pid while it runs (process isolation), else None.
        self.child_pid: int | None = None
        #: True once ``kill`` has ended the child.
        self.killed = False

    def set_child(self, pid: int | None) -> None:
        self.child_pid = pid

    def kill(self) -> bool:
        """End the training child at once (no new checkpoint); False if there is none."""
        import signal

        pid = self.child_pid
        if pid is None:
            return False
        self.killed = True
        self.cancel.set()
        try:
            os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        except OSError:
            return False
        return True

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Ask the run to stop (it saves a checkpoint) and wait up to ``timeout`` seconds."""
        self.cancel.set()
        return self.finished.wait(timeout)


class _TrainWorker(GeneratorWorker):
    """napari's generator worker whose ``quit`` cancels gracefully (checkpoint and card).

    ``quit`` is what napari and superqt call to stop workers (e.g. when the window closes);
    the stock one abandons the generator mid-run, which would lose the checkpoint.
    """

    handle: RunHandle

    def quit(self) -> None:
        self.handle.stop()


# -- small widgets ---------------------------------------------------------------------------


class LossCurve(QWidget):
    """A light loss plot drawn with QPainter: raw losses (faint) and their running mean."""

    SMOOTHING = 0.05  # EMA weight of a new loss (bias-corrected)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.clear()

    def clear(self) -> None:
        self._steps = np.empty(1024, np.float64)
        self._raw = np.empty(1024, np.float64)
        self._ema = np.empty(1024, np.float64)
        self._n = 0
        self._acc = 0.0
        self._weight = 0.0
        self.total = 0
        self.update()

    def __len__(self) -> int:
        return self._n

    def append(self, step: float, loss: float) -> None:
        if not math.isfinite(loss):
            return
        if self._n == len(self._steps):
            for name in ("_steps", "_raw", "_ema"):
                arr = getattr(self, name)
                setattr(self, name, np.concatenate([arr, np.empty_like(arr)]))
        a = self.SMOOTHING
        self._acc = (1 - a) * self._acc + a * loss
        self._weight = (1 - a) * self._weight + a
        self._steps[self._n], self._raw[self._n] = step, loss
        self._ema[self._n] = self._acc / self._weight
        self._n += 1

    def extend(self, history: list) -> None:
        for step, loss in history:
            self.append(float(step), float(loss))

    def data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self._n
        return self._steps[:n], self._raw[:n], self._ema[:n]

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fg = pal.color(pal.ColorRole.WindowText)
        faint = QColor(fg)
        faint.setAlpha(70)
        fm = p.fontMetrics()
        pad_l, pad_r, pad_t, pad_b = fm.horizontalAdvance("-0.000e+00") + 6, 8, 6, fm.height() + 4
        plot = QRectF(pad_l, pad_t, self.width() - pad_l - pad_r, self.height() - pad_t - pad_b)
        p.setPen(QPen(faint, 1))
        p.drawRect(plot)
        steps, raw, ema = self.data()
        if len(steps) == 0:
            p.setPen(fg)
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, "loss curve: no steps yet")
            p.end()
            return
        # Decimate to about two points per pixel column.
        stride = max(1, int(len(steps) / max(plot.width() * 2, 1)))
        s, r, e = steps[::stride], raw[::stride], ema[::stride]
        lo = min(float(np.percentile(r, 1)), float(e.min()))
        hi = max(float(np.percentile(r, 99)), float(e.max()))
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        margin = 0.05 * (hi - lo)
        lo, hi = lo - margin, hi + margin
        x0 = float(min(s[0], 0.0))
        x1 = float(max(s[-1], self.total, x0 + 1))

        def poly(ys: np.ndarray) -> QPolygonF:
            xs = plot.left() + (s - x0) / (x1 - x0) * plot.width()
            yy = plot.bottom() - (np.clip(ys, lo, hi) - lo) / (hi - lo) * plot.height()
            return QPolygonF([QPointF(float(x), float(y)) for x, y in zip(xs, yy)])

        p.setClipRect(plot)
        raw_pen = QPen(QColor(120, 170, 255, 150), 1)
        p.setPen(raw_pen)
        p.drawPolyline(poly(r))
        p.setPen(QPen(QColor(255, 160, 40), 2))
        p.drawPolyline(poly(e))
        p.setClipping(False)
        p.setPen(fg)
        p.drawText(
            QRectF(0, plot.top() - 2, pad_l - 4, fm.height()),
            Qt.AlignmentFlag.AlignRight,
            f"{hi:.3g}",
        )
        p.drawText(
            QRectF(0, plot.bottom() - fm.height() + 2, pad_l - 4, fm.height()),
            Qt.AlignmentFlag.AlignRight,
            f"{lo:.3g}",
        )
        bottom = QRectF(plot.left(), plot.bottom() + 2, plot.width(), fm.height())
        p.drawText(bottom, Qt.AlignmentFlag.AlignLeft, f"{x0:.0f}")
        p.drawText(bottom, Qt.AlignmentFlag.AlignHCenter, "step")
        p.drawText(bottom, Qt.AlignmentFlag.AlignRight, f"{x1:.0f}")
        legend = QRectF(plot.left() + 4, plot.top() + 2, plot.width() - 8, fm.height())
        p.setPen(QColor(255, 160, 40))
        p.drawText(legend, Qt.AlignmentFlag.AlignRight, "running mean")
        p.setPen(QColor(120, 170, 255))
        p.drawText(legend.translated(0, fm.height()), Qt.AlignmentFlag.AlignRight, "loss per step")
        p.end()


class _Bridge(QObject):
    """Carries a value from a plain thread to the GUI thread; owned by that thread."""

    ready = Signal(object)


class _TrainProgress(cancelable_progress):
    """A napari progress bar whose Cancel button (activity dock) cancels the run at once."""

    def cancel(self) -> None:
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


#: Substrings of GL_RENDERER that mean software rendering.
SOFTWARE_GL = ("llvmpipe", "softpipe", "swrast", "swiftshader", "software", "basic render")


def _software_opengl(viewer: napari.viewer.Viewer) -> bool:
    """Whether napari's canvas renders with software OpenGL (False when it cannot tell)."""
    try:
        from vispy.gloo import gl

        viewer.window._qt_viewer.canvas._scene_canvas.set_current()
        renderer = str(gl.glGetParameter(gl.GL_RENDERER)).lower()
    except Exception:
        return False
    return any(k in renderer for k in SOFTWARE_GL)


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _unique_name(folder: Path, base: str) -> str:
    name, k = base, 2
    while any((folder / f"{name}{ext}").exists() for ext in (".pt", ".card.json", ".json")):
        name, k = f"{base}-{k}", k + 1
    return name


def _warm_up() -> list[str]:
    """Import torch, dask and the engine, run tiny dask and training steps; list the devices.

    Runs in a worker when the widget opens. torch imports modules lazily on first use (the
    first optimiser step imports ``torch._dynamo``); an import in the training thread holds
    the GIL for long stretches and stalls the GUI, so it happens here instead, once.
    """
    from ..training import available_devices, select_device

    try:
        warm_up_engine()
    except Exception:  # only a warm-up: the run reports real errors
        pass
    devices = available_devices()
    try:
        auto = select_device("auto").type
    except Exception:
        auto = "cpu"
    return [f"auto ({auto})" if d == "auto" else d for d in devices]


def _spin(lo: int, hi: int, value: int, tip: str = "") -> QSpinBox:
    w = QSpinBox()
    w.setRange(lo, hi)
    w.setValue(value)
    w.setToolTip(tip)
    return w


# -- the dock widget ---------------------------------------------------------------------------


class TrainingWidget(QWidget):
    """Train a label super-resolution U-Net from the slides, the prior and a loss.

    The run (labels, block extraction, training) happens in a child process at idle CPU
    priority (``isolation = "process"``, see ``napari_lsr.run``) or in the napari generator
    worker itself (``"thread"``); either way the worker relays its events and the GUI only
    receives them. Cancel saves a checkpoint and a card (within one step);
    Resume continues a cancelled run; closing the viewer cancels and waits for the checkpoint.
    Models land in the project's ``models/`` (see ``napari_lsr.models.list_models``).
    """

    #: Every event of a run (``Phase`` or ``TrainEvent``), on the GUI thread.
    run_event = Signal(object)
    #: A run ended: (checkpoint path or "", status: done, cancelled, failed).
    run_finished = Signal(str, str)

    #: Where a run trains: "process" (default), a child Python process at lower CPU priority
    #: whose events a worker thread relays (``run.run_in_subprocess``): training never holds
    #: napari's GIL and the GUI always gets the CPU first; or "thread", in napari's own
    #: process, in the generator worker itself. See benchmarks/gui_stall.py.
    isolation: str = "process"
    #: The child process's CPU priority (``run.PRIORITIES``): "idle" by default.
    priority: str = "idle"

    #: How long after Cancel the button turns into Force stop, if the child has not ended.
    force_stop_after_ms: int = 20_000

    #: torch intra-op threads of a run: None is automatic (a child process: torch's default,
    #: every core; a thread: all cores but one, left to the GUI), 0 keeps torch's default,
    #: n > 0 uses n.
    torch_threads: int | None = None

    #: Show the run in napari's activity dock too (progress bar with Cancel). None (auto):
    #: yes, unless napari's canvas renders with software OpenGL: napari animates a 33 Hz
    #: spinner while a bar is open, and each frame makes Qt composite the window in software
    #: (about 80 % of a core, training 3x slower, GUI stalls; benchmarks/gui_stall.py).
    napari_progress: bool | None = None

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.project: Project | None = None
        self.models_dir: Path | None = None
        self._worker: _TrainWorker | None = None
        self._handle: RunHandle | None = None
        self._pbar: _TrainProgress | None = None
        self._task_id: Any = None
        self._out: Path | None = None
        self._last: Any = None
        #: The last model-health report (health.Health.to_dict()), None before the first.
        self.health: dict[str, Any] | None = None
        self._last_step: TrainEvent | None = None
        self._status = ""
        self._dirty = False
        self._bps = math.nan
        self._t0 = 0.0
        self._name_edited = False
        self._resume_target: Path | None = None
        self._final_status = ""
        self._device = ""
        self._software_gl: bool | None = None
        self._force_offered = False
        #: True once torch is imported and warmed up in the background (devices listed).
        self.warmed_up = False
        self._build()
        self.hub = hub_for(napari_viewer)  # the project shared with the other widgets
        self.hub.subscribe(self._on_hub)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self._refresh)
        self._on_loss_changed()
        events = self.viewer.layers.events
        events.inserted.connect(self._sync_layers)
        events.removed.connect(self._sync_layers)
        if self.hub.project is not None:
            self.set_project(self.hub.project, publish=False)
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

        # Data: project, slides, prior
        data = QGroupBox("Data")
        g = QGridLayout(data)
        self.project_label = QLabel("no project")
        self.project_label.setWordWrap(True)
        self.project_btn = QPushButton("Project…")
        self.project_btn.setToolTip("Open a napari-lsr project folder (with project.toml)")
        self.project_btn.clicked.connect(self._choose_project)
        g.addWidget(QLabel("Project"), 0, 0)
        g.addWidget(self.project_label, 0, 1)
        g.addWidget(self.project_btn, 0, 2)
        self.slide_list = QListWidget()
        self.slide_list.setMaximumHeight(62)
        self.slide_list.setToolTip(
            "Slides to train on: the project's, and slide layers open in the viewer.\n"
            "Double-click a slide to choose its low-resolution labels CSV."
        )
        self.slide_list.itemDoubleClicked.connect(self._choose_labels)
        self.add_slide_btn = QPushButton("Add…")
        self.add_slide_btn.setToolTip("Add a slide file and its low-resolution labels CSV")
        self.add_slide_btn.clicked.connect(self._add_slide_dialog)
        g.addWidget(QLabel("Slides"), 1, 0, Qt.AlignmentFlag.AlignTop)
        g.addWidget(self.slide_list, 1, 1)
        g.addWidget(self.add_slide_btn, 1, 2, Qt.AlignmentFlag.AlignTop)
        self.prior_combo = QComboBox()
        self.prior_combo.setToolTip(
            "p(c|z): the project's prior.csv, the Prior table widget's current table, "
            "a CSV file, or the paper's Table 1"
        )
        self.prior_combo.activated.connect(self._prior_activated)
        g.addWidget(QLabel("Prior"), 2, 0)
        g.addWidget(self.prior_combo, 2, 1, 1, 2)
        g.setColumnStretch(1, 1)
        lay.addWidget(data)

        # Loss
        loss = QGroupBox("Loss")
        g = QGridLayout(loss)
        self.loss_combo = QComboBox()
        self.loss_combo.addItems(LOSSES)
        self.loss_combo.setToolTip(
            "intra: each block against p(c|z) (Sec. 2.1); inter: groups of blocks of one bin "
            "(Sec. 2.2); intra+inter: both (Sec. 2.3)"
        )
        self.distance_combo = QComboBox()
        self.distance_combo.addItems(DISTANCES)
        self.distance_combo.setToolTip(
            "gaussian: Malkin et al.'s statistics matching; kl: KL(N(mu,s2) || N(eta,rho2)); "
            "paper: Eq. 5/9 as printed (can collapse to confident pixels)"
        )
        self.variance_combo = QComboBox()
        self.variance_combo.addItems(PIXEL_VARIANCES)
        self.variance_combo.setToolTip(
            "paper: var_k = mean p(1-p); exact: the variance of the sampled fraction, / |X_k|"
        )
        g.addWidget(QLabel("Loss"), 0, 0)
        g.addWidget(self.loss_combo, 0, 1)
        g.addWidget(QLabel("Distance"), 0, 2)
        g.addWidget(self.distance_combo, 0, 3)
        g.addWidget(QLabel("Pixel variance"), 1, 0)
        g.addWidget(self.variance_combo, 1, 1)
        self.distance_hint = QLabel("paper distance alone can collapse; try a low LR")
        self.distance_hint.setWordWrap(True)
        self.distance_hint.setStyleSheet("color: #e0a030;")
        g.addWidget(self.distance_hint, 1, 2, 1, 2)
        self.loss_combo.currentTextChanged.connect(self._on_loss_changed)
        self.distance_combo.currentTextChanged.connect(self._on_distance_changed)
        lay.addWidget(loss)

        # Hyperparameters
        hyper = QGroupBox("Hyperparameters")
        g = QGridLayout(hyper)
        d = DEFAULTS
        self.steps_spin = _spin(1, 10_000_000, d["steps"], "optimiser steps")
        self.lr_edit = QLineEdit()
        self.lr_edit.setValidator(QDoubleValidator(1e-12, 10.0, 12))
        self.lr_edit.setToolTip("RMSprop learning rate; the paper: 1e-5 intra, 1e-3 intra+inter")
        self.schedule_combo = QComboBox()
        self.schedule_combo.addItems(LR_SCHEDULES)
        self.schedule_combo.setToolTip("constant: the paper; cosine: decay to LR/20")
        self.ema_spin = QDoubleSpinBox()
        self.ema_spin.setRange(0.0, 0.9999)
        self.ema_spin.setDecimals(4)
        self.ema_spin.setSingleStep(0.001)
        self.ema_spin.setValue(d["ema"])
        self.ema_spin.setToolTip("weight averaging decay (0: off; e.g. 0.99)")
        self.batch_spin = _spin(1, 10_000, d["batch_size"], "intra: blocks per batch (paper 30)")
        self.groups_spin = _spin(1, 100, d["groups"], "groups per batch, G (paper 2)")
        self.group_size_spin = _spin(2, 1000, d["group_size"], "blocks per group, N (paper 15)")
        self.batch_stack = QStackedWidget()
        single = QWidget()
        h = QHBoxLayout(single)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(self.batch_spin)
        h.addWidget(QLabel("blocks"))
        grouped = QWidget()
        h = QHBoxLayout(grouped)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(self.groups_spin)
        h.addWidget(QLabel("groups ×"))
        h.addWidget(self.group_size_spin)
        h.addWidget(QLabel("blocks"))
        self.batch_stack.addWidget(single)
        self.batch_stack.addWidget(grouped)
        self.seed_spin = _spin(0, 2**31 - 1, d["seed"], "random seed (same seed, same run)")
        self.ckpt_spin = _spin(0, 1_000_000, d["checkpoint_every"], "steps between checkpoints")
        self.depth_spin = _spin(1, 6, d["depth"], "U-Net depth (levels)")
        self.width_spin = _spin(1, 256, d["width"], "U-Net width (channels at the top level)")
        self.mpp_spin = QDoubleSpinBox()
        self.mpp_spin.setRange(0.0, 100.0)
        self.mpp_spin.setDecimals(2)
        self.mpp_spin.setValue(DEFAULT_TRAIN_MPP)
        self.mpp_spin.setSuffix(" µm/px")
        self.mpp_spin.setToolTip("training resolution (paper: about 4.2 µm/px); 0: from block px")
        self.block_spin = _spin(0, 4096, 0, "block size in px (0: from the mpp)")
        self.block_spin.setSpecialValueText("auto")
        self.augment_check = QCheckBox("augment")
        self.augment_check.setChecked(d["augment"])
        self.augment_check.setToolTip("random flips, rotations and stain jitter")
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setToolTip(
            "fill LR, schedule, EMA, batch layout and normalisation: napari-lsr's recipe "
            f"(BatchNorm, lr {DEFAULTS['lr']:g} for every loss; BENCHMARKS.md), or the paper's "
            "settings (lr 1e-5 intra, 1e-3 inter/intra+inter) with the first engine's "
            f"per-pixel norm; {config.PAPER_PRESET_NOTE}"
        )
        self.norm_combo = QComboBox()
        self.norm_combo.addItems(NORMS)
        self.norm_combo.setToolTip(
            "normalisation after each conv: batch (the recipe; running statistics at "
            "inference, seamless tiles), channel (per pixel, the first engine's), group"
        )
        self.preset_combo.activated.connect(self._on_preset)
        rows = [
            ("Steps", self.steps_spin, "LR", self.lr_edit),
            ("Schedule", self.schedule_combo, "EMA", self.ema_spin),
            ("Seed", self.seed_spin, "Ckpt every", self.ckpt_spin),
            ("Depth", self.depth_spin, "Width", self.width_spin),
            ("Train mpp", self.mpp_spin, "Block px", self.block_spin),
            ("Norm", self.norm_combo, None, None),
        ]
        g.addWidget(QLabel("Batch"), 0, 0)
        g.addWidget(self.batch_stack, 0, 1, 1, 3)
        for i, (la, wa, lb, wb) in enumerate(rows, start=1):
            g.addWidget(QLabel(la), i, 0)
            g.addWidget(wa, i, 1)
            if wb is not None:
                g.addWidget(QLabel(lb), i, 2)
                g.addWidget(wb, i, 3)
        g.addWidget(self.augment_check, len(rows) + 1, 1)
        g.addWidget(self.preset_combo, len(rows) + 1, 2, 1, 2)
        g.setColumnStretch(1, 1)
        g.setColumnStretch(3, 1)
        lay.addWidget(hyper)

        # Run
        run = QGroupBox("Run")
        g = QGridLayout(run)
        self.device_combo = QComboBox()
        self.device_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.device_combo.addItems(["auto", "cpu"])
        self.device_combo.setToolTip("auto: CUDA, then MPS, then CPU; only devices found here")
        self.name_edit = QLineEdit()
        self.name_edit.setToolTip("the model's file name in the models folder (NAME.pt, NAME.json)")
        self.name_edit.textEdited.connect(self._on_name_edited)
        self.models_label = QLabel("models folder: –")
        self.models_label.setWordWrap(True)
        self.train_btn = QPushButton("Train")
        self.train_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip(CANCEL_TIP)
        self.cancel_btn.clicked.connect(self._on_cancel_clicked)
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.setToolTip("continue the selected (or last cancelled) run")
        self.resume_btn.clicked.connect(self._on_resume_clicked)
        g.addWidget(QLabel("Device"), 0, 0)
        g.addWidget(self.device_combo, 0, 1)
        g.addWidget(QLabel("Name"), 0, 2)
        g.addWidget(self.name_edit, 0, 3)
        g.addWidget(self.models_label, 1, 0, 1, 4)
        buttons = QHBoxLayout()
        for b in (self.train_btn, self.cancel_btn, self.resume_btn):
            buttons.addWidget(b)
        g.addLayout(buttons, 2, 0, 1, 4)
        g.setColumnStretch(3, 1)
        low.addWidget(run)

        # Progress
        prog = QGroupBox("Progress")
        v = QVBoxLayout(prog)
        self.status_label = QLabel("idle")
        self.status_label.setWordWrap(True)
        self.step_label = QLabel("")
        self.speed_label = QLabel("")
        for w in (self.status_label, self.step_label, self.speed_label):
            w.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            v.addWidget(w)
        self.curve = LossCurve()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        v.insertWidget(1, self.progress_bar)
        curves = QHBoxLayout()
        curves.addWidget(self.curve, 1)
        health = QVBoxLayout()
        self.health_label = QLabel("model health: after the first checks")
        self.health_label.setWordWrap(True)
        self.health_label.setToolTip(
            "Without ground truth: the model's predicted cancer on the training blocks, per "
            "bin, against the prior's mean ± std. A healthy model rises with the bins."
        )
        self.health_table = QTreeWidget()
        self.health_table.setHeaderLabels(["bin", "prior %", "model %"])
        self.health_table.setRootIsDecorated(False)
        self.health_table.setToolTip(self.health_label.toolTip())
        self.health_table.setMinimumWidth(190)
        self.health_table.setIndentation(0)
        health.addWidget(self.health_label)
        health.addWidget(self.health_table, 1)
        curves.addLayout(health, 1)
        v.addLayout(curves, 1)
        low.addWidget(prog, 1)

        # Models
        models = QGroupBox("Models")
        v = QVBoxLayout(models)
        self.models_tree = QTreeWidget()
        self.models_tree.setHeaderLabels(["name", "loss", "distance", "steps", "final", "status"])
        self.models_tree.setRootIsDecorated(False)
        self.models_tree.setMaximumHeight(96)
        self.models_tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.models_tree.itemSelectionChanged.connect(self._update_buttons)
        v.addWidget(self.models_tree)
        low.addWidget(models)
        lay.addStretch(1)
        scroll.setMinimumHeight(160)
        self.splitter.setSizes([450, 550])  # proportions: settings above get 45 % at first
        self._on_distance_changed()
        self._update_buttons()

    def _start_device_probe(self) -> threading.Thread:
        """Warm torch up and list the devices in a daemon thread, so the widget opens at once.

        A plain daemon thread, not a Qt worker: if napari quits within the seconds the torch
        import takes, a Qt worker would emit into deleted objects during shutdown and abort.
        The result travels through a parentless bridge object that the thread keeps alive (a
        signal of the widget itself could be emitted after the widget is deleted: a crash).
        """
        bridge = _Bridge()
        bridge.ready.connect(self._set_devices)

        isolated, priority = self.isolation == "process", self.priority

        def work() -> None:
            try:
                devices = _warm_up()
                if isolated:  # a child waits with torch imported: Train starts 4 s sooner
                    prepare_subprocess(priority)
            except BaseException:  # e.g. the interpreter shutting down
                devices = ["auto", "cpu"]
            bridge.ready.emit(devices)

        thread = threading.Thread(target=work, name="lsr-warm-up", daemon=True)
        _WARM_UPS[:] = [t for t in _WARM_UPS if t.is_alive()] + [thread]
        thread.start()
        return thread

    def _set_devices(self, devices: list[str]) -> None:
        self.warmed_up = True
        current = self.device_combo.currentText()
        self.device_combo.clear()
        self.device_combo.addItems(devices)
        for i, d in enumerate(devices):
            if d.split(" ")[0] == current.split(" ")[0]:
                self.device_combo.setCurrentIndex(i)

    # -- project, slides and prior -----------------------------------------------------------

    def set_project(self, folder: str | os.PathLike | Project | None, publish: bool = True) -> None:
        """Use a project: its slides, prior, training resolution and models folder.

        With ``publish`` the other napari-lsr widgets of the viewer switch to it too.
        """
        from ..project import Project

        if folder is None:
            self.project = None
        else:
            self.project = folder if isinstance(folder, Project) else Project.open(folder)
        p = self.project
        if publish and p is not None and self.hub.project is not p:
            self.hub.set_project(p)
        self.project_label.setText(str(p.folder) if p else "no project")
        self.project_label.setToolTip(str(p.folder) if p else "")
        for i in reversed(range(self.slide_list.count())):
            if self._source(self.slide_list.item(i)).origin == "project":
                self.slide_list.takeItem(i)
        if p is not None:
            for entry in p.slides:
                source = SlideSource(entry.path, entry.labels, entry.mpp, "project")
                self._add_source(source, checked=True, replace=True)
            training = p.config.get("training", {})
            if training.get("mpp"):
                self.mpp_spin.setValue(float(training["mpp"]))
            if training.get("block_size"):
                self.block_spin.setValue(int(training["block_size"]))
            self.set_models_dir(p.models_dir)
        self._sync_layers()
        self._fill_priors()

    def _on_hub(self, kind: str) -> None:
        if kind == "project" and self.hub.project is not self.project and not self.is_running:
            self.set_project(self.hub.project, publish=False)

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

    def _source(self, item: QListWidgetItem) -> SlideSource:
        return item.data(Qt.ItemDataRole.UserRole)

    def _item_text(self, s: SlideSource) -> str:
        labels = s.labels.name if s.labels else "no labels: double-click to choose"
        where = "project" if s.origin == "project" else "layer"
        return f"{Path(s.slide).stem}  ({where}; {labels})"

    def _add_source(self, source: SlideSource, checked: bool, replace: bool = False) -> None:
        for i in range(self.slide_list.count()):
            item = self.slide_list.item(i)
            if self._source(item).key == source.key:
                if replace:  # a project's entry wins over the same slide's layer
                    item.setData(Qt.ItemDataRole.UserRole, source)
                    item.setText(self._item_text(source))
                return
        item = QListWidgetItem(self._item_text(source))
        item.setData(Qt.ItemDataRole.UserRole, source)
        item.setToolTip(f"{source.slide}\nlabels: {source.labels or '–'}")
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(
            Qt.CheckState.Checked if checked and source.labels else Qt.CheckState.Unchecked
        )
        self.slide_list.addItem(item)

    def add_slide(self, slide: str | os.PathLike, labels: str | os.PathLike | None) -> None:
        """Add a slide (and its labels CSV) to the list, checked."""
        self._add_source(
            SlideSource(Path(slide), Path(labels) if labels else None, origin="file"), True
        )

    def _labels_for(self, slide: Path) -> Path | None:
        key = os.path.normcase(str(slide.resolve()))
        if self.project is not None:
            for e in self.project.slides:
                if os.path.normcase(str(e.path.resolve())) == key:
                    return e.labels
        for pattern in LABEL_CANDIDATES:
            cand = slide.with_name(pattern.format(stem=slide.stem))
            if cand.is_file():
                return cand
        return None

    def _sync_layers(self, event: Any = None) -> None:
        """Slide layers open in the viewer become slide choices (and may reveal a project)."""
        paths = []
        for layer in self.viewer.layers:
            meta = getattr(layer, "metadata", {}).get("napari_lsr", {})
            if meta.get("path") and not meta.get("kind"):
                paths.append(Path(meta["path"]))
        if self.project is None:
            for p in paths:
                if (p.parent / "project.toml").is_file():
                    try:  # tell the other widgets only if they have no project yet
                        self.set_project(p.parent, publish=self.hub.project is None)
                    except Exception:
                        continue
                    return  # set_project calls back here
        keys = {os.path.normcase(str(p.resolve())) for p in paths}
        for i in reversed(range(self.slide_list.count())):
            s = self._source(self.slide_list.item(i))
            if s.origin == "layer" and s.key not in keys:
                self.slide_list.takeItem(i)
        for p in paths:
            self._add_source(SlideSource(p, self._labels_for(p), origin="layer"), checked=True)
        if self.models_dir is None and paths:
            self.set_models_dir(paths[0].parent / "models")

    def _choose_labels(self, item: QListWidgetItem) -> None:
        s = self._source(item)
        path, _ = QFileDialog.getOpenFileName(
            self,
            f"Low-resolution labels for {Path(s.slide).name}",
            str(Path(s.slide).parent),
            "CSV (*.csv)",
        )
        if path:
            s.labels = Path(path)
            item.setText(self._item_text(s))
            item.setCheckState(Qt.CheckState.Checked)

    def _add_slide_dialog(self) -> None:
        slide, _ = QFileDialog.getOpenFileName(self, "Slide to train on")
        if not slide:
            return
        labels = self._labels_for(Path(slide))
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
        out = []
        for i in range(self.slide_list.count()):
            item = self.slide_list.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(self._source(item))
        return out

    def _fill_priors(self) -> None:
        keep = self.prior_combo.currentData()
        self.prior_combo.clear()
        if self.project is not None and self.project.prior_path is not None:
            if self.project.prior_path.exists():
                self.prior_combo.addItem(
                    f"project: {self.project.prior_path.name}",
                    f"file|{self.project.prior_path}",
                )
        self.prior_combo.addItem("Prior table widget (current table)", "widget|")
        self.prior_combo.addItem("paper Table 1", "paper|")
        self.prior_combo.addItem("CSV file…", "choose|")
        idx = self.prior_combo.findData(keep) if keep else -1
        if idx < 0:  # the project's prior, else the paper's
            idx = 0 if self._prior_data(0)[0] == "file" else 1
        self.prior_combo.setCurrentIndex(idx)

    def _prior_data(self, index: int) -> tuple[str, str]:
        """(kind, value) of a prior-list entry: file|PATH, widget|, paper| or choose|."""
        data = self.prior_combo.itemData(index) if index >= 0 else None
        kind, _, value = (data or "paper|").partition("|")
        return kind, value

    def _prior_activated(self, index: int) -> None:
        kind, _ = self._prior_data(index)
        if kind != "choose":
            return
        start = str(self.project.folder) if self.project else ""
        path, _ = QFileDialog.getOpenFileName(self, "Prior p(c|z)", start, "CSV (*.csv)")
        if path:
            self.set_prior_file(path)
        else:
            self.prior_combo.setCurrentIndex(0)

    def set_prior_file(self, path: str | os.PathLike) -> None:
        """Use a prior CSV file (added to the prior list and selected)."""
        data = f"file|{Path(path)}"
        idx = self.prior_combo.findData(data)
        if idx < 0:
            self.prior_combo.insertItem(0, f"file: {Path(path).name}", data)
            idx = 0
        self.prior_combo.setCurrentIndex(idx)

    def set_prior_choice(self, kind: str) -> None:
        """Select ``project``, ``widget`` or ``paper`` in the prior list."""
        for i in range(self.prior_combo.count()):
            k, _ = self._prior_data(i)
            if k == kind or (kind == "project" and self.prior_combo.itemText(i).startswith(kind)):
                self.prior_combo.setCurrentIndex(i)
                return
        raise ValueError(f"no {kind} prior to choose")

    def _prior_from_widget(self) -> Prior:
        """The current table of the Prior table dock widget, as it shares it (``state``)."""
        if self.hub.prior is None:
            raise ValueError("open the Prior table widget first, or choose another prior")
        return self.hub.prior

    def current_prior(self) -> tuple[Prior, str]:
        """The chosen prior and a label for the model card (a path where there is one)."""
        kind, value = self._prior_data(self.prior_combo.currentIndex())
        if kind == "file":
            return read_prior_csv(value), str(Path(value).resolve())
        if kind == "widget":
            prior = self._prior_from_widget()
            return prior, str(prior.path) if prior.path else ""
        if kind == "choose":
            raise ValueError("choose a prior CSV file")
        return paper_prior(), str(resource_path("prior_paper_table1.csv"))

    # -- loss and hyperparameters ----------------------------------------------------------

    def _on_loss_changed(self, *_: Any) -> None:
        loss = self.loss_combo.currentText()
        preset = PRESETS[self.preset_combo.currentText()]
        self.lr_edit.setText(f"{preset['lr'][loss]:g}")
        self.batch_stack.setCurrentIndex(0 if loss == "intra" else 1)
        self._suggest_name()

    def _on_distance_changed(self, *_: Any) -> None:
        self.distance_hint.setVisible(self.distance_combo.currentText() == "paper")
        self._suggest_name()

    def _on_preset(self, *_: Any) -> None:
        self.apply_preset()

    def apply_preset(self, name: str | None = None) -> None:
        """Fill LR, schedule, EMA and batch layout from a preset (default: the selected one)."""
        if name is not None:
            self.preset_combo.setCurrentText(name)
        preset = PRESETS[self.preset_combo.currentText()]
        self.lr_edit.setText(f"{preset['lr'][self.loss_combo.currentText()]:g}")
        self.schedule_combo.setCurrentText(preset["lr_schedule"])
        self.ema_spin.setValue(preset["ema"])
        self.batch_spin.setValue(preset["batch_size"])
        self.groups_spin.setValue(preset["groups"])
        self.group_size_spin.setValue(preset["group_size"])
        self.norm_combo.setCurrentText(preset["norm"])

    def _on_name_edited(self, text: str) -> None:
        self._name_edited = bool(text.strip())

    def _suggest_name(self) -> None:
        if self._name_edited or not hasattr(self, "name_edit"):
            return
        base = f"{self.loss_combo.currentText()}-{self.distance_combo.currentText()}"
        folder = self.models_dir or Path(".")
        self.name_edit.setText(_unique_name(folder, base) if self.models_dir else base)

    def config_kwargs(self) -> dict[str, Any]:
        """The form as ``TrainConfig`` keyword arguments."""
        loss = self.loss_combo.currentText()
        try:
            lr = float(self.lr_edit.text())
        except ValueError:
            raise ValueError(f"the learning rate {self.lr_edit.text()!r} is not a number") from None
        return {
            "loss": loss,
            "distance": self.distance_combo.currentText(),
            "pixel_variance": self.variance_combo.currentText(),
            "steps": self.steps_spin.value(),
            "lr": lr,
            "lr_schedule": self.schedule_combo.currentText(),
            "ema": self.ema_spin.value(),
            "batch_size": self.batch_spin.value(),
            "groups": self.groups_spin.value(),
            "group_size": self.group_size_spin.value(),
            "seed": self.seed_spin.value(),
            "device": self.device_combo.currentText().split(" ")[0],
            "depth": self.depth_spin.value(),
            "width": self.width_spin.value(),
            "augment": self.augment_check.isChecked(),
            "checkpoint_every": self.ckpt_spin.value(),
            "norm": self.norm_combo.currentText(),
            **self._preset_engine(),
        }

    def _preset_engine(self) -> dict[str, Any]:
        """Engine settings the form does not show, from the chosen preset (and, for the
        paper's, the first engine's companions of ChannelNorm)."""
        name = self.preset_combo.currentText()
        preset = PRESETS[name]
        out = {k: preset[k] for k in ("min_group", "group_draw", "bn_freeze") if k in preset}
        if name == config.PAPER_PRESET:
            out.update({k: config.LEGACY[k] for k in ("init_bias", "colour")})
        return out

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
        from ..training import TrainConfig

        sources = self.sources()
        if not sources:
            raise ValueError("tick at least one slide (open a project or a slide layer)")
        missing = [Path(s.slide).name for s in sources if s.labels is None]
        if missing:
            raise ValueError(f"no low-resolution labels for {', '.join(missing)}")
        if self.models_dir is None:
            raise ValueError("open a project first (or add a slide), so models have a folder")
        name = self.name_edit.text().strip()
        if not name or any(c in name for c in '/\\:*?"<>|') or name.startswith("."):
            raise ValueError(f"{name!r} is not a usable model name")
        out = self.models_dir / f"{name}.pt"
        if out.exists():
            raise ValueError(f"a model named {name!r} exists; choose another name or Resume it")
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
        from ..training import TrainConfig, is_trusted

        path = Path(checkpoint) if checkpoint else self._resume_candidate()
        if path is None:
            show_error("napari-lsr: select a cancelled model to resume")
            return False
        # a checkpoint that is not plain data: the user confirms (dialog naming it) or refuses
        if not vet_checkpoint(self, path, lambda message: show_error(f"napari-lsr: {message}")):
            return False
        config = TrainConfig(device=self.device_combo.currentText().split(" ")[0])
        plan = RunPlan(
            out=path,
            cache_dir=self._cache_dir() if self.models_dir else path.parent.parent / "cache",
            config=config,
            resume=path,
            trust_checkpoint=is_trusted(path),
            torch_threads=self.torch_threads,
        )
        self._launch(plan, f"resuming {path.stem}")
        return True

    def _on_resume_clicked(self, *_: Any) -> None:
        self.resume()

    def _resume_candidate(self) -> Path | None:
        items = self.models_tree.selectedItems()
        if items:
            card: ModelCard = items[0].data(0, Qt.ItemDataRole.UserRole)
            return card.checkpoint if card.resumable else None
        return self._resume_target

    def _launch(self, plan: RunPlan, what: str) -> None:
        handle = RunHandle()
        _RUNS.add(handle)
        if self.isolation not in ("process", "thread"):
            raise ValueError(f"isolation must be 'process' or 'thread', not {self.isolation!r}")
        in_process = self.isolation == "thread"
        if in_process:
            worker = _TrainWorker(run_training, plan, handle.cancel, handle.finished)
        else:
            worker = _TrainWorker(
                run_in_subprocess,
                plan,
                handle.cancel,
                handle.finished,
                priority=self.priority,
                started=handle.set_child,
            )
        worker.handle = handle
        worker.yielded.connect(self._on_event)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        if in_process:  # the training thread allocates in this process: keep GC pauses short
            _gc_freeze()
            worker.finished.connect(_gc_unfreeze)  # a function: runs even if the widget is gone
        worker.finished.connect(lambda: _RUNS.discard(handle))
        self._worker, self._handle, self._out = worker, handle, plan.out
        self._last, self._last_step = None, None
        self._bps, self._t0 = math.nan, time.perf_counter()
        self._final_status = "failed"
        self.curve.clear()
        self.health_table.clear()
        self.health_label.setText("model health: after the first checks")
        self.health_label.setStyleSheet("")
        self.health = None
        self.curve.total = plan.config.steps if plan.resume is None else 0
        self.step_label.setText("")
        self.speed_label.setText("")
        prior_line = plan.prior.source_line() if plan.prior is not None else ""
        self._set_status(f"{what}: starting; {prior_line}" if prior_line else f"{what}: starting")
        self.destroyed.connect(lambda *_: handle.stop())  # not a method: self is gone then
        self._register_task(what, handle)
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%p%")
        if self._use_napari_progress():  # made here, not in a slot: napari processes events
            self._pbar = _TrainProgress(total=100, cancel_callback=self.cancel)
            self._pbar.set_description(f"napari-lsr: {what}")
        self._update_buttons()
        self._timer.start()
        worker.start()

    def _register_task(self, what: str, handle: RunHandle) -> None:
        """List the run in napari's task status, so closing the window asks and cancels it."""
        try:
            from napari.utils.task_status import Status

            self._task_id = self.viewer.window._register_task_status(
                "napari-lsr", Status.BUSY, what, cancel_callback=handle.stop
            )
        except Exception:  # a private napari API; the aboutToQuit hook still stops the run
            self._task_id = None

    def _end_task(self, status: str) -> None:
        if self._task_id is None:
            return
        try:
            from napari.utils.task_status import Status

            s = {"done": Status.COMPLETED, "cancelled": Status.CANCELLED}.get(status, Status.FAILED)
            self.viewer.window._update_task_status(self._task_id, s, status)
        except Exception:
            pass
        self._task_id = None

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
            if self.isolation == "process":
                QTimer.singleShot(self.force_stop_after_ms, partial(self._offer_force_stop, handle))

    def _offer_force_stop(self, handle: RunHandle) -> None:
        if self._handle is not handle or handle.finished.is_set() or handle.child_pid is None:
            return
        self._force_offered = True
        self.cancel_btn.setText("Force stop")
        self.cancel_btn.setToolTip(
            "the run has not stopped yet: end its process now (the last saved checkpoint "
            "is kept, the steps since are lost)"
        )
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
            if ev.history:
                self.curve.extend(ev.history)
            if ev.kind == "cancelled":
                self._final_status = "cancelled"
            self._set_status(ev.what)
            if ev.kind != "cancelled":
                frac = ev.frac if math.isfinite(ev.frac) else 0.0
                self._progress_to(round(100 * frac), desc=f"napari-lsr: {ev.what}")
        else:
            kind = ev.kind
            if ev.extra.get("health"):
                self.show_health(ev.extra["health"])
            if kind == "step":
                self._last_step = ev
                self.curve.append(ev.step, ev.loss)
                bps = ev.blocks_per_s
                if math.isfinite(bps):
                    self._bps = bps if not math.isfinite(self._bps) else 0.8 * self._bps + 0.2 * bps
                self._dirty = True
            elif kind == "start":
                self.curve.total = ev.total
                self._device = ev.device
                assert self._out is not None
                desc = f"napari-lsr: training {self._out.stem}"
                self._progress_to(ev.step, total=ev.total, desc=desc)
                self._set_status(f"training on {ev.device}: {ev.message}")
            elif kind == "checkpoint":
                self._set_status(f"checkpoint saved at step {ev.step}")
            elif kind in ("done", "cancelled"):
                self._final_status = kind
                self._set_status(
                    f"{'finished' if kind == 'done' else 'cancelled'} at step {ev.step}/"
                    f"{ev.total}; saved {Path(ev.path).name} and its card"
                )
                self._dirty = True
        self.run_event.emit(ev)

    def show_health(self, health: dict[str, Any]) -> None:
        """Per-bin predicted cancer against the prior, and the one-line verdict."""
        try:
            labels = self.current_prior()[0].bins.labels
        except Exception:  # no prior chosen any more: bin numbers
            labels = []
        self.health_table.clear()
        for row in health.get("bins", []):
            b = int(row["bin"])
            item = QTreeWidgetItem(
                [
                    labels[b] if b < len(labels) else str(b),
                    f"{100 * row['prior_mean']:.0f} ± {100 * row['prior_std']:.0f}",
                    f"{100 * row['pred_mean']:.0f} ± {100 * row['pred_std']:.0f}",
                ]
            )
            self.health_table.addTopLevelItem(item)
        for i in range(3):
            self.health_table.resizeColumnToContents(i)
        degenerate = bool(health.get("degenerate"))
        self.health_label.setText(f"model health: {health.get('message', '')}")
        self.health_label.setStyleSheet("color: #ff6b6b; font-weight: bold;" if degenerate else "")
        self.health = health

    def _use_napari_progress(self) -> bool:
        if self.napari_progress is not None:
            return self.napari_progress
        if self._software_gl is None:
            self._software_gl = _software_opengl(self.viewer)
        return not self._software_gl

    def _progress_to(self, n: int, total: int | None = None, desc: str | None = None) -> None:
        """Move the widget's progress bar and napari's (one per run, made in ``_launch``)."""
        bar = self.progress_bar
        if total is not None:
            bar.setRange(0, max(1, total))
            bar.setFormat("%v / %m steps")
        bar.setValue(min(n, bar.maximum()))
        pbar = self._pbar
        if pbar is None:
            return
        if total is not None and total != pbar.total:
            pbar.total = total
        if desc is not None:
            pbar.set_description(desc)
        pbar.n = n
        pbar.update(0)

    def _close_pbar(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    def _refresh(self) -> None:
        """Redraw labels, progress bars and curve: on a timer (REFRESH_MS), never per step."""
        ev = self._last_step
        if not self._dirty or ev is None:
            return
        self._dirty = False
        self.step_label.setText(f"step {ev.step}/{ev.total} · loss {ev.loss:.4g} · lr {ev.lr:.2e}")
        self.speed_label.setText(
            f"{self._bps:.1f} blocks/s · ETA {_fmt_duration(ev.eta_s)} · "
            f"elapsed {_fmt_duration(time.perf_counter() - self._t0)} · {ev.device}"
        )
        self._progress_to(ev.step)
        self.curve.update()

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
        self._dirty = True
        self._refresh()
        self.curve.update()
        self._close_pbar()
        status = self._final_status
        self._end_task(status)
        out = self._out
        saved = out is not None and status in ("done", "cancelled") and out.exists()
        self._resume_target = out if saved and status == "cancelled" else None
        self._worker, self._handle = None, None
        self._force_offered = False
        self.cancel_btn.setText("Cancel")
        self.cancel_btn.setToolTip(CANCEL_TIP)
        if self.isolation == "process":  # the next run's child, ready in the background
            priority = self.priority
            threading.Thread(
                target=lambda: prepare_subprocess(priority), name="lsr-standby", daemon=True
            ).start()
        self._name_edited = False
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
        can_resume = False
        if not running:
            items = self.models_tree.selectedItems()
            if items:
                can_resume = items[0].data(0, Qt.ItemDataRole.UserRole).resumable
            else:
                can_resume = self._resume_target is not None
        self.resume_btn.setEnabled(can_resume)

    # -- models ----------------------------------------------------------------------------

    def refresh_models(self, select: Path | None = None) -> None:
        """Re-read the models folder into the Models list."""
        self.models_tree.clear()
        if self.models_dir is None:
            return
        running = self._out if self.is_running else None
        for card in list_models(self.models_dir, include_incomplete=True):
            if running is not None and card.checkpoint == running:
                continue
            final = f"{card.final_loss:.4g}" if math.isfinite(card.final_loss) else ""
            steps = f"{card.steps}/{card.steps_planned}" if card.card.get("steps") else ""
            item = QTreeWidgetItem([card.name, card.loss, card.distance, steps, final, card.status])
            item.setData(0, Qt.ItemDataRole.UserRole, card)
            item.setToolTip(0, card.summary())
            self.models_tree.addTopLevelItem(item)
            if select is not None and card.checkpoint == select:
                item.setSelected(True)
        for c in range(self.models_tree.columnCount()):
            self.models_tree.resizeColumnToContents(c)
        self._update_buttons()

    def models(self) -> list[ModelCard]:
        """The models folder's models (cards), newest first."""
        return list_models(self.models_dir) if self.models_dir else []
