"""The training dock's Data group: the project row, the slides to train on, the prior choice."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QWidget,
)

from ..learn.run import SlideSource

if TYPE_CHECKING:
    from ..io.project import Project

#: Where a slide layer's labels CSV is looked for beside the slide, ``{stem}`` replaced.
LABEL_CANDIDATES = ("{stem}_lowres.csv", "{stem}_labels.csv", "{stem}.csv")


def labels_for(slide: Path, project: Project | None) -> Path | None:
    """A slide's low-resolution labels CSV: the project's entry for it, else a file beside it
    named after it (``LABEL_CANDIDATES``); None when there is neither."""
    key = os.path.normcase(str(slide.resolve()))
    if project is not None:
        for e in project.slides:
            if os.path.normcase(str(e.path.resolve())) == key:
                return e.labels
    for pattern in LABEL_CANDIDATES:
        cand = slide.with_name(pattern.format(stem=slide.stem))
        if cand.is_file():
            return cand
    return None


class SlideList(QListWidget):
    """The slides to train on (``SlideSource``, checkable): the project's, the slide layers',
    and files added; double-clicking one chooses its labels CSV."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMaximumHeight(62)
        self.setToolTip(
            "Slides to train on: the project's, and slide layers open in the viewer.\n"
            "Double-click a slide to choose its low-resolution labels CSV."
        )
        self.itemDoubleClicked.connect(self._choose_labels)

    def source(self, item: QListWidgetItem) -> SlideSource:
        return item.data(Qt.ItemDataRole.UserRole)

    @staticmethod
    def _item_text(s: SlideSource) -> str:
        labels = s.labels.name if s.labels else "no labels: double-click to choose"
        where = "project" if s.origin == "project" else "layer"
        return f"{Path(s.slide).stem}  ({where}; {labels})"

    def add_source(self, source: SlideSource, checked: bool, replace: bool = False) -> None:
        """List a slide (checked if asked and it has labels); one already listed is kept, or
        with ``replace`` takes this entry."""
        for i in range(self.count()):
            item = self.item(i)
            if self.source(item).key == source.key:
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
        self.addItem(item)

    def checked(self) -> list[SlideSource]:
        """The checked slides."""
        out = []
        for i in range(self.count()):
            item = self.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(self.source(item))
        return out

    def _choose_labels(self, item: QListWidgetItem) -> None:
        s = self.source(item)
        path, _ = QFileDialog.getOpenFileName(
            self.window(),
            f"Low-resolution labels for {Path(s.slide).name}",
            str(Path(s.slide).parent),
            "CSV (*.csv)",
        )
        if path:
            s.labels = Path(path)
            item.setText(self._item_text(s))
            item.setCheckState(Qt.CheckState.Checked)


class PriorCombo(QComboBox):
    """The prior p(c|z) to train with: the project's prior.csv, the Prior table widget's
    current table, the paper's Table 1, or a CSV file (chosen in a dialog)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setToolTip(
            "p(c|z): the project's prior.csv, the Prior table widget's current table, "
            "a CSV file, or the paper's Table 1"
        )
        self.activated.connect(self._activated)
        self._folder = ""  # where the CSV file dialog starts: the project's folder

    def fill(self, project: Project | None) -> None:
        """The choices for ``project``, keeping the current one where it is still offered
        (else the project's prior, else the paper's)."""
        keep = self.currentData()
        self.clear()
        self._folder = str(project.folder) if project is not None else ""
        if project is not None and project.prior_path is not None:
            if project.prior_path.exists():
                self.addItem(f"project: {project.prior_path.name}", f"file|{project.prior_path}")
        self.addItem("Prior table widget (current table)", "widget|")
        self.addItem("paper Table 1", "paper|")
        self.addItem("CSV file…", "choose|")
        idx = self.findData(keep) if keep else -1
        if idx < 0:  # the project's prior, else the paper's
            idx = 0 if self.choice(0)[0] == "file" else 1
        self.setCurrentIndex(idx)

    def choice(self, index: int) -> tuple[str, str]:
        """(kind, value) of a prior-list entry: file|PATH, widget|, paper| or choose|."""
        data = self.itemData(index) if index >= 0 else None
        kind, _, value = (data or "paper|").partition("|")
        return kind, value

    def _activated(self, index: int) -> None:
        kind, _ = self.choice(index)
        if kind != "choose":
            return
        path, _ = QFileDialog.getOpenFileName(
            self.window(), "Prior p(c|z)", self._folder, "CSV (*.csv)"
        )
        if path:
            self.set_file(path)
        else:
            self.setCurrentIndex(0)

    def set_file(self, path: str | os.PathLike) -> None:
        """Use a prior CSV file (added to the list and selected)."""
        data = f"file|{Path(path)}"
        idx = self.findData(data)
        if idx < 0:
            self.insertItem(0, f"file: {Path(path).name}", data)
            idx = 0
        self.setCurrentIndex(idx)

    def set_choice(self, kind: str) -> None:
        """Select ``project``, ``widget`` or ``paper``."""
        for i in range(self.count()):
            k, _ = self.choice(i)
            if k == kind or (kind == "project" and self.itemText(i).startswith(kind)):
                self.setCurrentIndex(i)
                return
        raise ValueError(f"no {kind} prior to choose")


class DataGroup(QGroupBox):
    """The Data group: the project (and the button that opens one), slides, prior."""

    #: The controls the dock widget shows as its own attributes (scripts and tests use them).
    CONTROLS = ("project_label", "project_btn", "slide_list", "add_slide_btn", "prior_combo")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Data", parent)
        g = QGridLayout(self)
        self.project_label = QLabel("no project")
        self.project_label.setWordWrap(True)
        self.project_btn = QPushButton("Project…")
        self.project_btn.setToolTip("Open a napari-lsr project folder (with project.toml)")
        g.addWidget(QLabel("Project"), 0, 0)
        g.addWidget(self.project_label, 0, 1)
        g.addWidget(self.project_btn, 0, 2)
        self.slide_list = SlideList()
        self.add_slide_btn = QPushButton("Add…")
        self.add_slide_btn.setToolTip("Add a slide file and its low-resolution labels CSV")
        g.addWidget(QLabel("Slides"), 1, 0, Qt.AlignmentFlag.AlignTop)
        g.addWidget(self.slide_list, 1, 1)
        g.addWidget(self.add_slide_btn, 1, 2, Qt.AlignmentFlag.AlignTop)
        self.prior_combo = PriorCombo()
        g.addWidget(QLabel("Prior"), 2, 0)
        g.addWidget(self.prior_combo, 2, 1, 1, 2)
        g.setColumnStretch(1, 1)
