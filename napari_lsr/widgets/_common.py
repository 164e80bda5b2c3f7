"""Small Qt pieces the dock widgets share: the "Project [path] Browse… Open" row, the
confirmation asked before a checkpoint that is not plain data is opened, and error messages
worded reason first (``reason_first``), so a toast cut short still says what went wrong."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)


def layer_slide_path(layer: object) -> Path | None:
    """The slide file an RGB image layer shows: the napari-lsr reader's metadata, else the
    file napari's own reader opened it from (a plain PNG/JPEG/TIFF); None for other layers
    (the plugin's overlays, images made in memory)."""
    if not getattr(layer, "rgb", False):
        return None
    meta = (getattr(layer, "metadata", None) or {}).get("napari_lsr") or {}
    if meta.get("kind"):
        return None
    if meta.get("path"):
        return Path(meta["path"])
    source = getattr(getattr(layer, "source", None), "path", None)
    if source and Path(source).is_file():
        from ..io.slide import OPENSLIDE_EXTENSIONS, PLAIN_EXTENSIONS

        if Path(source).suffix.lower() in PLAIN_EXTENSIONS + OPENSLIDE_EXTENSIONS:
            return Path(source)
    return None


#: How an error message is drawn in every dock widget: one red, bold.
ERROR_STYLE = "color: #ff6b6b; font-weight: bold;"


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
    from ..learn.training import UntrustedCheckpoint, checkpoint_needs_trust, trust_checkpoint

    path = Path(path)
    needs = checkpoint_needs_trust(path)
    if not needs:
        return True
    if ask_trust(parent, path, needs):
        trust_checkpoint(path)
        return True
    show_error(str(UntrustedCheckpoint(path, needs)))
    return False


#: A message that starts (after an optional prefix such as "cannot start training: ") with a
#: path, maybe followed by the row and column of FormatError, then ": reason".
_PATH_FIRST = re.compile(
    r"^(?P<pre>(?:[^/\\:]+: )*?)"
    r"(?P<path>(?:[A-Za-z]:[\\/]|~?/)[^:\n]*?)"
    r"(?P<where>(?:, row \d+ \(line \d+\))?(?:, column '[^']*')?): "
    r"(?P<reason>.+)$"
)


def reason_first(error: BaseException | str) -> str:
    """One line that leads with the reason and ends with the path (``reason — path``).

    Messages here often start with a long path (FormatError's ``path, row r: reason``,
    ``path: no such file``); a toast cut short then shows only the path. Messages without a
    leading path are returned as their first line.
    """
    from ..io.formats import FormatError

    if isinstance(error, FormatError):
        return _format_error_text(error)
    cause = getattr(error, "__cause__", None)
    text = str(error).strip() if isinstance(error, str) else str(error).strip()
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    if isinstance(cause, FormatError) and text.endswith(str(cause)):
        return text[: len(text) - len(str(cause))] + _format_error_text(cause)
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.strerror} — {error.filename}"
    text = text.splitlines()[0] if text else text
    m = _PATH_FIRST.match(text)
    if m is None:
        return text
    where = m["where"].lstrip(", ")
    return f"{m['pre']}{m['reason']}{f' ({where})' if where else ''} — {m['path']}"


def _format_error_text(error: object) -> str:
    where = []
    if getattr(error, "row", None) is not None:
        where.append(f"row {error.row} (line {error.row + 1})")
    if getattr(error, "column", None) is not None:
        where.append(f"column {error.column!r}")
    extra = f" ({', '.join(where)})" if where else ""
    return f"{error.reason}{extra} — {error.path}"


def scroll_contents(widget: QWidget) -> QScrollArea:
    """Move what ``widget``'s vertical layout holds into a scroll area inside it, so its dock
    can be shorter than its contents (stacked docks then fit the screen; what does not fit
    scrolls). Stretch factors are kept; the scroll area never scrolls sideways."""
    old = widget.layout()
    inner = QWidget()
    new = QVBoxLayout(inner)
    new.setContentsMargins(old.contentsMargins())
    new.setSpacing(old.spacing())
    stretches = [old.stretch(i) for i in range(old.count())]
    items = [old.takeAt(0) for _ in range(old.count())]
    for item, stretch in zip(items, stretches):
        if item.widget() is not None:
            new.addWidget(item.widget(), stretch)
        elif item.layout() is not None:
            new.addLayout(item.layout(), stretch)
        else:
            new.addItem(item)
    scroll = QScrollArea(widget)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(inner)
    old.setContentsMargins(0, 0, 0, 0)
    old.addWidget(scroll)
    widget.setMinimumWidth(max(widget.minimumWidth(), inner.minimumSizeHint().width()))
    return scroll
