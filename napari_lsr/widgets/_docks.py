"""Open the napari-lsr dock widgets together so they fit the screen.

Stacked one above the other, four docks need about 2000 px of height and napari grows the
window past the screen (Block review then shrinks to a few rows). ``open_docks`` adds them
as tabs of one dock area instead (Block review in front), and ``fit_window`` keeps the window
within the screen's available height, so the block image and the Record/Skip/Undo buttons
stay in view at 1366x768.
"""

from __future__ import annotations

import sys
from typing import Any

#: The dock widgets ``make demo`` opens, Block review first (the tab in front).
DOCKS = ("Block review", "Prior table", "Training", "Comparison")


def open_docks(viewer: Any, project: Any = None, keys: tuple[str, ...] = DOCKS) -> dict[str, Any]:
    """Add the napari-lsr docks named ``keys`` as tabs (the first in front), give each the
    project (when it has ``set_project``), and fit the window to the screen; the widgets.

    A widget that fails to open is reported on stderr and the others still open.
    """
    window = viewer.window
    widgets: dict[str, Any] = {}
    docks: dict[str, Any] = {}
    for i, key in enumerate(keys):
        try:
            dock, widget = window.add_plugin_dock_widget("napari-lsr", key, tabify=i > 0)
        except Exception as exc:  # a widget that fails must not hide the others
            print(f"could not open the {key} widget: {exc}", file=sys.stderr)
            continue
        widgets[key], docks[key] = widget, dock
        setter = getattr(widget, "set_project", None)
        if project is not None and callable(setter):
            setter(project)
    if keys and keys[0] in docks:
        from qtpy.QtCore import QTimer

        front = docks[keys[0]]
        front.raise_()  # the first tab in front, now and once the tabs are laid out
        QTimer.singleShot(0, front.raise_)
    fit_window(viewer)
    return widgets


def fit_window(viewer: Any) -> None:
    """Shrink the main window to the screen's available size when it has grown past it
    (the window is found above the docks: with none open, nothing happens)."""
    from ._napari import main_window

    qt_window = main_window(viewer)
    screen = qt_window.screen() if qt_window is not None and hasattr(qt_window, "screen") else None
    if screen is None:
        return
    avail = screen.availableGeometry()
    frame = qt_window.frameGeometry().size() - qt_window.size()  # title bar and borders
    width = min(qt_window.width(), avail.width() - frame.width())
    height = min(qt_window.height(), avail.height() - frame.height())
    if (width, height) != (qt_window.width(), qt_window.height()):
        qt_window.resize(width, height)
