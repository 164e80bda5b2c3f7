"""Small Qt pieces the dock widgets share: the "Project [path] Browse… Open" row."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget


def project_row(
    parent: QWidget, placeholder: str, open_project: Callable[[str], object]
) -> tuple[QHBoxLayout, QLineEdit, QPushButton]:
    """A row to type or browse to a project folder; Enter or Open calls ``open_project``."""
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    browse = QPushButton("Browse…")
    open_button = QPushButton("Open")

    def browse_folder() -> None:
        folder = QFileDialog.getExistingDirectory(parent, "Open a napari-lsr project folder")
        if folder:
            edit.setText(folder)
            open_project(folder)

    browse.clicked.connect(browse_folder)
    open_button.clicked.connect(lambda: open_project(edit.text()))
    edit.returnPressed.connect(open_button.click)
    row = QHBoxLayout()
    row.addWidget(QLabel("Project"))
    row.addWidget(edit, 1)
    row.addWidget(browse)
    row.addWidget(open_button)
    return row, edit, open_button
