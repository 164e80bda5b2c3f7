"""Block review dock widget: show sampled blocks bin by bin and record cancer % estimates.

Keys (QuPath style, while the widget has the keyboard focus): digits then Enter records the
estimate, Up/Down change it by 5, S skips the block, Backspace (with nothing typed) or Ctrl+Z
undoes the last entry, N/P go to the next/previous block of the bin, B to the next bin,
Escape clears what was typed. The logic lives in ``napari_lsr.elicit.review``, what the dock
says in ``napari_lsr.elicit.review_text``; this is their view.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import napari
import numpy as np
from qtpy.QtCore import QEvent, QObject, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QImage, QKeyEvent, QPainter, QPixmap
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._reader import slide_layer_data
from ..elicit import review_text as say
from ..elicit.certainty import DEFAULT_ORDER, ORDERS
from ..elicit.review import (
    DEFAULT_K,
    DEFAULT_SEED,
    STEP_PCT,
    BlockImages,
    ReviewBlock,
    ReviewError,
    ReviewSession,
    SlideSet,
    bin_label,
    load_blocks,
    parse_percent,
    release_review,
)
from ..elicit.review_text import FOCUS_HINT, KEYS_HELP, default_annotator
from ..io.formats import FormatError, same_file
from ..io.project import Project
from ..io.slide import SlideError
from ..layers import bin_color, camera_zoom, labels_layer_data, world_box, world_center
from ..state import project_for_slide, state_for
from ._common import ERROR_STYLE, layer_slide_path, project_row, reason_first
from ._docks import tab_later

#: The spin box's value when nothing is typed (shown as "–").
NO_VALUE = -1
#: Side, in screen pixels, of the block image in the widget.
IMAGE_SIDE = 288
#: Narrowest the dock gets (the legend's five columns and the rows of buttons fit).
MIN_WIDTH = 430
OUTLINE_NAME = "review block"
OUTLINE_COLOR = "yellow"
#: The heat overlay is kept light so the tissue around the block stays readable.
OVERLAY_OPACITY = 0.3
INFO_STYLE = "color: #9fd89f;"


def rgb_pixmap(rgb: np.ndarray, side: int) -> QPixmap:
    """A QPixmap of an RGB uint8 array scaled to fit ``side`` x ``side``."""
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    h, w = rgb.shape[:2]
    img = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(img).scaled(
        side,
        side,
        Qt.AspectRatioMode.KeepAspectRatio,
        Qt.TransformationMode.SmoothTransformation,
    )


def _is_canvas(widget: QWidget | None) -> bool:
    """True for an OpenGL widget: napari's canvas (a click or a pan there takes the keys)."""
    try:
        from qtpy.QtOpenGLWidgets import QOpenGLWidget
    except ImportError:  # Qt 5: QOpenGLWidget lives in QtWidgets
        from qtpy.QtWidgets import QOpenGLWidget
    return isinstance(widget, QOpenGLWidget)


class ProgressStrip(QWidget):
    """A thin progress bar that repaints lazily (QProgressBar repaints the whole window at
    once on every step, which costs tens of ms beside an OpenGL canvas)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFixedHeight(6)
        self._value, self._maximum = 0, 1

    def value(self) -> int:
        return self._value

    def maximum(self) -> int:
        return self._maximum

    def setMaximum(self, maximum: int) -> None:  # noqa: N802 (Qt style)
        self._maximum = max(1, int(maximum))
        self.update()

    def setValue(self, value: int) -> None:  # noqa: N802 (Qt style)
        self._value = int(value)
        self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#3a3a3a"))
        w = int(self.width() * min(1.0, self._value / self._maximum))
        p.fillRect(0, 0, w, self.height(), QColor("#e6e600"))
        p.end()


class BlockReviewWidget(QWidget):
    """Review K blocks per bin, stratified across slides, and record cancer % estimates."""

    #: Tabbed with the other napari-lsr docks when added (``_docks.tab_with_open_docks``).
    napari_lsr_dock = True

    #: Emitted with the ReviewBlock on screen (None when there is none) after every move.
    block_shown = Signal(object)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        tab_later(self, napari_viewer)  # with the napari-lsr docks already open
        self.viewer = napari_viewer
        self.state = state_for(napari_viewer)  # what the napari-lsr widgets of the viewer share
        self.project: Project | None = None
        self.session: ReviewSession | None = None
        self.slides: SlideSet | None = None
        self.images: BlockImages | None = None
        self.labels_by_slide: dict[int, Any] = {}
        self._blocks: list[ReviewBlock] = []
        self._layers: dict[int, list[Any]] = {}  # slide index -> [image layer, heat overlay]
        self._own_layers: list[Any] = []  # layers this widget added (removed on project change)
        self._outline: Any = None
        self._resources: dict[str, Any] = {}
        #: perf_counter() when the last entry was committed and the next block's image,
        #: camera and outline were set (read by benchmarks/next_block.py).
        self.timings: dict[str, float] = {}
        self._message_style = ""
        self._legend_bin: int | None = None
        self._outline_pending = False
        self._shown_index: int | None = None  # the project's slide on the canvas
        self._camera_set: tuple[tuple[float, ...], float] | None = None
        self.viewer.canvas.events.size.connect(self._on_canvas_resize)
        self.destroyed.connect(functools.partial(release_review, self._resources))
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._build()
        self._focus_hint_shown = False
        app = QApplication.instance()
        if app is not None:  # keys typed on the canvas are not estimates: say so
            app.focusChanged.connect(self._on_focus_changed)
        self.state.connect(self, project=self._on_project)

    # -- layout ---------------------------------------------------------------------------------

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        content = QWidget()
        scroll.setWidget(content)
        outer.addWidget(scroll)
        root = QVBoxLayout(content)
        root.setContentsMargins(6, 6, 6, 6)
        root.setSpacing(4)

        row, self.path_edit, self.open_button = project_row(
            self, "project folder (holds project.toml)", self.open_project
        )
        root.addLayout(row)
        root.addLayout(self._build_labels())
        self._build_settings(root)
        self._build_bins(root)
        self._build_block_view(root)
        root.addLayout(self._build_estimate())
        self._build_buttons(root)
        self._build_footer(root)
        # Enter in these finishes their own edit (opens the project, uses the slide, sets
        # the annotator, K or seed); it is not an estimate. Their key events are handled by
        # the field and then stopped (``eventFilter``): a field ignores Enter, and Qt would
        # pass it on to this widget, which by then may have the focus.
        self._text_fields = (
            self.path_edit,
            self.csv_edit,
            self.annotator_edit,
            self.k_spin,
            self.seed_spin,
        )
        for field in self._text_fields:
            field.installEventFilter(self)
        # Wide enough for the legend and the buttons, so the dock never scrolls sideways.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMinimumWidth(MIN_WIDTH)

    def _build_labels(self) -> QHBoxLayout:
        """The Labels row: a low-res CSV, its class, and Use slide (the slide in the viewer)."""
        self.csv_edit = QLineEdit()
        self.csv_edit.setPlaceholderText("or: low-res CSV of the slide open in the viewer")
        csv_browse = QPushButton("Browse…")
        csv_browse.clicked.connect(self._browse_csv)
        self.use_slide_button = QPushButton("Use slide")
        self.use_slide_button.setToolTip(
            "Review the slide layer open in the viewer with this low-res CSV (a project "
            "folder <slide>_lsr is created beside the slide)"
        )
        self.use_slide_button.clicked.connect(lambda: self.use_viewer_slide(self.csv_edit.text()))
        self.class_combo = QComboBox()
        self.class_combo.setToolTip(
            "Class of a WSInfer CSV/GeoJSON to read (default: the tumour/tumor/cancer one)"
        )
        self.class_combo.setEnabled(False)
        self.csv_edit.textChanged.connect(self._labels_file_changed)
        self.csv_edit.returnPressed.connect(self.use_slide_button.click)  # Enter: Use slide
        row = QHBoxLayout()
        row.addWidget(QLabel("Labels"))
        row.addWidget(self.csv_edit, 1)
        row.addWidget(csv_browse)
        row.addWidget(self.class_combo)
        row.addWidget(self.use_slide_button)
        return row

    def _build_settings(self, root: QVBoxLayout) -> None:
        """The session's settings: annotator, blocks per bin (K) and seed."""
        self.annotator_edit = QLineEdit(default_annotator())
        self.annotator_edit.setPlaceholderText("your name")
        self.annotator_edit.editingFinished.connect(self._settings_changed)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 1000)
        self.k_spin.setValue(DEFAULT_K)
        self.k_spin.setToolTip("blocks to review per bin")
        self.k_spin.editingFinished.connect(self._settings_changed)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(DEFAULT_SEED)
        self.seed_spin.setToolTip("the same seed gives the same blocks")
        self.seed_spin.editingFinished.connect(self._settings_changed)
        self.order_combo = QComboBox()
        for order in ORDERS:
            self.order_combo.addItem(say.ORDER_TEXT[order], order)
        self.order_combo.setCurrentIndex(ORDERS.index(DEFAULT_ORDER))
        self.order_combo.setToolTip(say.ORDER_TIP)
        self.order_combo.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.order_combo.activated.connect(self._order_changed)
        self.k_spin.setEnabled(DEFAULT_ORDER == "stratified")
        self.k_spin.setMaximumWidth(80)
        self.seed_spin.setMaximumWidth(100)
        row = QHBoxLayout()
        row.addWidget(QLabel("Annotator"))
        row.addWidget(self.annotator_edit, 1)
        root.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("Order"))
        row.addWidget(self.order_combo, 1)
        row.addWidget(QLabel("K"))
        row.addWidget(self.k_spin)
        row.addWidget(QLabel("Seed"))
        row.addWidget(self.seed_spin)
        root.addLayout(row)

    def _build_bins(self, root: QVBoxLayout) -> None:
        """The bins' colour legend and the Bin chooser."""
        self.legend = QWidget()
        self.legend_layout = QGridLayout(self.legend)
        self.legend_layout.setContentsMargins(0, 0, 0, 0)
        self.legend_layout.setHorizontalSpacing(6)
        self.legend_layout.setVerticalSpacing(1)
        self._legend_labels: list[QLabel] = []
        root.addWidget(self.legend)

        self.bin_combo = QComboBox()
        self.bin_combo.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        # its lines grow with the guided order's certainty: they must not widen the dock
        self.bin_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.bin_combo.setMinimumContentsLength(16)
        self.bin_combo.activated.connect(self._bin_chosen)
        # the heat overlay tints H&E (stroma looks hematoxylin-blue in low bins): one click
        # hides it, the slider sets how strongly it shows
        self.overlay_check = QCheckBox("Heat")
        self.overlay_check.setChecked(True)
        self.overlay_check.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.overlay_check.setToolTip("show the binned heat overlay on the slide")
        self.overlay_check.toggled.connect(self._overlay_changed)
        self.overlay_slider = QSlider(Qt.Orientation.Horizontal)
        self.overlay_slider.setRange(0, 100)
        self.overlay_slider.setValue(round(100 * OVERLAY_OPACITY))
        self.overlay_slider.setFixedWidth(70)
        self.overlay_slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.overlay_slider.setToolTip("opacity of the heat overlay")
        self.overlay_slider.valueChanged.connect(self._overlay_changed)
        row = QHBoxLayout()
        row.addWidget(QLabel("Bin"))
        row.addWidget(self.bin_combo, 1)
        row.addWidget(self.overlay_check)
        row.addWidget(self.overlay_slider)
        root.addLayout(row)

    def overlay_opacity(self) -> float:
        """The heat overlay's opacity as the dock sets it (0 when hidden)."""
        return self.overlay_slider.value() / 100 if self.overlay_check.isChecked() else 0.0

    def _overlay_changed(self, *_: Any) -> None:
        """Apply the Heat box and slider to the project's heat overlays."""
        shown = self.overlay_check.isChecked()
        self.overlay_slider.setEnabled(shown)
        for index, layers in self._layers.items():
            for layer in layers[1:]:  # [image, heat overlay]
                if layer in self.viewer.layers:
                    layer.opacity = self.overlay_slider.value() / 100
                    layer.visible = shown and index == self._shown_index

    def _build_block_view(self, root: QVBoxLayout) -> None:
        """The bin's progress, the block's description and its image."""
        self.progress_label = QLabel(say.NO_PROJECT_TITLE)
        font = self.progress_label.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.progress_label.setFont(font)
        self.progress_bar = ProgressStrip()
        self.stats_label = QLabel("")
        self.block_label = QLabel("")
        self.block_label.setWordWrap(True)
        # how certain each bin's average is, and the stop rule
        self.certainty_label = QLabel("")
        self.certainty_label.setWordWrap(True)
        self.certainty_label.setToolTip(
            "likely: 9 times in 10 the average over all the bin's blocks lies in this range, "
            "given the estimates so far"
        )
        root.addWidget(self.progress_label)
        root.addWidget(self.progress_bar)
        root.addWidget(self.stats_label)
        root.addWidget(self.certainty_label)
        root.addWidget(self.block_label)

        self.image_label = QLabel("")
        self.image_label.setFixedSize(IMAGE_SIDE, IMAGE_SIDE)
        self.image_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image_label.setStyleSheet("background: #202020; border: 2px solid #e6e600;")
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.image_label)
        row.addStretch(1)
        root.addLayout(row)

    def _build_estimate(self) -> QFormLayout:
        """The Cancer % row: typed entry, spin box and slider, kept in step."""
        self.entry = QLineEdit()
        self.entry.setPlaceholderText("type %, Enter")
        self.entry.setMaximumWidth(110)
        self.entry.installEventFilter(self)
        self.entry.textEdited.connect(self._entry_edited)
        self.spin = QSpinBox()
        self.spin.setRange(NO_VALUE, 100)
        self.spin.setSpecialValueText("–")  # shown at NO_VALUE: nothing typed yet
        self.spin.setValue(NO_VALUE)
        self.spin.setSingleStep(int(STEP_PCT))
        self.spin.setSuffix(" %")
        self.spin.valueChanged.connect(self._spin_changed)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 100)
        self.slider.setSingleStep(int(STEP_PCT))
        self.slider.setPageStep(10)
        self.slider.valueChanged.connect(self._slider_changed)
        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.entry)
        row.addWidget(self.spin)
        row.addWidget(self.slider, 1)
        form.addRow("Cancer %", row)
        return form

    def _build_buttons(self, root: QVBoxLayout) -> None:
        """Record, Skip, Undo; Prev, Next, Next bin (they never take the keyboard focus)."""
        self.record_button = QPushButton("Record (Enter)")
        self.record_button.clicked.connect(lambda: self.record())
        self.skip_button = QPushButton("Skip (S)")
        self.skip_button.clicked.connect(lambda: self.skip())
        self.undo_button = QPushButton("Undo (⌫)")
        self.undo_button.clicked.connect(lambda: self.undo())
        row = QHBoxLayout()
        for b in (self.record_button, self.skip_button, self.undo_button):
            row.addWidget(b)
        root.addLayout(row)
        self.prev_button = QPushButton("◀ Prev (P)")
        self.prev_button.clicked.connect(lambda: self.prev_block())
        self.next_button = QPushButton("Next (N) ▶")
        self.next_button.clicked.connect(lambda: self.next_block())
        self.bin_button = QPushButton("Next bin (B)")
        self.bin_button.clicked.connect(lambda: self.next_bin())
        row = QHBoxLayout()
        for b in (self.prev_button, self.next_button, self.bin_button):
            row.addWidget(b)
        root.addLayout(row)
        for b in (
            self.record_button,
            self.skip_button,
            self.undo_button,
            self.prev_button,
            self.next_button,
            self.bin_button,
        ):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)

    def _build_footer(self, root: QVBoxLayout) -> None:
        """The message line and the keys' help."""
        self.message = QLabel(say.START_HINT)
        self.message.setWordWrap(True)
        self.message.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        root.addWidget(self.message)
        keys = QLabel(KEYS_HELP)
        keys.setWordWrap(True)
        keys.setStyleSheet("color: #909090; font-size: 10px;")
        root.addWidget(keys)
        root.addStretch(1)

    # -- messages -------------------------------------------------------------------------------

    def _set_message(self, text: str, style: str) -> None:
        if style != self._message_style:  # restyling is slow: only when the kind changes
            self.message.setStyleSheet(style)
            self._message_style = style
        self.message.setText(text)

    def _error(self, text: str) -> None:
        self._set_message(f"⚠ {text}", ERROR_STYLE)

    def _info(self, text: str) -> None:
        self._set_message(text, INFO_STYLE)

    # -- opening --------------------------------------------------------------------------------

    def _browse_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Low-resolution labels of the slide",
            "",
            "Labels: napari-lsr or WSInfer (*.csv *.geojson *.json);;All files (*)",
        )
        if path:
            self.csv_edit.setText(path)

    def _labels_file_changed(self, text: str) -> None:
        """List a WSInfer file's classes in the drop-down, the tumour class chosen."""
        self.class_combo.clear()
        classes, chosen = say.labels_classes(text)
        self.class_combo.addItems(classes)
        self.class_combo.setEnabled(bool(classes))
        if chosen is not None:
            self.class_combo.setCurrentText(chosen)

    def labels_class(self) -> str | None:
        """The class chosen for a WSInfer labels file (None for other formats)."""
        if not self.class_combo.isEnabled():
            return None
        return self.class_combo.currentText() or None

    def open_project(self, folder: str | os.PathLike) -> bool:
        """Open a project folder and start reviewing; False (with a message) when it fails."""
        if not str(folder).strip():
            self._error(say.FOLDER_FIRST)
            return False
        try:
            project = Project.open(Path(str(folder).strip()).expanduser())
        except (FormatError, OSError) as exc:
            self._error(reason_first(exc))
            return False
        return self.set_project(project)

    def use_viewer_slide(self, labels_csv: str | os.PathLike) -> bool:
        """Review the slide layer open in the viewer with a low-res CSV (creates a project)."""
        # the napari-lsr reader's slide layers, and plain images napari's own reader opened
        slides = [layer for layer in self.viewer.layers if layer_slide_path(layer) is not None]
        if not slides:
            self._error(say.NO_SLIDE)
            return False
        active = self.viewer.layers.selection.active
        layer = active if active in slides else slides[0]
        if not str(labels_csv).strip():
            self._error(say.choose_labels_text(layer.name))
            return False
        self.state.slide = layer_slide_path(layer)  # the slide to review
        try:
            project = project_for_slide(
                self.state.slide, labels_csv, labels_class=self.labels_class()
            )
        except (ReviewError, FormatError, OSError) as exc:
            self._error(reason_first(exc))
            return False
        return self.set_project(project)

    def set_project(self, project: Project, annotator: str | None = None) -> bool:
        """Review ``project`` (shared with the other napari-lsr widgets of this viewer)."""
        self._close_project()
        if annotator:
            self.annotator_edit.setText(annotator)
        self.project = project
        self.path_edit.setText(str(project.folder))
        self.slides = SlideSet(project)
        self._resources["slides"] = self.slides
        self._resources["store"] = project.store
        self._populate_bins()
        annotator = self.annotator_edit.text().strip()
        if annotator:
            self.state.annotator = annotator
        self.state.project = project  # the other widgets follow
        try:
            self._blocks, self.labels_by_slide = load_blocks(project, self.slides)
        except ReviewError as exc:
            self._blocks, self.labels_by_slide = [], {}
            self._set_status_empty(say.NO_BLOCKS_TITLE)
            self._error(reason_first(exc))
            return False
        self.images = BlockImages(project, self.slides, IMAGE_SIDE)  # read at the size shown
        self._resources["images"] = self.images
        return self.start_session()

    def _on_project(self, project: Project | None) -> None:
        """A project opened in another widget: offered here (Open reviews it), the review
        on screen kept."""
        if self.project is None and project is not None:
            self.path_edit.setText(str(project.folder))

    def start_session(self) -> bool:
        """(Re)start the review with the annotator, K and seed in the widget."""
        if self.project is None:
            self._error(say.OPEN_FIRST)
            return False
        if not self._blocks:
            self._error(say.NO_PROJECT_BLOCKS)
            return False
        try:
            self.session = ReviewSession(
                self.project,
                self.annotator_edit.text(),
                self.k_spin.value(),
                self.seed_spin.value(),
                slides=self.slides,
                blocks=self._blocks,
                order=self.order,
            )
        except (ReviewError, SlideError, sqlite3.Error) as exc:
            self.session = None
            self._set_status_empty(say.NOT_REVIEWING_TITLE)
            self._error(reason_first(exc))
            return False
        self.state.annotator = self.session.annotator
        self._info(say.session_text(self.session, len(self.labels_by_slide)))
        self._show_current()
        if self.session.finished:
            self._info(say.ALL_DONE_REVISE)
        self.setFocus()
        return True

    def _settings_changed(self) -> None:
        s = self.session
        if s is None or self.project is None:
            return
        now = (
            self.annotator_edit.text().strip(),
            self.k_spin.value(),
            self.seed_spin.value(),
            self.order,
        )
        if now != (s.annotator, s.k, s.seed, s.order):
            self.start_session()

    @property
    def order(self) -> str:
        """The review order chosen in the dock (``guided`` or ``stratified``)."""
        return str(self.order_combo.currentData())

    def set_order(self, order: str) -> None:
        """Choose the review order (as a click on Order does) and restart the review."""
        self.order_combo.setCurrentIndex(ORDERS.index(order))
        self._order_changed()

    def _order_changed(self, *_: Any) -> None:
        self.k_spin.setEnabled(self.order == "stratified")
        self._settings_changed()
        self.setFocus()

    def _close_project(self) -> None:
        self.session = None
        for layer in self._own_layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._own_layers.clear()
        self._layers.clear()
        self._outline = None
        self._camera_set = None
        release_review(self._resources)
        self.images = None
        self.slides = None
        self.project = None

    def shutdown(self) -> None:
        """Stop the background threads and release the slides (the widget stays usable)."""
        self._close_project()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        self.shutdown()
        super().closeEvent(event)

    # -- bins and legend ------------------------------------------------------------------------

    def _populate_bins(self) -> None:
        bins = self.project.bins if self.project else None
        self.bin_combo.clear()
        while self.legend_layout.count():
            item = self.legend_layout.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self._legend_labels = []
        self._legend_bin = None
        if bins is None:
            return
        n = len(bins)
        per_row = (n + 1) // 2
        for z in range(n):
            swatch = QLabel()
            swatch.setFixedSize(12, 12)
            swatch.setStyleSheet(f"background: {bin_color(z, n)}; border: 1px solid #808080;")
            text = QLabel(bin_label(bins, z))
            font = text.font()
            font.setPointSizeF(font.pointSizeF() * 0.85)
            text.setFont(font)
            r, c = divmod(z, per_row)
            cell = QHBoxLayout()
            cell.setSpacing(2)
            cell.addWidget(swatch)
            cell.addWidget(text)
            cell.addStretch(1)
            self.legend_layout.addLayout(cell, r, c)
            self._legend_labels.append(text)
            self.bin_combo.addItem(f"{bin_label(bins, z)} %")
        title = QLabel(f"patch probability bins (%): {say.CERTAINTY_KEY}")
        title.setStyleSheet("font-size: 10px; color: #909090;")
        self.legend_layout.addWidget(title, 2, 0, 1, per_row)

    def _bin_chosen(self, index: int) -> None:
        self.goto_bin(index)
        self.setFocus()

    # -- actions --------------------------------------------------------------------------------

    def _need_block(self) -> bool:
        if self.session is None:
            self._error(say.OPEN_FIRST)
            return False
        if self.session.current is None:
            self._error(say.NO_BLOCK_ON_SCREEN)
            return False
        return True

    def record(self, value: str | float | None = None) -> int | None:
        """Commit an estimate for the block on screen (default: what is typed); its id."""
        if not self._need_block():
            return None
        block = self.session.current
        text = self.entry.text() if value is None else value
        try:
            pct = parse_percent(text)
        except ValueError as exc:
            self._error(reason_first(exc))
            return None
        try:
            eid = self.session.enter(pct)
        except (sqlite3.Error, OSError, ReviewError) as exc:
            self._error(f"Not recorded: {reason_first(exc)}")
            return None
        self.timings["committed"] = time.perf_counter()
        self._clear_entry()
        self._moved(say.recorded_text(pct, block))
        self.state.estimates_changed.emit()
        return eid

    def skip(self) -> int | None:
        """Skip the block on screen (recorded as a skip); a replacement block is drawn."""
        if not self._need_block():
            return None
        block = self.session.current
        try:
            eid = self.session.skip()
        except (sqlite3.Error, OSError, ReviewError) as exc:
            self._error(f"Not recorded: {reason_first(exc)}")
            return None
        self._clear_entry()
        self._moved(say.skipped_text(block))
        self.state.estimates_changed.emit()
        return eid

    def undo(self) -> ReviewBlock | None:
        """Undo the last entry of this session and show its block again."""
        if self.session is None:
            self._error(say.OPEN_FIRST)
            return None
        try:
            block = self.session.undo()
        except (sqlite3.Error, OSError) as exc:
            self._error(f"Undo failed: {reason_first(exc)}")
            return None
        if block is None:
            self._error(say.NOTHING_TO_UNDO)
            return None
        self._clear_entry()
        self._show_current()
        self._info(say.undone_text(block, self.session.undid_stored))
        self.state.estimates_changed.emit()
        return block

    def next_block(self) -> bool:
        if self.session is None:
            return False
        if not self.session.next():
            self._error(say.LAST_OF_BIN)
            return False
        self._show_current()
        self._info("")
        return True

    def prev_block(self) -> bool:
        if self.session is None:
            return False
        if not self.session.prev():
            self._error(say.FIRST_OF_BIN)
            return False
        self._show_current()
        self._info("")
        return True

    def next_bin(self) -> int | None:
        if self.session is None:
            return None
        z = self.session.next_bin()
        if z is None:
            self._error(say.NO_BIN)
            return None
        self._show_current()
        self._info(say.bin_text(self.session.bins, z))
        return z

    def goto_bin(self, z: int) -> bool:
        """Show bin ``z``; a message says so when it has no blocks."""
        if self.session is None:
            self._error(say.OPEN_FIRST)
            return False
        if not self.session.goto_bin(z):
            msg = say.empty_bin_text(self.session, z)
            self._update_status()
            self._error(msg)
            return False
        self._show_current()
        self._info(say.bin_text(self.session.bins, z))
        return True

    def step(self, delta: float) -> None:
        """Change the typed estimate by ``delta`` points (Up/Down), within 0-100."""
        self._set_value(say.stepped(self.entry.text(), self.spin.value(), delta))

    def _moved(self, what: str) -> None:
        s = self.session
        prev_bin = s.undo_stack[-1].block.bin if s.undo_stack else None
        self._show_current()
        self._info(say.moved_text(what, s, prev_bin))

    # -- the value controls ---------------------------------------------------------------------

    def _set_value(self, value: float) -> None:
        self.entry.setText(f"{value:g}")
        self._sync_controls(value)

    def _clear_entry(self) -> None:
        """Empty the entry, and the spin box and slider with it (no value carried over)."""
        self.entry.clear()
        self._sync_controls(None)

    def _sync_controls(self, value: float | None) -> None:
        for w in (self.spin, self.slider):
            w.blockSignals(True)
            w.setValue(int(round(value)) if value is not None else w.minimum())
            w.blockSignals(False)

    def _type_char(self, char: str) -> None:
        """A digit (or ``.``, ``,``, ``%``) typed with the dock focused: appended to the entry;
        a value outside 0-100 empties the spin box and says so at once (Enter refuses it)."""
        text = self.entry.text() + char
        self.entry.setText(text)
        self._entry_edited(text)
        error = say.typed_error(text)
        if error is not None:
            self._error(error)

    def _entry_edited(self, text: str) -> None:
        """The spin box and slider show what the entry holds; "–" when that is no value."""
        follow, value = say.entry_controls(text)
        if follow:
            self._sync_controls(value)

    def _spin_changed(self, value: int) -> None:
        if value == NO_VALUE:
            self.entry.clear()
            self.slider.blockSignals(True)
            self.slider.setValue(0)
            self.slider.blockSignals(False)
            return
        self.entry.setText(str(value))
        self.slider.blockSignals(True)
        self.slider.setValue(value)
        self.slider.blockSignals(False)

    def _slider_changed(self, value: int) -> None:
        self.entry.setText(str(value))
        self.spin.blockSignals(True)
        self.spin.setValue(value)
        self.spin.blockSignals(False)

    # -- keys -----------------------------------------------------------------------------------

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt)
        if self._handle_key(event):
            event.accept()
            return
        super().keyPressEvent(event)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt)
        if (
            obj in self._fields_filtered()
            and event.type() == QEvent.Type.KeyPress
            and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        ):
            obj.event(event)  # the field does what Enter means there (open, use, set)...
            event.accept()  # ...and the key goes no further (Qt passes on an ignored key)
            return True
        if obj is self.entry and event.type() == QEvent.Type.KeyPress:
            key = event.key()
            ctrl = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                if self.record() is not None:
                    self.setFocus()
                return True
            if key in (Qt.Key.Key_Up, Qt.Key.Key_Down):
                self.step(STEP_PCT if key == Qt.Key.Key_Up else -STEP_PCT)
                return True
            if ctrl and key == Qt.Key.Key_Z:
                self.undo()
                return True
            if key == Qt.Key.Key_Escape:
                self._clear_entry()
                self.setFocus()
                return True
        return super().eventFilter(obj, event)

    def _fields_filtered(self) -> tuple[QWidget, ...]:
        return getattr(self, "_text_fields", ())

    def _handle_key(self, event: QKeyEvent) -> bool:
        key = event.key()
        mods = event.modifiers()
        if mods & Qt.KeyboardModifier.ControlModifier:
            if key == Qt.Key.Key_Z:
                self.undo()
                return True
            return False
        if mods & (Qt.KeyboardModifier.AltModifier | Qt.KeyboardModifier.MetaModifier):
            return False
        if QApplication.focusWidget() in self._text_fields:
            return False  # Enter in the name or path field is not an estimate
        text = event.text()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.record()
        elif text and text in "0123456789.,%":
            self._type_char(text)
        elif key == Qt.Key.Key_Up:
            self.step(STEP_PCT)
        elif key == Qt.Key.Key_Down:
            self.step(-STEP_PCT)
        elif key == Qt.Key.Key_Backspace:
            if self.entry.text():
                self.entry.setText(self.entry.text()[:-1])
                self._entry_edited(self.entry.text())  # the spin box and slider follow
            else:
                self.undo()
        elif key == Qt.Key.Key_Escape:
            self._clear_entry()
        elif key == Qt.Key.Key_S:
            self.skip()
        elif key == Qt.Key.Key_N:
            self.next_block()
        elif key == Qt.Key.Key_P:
            self.prev_block()
        elif key == Qt.Key.Key_B:
            self.next_bin()
        else:
            return False
        return True

    def _on_focus_changed(self, old: QWidget | None, new: QWidget | None) -> None:
        """When the keyboard leaves the dock (a click or a pan on the canvas) while a block
        waits for its estimate, say where the keys go now and how to get them back."""
        try:
            inside_old = old is not None and (old is self or self.isAncestorOf(old))
            inside_new = new is not None and (new is self or self.isAncestorOf(new))
        except RuntimeError:  # the widget is being deleted
            return
        if inside_new and self._focus_hint_shown:
            self._focus_hint_shown = False
            if self.message.text() == FOCUS_HINT:
                self._info("")
        elif inside_old and not inside_new and _is_canvas(new):
            if self.session is not None and self.session.current is not None:
                self._focus_hint_shown = True
                self._info(FOCUS_HINT)

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        self.setFocus()  # a click anywhere on the widget gives it the keys
        super().mousePressEvent(event)

    # -- showing a block ------------------------------------------------------------------------

    def _set_status_empty(self, title: str) -> None:
        self.progress_label.setText(title)
        self.progress_bar.setValue(0)
        self.stats_label.setText("")
        self.certainty_label.setText("")
        self.block_label.setText("")
        self.image_label.clear()

    def _update_status(self) -> None:
        st = say.review_status(self.session)
        if st is None:
            self._set_status_empty(say.NO_BLOCKS_TITLE)
            return
        self.progress_label.setText(st.title)
        self.progress_bar.setMaximum(max(1, st.target))
        self.progress_bar.setValue(st.done)
        self.stats_label.setText(st.stats)
        self.certainty_label.setText(f"{st.certainty} {st.stop}")
        self.certainty_label.setStyleSheet(INFO_STYLE if st.good_enough else "")
        for label, (text, color, tip) in zip(self._legend_labels, st.legend):
            label.setText(text)
            label.setStyleSheet(f"color: {color};")
            label.setToolTip(tip)
        for z, text in enumerate(st.bin_items):
            self.bin_combo.setItemText(z, text)
        self.bin_combo.blockSignals(True)
        self.bin_combo.setCurrentIndex(st.current_bin)
        self.bin_combo.blockSignals(False)
        if self._legend_bin != st.current_bin:
            self._legend_bin = st.current_bin
            for z, label in enumerate(self._legend_labels):
                font = label.font()
                font.setBold(z == st.current_bin)
                font.setUnderline(z == st.current_bin)
                label.setFont(font)
        self.block_label.setText(st.block)

    def _show_current(self) -> None:
        s = self.session
        block = s.current if s is not None else None
        if block is None:
            self.image_label.clear()
            self._update_status()
            resting = s.resting_block if s is not None else None
            if resting is not None:  # every block reviewed: the slide still on the canvas
                self._move_camera(resting)
            self.block_shown.emit(None)
            return
        try:
            rgb = self.images.get(block)
        except SlideError as exc:
            self._error(reason_first(exc))
            rgb = None
        if rgb is not None:
            self.image_label.setPixmap(rgb_pixmap(rgb, IMAGE_SIDE))
        self.timings["image"] = time.perf_counter()
        self._update_status()
        self._move_camera(block)
        self.timings["camera"] = time.perf_counter()
        self.images.submit(self.project.store.record_view, block.id, s.annotator)
        self.images.prefetch(s.peek_next())
        # The outline follows in the next turn of the event loop: a napari layer update
        # costs tens of ms, and the canvas repaints after this handler anyway.
        if not self._outline_pending:
            self._outline_pending = True
            QTimer.singleShot(0, self._update_outline)
        self.block_shown.emit(block)

    def _update_outline(self) -> None:
        self._outline_pending = False
        block = self.session.current if self.session is not None else None
        if block is not None and self.slides is not None:
            self._move_outline(block)
        self.timings["outline"] = time.perf_counter()

    # -- the viewer -----------------------------------------------------------------------------

    def _ensure_layers(self, index: int) -> None:
        """The slide and its heat overlay in the viewer; other slides of the project hidden."""
        layers = self._layers.get(index)
        if layers is None or any(layer not in self.viewer.layers for layer in layers):
            entry = self.project.slides[index]
            slide = self.slides[index]
            image = next(
                (
                    layer
                    for layer in self.viewer.layers
                    if getattr(layer, "rgb", False)
                    and same_file((layer.metadata.get("napari_lsr") or {}).get("path"), entry.path)
                ),
                None,
            )
            if image is None:
                data, meta, _ = slide_layer_data(slide)
                image = self.viewer.add_image(data, **meta)
                self._own_layers.append(image)
            layers = [image]
            labels = self.labels_by_slide.get(index)
            if labels is not None:
                data, meta, _ = labels_layer_data(labels, slide, self.project.bins)
                meta["opacity"] = self.overlay_slider.value() / 100
                overlay = self.viewer.add_labels(data, **meta)
                self._own_layers.append(overlay)
                layers.append(overlay)
            self._layers[index] = layers
            self._raise_outline()
        self.state.slide = self.project.slides[index].path  # the slide on screen
        self._shown_index = index
        for i, group in self._layers.items():
            for k, layer in enumerate(group):  # [image, heat overlay]: the overlay as set
                want = i == index and (k == 0 or self.overlay_check.isChecked())
                if layer.visible != want:
                    layer.visible = want

    def _raise_outline(self) -> None:
        if self._outline is not None and self._outline in self.viewer.layers:
            self.viewer.layers.remove(self._outline)
            self._outline = None

    def _move_camera(self, block: ReviewBlock) -> None:
        self._ensure_layers(block.slide)
        unit = self.slides[block.slide].mpp or 1.0
        camera = self.viewer.camera
        camera.center = world_center(block, unit)
        zoom = camera_zoom(block, unit, tuple(self.viewer.canvas.size))
        if not np.isclose(camera.zoom, zoom):
            camera.zoom = zoom
        self._camera_set = (tuple(camera.center), camera.zoom)

    def _on_canvas_resize(self, _event: Any = None) -> None:
        """Keep the block a third of the canvas when the canvas changes size, unless the
        annotator has moved the camera since."""
        s = self.session
        block = s.current if s is not None else None
        if block is None or self.slides is None or self._camera_set is None:
            return
        camera = self.viewer.camera
        center, zoom = self._camera_set
        if np.allclose(camera.center, center) and np.isclose(camera.zoom, zoom):
            self._move_camera(block)

    def _move_outline(self, block: ReviewBlock) -> None:
        """The yellow outline: a fixed rectangle the size of the block, moved by translate
        (cheaper than replacing the shape)."""
        slide = self.slides[block.slide]
        unit = slide.mpp or 1.0
        rect = world_box(block, unit)
        origin = rect[0]
        shape = rect - origin
        outline = self._outline
        if outline is None or outline not in self.viewer.layers:
            outline = self._outline = self.viewer.add_shapes(
                [shape],
                shape_type="rectangle",
                edge_color=OUTLINE_COLOR,
                face_color="transparent",
                edge_width=max(block.width, block.height) * unit / 40,
                name=OUTLINE_NAME,
                units="um" if slide.mpp else "pixel",
            )
            self._own_layers.append(outline)
            image = self._layers.get(block.slide, [None])[0]
            if image is not None and image in self.viewer.layers:
                self.viewer.layers.selection.active = image  # keep the slide's controls up
        elif not np.allclose(outline.data[0], shape):
            outline.data = [shape]
            outline.edge_width = max(block.width, block.height) * unit / 40
            outline.edge_color = OUTLINE_COLOR
        outline.translate = tuple(origin)
