"""Prior table dock widget: p(c|z) from the estimates beside the paper's Table 1, edits, save.

The table shows, per bin, the mean ± std and n of the chosen source (all annotators pooled,
one annotator, the project's saved prior.csv, another prior file, or the paper's Table 1),
with the reviewer's edits on top (recorded in the project store with who and when). Bins
with fewer than two estimates and means that fall as the bin rises are flagged.

Each row says where its value comes from (Source: reviewed here, measured, edited, paper
Table 1) and what saving will change in prior.csv. In the estimates views, a bin nobody has
reviewed keeps the value the saved prior.csv measured for it (from masks or other data);
only bins with neither show the paper's Table 1. "Save prior" writes the table to the
project's prior.csv atomically (that file is what training uses), and asks first when it
would replace a value from this data (reviewed, measured, edited) with the paper's.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import math
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QBrush, QColor, QFont
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..elicit.certainty import mean_range
from ..elicit.prior import (
    POOLED_SOURCES,
    REVERT_NOTE,
    PriorFlags,
    agreement,
    agreement_rows,
    apply_edits,
    check_prior,
    default_prior,
    effective_edits,
    estimates_prior,
    paper_replacements,
    prior_for_saving,
    row_text,
    save_changes,
    saved_prior,
)
from ..elicit.review import bin_label
from ..io.formats import FormatError, Prior, paper_prior, read_prior_csv, write_prior_csv
from ..io.project import Project
from ..layers import bin_color
from ..state import state_for
from ._common import ERROR_STYLE, project_row, reason_first, scroll_contents
from ._docks import tab_later

POOLED = "pooled"
ANNOTATOR = "annotator"
SAVED = "saved"
FILE = "file"
PAPER = "paper"
COLUMNS = (
    "Bin %",
    "n",
    "Mean %",
    "Std %",
    "Mean likely in %",
    "Paper Table 1",
    "Source",
    "Save will change",
    "Notes",
)
COL_MEAN, COL_STD, COL_RANGE = 2, 3, 4
COL_SOURCE, COL_CHANGE, COL_NOTES = 6, 7, 8
#: The std cell of a row from estimates: its value is not the estimates' bare spread.
REVIEWED_STD_TIP = (
    "how much the bin's blocks differ: the estimates' spread, widened toward a typical 15 "
    "while there are few of them (a few estimates by eye differ less than the blocks do)"
)
RANGE_TIP = (
    "9 times in 10 the average over all the bin's blocks lies in this range, given the "
    "estimates so far (fewer estimates or more spread: a wider range)"
)


def range_text(low: float, high: float) -> str:
    """The *Mean likely in %* cell: "–" without estimates, the value alone (every block of
    the bin estimated, nothing left to be unsure of) or "low–high"."""
    if math.isnan(low):
        return "–"
    if round(low) == round(high):
        return f"{low:.0f} (all blocks)"
    return f"{low:.0f}–{high:.0f}"


#: How the Source column names each prior source.
SOURCE_TEXT = {
    "reviewed": "reviewed here",
    "measured": "measured",
    "edited": "edited",
    "paper": "paper Table 1",
    "default": "default 0 ± 1",
}
SOURCE_TIPS = {
    "reviewed": "from the block-review estimates of this project",
    "measured": "measured from masks or other data (kept from the saved prior file)",
    "edited": "typed in this table (the edit is recorded with who and when)",
    "paper": "the paper's Table 1, not this data: no estimate or measurement for this bin",
    "default": "0 ± 1 %: the paper's table has other bins, and this bin has no data",
}
PAPER_BG = QColor("#5a3a1a")
FLAG_BG = QColor("#6b5a00")
EDIT_BG = QColor("#1f4f7a")
INFO_STYLE = "color: #9fd89f;"
#: Seconds to wait after an estimate before redrawing (a burst of entries redraws once).
REFRESH_DELAY_MS = 300


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USER", "")


def _fmt(v: float, digits: int = 1) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def confirm_replace(parent: QWidget | None, title: str, text: str) -> bool:
    """Ask Yes/No (No is the default) before a save replaces values; tests replace this."""
    answer = QMessageBox.question(
        parent,
        title,
        text,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


class PriorTableWidget(QWidget):
    """The p(c|z) table from the estimates, per annotator and pooled, with edits and saving."""

    #: Tabbed with the other napari-lsr docks when added (``_docks.tab_with_open_docks``).
    napari_lsr_dock = True

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        tab_later(self, napari_viewer)  # with the napari-lsr docks already open
        self.viewer = napari_viewer
        self._blocks_per_bin: dict[int, int] = {}
        self.state = state_for(napari_viewer)  # what the napari-lsr widgets of the viewer share
        self.project: Project | None = None
        self.loaded: Prior | None = None  # a prior file the user loaded
        self.base: Prior | None = None
        self.prior: Prior | None = None  # base with the edits: what is shown and saved
        self.saved: Prior | None = None  # the project's prior.csv as it is on disk
        self.changes: list[str] = []  # per bin, what Save prior would change
        self.flags: PriorFlags | None = None
        self.edits: dict[int, tuple[float, float, str, float]] = {}
        self._filling = False
        self._message_style = ""
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REFRESH_DELAY_MS)
        self._timer.timeout.connect(self.refresh)
        self._build()
        scroll_contents(self)  # stacked with other docks, the table scrolls instead
        self.state.connect(
            self,
            project=self._on_project,
            annotator=self._on_annotator,
            estimates_changed=self._on_estimates,
        )
        if self.state.project is not None:
            self.set_project(self.state.project)

    # -- layout ---------------------------------------------------------------------------------

    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(6, 6, 6, 6)
        root.setSpacing(4)

        row, self.path_edit, self.open_button = project_row(
            self, "project folder (or open one in Block review)", self.open_project
        )
        root.addLayout(row)
        self._build_source(root)
        root.addLayout(self._build_buttons())

        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_prior_page(), "Prior")
        self.tabs.addTab(self._build_annotators_page(), "Annotators")
        root.addWidget(self.tabs, 1)

        self.flags_label = QLabel("")
        self.flags_label.setWordWrap(True)
        self.flags_label.setStyleSheet("color: #ffd54f;")
        root.addWidget(self.flags_label)
        self.message = QLabel("Open a project to see its prior.")
        self.message.setWordWrap(True)
        root.addWidget(self.message)

    def _build_source(self, root: QVBoxLayout) -> None:
        """The Source chooser and the Editor's name."""
        self.source_combo = QComboBox()
        self.source_combo.activated.connect(lambda _i: self.refresh())
        row = QHBoxLayout()
        row.addWidget(QLabel("Source"))
        row.addWidget(self.source_combo, 1)
        root.addLayout(row)
        self.name_edit = QLineEdit(self.state.annotator or _login())
        self.name_edit.setPlaceholderText("your name: edits record who made them")
        self._name_typed = False
        self.name_edit.textEdited.connect(lambda _t: setattr(self, "_name_typed", True))
        row = QHBoxLayout()
        row.addWidget(QLabel("Editor"))
        row.addWidget(self.name_edit, 1)
        root.addLayout(row)

    def _build_buttons(self) -> QHBoxLayout:
        """Refresh, Load prior, Revert edit, Save prior, Export estimates."""
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(lambda: self.refresh())
        self.load_button = QPushButton("Load prior…")
        self.load_button.clicked.connect(self._browse_prior)
        self.revert_button = QPushButton("Revert edit")
        self.revert_button.setToolTip("Withdraw the edit of the selected bin")
        self.revert_button.clicked.connect(lambda: self.revert_edit())
        self.save_button = QPushButton("Save prior")
        self.save_button.setToolTip(
            "Write this table to the project's prior.csv (training uses it)"
        )
        self.save_button.clicked.connect(lambda: self.save_prior())
        self.export_estimates_button = QPushButton("Export estimates…")
        self.export_estimates_button.setToolTip(
            "Every estimate typed, for audit: annotator, time, slide, block, bin, percentage "
            "and status (recorded, skipped, undone), as CSV"
        )
        self.export_estimates_button.clicked.connect(self._browse_export_estimates)
        row = QHBoxLayout()
        for b in (self.refresh_button, self.load_button, self.revert_button, self.save_button):
            row.addWidget(b)
        row.addWidget(self.export_estimates_button)
        return row

    def _build_prior_page(self) -> QWidget:
        """The Prior tab: the editable table above the plot of p(c|z)."""
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(2, 2, 2, 2)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)  # long notes are elided; the tooltip has them whole
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.AnyKeyPressed
        )
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.table.itemChanged.connect(self._item_changed)
        self.table.setMinimumHeight(200)
        lay.addWidget(self.table, 3)
        self.figure = Figure(figsize=(4.2, 2.4), dpi=90, tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(170)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        lay.addWidget(self.canvas, 2)
        return page

    def _build_annotators_page(self) -> QWidget:
        """The Annotators tab: each annotator's means per bin and their agreement."""
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(2, 2, 2, 2)
        self.annotator_table = QTableWidget(0, 1)
        self.annotator_table.verticalHeader().setVisible(False)
        self.annotator_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.annotator_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents
        )
        lay.addWidget(self.annotator_table, 1)
        self.agreement_label = QLabel("")
        self.agreement_label.setWordWrap(True)
        lay.addWidget(self.agreement_label)
        return page

    # -- messages -------------------------------------------------------------------------------

    def _set_message(self, text: str, style: str) -> None:
        if style != self._message_style:
            self.message.setStyleSheet(style)
            self._message_style = style
        self.message.setText(text)

    def _error(self, text: str) -> None:
        self._set_message(f"⚠ {text}", ERROR_STYLE)

    def _info(self, text: str) -> None:
        self._set_message(text, INFO_STYLE)

    # -- project --------------------------------------------------------------------------------

    def _on_project(self, project: Project | None) -> None:
        if project is not self.project:
            self.set_project(project)

    def _on_annotator(self, annotator: str | None) -> None:
        if annotator and not self._name_typed:
            self.name_edit.setText(annotator)  # follow the block review's annotator

    def _on_estimates(self) -> None:
        if self.project is not None:
            self._timer.start()

    def open_project(self, folder: str | os.PathLike) -> bool:
        """Open a project folder here and in the widgets that follow the shared project
        (the block review keeps the review it has on screen)."""
        if not str(folder).strip():
            self._error("Type or browse to a project folder first.")
            return False
        try:
            project = Project.open(Path(str(folder).strip()).expanduser())
        except (FormatError, OSError) as exc:
            self._error(reason_first(exc))
            return False
        self.state.project = project  # shown here through _on_project, as in the others
        if self.project is not project:
            self.set_project(project)
        return True

    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.loaded = None
        if project is None:
            self.table.setRowCount(0)
            self._info("Open a project to see its prior.")
            return
        self.path_edit.setText(str(project.folder))
        self.refresh(source=POOLED)

    # -- sources --------------------------------------------------------------------------------

    def _fill_sources(self, keep: tuple[str, str] | None) -> None:
        p = self.project
        self.source_combo.blockSignals(True)
        self.source_combo.clear()
        self.source_combo.addItem("Pooled estimates (all annotators)", (POOLED, ""))
        for name in p.store.annotators():
            self.source_combo.addItem(f"Estimates of {name} only", (ANNOTATOR, name))
        if p.prior_path is not None and p.prior_path.exists():
            self.source_combo.addItem(f"Saved {p.prior_path.name}", (SAVED, ""))
        if self.loaded is not None and self.loaded.path is not None:
            self.source_combo.addItem(f"File {self.loaded.path.name}", (FILE, ""))
        self.source_combo.addItem("Paper Table 1 (default prior)", (PAPER, ""))
        index = 0
        for i in range(self.source_combo.count()):
            if self.source_combo.itemData(i) == keep:
                index = i
        self.source_combo.setCurrentIndex(index)
        self.source_combo.blockSignals(False)

    def source(self) -> tuple[str, str]:
        data = self.source_combo.currentData()
        return tuple(data) if data else (POOLED, "")  # type: ignore[return-value]

    def set_source(self, kind: str, name: str = "") -> bool:
        """Choose the table's source: pooled, annotator (with a name), saved, file or paper."""
        for i in range(self.source_combo.count()):
            if tuple(self.source_combo.itemData(i)) == (kind, name):
                self.source_combo.setCurrentIndex(i)
                self.refresh()
                return True
        self._error(f"No such source: {kind} {name}".strip())
        return False

    def _base_prior(self, kind: str, name: str) -> Prior:
        p = self.project
        if kind == ANNOTATOR:
            return estimates_prior(p, name, saved=self.saved)
        if kind == SAVED:
            return read_prior_csv(p.prior_path)
        if kind == FILE and self.loaded is not None:
            return self.loaded
        if kind == PAPER:
            return default_prior(p.bins)
        return estimates_prior(p, saved=self.saved)

    def load_prior(self, path: str | os.PathLike | None = None) -> bool:
        """Load a prior file (default: the paper's Table 1) as the table's source."""
        if self.project is None:
            self._error("Open a project first.")
            return False
        if path is None:
            return self.set_source(PAPER)
        try:
            prior = read_prior_csv(path)
        except (FormatError, OSError) as exc:
            self._error(reason_first(exc))
            return False
        if prior.bins != self.project.bins:
            self._error(f"Not loaded: its bins are not the project's bins — {path}")
            return False
        self.loaded = prior
        self.refresh(source=(FILE, ""))
        self._info(f"Loaded {Path(path).name}.")
        return True

    def _empty_bins(self) -> list[int]:
        """The bins no block of the project falls in, as the store has the blocks (the Block
        review registers them); none while it has no blocks yet."""
        counts = self._bin_blocks()
        if not counts or self.project is None:
            return []
        return [b for b in range(len(self.project.bins)) if not counts.get(b)]

    def _bin_blocks(self) -> dict[int, int]:
        """Blocks per bin as the project's store has them (empty before any review)."""
        if self.project is None:
            return {}
        try:
            rows = self.project.store.query("SELECT bin, COUNT(*) FROM blocks GROUP BY bin")
        except sqlite3.Error:
            return {}
        return {int(z): int(c) for z, c in rows}

    def _browse_prior(self) -> None:
        start = str(self.project.folder) if self.project else ""
        path, _ = QFileDialog.getOpenFileName(self, "Load a prior", start, "Prior CSV (*.csv)")
        if path:
            self.load_prior(path)

    # -- refreshing -----------------------------------------------------------------------------

    def refresh(self, source: str | tuple[str, str] | None = None) -> None:
        """Recompute the table, flags, plot and annotator view from the store."""
        self._timer.stop()
        if self.project is None:
            return
        if isinstance(source, str):
            source = (source, "")
        keep = source or self.source()
        try:
            self._fill_sources(keep)
            kind, name = self.source()
            self.saved = saved_prior(self.project)
            self.base = self._base_prior(kind, name)
            self.edits = effective_edits(self.project)
            self.prior = apply_edits(self.base, self.edits)
            self.state.prior = self.prior  # what training's "Prior table widget" uses
            self.changes = save_changes(self.saved, prior_for_saving(self.prior))
        except (FormatError, OSError, sqlite3.Error) as exc:
            self._error(reason_first(exc))
            return
        measured = kind in (POOLED, ANNOTATOR)
        empty = self._empty_bins()
        self.flags = (
            check_prior(self.prior, empty) if measured else check_prior_loaded(self.prior, empty)
        )
        self._fill_table(measured)
        self._draw()
        self._fill_annotators()
        self.flags_label.setText(
            flag_summary(self.flags, self.prior) + "\n" + self.prior.source_line()
        )
        n = int(sum(self.base.n[b] for b, s in enumerate(self.base.source) if s == "reviewed"))
        what = self.source_combo.currentText()
        changed = sum(1 for c in self.changes if c)
        will = "no change to prior.csv" if not changed else f"Save changes {changed} bin(s)"
        if self.saved is None:
            will = "Save writes a new prior.csv"
        self._info(f"{what}: {n} estimates; {will}." if measured else f"{what}; {will}.")

    def _fill_table(self, measured: bool) -> None:
        prior, paper = self.prior, paper_prior()
        nb = len(prior.bins)
        self._blocks_per_bin = self._bin_blocks()
        few = set(self.flags.few_estimates)
        drops = set(self.flags.not_monotonic)
        self._filling = True
        self.table.setRowCount(nb)
        for b in range(nb):
            notes, edit_tip = self._row_notes(b, measured, b in few, b in drops)
            for c, item in enumerate(self._row_cells(b, paper, notes)):
                self.table.setItem(b, c, item)
            self._mark_row(b, edit_tip, b in few, b in drops)
        self._filling = False

    def _row_notes(self, b: int, measured: bool, few: bool, drops: bool) -> tuple[list[str], str]:
        """Bin ``b``'s notes (edited, where a missing estimate's value comes from, flags),
        and the tooltip of its edit ("" when it has none)."""
        notes: list[str] = []
        edit_tip = ""
        if b in self.edits:
            m, s, who, when = self.edits[b]
            stamp = _dt.datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M")
            notes.append(f"edited by {who}")
            edit_tip = f"edited by {who} on {stamp}: {m:g} ± {s:g} %"
        src = self.prior.source[b]
        if measured and b not in self.edits and src == "paper":
            notes.append("no estimates: paper value")
        elif measured and b not in self.edits and src == "measured":
            notes.append(f"no estimates: kept from {self._saved_name()}")
        if few:
            notes.append("< 2 estimates")
        if drops:
            notes.append("not monotonic")
        return notes, edit_tip

    def _row_cells(self, b: int, paper: Prior, notes: list[str]) -> list[QTableWidgetItem]:
        """Bin ``b``'s cells, one per column, with their flags (mean and std editable) and
        alignment."""
        prior = self.prior
        nb = len(prior.bins)
        n = prior.n[b]
        src = prior.source[b]
        label = QTableWidgetItem(f"{bin_label(prior.bins, b)}")
        label.setBackground(QBrush(QColor(bin_color(b, nb))))
        label.setForeground(QBrush(QColor(_text_on(bin_color(b, nb)))))
        same_bins = paper.bins == prior.bins
        paper_text = f"{paper.mean_pct[b]:g} ± {paper.std_pct[b]:g}" if same_bins else "–"
        low, high = (math.nan, math.nan)
        if src in ("reviewed", "measured"):
            low, high = mean_range(
                prior.mean_pct[b],
                prior.std_pct[b],
                n,
                self._blocks_per_bin.get(b),
                pooled=src in POOLED_SOURCES,
            )
        likely = QTableWidgetItem(range_text(low, high))
        likely.setToolTip(RANGE_TIP if not math.isnan(low) else "no estimates in this row")
        cells = [
            label,
            QTableWidgetItem("" if math.isnan(n) else str(int(n))),
            QTableWidgetItem(_fmt(prior.mean_pct[b])),
            QTableWidgetItem(_fmt(prior.std_pct[b])),
            likely,
            QTableWidgetItem(paper_text),
            QTableWidgetItem(SOURCE_TEXT.get(src, src)),
            QTableWidgetItem(self.changes[b] if b < len(self.changes) else ""),
            QTableWidgetItem("; ".join(notes)),
        ]
        for c, item in enumerate(cells):
            flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
            if c in (COL_MEAN, COL_STD):
                flags |= Qt.ItemFlag.ItemIsEditable
                tip = "double-click or type to edit; the edit is recorded"
                if c == COL_STD and src in POOLED_SOURCES:
                    tip = f"{REVIEWED_STD_TIP}; {tip}"
                item.setToolTip(tip)
            item.setFlags(flags)
            if c > 0:
                item.setTextAlignment(
                    int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    if c < COL_SOURCE
                    else int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
                )
        return cells

    def _mark_row(self, b: int, edit_tip: str, few: bool, drops: bool) -> None:
        """Row ``b``'s tooltips and colours once in the table: where the value comes from,
        what saving changes, the edit (bold), the flags."""
        prior = self.prior
        src = prior.source[b]
        self.table.item(b, COL_SOURCE).setToolTip(SOURCE_TIPS.get(src, ""))
        if src in ("paper", "default"):
            self.table.item(b, COL_SOURCE).setBackground(QBrush(PAPER_BG))
        change = self.table.item(b, COL_CHANGE)
        change.setToolTip(
            f"Save prior writes {row_text(prior_for_saving(prior), b)} "
            f"over {row_text(self.saved, b)}"
            if change.text() and self.saved is not None
            else "Save prior leaves this row as it is in prior.csv"
            if self.saved is not None
            else "no prior.csv yet: Save prior writes one"
        )
        if b in self.edits:
            for c in (COL_MEAN, COL_STD):
                item = self.table.item(b, c)
                font = QFont(item.font())
                font.setBold(True)
                item.setFont(font)
                item.setBackground(QBrush(EDIT_BG))
                item.setToolTip(edit_tip)
            self.table.item(b, COL_NOTES).setToolTip(edit_tip)
        if few or drops:
            self.table.item(b, COL_NOTES).setBackground(QBrush(FLAG_BG))
        if few:
            self.table.item(b, 1).setBackground(QBrush(FLAG_BG))
        if drops:
            self.table.item(b, COL_MEAN).setBackground(QBrush(FLAG_BG))

    def _draw(self) -> None:
        prior, paper = self.prior, paper_prior()
        fig = self.figure
        fig.clear()
        ax = fig.add_subplot(111)
        x = np.linspace(0, 100, 801)
        nb = len(prior.bins)
        same_bins = paper.bins == prior.bins
        for b in range(nb):
            color = bin_color(b, nb)
            ax.plot(x, _bump(x, prior.mean_pct[b], prior.std_pct[b]), color=color, lw=1.8)
            if same_bins:
                ax.plot(
                    x, _bump(x, paper.mean_pct[b], paper.std_pct[b]), color=color, lw=0.9, ls="--"
                )
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 1.08)
        ax.set_xlabel("cancer pixels in the block (%)", fontsize=8)
        ax.set_ylabel("N(mean, std), peak = 1", fontsize=8)
        ax.set_title("p(c | z) per bin: solid this table, dashed paper Table 1", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
        self.canvas.draw_idle()

    def _fill_annotators(self) -> None:
        p = self.project
        bins = p.bins
        nb = len(bins)
        names = p.store.annotators()
        est = p.store.estimates()
        cols = ["Bin %", *names, "Blocks ≥2", "Mean |diff|", "ICC"]
        t = self.annotator_table
        t.clear()
        t.setColumnCount(len(cols))
        t.setHorizontalHeaderLabels(cols)
        t.setRowCount(nb)
        per: dict[str, dict[int, list[float]]] = {n: {} for n in names}
        for e in est:
            per[e.annotator].setdefault(e.bin, []).append(e.percent)
        agree = agreement_rows(p)
        for b in range(nb):
            t.setItem(b, 0, QTableWidgetItem(bin_label(bins, b)))
            for j, name in enumerate(names, start=1):
                v = np.asarray(per[name].get(b, []), float)
                text = f"{v.mean():.1f} ± {v.std():.1f} ({len(v)})" if len(v) else "–"
                t.setItem(b, j, QTableWidgetItem(text))
            a = agree[b]
            k = len(names) + 1
            t.setItem(b, k, QTableWidgetItem(str(a["blocks"])))
            t.setItem(b, k + 1, QTableWidgetItem(_fmt(a["mean_abs_diff"])))
            t.setItem(b, k + 2, QTableWidgetItem(_fmt(a["icc"], 2)))
        overall = agreement(((e.block_id, 0, e.annotator, e.percent) for e in est), 1)[0]
        if len(names) < 2:
            self.agreement_label.setText(
                "Agreement needs two or more annotators estimating the same blocks."
            )
        else:
            self.agreement_label.setText(
                f"{len(names)} annotators. Over all bins: {overall['blocks']} blocks with two "
                f"or more estimates, mean |difference| {_fmt(overall['mean_abs_diff'])} points, "
                f"ICC(1,1) {_fmt(overall['icc'], 2)}. Pooled estimates train unless one "
                "annotator's table is saved."
            )

    # -- edits ----------------------------------------------------------------------------------

    def _editor(self) -> str | None:
        name = self.name_edit.text().strip()
        if not name:
            self._error("Type your name in Editor first: edits record who made them.")
            return None
        return name

    def edit_bin(self, b: int, mean: float | str, std: float | str, note: str = "") -> bool:
        """Record an edit of bin ``b`` (who and when go to the store); False when refused."""
        if self.project is None or self.prior is None:
            self._error("Open a project first.")
            return False
        who = self._editor()
        if who is None:
            return False
        try:
            m, s = float(str(mean).strip().rstrip("%")), float(str(std).strip().rstrip("%"))
        except ValueError:
            self._error(f"Refused: {mean!r} ± {std!r} is not a number.")
            return False
        if not (math.isfinite(m) and math.isfinite(s)) or not 0 <= m <= 100 or not 0 <= s <= 100:
            self._error(f"Refused: mean must be 0–100 % and std 0–100 % (got {m:g} ± {s:g}).")
            return False
        try:
            self.project.store.add_prior_edit(b, m, s, who, note)
        except (ValueError, sqlite3.Error) as exc:
            self._error(reason_first(exc))
            return False
        self.refresh()
        self._info(f"Bin {bin_label(self.prior.bins, b)} %: set to {m:g} ± {s:g} by {who}.")
        return True

    def revert_edit(self, b: int | None = None) -> bool:
        """Withdraw the edit of bin ``b`` (default: the selected row); recorded as a revert."""
        if self.project is None or self.prior is None:
            self._error("Open a project first.")
            return False
        if b is None:
            rows = self.table.selectionModel().selectedRows()
            if not rows:
                self._error("Select the row of an edited bin first.")
                return False
            b = rows[0].row()
        if b not in self.edits:
            self._error(f"Bin {bin_label(self.prior.bins, b)} % has no edit to revert.")
            return False
        who = self._editor()
        if who is None:
            return False
        self.project.store.add_prior_edit(
            b, float(self.base.mean_pct[b]), float(self.base.std_pct[b]), who, REVERT_NOTE
        )
        self.refresh()
        self._info(f"Bin {bin_label(self.prior.bins, b)} %: edit withdrawn by {who}.")
        return True

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() not in (COL_MEAN, COL_STD) or self.prior is None:
            return
        b = item.row()
        # the cell not edited keeps its exact value, not the one decimal the table shows
        mean: float | str = float(self.prior.mean_pct[b])
        std: float | str = float(self.prior.std_pct[b])
        if item.column() == COL_MEAN:
            mean = item.text()
        else:
            std = item.text()
        if not self.edit_bin(b, mean, std):
            msg = self.message.text()
            self.refresh()  # put the cell back
            self._set_message(msg, ERROR_STYLE)

    # -- saving ---------------------------------------------------------------------------------

    def _saved_name(self) -> str:
        p = self.project
        return p.prior_path.name if p is not None and p.prior_path is not None else "prior.csv"

    def save_prior(self) -> Path | None:
        """Write the table to the project's prior.csv (atomically); its path.

        When the save would replace a value from this data (reviewed, measured or edited)
        with the paper's Table 1, it asks first (``confirm_replace``); None when declined.
        """
        if self.project is None or self.prior is None:
            self._error("Open a project first.")
            return None
        p = self.project
        path = p.prior_path or p.folder / "prior.csv"
        new = prior_for_saving(self.prior)
        saved = saved_prior(p)
        replaced = paper_replacements(saved, new)
        if replaced:
            lines = [
                f"  {bin_label(new.bins, b)} %: {row_text(saved, b)} → {row_text(new, b)}"
                for b in replaced
            ]
            text = (
                f"Saving replaces values from this data with the paper's Table 1 in "
                f"{len(replaced)} bin(s) of {path.name}:\n" + "\n".join(lines) + "\n\n"
                "Replace them? (No keeps the file as it is; edit those bins or choose "
                f"“Saved {path.name}” as the source to keep them.)"
            )
            if not confirm_replace(self, "Replace measured prior values?", text):
                self._info(f"Not saved: {path.name} keeps its values ({len(replaced)} bin(s)).")
                return None
        try:
            write_prior_csv(path, new)
            if p.prior_path is None:
                p.prior_path = path
                p.save()
        except OSError as exc:
            self._error(f"Not saved: {reason_first(exc)}")
            return None
        keep = self.source()
        self.refresh(source=keep)
        self._info(
            f"Saved {path.name} from {self.source_combo.currentText().lower()} "
            f"({len(self.edits)} edited bin(s)); training uses it. {new.source_line()}."
        )
        return path

    def export_estimates(self, path: str | os.PathLike) -> Path | None:
        """Write every estimate of the project (``napari-lsr export --estimates``) as CSV."""
        from ..io.interop import write_estimates_csv

        if self.project is None:
            self._error("Open a project first.")
            return None
        try:
            n = write_estimates_csv(self.project, path)
        except (OSError, sqlite3.Error) as exc:
            self._error(f"Not exported: {reason_first(exc)}")
            return None
        self._info(f"Exported {n} estimate(s) to {Path(path).name}.")
        return Path(path)

    def _browse_export_estimates(self) -> None:
        start = str(self.project.folder / "estimates.csv") if self.project else "estimates.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export estimates", start, "CSV (*.csv)")
        if path:
            self.export_estimates(path)


def _bump(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """A Gaussian scaled to peak 1 (narrow and wide bins stay comparable on one axis)."""
    s = max(float(std), 0.25)
    return np.exp(-0.5 * ((x - mean) / s) ** 2)


def check_prior_loaded(prior: Prior, empty_bins: Iterable[int] = ()) -> PriorFlags:
    """Flags of a prior from a file: blank n is not 'few estimates'; monotonic still holds
    (bins without blocks left out, as in ``check_prior``)."""
    flags = check_prior(prior, empty_bins)
    few = [b for b in flags.few_estimates if not math.isnan(prior.n[b])]
    return PriorFlags(few, flags.not_monotonic)


def flag_summary(flags: PriorFlags, prior: Prior) -> str:
    """One or two lines naming the flagged bins (details are in the Notes column)."""
    parts = []
    if flags.few_estimates:
        names = ", ".join(bin_label(prior.bins, b) for b in flags.few_estimates)
        parts.append(f"⚑ fewer than 2 estimates: {names} %")
    if flags.not_monotonic:
        names = ", ".join(bin_label(prior.bins, b) for b in flags.not_monotonic)
        parts.append(f"⚑ mean below the bin before (not monotonic): {names} %")
    return "\n".join(parts) if parts else "✓ every bin has 2+ estimates and the means rise"


def _text_on(color: str) -> str:
    """Black or white, whichever reads better on ``color``."""
    c = QColor(color)
    luminance = 0.299 * c.red() + 0.587 * c.green() + 0.114 * c.blue()
    return "black" if luminance > 140 else "white"
