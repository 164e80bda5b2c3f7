"""Comparison dock widget: predict, draw the four boundaries, shade the band, Table 2, export."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..compare import (
    CompareRequest,
    pooled_rows,
    project_models,
    run_comparison,
    run_project_comparison,
    write_figure,
    write_metrics_csv,
)
from ..config import CANCER_THRESHOLD, LSRError
from ..config import first_line as one_line
from ..evaluate.evaluation import (
    TABLE_COLUMNS,
    Comparison,
    ModelEntry,
    prediction_entry,
    table_rows,
)
from ..layers import color_label
from ..state import state_for
from ._common import ERROR_STYLE, reason_first, scroll_contents, vet_checkpoint
from ._docks import tab_later

if TYPE_CHECKING:
    import napari

    from ..io.project import Project
    from ..learn.models import ModelCard

log = logging.getLogger(__name__)

TRUTH_FILTER = "Ground truth (*.png *.tif *.tiff *.geojson *.json);;All files (*)"
LABELS_FILTER = "Low-resolution labels (*.csv *.geojson *.json);;All files (*)"
GEOJSON_FILTER = "GeoJSON for QuPath (*.geojson);;All files (*)"
PRED_FILTER = "Prediction TIFF (*.tif *.tiff);;All files (*)"
SLIDE_FILTER = (
    "Slides (*.svs *.tif *.tiff *.ndpi *.mrxs *.scn *.vms *.vmu *.bif *.svslide *.png *.jpg);;"
    "All files (*)"
)
#: Item data role holding a ModelEntry in the models list.
ENTRY_ROLE = Qt.ItemDataRole.UserRole


def _swatch(color: str, w: int = 22, h: int = 10) -> QPixmap:
    pix = QPixmap(w, h)
    pix.fill(QColor(color))
    return pix


class ComparisonFailed(LSRError):
    """A RuntimeError from the run, re-raised as something superqt's worker reports."""


def _guarded_comparison(req: Any, every_slide: bool = False) -> Any:
    """``run_comparison`` (``run_project_comparison`` of a list of requests with
    ``every_slide``) with RuntimeErrors (torch's, out of memory included) re-raised as
    ``ComparisonFailed``: superqt's generator worker takes a RuntimeError for a deleted
    worker and drops it, so the user would see nothing."""
    from ..learn.training import TrainingError

    try:
        if every_slide:
            return (yield from run_project_comparison(req))
        return (yield from run_comparison(req))
    except TrainingError as exc:  # one line that names the file already
        raise ComparisonFailed(one_line(exc)) from exc
    except RuntimeError as exc:
        raise ComparisonFailed(f"{type(exc).__name__}: {one_line(exc)}") from exc


class ElidedLabel(QLabel):
    """A one-line label that elides its text in the middle to the width it gets (the whole
    text in its tooltip), so that it never makes its dock wider."""

    def __init__(self, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = text
        self.setToolTip(text)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(40)
        super().setText(text)

    def full_text(self) -> str:
        return self._full

    def text(self) -> str:  # the whole text, as tests and scripts read it
        return self._full

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        super().resizeEvent(event)
        shown = self.fontMetrics().elidedText(
            self._full, Qt.TextElideMode.ElideMiddle, max(0, self.contentsRect().width() - 4)
        )
        if shown != super().text():
            super().setText(shown)


class WrappedLabel(QLabel):
    """A word-wrapped label that takes the height its lines need at its width, without
    Qt's height-for-width (whose cached heights in a scroll area let the line below a
    grown table be drawn over its rows)."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setWordWrap(True)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)

    def hasHeightForWidth(self) -> bool:  # noqa: N802 (Qt)
        return False

    def _fit(self) -> None:
        width = max(40, self.width())
        flags = int(Qt.TextFlag.TextWordWrap.value)
        need = self.fontMetrics().boundingRect(0, 0, width, 10_000, flags, self.text()).height()
        if self.text() and self.minimumHeight() != need:
            self.setMinimumHeight(need)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt)
        super().setText(text)
        self._fit()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        super().resizeEvent(event)
        self._fit()


class Legend(QWidget):
    """Colour swatches and names of the boundaries on the canvas."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.entries: list[tuple[str, str]] = []
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(2)

    def set_entries(self, entries: list[tuple[str, str]]) -> None:
        """Show ``(name, colour)`` rows, replacing the previous ones."""
        while self._layout.count():
            item = self._layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.entries = list(entries)
        for text, color in self.entries:
            row = QWidget(self)
            h = QHBoxLayout(row)
            h.setContentsMargins(0, 0, 0, 0)
            sw = QLabel(row)
            sw.setPixmap(_swatch(color, 28, 6))
            sw.setFixedWidth(32)
            sw.setToolTip(color)
            h.addWidget(sw)
            # elided, never wider than the dock (a long model name would widen it)
            h.addWidget(ElidedLabel(f"{text}  ({color_label(color)})", row), 1)
            self._layout.addWidget(row)


class ComparisonWidget(QWidget):
    """Predict with the project's models, then compare boundaries and scores with the truth.

    Ground truth red, low-resolution threshold green, intra+inter blue, intra cyan, other
    models distinct colours (SPEC section 4). Prediction and scoring run off the GUI thread.
    """

    #: Tabbed with the other napari-lsr docks when added (``_docks.tab_with_open_docks``).
    napari_lsr_dock = True

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        tab_later(self, napari_viewer)  # with the napari-lsr docks already open
        self.viewer = napari_viewer
        self.state = state_for(napari_viewer)  # what the napari-lsr widgets of the viewer share
        self.project: Project | None = None
        self.comparison: Comparison | None = None
        #: Every slide's comparison after "All slides" (else []), and their pooled rows.
        self.comparisons: list[Comparison] = []
        self.pooled: list[dict[str, Any]] = []
        self.worker: Any = None
        self.device = "auto"
        self._layers: list[Any] = []
        self._slide: Any = None  # the open Slide behind the slide layer we added
        self._build()
        scroll_contents(self)  # stacked with other docks, the dock scrolls instead
        self.state.connect(
            self, project=self._on_project, models=self._on_models, slide=self._on_slide
        )
        if self.state.project is not None:
            self._use_project(self.state.project)

    # -- layout --------------------------------------------------------------------------

    def _build(self) -> None:
        self.setMinimumWidth(440)  # room for the model names beside four score columns
        root = QVBoxLayout(self)
        root.addWidget(self._build_inputs())
        root.addWidget(self._build_models())
        self._build_run(root)
        root.addWidget(self._build_results())
        root.addStretch(1)

    def _build_inputs(self) -> QGroupBox:
        """The Slide and ground truth group: project, slide, ground truth, low-res labels."""
        inputs = QGroupBox("Slide and ground truth", self)
        form = QFormLayout(inputs)
        self.project_edit = QLineEdit(inputs)
        self.project_edit.setPlaceholderText("project folder (project.toml)")
        self.project_edit.returnPressed.connect(lambda: self.open_project(self.project_edit.text()))
        form.addRow("Project", self._with_button(self.project_edit, self._browse_project))
        self.slide_combo = QComboBox(inputs)
        self.slide_combo.currentIndexChanged.connect(self._slide_changed)
        form.addRow("Slide", self._with_button(self.slide_combo, self._browse_slide))
        self.truth_edit = QLineEdit(inputs)
        self.truth_edit.setPlaceholderText("mask image or QuPath GeoJSON")
        form.addRow("Ground truth", self._with_button(self.truth_edit, self._browse_truth))
        self.truth_class_edit = QLineEdit(inputs)
        self.truth_class_edit.setPlaceholderText("Tumor / Tumour / Cancer")
        self.truth_class_edit.setToolTip(
            "Class of a GeoJSON truth's annotations: its full name (Tumor: Positive) or first "
            "name (Tumor also matches Tumor: Positive); empty: the tumour/tumor/cancer class"
        )
        form.addRow("Truth class", self.truth_class_edit)
        self.labels_edit = QLineEdit(inputs)
        self.labels_edit.setPlaceholderText("low-res CSV (optional)")
        form.addRow("Low-res labels", self._with_button(self.labels_edit, self._browse_labels))
        return inputs

    def _build_models(self) -> QGroupBox:
        """The Models group: the models to compare, prediction options and the band."""
        models = QGroupBox("Models", self)
        mv = QVBoxLayout(models)
        self.models_list = QListWidget(models)
        self.models_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.models_list.setToolTip("tick the models to compare; select one for Regions to QuPath")
        self.models_list.setMaximumHeight(90)
        mv.addWidget(self.models_list)
        row = QHBoxLayout()
        self.add_pred_button = QPushButton("Add prediction file…", models)
        self.add_pred_button.clicked.connect(self._browse_prediction)
        self.refresh_button = QPushButton("Refresh", models)
        self.refresh_button.setToolTip("List the project's models/ again")
        self.refresh_button.clicked.connect(self.refresh_models)
        row.addWidget(self.add_pred_button)
        row.addWidget(self.refresh_button)
        mv.addLayout(row)
        opts = QHBoxLayout()
        self.recompute_check = QCheckBox("Recompute predictions", models)
        self.recompute_check.setToolTip(
            "Run the models again even when a matching prediction exists in predictions/"
        )
        self.heatmap_check = QCheckBox("Probability heat map", models)
        opts.addWidget(self.recompute_check)
        opts.addWidget(self.heatmap_check)
        mv.addLayout(opts)
        band = QHBoxLayout()
        band.addWidget(QLabel("Band (um)", models))
        self.band_spin = QDoubleSpinBox(models)
        self.band_spin.setRange(0.0, 100_000.0)
        self.band_spin.setDecimals(0)
        self.band_spin.setSingleStep(50.0)
        self.band_spin.setSpecialValueText("one block width")
        self.band_spin.setToolTip(
            "Evaluation band: pixels within this distance of the ground-truth boundary "
            "(paper: 1000 um, the width of an input block)"
        )
        band.addWidget(self.band_spin, 1)
        mv.addLayout(band)
        return models

    def _build_run(self, root: QVBoxLayout) -> None:
        """Run comparison and Cancel, the progress bar and the status line."""
        run_row = QHBoxLayout()
        self.run_button = QPushButton("Run comparison", self)
        self.run_button.clicked.connect(self.run)
        self.all_button = QPushButton("All slides", self)
        self.all_button.setToolTip(
            "compare every slide of the project that has ground truth, and pool the scores "
            "over them (the paper's Table 2 is pooled); Export metrics then writes every "
            "slide and the pooled rows"
        )
        self.all_button.clicked.connect(self.run_all)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        run_row.addWidget(self.run_button, 1)
        run_row.addWidget(self.all_button)
        run_row.addWidget(self.cancel_button)
        root.addLayout(run_row)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        root.addWidget(self.progress)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        root.addWidget(self.status)

    def _build_results(self) -> QGroupBox:
        """The Boundaries and scores group: legend, score table, band line, exports."""
        results = QGroupBox("Boundaries and scores", self)
        rv = QVBoxLayout(results)
        self.legend = Legend(results)
        rv.addWidget(self.legend)
        self.table = self._build_score_table(results)
        rv.addWidget(self.table)
        self.band_label = WrappedLabel("", results)
        rv.addWidget(self.band_label)
        ex = QGridLayout()  # two a row: the buttons keep their whole text in a narrow dock
        self.export_figure_button = QPushButton("Export figure…", results)
        self.export_figure_button.clicked.connect(self._browse_export_figure)
        self.export_metrics_button = QPushButton("Export metrics…", results)
        self.export_metrics_button.clicked.connect(self._browse_export_metrics)
        self.export_regions_button = QPushButton("Regions to QuPath…", results)
        self.export_regions_button.setToolTip(
            f"Write the selected model's cancer regions (probability >= {CANCER_THRESHOLD:g}) "
            "as GeoJSON "
            "annotations that QuPath opens by drag and drop"
        )
        self.export_regions_button.clicked.connect(self._browse_export_regions)
        ex.addWidget(self.export_figure_button, 0, 0)
        ex.addWidget(self.export_metrics_button, 0, 1)
        ex.addWidget(self.export_regions_button, 1, 0)
        rv.addLayout(ex)
        return results

    @staticmethod
    def _build_score_table(parent: QWidget) -> QTableWidget:
        """The read-only table of scores: a Model column, then one per score."""
        table = QTableWidget(0, 1 + len(TABLE_COLUMNS), parent)
        # Two-line headers keep the score columns narrow so the model names fit the dock.
        table.setHorizontalHeaderLabels(["Model", *(c.replace(" ", "\n") for c in TABLE_COLUMNS)])
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setWordWrap(False)
        table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # the scores as wide as their digits, the model name takes the rest (elided in the
        # middle): the table never needs more than the dock's width
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(40)
        table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
        table.setMinimumHeight(90)
        return table

    def _with_button(self, field: QWidget, slot: Any) -> QWidget:
        box = QWidget(self)
        h = QHBoxLayout(box)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(field, 1)
        b = QPushButton("…", box)
        b.setFixedWidth(28)
        b.clicked.connect(slot)
        h.addWidget(b)
        return box

    # -- messages ------------------------------------------------------------------------

    def show_error(self, message: str) -> None:
        """A one-line error in the dock and as a napari notification (no traceback)."""
        from napari.utils.notifications import show_error

        message = reason_first(message)  # the reason first: a toast cut short still says it
        self.status.setStyleSheet(ERROR_STYLE)
        self.status.setText(message)
        show_error(f"napari-lsr: {message}")

    def _info(self, message: str) -> None:
        self.status.setStyleSheet("")
        self.status.setText(message)

    # -- inputs --------------------------------------------------------------------------

    def set_project(self, project: Project | str | Path) -> bool:
        """Use an open ``Project`` (or a project folder), shared with the other widgets."""
        from ..io.project import Project

        if not isinstance(project, Project):
            return self.open_project(project)
        self.state.project = project  # shown here through _on_project, as in the others
        if self.project is not project:
            self._use_project(project)
        return True

    def open_project(self, folder: str | Path, quiet: bool = False) -> bool:
        """Open a project folder here and in the other widgets: its slides, ground truth,
        labels and models."""
        from ..io.project import Project

        try:
            project = Project.open(folder)
        except Exception as exc:  # FormatError or OSError: a one-line message
            if not quiet:
                self.show_error(one_line(exc))
            return False
        return self.set_project(project)

    def _on_project(self, project: Project | None) -> None:
        if project is not None and project is not self.project:
            self._use_project(project)

    def _use_project(self, project: Project) -> None:
        """Show ``project``: its slides (the shared slide chosen when it is one of them),
        ground truth, labels and models."""
        self.project = project
        self.project_edit.setText(str(project.folder))
        self.slide_combo.blockSignals(True)
        self.slide_combo.clear()
        for entry in project.slides:
            self.slide_combo.addItem(entry.name, str(entry.path))
        shared = self._slide_index(self.state.slide)
        self.slide_combo.setCurrentIndex(max(0, shared))
        self.slide_combo.blockSignals(False)
        self._slide_changed(self.slide_combo.currentIndex())
        self.models_list.clear()  # prediction files added for another project go too
        if not self.refresh_models():
            self._info(f"project {project.folder.name}: {len(project.slides)} slide(s)")

    def _on_models(self, _models: tuple[ModelCard, ...]) -> None:
        """The Training widget listed the shared project's models: list them again."""
        if self.project is not None and self.project is self.state.project:
            self._list_models(report=False)  # errors were shown when the project opened

    def _on_slide(self, path: Path | None) -> None:
        """Another widget shows a slide: choose it when it is one of the list."""
        index = self._slide_index(path)
        if index >= 0:
            self.slide_combo.setCurrentIndex(index)

    def _slide_index(self, path: str | Path | None) -> int:
        """Where slide ``path`` is in the list (-1: not listed)."""
        if not path:
            return -1
        want = str(Path(path).resolve())
        for i in range(self.slide_combo.count()):
            if str(Path(self.slide_combo.itemData(i)).resolve()) == want:
                return i
        return -1

    def select_slide(self, path: str | Path) -> None:
        """Select a slide of the list by path, adding it when it is not listed."""
        index = self._slide_index(path)
        if index < 0:
            path = str(Path(path).resolve())
            self.slide_combo.addItem(Path(path).stem, path)
            index = self.slide_combo.count() - 1
        self.slide_combo.setCurrentIndex(index)

    def _project_entry(self, slide_path: str | None) -> Any:
        if self.project is None or not slide_path:
            return None
        for entry in self.project.slides:
            if str(entry.path) == slide_path:
                return entry
        return None

    def _slide_changed(self, _index: int) -> None:
        path = self.slide_combo.currentData()
        if path:
            self.state.slide = Path(path)  # the slide being compared
        entry = self._project_entry(path)
        if entry is not None:
            self.truth_edit.setText(str(entry.truth) if entry.truth else "")
            self.labels_edit.setText(str(entry.labels) if entry.labels else "")

    def refresh_models(self) -> list[str]:
        """List the project's models (checked), keeping added prediction files; a malformed
        model card is left out with a one-line error (returned too)."""
        return self._list_models(report=True)

    def _list_models(self, report: bool) -> list[str]:
        kept = [e for e in self.entries(checked_only=False) if e.checkpoint is None]
        checked = {e.name for e in self.entries()}
        self.models_list.clear()
        errors: list[str] = []
        models = project_models(self.project.models_dir, errors) if self.project is not None else []
        for m in models:
            self._add_entry(m, checked=not checked or m.name in checked)
        for m in kept:
            self._add_entry(m, checked=m.name in checked)
        for message in errors if report else ():
            self.show_error(message)
        return errors

    def _add_entry(self, entry: ModelEntry, checked: bool = True) -> None:
        kind = "model" if entry.checkpoint is not None else "prediction"
        item = QListWidgetItem(f"{entry.label}  [{kind}]")
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        item.setData(ENTRY_ROLE, entry)
        item.setToolTip(str(entry.checkpoint or entry.prediction))
        self.models_list.addItem(item)

    def entries(self, checked_only: bool = True) -> list[ModelEntry]:
        """The models in the list (the ticked ones by default)."""
        out = []
        for i in range(self.models_list.count()):
            item = self.models_list.item(i)
            if not checked_only or item.checkState() == Qt.CheckState.Checked:
                out.append(item.data(ENTRY_ROLE))
        return out

    def add_prediction_file(self, path: str | Path) -> bool:
        """Add a prediction TIFF (with its JSON sidecar) to the models to compare."""
        try:
            entry = prediction_entry(path)
        except Exception as exc:
            self.show_error(one_line(exc))
            return False
        self._add_entry(entry)
        return True

    def set_truth(self, path: str | Path) -> None:
        self.truth_edit.setText(str(path))

    def set_labels(self, path: str | Path | None) -> None:
        self.labels_edit.setText(str(path) if path else "")

    def _browse_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a napari-lsr project")
        if folder:
            self.open_project(folder)

    def _browse_slide(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Slide", "", SLIDE_FILTER)
        if path:
            self.select_slide(path)

    def _browse_truth(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Ground truth", "", TRUTH_FILTER)
        if path:
            self.set_truth(path)

    def _browse_labels(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Low-resolution labels", "", LABELS_FILTER)
        if path:
            self.set_labels(path)

    def _browse_prediction(self) -> None:
        start = str(self.project.predictions_dir) if self.project is not None else ""
        paths, _ = QFileDialog.getOpenFileNames(self, "Prediction files", start, PRED_FILTER)
        for p in paths:
            self.add_prediction_file(p)

    # -- running -------------------------------------------------------------------------

    def request(self) -> CompareRequest:
        """The comparison the widget's fields describe (ValueError when incomplete)."""
        slide = self.slide_combo.currentData()
        if not slide:
            raise ValueError("choose a slide (open a project or pick a slide file)")
        truth = self.truth_edit.text().strip()
        if not truth:
            raise ValueError("choose a ground-truth mask image or GeoJSON")
        labels = self.labels_edit.text().strip() or None
        entry = self._project_entry(slide)
        proj = self.project
        band = self.band_spin.value()
        return CompareRequest(
            slide=Path(slide),
            truth=Path(truth),
            labels=Path(labels) if labels else None,
            models=self.entries(),
            predictions_dir=proj.predictions_dir if proj is not None else None,
            single_slide=proj is None or len(proj.slides) <= 1,
            slide_mpp=entry.mpp if entry is not None else None,
            band_um=band if band > 0 else None,
            recompute=self.recompute_check.isChecked(),
            heatmap=self.heatmap_check.isChecked(),
            device=self.device,
            truth_class=self.truth_class_edit.text().strip() or None,
        )

    def requests_all(self) -> list[CompareRequest]:
        """One request per slide of the project that has ground truth (ValueError when
        none has), with the models and options the widget shows."""
        proj = self.project
        if proj is None:
            raise ValueError("open a project to compare all its slides")
        slides = [e for e in proj.slides if e.truth]
        if not slides:
            raise ValueError(
                "no slide of the project has ground truth (truth = ... in project.toml)"
            )
        band = self.band_spin.value()
        return [
            CompareRequest(
                slide=Path(e.path),
                truth=Path(e.truth),
                labels=Path(e.labels) if e.labels else None,
                models=self.entries(),
                predictions_dir=proj.predictions_dir,
                single_slide=len(proj.slides) <= 1,
                slide_mpp=e.mpp,
                band_um=band if band > 0 else None,
                recompute=self.recompute_check.isChecked(),
                heatmap=self.heatmap_check.isChecked(),
                device=self.device,
            )
            for e in slides
        ]

    def run(self) -> Any:
        """Start the comparison in a worker thread; returns the worker (None on bad input)."""
        return self._start(every_slide=False)

    def run_all(self) -> Any:
        """Compare every slide with ground truth, then pool the scores over them (the table
        shows the pooled rows; the canvas the slide chosen above, else the first)."""
        return self._start(every_slide=True)

    def _start(self, every_slide: bool) -> Any:
        from napari.qt.threading import thread_worker

        if self.worker is not None:
            self.show_error("a comparison is already running")
            return None
        try:
            req: Any = self.requests_all() if every_slide else self.request()
        except ValueError as exc:
            self.show_error(one_line(exc))
            return None
        for entry in self.entries():  # a checkpoint that is not plain data: ask, or refuse
            if entry.checkpoint is not None and not vet_checkpoint(
                self, entry.checkpoint, self.show_error
            ):
                return None
        # Our own "errored" handler: napari/superqt would otherwise re-raise with a traceback.
        worker = thread_worker(
            _guarded_comparison,
            start_thread=False,
            connect={
                "yielded": self._on_progress,
                "returned": self._on_done_all if every_slide else self._on_done,
                "errored": self._on_error,
                "finished": self._on_finished,
            },
        )(req, every_slide)
        relay = getattr(worker, "_relay_error", None)
        if relay is not None:
            try:  # napari's relay shows the traceback in a notification; one line is enough
                worker.errored.disconnect(relay)
            except (TypeError, RuntimeError):
                pass  # not connected in this napari version
        self.worker = worker
        self.run_button.setEnabled(False)
        self.all_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self._info("starting…")
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop at the next progress step (a prediction already writing finishes first)."""
        if self.worker is not None:
            self.worker.quit()
            self._info("cancelled")

    def _on_progress(self, event: tuple[str, float]) -> None:
        message, frac = event
        self.progress.setValue(int(round(100 * frac)))
        self._info(message)

    def _on_error(self, exc: BaseException) -> None:
        from ..io.slide import SlideError
        from ..learn.training import TrainingError

        log.debug("comparison failed", exc_info=exc)
        msg = one_line(exc)
        known = isinstance(exc, (ValueError, OSError, SlideError, TrainingError, ComparisonFailed))
        self.show_error(msg if known else f"{type(exc).__name__}: {msg}")

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.all_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_done_all(self, comps: list[Comparison]) -> None:
        """Every slide compared: the pooled rows in the table, the chosen slide on the canvas."""
        shown = next(
            (
                c
                for c in comps
                if self._slide_index(c.slide.path) == self.slide_combo.currentIndex()
            ),
            comps[0],
        )
        self._on_done(shown)
        for comp in comps:
            self._record_predictions(comp)
        self.comparisons = list(comps)
        self.pooled = pooled_rows(comps)
        self._fill_rows(self.pooled)
        self.table.setToolTip(f"pooled over {len(comps)} slide(s): confusion counts summed")
        names = ", ".join(c.slide.name for c in comps)
        self.band_label.setText(
            f"Pooled over {len(comps)} slide(s) ({names}): each slide's masked counts summed, "
            f"then scored. The canvas shows {shown.slide.name}; Export metrics writes every "
            "slide's rows and the pooled ones."
        )
        self._info(f"done: {len(self.pooled)} pooled row(s) over {len(comps)} slide(s)")

    def _on_done(self, comp: Comparison) -> None:
        self.comparison = comp
        self.comparisons, self.pooled = [], []
        self.table.setToolTip("")
        self._record_predictions(comp)
        self._show_layers(comp)
        self.legend.set_entries(comp.legend())
        self._fill_table(comp)
        self.progress.setValue(100)
        um = comp.band_um
        width = f"{comp.band_px:.0f} level-0 px" + (f" ({um:.0f} um)" if um else "")
        self.band_label.setText(
            f"Masked scores: band of {width} each side of the ground-truth boundary (shaded); "
            f"grid: 1/{comp.truth.downsample:g} of level 0."
        )
        self._info(f"done: {len(comp.rows)} row(s) scored on {comp.slide.name}")

    # -- display -------------------------------------------------------------------------

    def _slide_layer(self, path: Path) -> Any:
        want = str(Path(path).resolve())
        for layer in self.viewer.layers:
            p = (layer.metadata or {}).get("napari_lsr", {}).get("path")
            if p and str(Path(p).resolve()) == want:
                return layer
        return None

    def _show_layers(self, comp: Comparison) -> None:
        from .._reader import slide_layer_data
        from ..io.slide import Slide

        fresh = False
        if self._slide_layer(comp.slide.path) is None:
            self._slide = Slide(comp.slide.path, mpp=comp.slide.mpp)
            data, meta, _ = slide_layer_data(self._slide)
            self.viewer.add_image(data, **meta)
            fresh = True
        for layer in self._layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._layers = []
        for data, meta, kind in comp.layers:
            self._layers.append(getattr(self.viewer, f"add_{kind}")(data, **meta))
        if fresh:
            self.viewer.reset_view()

    def _fill_table(self, comp: Comparison) -> None:
        self._fill_rows(comp.rows)

    def _fill_rows(self, rows: list[dict[str, Any]]) -> None:
        cells = table_rows(rows)
        self.table.setRowCount(len(cells))
        for r, (row, values) in enumerate(zip(rows, cells)):
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                self.table.setItem(r, c, item)
            color = row.get("color")
            if color:
                self.table.item(r, 0).setIcon(QIcon(_swatch(color)))
            if row.get("loss"):
                self.table.item(r, 0).setToolTip(f"loss {row['loss']}; {row.get('source')}")
        self.table.resizeRowsToContents()
        height = self.table.horizontalHeader().sizeHint().height() + 2 * self.table.frameWidth()
        height += sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        self.table.setFixedHeight(height + 2)
        self._relayout()

    def _relayout(self) -> None:
        """Lay the dock out again from the table up: its new height otherwise reaches the
        layouts only once the dock is shown again, and the band line is drawn over rows."""
        w = self.table
        while w is not None:
            w.updateGeometry()  # (a hidden tab's widgets skip this as they change)
            layout = w.layout()
            if layout is not None:
                layout.invalidate()
                layout.activate()
            if w is self:
                break
            w = w.parentWidget()

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        super().showEvent(event)
        QTimer.singleShot(0, self._relayout)  # once the children are shown too

    # -- exports -------------------------------------------------------------------------

    def export_figure(self, path: str | Path) -> Path | None:
        """Save the current view (canvas) as PNG with the legend drawn in."""
        try:
            image = self.viewer.screenshot(canvas_only=True)
            entries = self.comparison.legend() if self.comparison is not None else []
            out = write_figure(path, image, entries)
        except Exception as exc:
            self.show_error(one_line(exc))
            return None
        self._info(f"figure written to {out}")
        return out

    def export_metrics(self, path: str | Path) -> Path | None:
        """Save the metrics table (Table 2 layout) as CSV: after All slides, every slide's
        rows and then the pooled ones (``slide`` column: the slide, or ``pooled``)."""
        if self.comparison is None:
            self.show_error("run the comparison first: there are no metrics to export")
            return None
        rows = self.comparison.rows
        if self.comparisons:
            rows = [r for c in self.comparisons for r in c.rows] + self.pooled
        try:
            out = write_metrics_csv(path, rows)
        except Exception as exc:
            self.show_error(one_line(exc))
            return None
        self._info(f"metrics written to {out}")
        return out

    def _record_predictions(self, comp: Comparison) -> None:
        """Note on the listed models the prediction files the run made or reused (the run
        works on copies), so that Regions to QuPath finds them."""
        ran = {
            str(b.entry.checkpoint): b.entry.prediction
            for b in comp.boundaries
            if b.kind == "model" and b.entry is not None and b.entry.checkpoint is not None
        }
        for i in range(self.models_list.count()):
            entry = self.models_list.item(i).data(ENTRY_ROLE)
            if entry is not None and entry.checkpoint is not None:
                pred = ran.get(str(entry.checkpoint))
                if pred is not None:
                    entry.prediction = pred

    def _table_entry(self) -> ModelEntry | None:
        """The model of the score table's selected row (None: none, or the low-res row)."""
        comp = self.comparison
        row = self.table.currentRow()
        if comp is None or row < 0 or not self.table.selectionModel().hasSelection():
            return None
        item = self.table.item(row, 0)
        name = item.text() if item is not None else None
        for b in comp.boundaries:
            if b.kind == "model" and b.entry is not None and b.entry.name == name:
                return b.entry
        return None

    def _regions_entry(self) -> ModelEntry | None:
        """The model selected in the score table or the models list, when it has a
        prediction; else the first ticked one that has one, else the last comparison's."""
        chosen = self._table_entry()
        if chosen is not None and chosen.prediction is not None:
            return chosen
        item = self.models_list.currentItem()
        chosen = item.data(ENTRY_ROLE) if item is not None else None
        if chosen is not None and chosen.prediction is not None:
            return chosen
        found = next((e for e in self.entries() if e.prediction is not None), None)
        if found is None and self.comparison is not None:
            found = next(
                (
                    b.entry
                    for b in self.comparison.boundaries
                    if b.kind == "model" and b.entry is not None and b.entry.prediction
                ),
                None,
            )
        return found

    def export_regions(self, path: str | Path, threshold: float = CANCER_THRESHOLD) -> Path | None:
        """Save the selected model's cancer regions as QuPath GeoJSON (level-0 px)."""
        from ..io.interop import export_geojson

        entry = self._regions_entry()
        if entry is None:
            self.show_error("run the comparison (or add a prediction file) first: no prediction")
            return None
        try:
            info = export_geojson(entry.prediction, path, threshold=threshold)
        except Exception as exc:
            self.show_error(one_line(exc))
            return None
        self._info(f"{info['features']} region(s) of {entry.label} written to {path}")
        return Path(path)

    def _browse_export_regions(self) -> None:
        entry = self._regions_entry()
        name = f"{entry.prediction.stem}_regions.geojson" if entry else "regions.geojson"
        path, _ = QFileDialog.getSaveFileName(
            self, "Regions to QuPath", self._default_export(name), GEOJSON_FILTER
        )
        if path:
            self.export_regions(path)

    def _default_export(self, name: str) -> str:
        if self.project is not None:
            return str(self.project.folder / name)
        return name

    def _browse_export_figure(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export figure", self._default_export("comparison.png"), "PNG (*.png)"
        )
        if path:
            self.export_figure(path)

    def _browse_export_metrics(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export metrics", self._default_export("metrics.csv"), "CSV (*.csv)"
        )
        if path:
            self.export_metrics(path)
