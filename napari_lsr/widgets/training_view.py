"""The training dock's live view: progress, loss curve, model-health table, models list."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils import cancelable_progress
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QLabel,
    QProgressBar,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from pathlib import Path

    from ..learn.models import ModelCard
    from ..learn.run import Phase
    from ..learn.training import TrainEvent


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


class TrainProgress(cancelable_progress):
    """A napari progress bar whose Cancel button (activity dock) cancels the run at once."""

    def cancel(self) -> None:
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


def fmt_duration(seconds: float) -> str:
    """A duration that cannot be read as a time of day: ``45 s``, ``3 min 20 s``,
    ``4 h 35 min`` (minutes rounded once it is an hour or more); a dash when not known."""
    if not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    if seconds >= 3600:
        h, m = divmod(int(round(seconds / 60)), 60)
        return f"{h} h {m} min" if m else f"{h} h"
    m, s = divmod(seconds, 60)
    if not m:
        return f"{s} s"
    return f"{m} min {s} s" if s else f"{m} min"


#: The health line's colours: red for a degenerate model or an alarm, amber while provisional.
RED, AMBER = "#ff6b6b", "#e0a030"
HEALTH_WAIT = "model health: after the first checks"
HEALTH_TIP = (
    "Without ground truth: the model's predicted cancer on the training blocks, per "
    "bin, against the prior's mean ± std. A healthy model rises with the bins."
)


class ProgressView(QGroupBox):
    """The Progress group: status, progress bar, step and speed lines, the loss curve and the
    model-health table; also napari's own progress bar of the run (activity dock)."""

    #: The controls the dock widget shows as its own attributes (scripts and tests use them).
    CONTROLS = (
        "status_label",
        "step_label",
        "speed_label",
        "progress_bar",
        "curve",
        "health_label",
        "health_table",
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Progress", parent)
        v = QVBoxLayout(self)
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
        # The curve, then the health verdict across the dock's width (room for its lines) and
        # the per-bin table with one column per bin: all ten bins fit a 1366x768 screen.
        self.curve.setMinimumHeight(40)
        v.addWidget(self.curve, 1)
        self.health_label = QLabel(HEALTH_WAIT)
        self.health_label.setWordWrap(True)
        self.health_label.setToolTip(HEALTH_TIP)
        self.health_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        v.addWidget(self.health_label)
        self.health_table = health_table()
        v.addWidget(self.health_table)
        #: napari's progress bar of the run (``open_napari_bar``), None without one.
        self.napari_bar: TrainProgress | None = None
        self._last_step: TrainEvent | None = None  # shown at the next refresh if _dirty
        self._dirty = False
        self._bps = math.nan  # blocks per second, smoothed
        self._t0 = 0.0
        self._alarm = ""  # the run's last alarm, shown in red above the health line
        self._health: tuple[str, bool, bool] = (HEALTH_WAIT, False, True)

    def reset(self, total: int, elapsed_s: float = 0.0) -> None:
        """Empty everything for a new run of ``total`` steps (0: not known yet); the elapsed
        time starts at ``elapsed_s`` (a resumed run's time so far)."""
        self.curve.clear()
        self.health_table.clear()
        self._alarm, self._health = "", (HEALTH_WAIT, False, True)
        self._render_health()
        self.curve.total = total
        self.step_label.setText("")
        self.speed_label.setText("")
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%p%")
        self._last_step, self._dirty = None, False
        self._bps, self._t0 = math.nan, time.perf_counter() - max(0.0, elapsed_s)

    def add_step(self, ev: TrainEvent) -> None:
        """A training step: on the curve at once, in the lines and bars at the next refresh."""
        self._last_step = ev
        self.curve.append(ev.step, ev.loss)
        bps = ev.blocks_per_s
        if math.isfinite(bps):
            self._bps = bps if not math.isfinite(self._bps) else 0.8 * self._bps + 0.2 * bps
        self._dirty = True

    def mark_dirty(self) -> None:
        """Redraw at the next refresh even if no step came."""
        self._dirty = True

    def refresh(self) -> None:
        """Redraw the lines, the bars and the curve at the last step, if anything changed."""
        ev = self._last_step
        if not self._dirty or ev is None:
            return
        self._dirty = False
        self.show_step(ev, self._bps, time.perf_counter() - self._t0)

    def open_napari_bar(self, desc: str, cancel: Callable[[], Any]) -> None:
        """napari's progress bar too, whose Cancel calls ``cancel`` (make it on the GUI thread
        outside a slot: napari processes events while making it)."""
        self.napari_bar = TrainProgress(total=100, cancel_callback=cancel)
        self.napari_bar.set_description(desc)

    def close_napari_bar(self) -> None:
        if self.napari_bar is not None:
            self.napari_bar.close()
            self.napari_bar = None

    def progress_to(self, n: int, total: int | None = None, desc: str | None = None) -> None:
        """Move the progress bar and napari's (the bar counts steps once ``total`` is given)."""
        bar = self.progress_bar
        if total is not None:
            bar.setRange(0, max(1, total))
            bar.setFormat("%v / %m steps")
        bar.setValue(min(n, bar.maximum()))
        pbar = self.napari_bar
        if pbar is None:
            return
        if total is not None and total != pbar.total:
            pbar.total = total
        if desc is not None:
            pbar.set_description(desc)
        pbar.n = n
        pbar.update(0)

    def show_phase(self, ev: Phase) -> None:
        """A phase of the run (labels, blocks, ...): its history on the curve, its progress
        on the bars (a percentage) unless the run was cancelled."""
        if ev.history:
            self.curve.extend(ev.history)
        if ev.kind != "cancelled":
            frac = ev.frac if math.isfinite(ev.frac) else 0.0
            self.progress_to(round(100 * frac), desc=f"napari-lsr: {ev.what}")

    def show_step(self, ev: TrainEvent, blocks_per_s: float, elapsed_s: float) -> None:
        """The step and speed lines, the bars and the curve at training step ``ev``."""
        self.step_label.setText(f"step {ev.step}/{ev.total} · loss {ev.loss:.4g} · lr {ev.lr:.2e}")
        self.speed_label.setText(
            f"{blocks_per_s:.1f} blocks/s · ETA {fmt_duration(ev.eta_s)} · "
            f"elapsed {fmt_duration(elapsed_s)} · {ev.device}"
        )
        self.progress_to(ev.step)
        self.curve.update()

    def show_health(self, health: dict[str, Any], labels: Sequence[str] = ()) -> None:
        """Per-bin predicted cancer against the prior (bins named by ``labels``), and the
        one-line verdict: red when the finished (or stopped) model is degenerate, amber while
        a running one does not follow the bins yet."""
        fill_health_table(self.health_table, health.get("bins", []), labels)
        degenerate = bool(health.get("degenerate"))
        final = health.get("final", True)  # cards written before provisional checks: final
        self._health = (f"model health: {health.get('message', '')}", degenerate, final)
        self._render_health()

    def show_alarm(self, alarm: dict[str, Any]) -> None:
        """A loss jump or a collapse during the run (``health.Alarm``): in red above the
        health line until the next run starts, whatever the later checks say."""
        self._alarm = f"alarm: {alarm.get('message', '')}"
        self._render_health()

    def _render_health(self) -> None:
        text, degenerate, final = self._health
        red, amber = f"color: {RED}; font-weight: bold;", f"color: {AMBER};"
        style = red if self._alarm or (degenerate and final) else amber if degenerate else ""
        self.health_label.setText(f"{self._alarm}\n{text}" if self._alarm else text)
        self.health_label.setStyleSheet(style)


#: The rows of the health table (one column per bin).
HEALTH_ROWS = ("prior %", "model %")


def health_table() -> QTableWidget:
    """The per-bin health table: a column per bin, rows prior % and model % (mean ± std),
    as tall as its two rows, so every bin is in view on a small screen."""
    table = QTableWidget(len(HEALTH_ROWS), 0)
    table.setVerticalHeaderLabels(list(HEALTH_ROWS))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.setToolTip(HEALTH_TIP)
    table.setWordWrap(False)
    font = table.font()
    font.setPointSizeF(font.pointSizeF() * 0.9)
    table.setFont(font)
    table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    table.horizontalHeader().setMinimumSectionSize(24)
    table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
    _fit_health_height(table)
    return table


def fill_health_table(
    table: QTableWidget, bins: Sequence[dict[str, Any]], labels: Sequence[str] = ()
) -> None:
    """One column per bin of a health report: its label, then prior and model mean ± std."""
    table.setColumnCount(len(bins))
    heads = []
    for c, row in enumerate(bins):
        b = int(row["bin"])
        heads.append(labels[b] if b < len(labels) else str(b))
        head = heads[-1].replace("-", "–", 1)
        heads[-1] = head.replace("–", "–\n", 1)  # 95–\n100: narrow columns, whole labels
        cells = (
            (row["prior_mean"], row["prior_std"]),
            (row["pred_mean"], row["pred_std"]),
        )
        for r, (mean, std) in enumerate(cells):
            item = QTableWidgetItem(f"{100 * mean:.0f}\n±{100 * std:.0f}")
            item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            item.setToolTip(f"bin {head} %: {HEALTH_ROWS[r]} {100 * mean:.1f} ± {100 * std:.1f}")
            table.setItem(r, c, item)
    table.setHorizontalHeaderLabels(heads)
    _fit_health_height(table)


def _fit_health_height(table: QTableWidget) -> None:
    table.resizeRowsToContents()
    rows = sum(table.rowHeight(r) for r in range(table.rowCount()))
    if not table.columnCount():
        rows = (table.fontMetrics().height() + 6) * table.rowCount()
    head = max(table.horizontalHeader().sizeHint().height(), 2 * table.fontMetrics().height() + 6)
    bar = table.horizontalScrollBar().sizeHint().height()
    table.setFixedHeight(head + rows + 2 * table.frameWidth() + bar // 4)


def models_group() -> tuple[QGroupBox, QTreeWidget]:
    """The Models group and its list (one model a row)."""
    models = QGroupBox("Models")
    v = QVBoxLayout(models)
    tree = QTreeWidget()
    tree.setHeaderLabels(["name", "loss", "distance", "steps", "final", "status"])
    tree.setRootIsDecorated(False)
    tree.setMaximumHeight(96)
    tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    # the name takes what the other columns leave (elided in the middle): no sideways scrolling
    tree.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    header = tree.header()
    header.setStretchLastSection(False)
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    v.addWidget(tree)
    return models, tree


def fill_models(tree: QTreeWidget, cards: list[ModelCard], select: Path | None = None) -> None:
    """List the models' cards (each row keeps its card), selecting the one at ``select``."""
    tree.clear()
    for card in cards:
        final = f"{card.final_loss:.4g}" if math.isfinite(card.final_loss) else ""
        steps = f"{card.steps}/{card.steps_planned}" if card.card.get("steps") else ""
        item = QTreeWidgetItem([card.name, card.loss, card.distance, steps, final, card.status])
        item.setData(0, Qt.ItemDataRole.UserRole, card)
        item.setToolTip(0, card.summary())
        tree.addTopLevelItem(item)
        if select is not None and card.checkpoint == select:
            item.setSelected(True)
