"""Small Qt pieces the dock widgets share: the "Project [path] Browse… Open" row, and the
confirmation asked before a checkpoint that is not plain data is opened."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

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


def ask_trust(parent: QWidget | None, path: Path, needs: list[str]) -> bool:
    """Ask whether to open ``path``, a checkpoint that is not plain data, with the unsafe
    loader (which runs what the file names). Tests replace this function."""
    from qtpy.QtWidgets import QMessageBox

    calls = ", ".join(needs[:3]) + (", ..." if len(needs) > 3 else "")
    answer = QMessageBox.question(
        parent,
        "napari-lsr: open a checkpoint that is not plain data?",
        f"{path}\n\nis not a plain napari-lsr checkpoint: opening it would call {calls}, "
        "which can run any code with your rights. Older napari-lsr checkpoints can look like "
        "this; a file crafted by someone else does too.\n\nOpen it only if you trust its "
        "source. (Resuming training saves it in the safe format.)",
        QMessageBox.StandardButton.Open | QMessageBox.StandardButton.Cancel,
        QMessageBox.StandardButton.Cancel,
    )
    return answer == QMessageBox.StandardButton.Open


def vet_checkpoint(
    parent: QWidget | None, path: str | os.PathLike, show_error: Callable[[str], object]
) -> bool:
    """True when ``path`` may be opened: a plain checkpoint, or one the user trusts after the
    confirmation dialog (``ask_trust``; then ``training.trust_checkpoint``). Otherwise the
    one-line refusal goes to ``show_error`` and nothing in the file has run."""
    from ..training import UntrustedCheckpoint, checkpoint_needs_trust, trust_checkpoint

    path = Path(path)
    needs = checkpoint_needs_trust(path)
    if not needs:
        return True
    if ask_trust(parent, path, needs):
        trust_checkpoint(path)
        return True
    show_error(str(UntrustedCheckpoint(path, needs)))
    return False
