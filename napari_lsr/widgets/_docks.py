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
    fit_window(viewer, fill_height=True)  # the whole block review in view, within the screen
    return widgets


#: Marks the napari-lsr dock widgets (a class attribute of each), for ``tab_with_open_docks``.
DOCK_MARK = "napari_lsr_dock"


def tab_later(widget: Any, viewer: Any) -> None:
    """Once ``widget`` is docked (napari docks it after making it), tab it with the
    napari-lsr docks already open (``tab_with_open_docks``)."""
    import weakref

    from qtpy.QtCore import QTimer

    ref = weakref.ref(widget)

    def later() -> None:
        w = ref()
        if w is not None:
            try:
                tab_with_open_docks(w, viewer)
            except RuntimeError:  # deleted meanwhile
                pass

    QTimer.singleShot(0, later)


def tab_with_open_docks(widget: Any, viewer: Any = None) -> bool:
    """Tab ``widget``'s dock with the other napari-lsr docks of its area and bring it to the
    front, so that a dock added from the Plugins menu never stacks below the others (where
    each gets a few rows and the window grows off the screen); then fit the window to the
    screen. False when there is nothing to do (not docked, already tabbed, no other dock)."""
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    dock = widget.parentWidget()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    if dock is None or dock.isFloating():
        return False
    window = dock.parentWidget()
    while window is not None and not isinstance(window, QMainWindow):
        window = window.parentWidget()
    if window is None or window.tabifiedDockWidgets(dock):
        return False
    area = window.dockWidgetArea(dock)
    others = [
        d
        for d in window.findChildren(QDockWidget)
        if d is not dock
        and not d.isFloating()
        and not d.isHidden()
        and window.dockWidgetArea(d) == area
        and _holds_lsr_widget(d)
    ]
    if not others:
        return False
    window.tabifyDockWidget(others[-1], dock)
    dock.show()
    dock.raise_()
    if viewer is not None:
        fit_window(viewer)
    return True


def _holds_lsr_widget(dock: Any) -> bool:
    from qtpy.QtWidgets import QWidget

    inner = dock.widget()
    if inner is None:
        return False
    return getattr(inner, DOCK_MARK, False) or any(
        getattr(w, DOCK_MARK, False) for w in inner.findChildren(QWidget)
    )


def fit_window(viewer: Any, fill_height: bool = False) -> None:
    """Shrink the main window to the screen's available size when it has grown past it;
    with ``fill_height``, make it as tall as the screen allows (the docks' contents then
    have all the room there is). The window is found above the docks: with none open,
    nothing happens."""
    from ._napari import main_window

    qt_window = main_window(viewer)
    screen = qt_window.screen() if qt_window is not None and hasattr(qt_window, "screen") else None
    if screen is None:
        return
    avail = screen.availableGeometry()
    frame = qt_window.frameGeometry().size() - qt_window.size()  # title bar and borders
    width = min(qt_window.width(), avail.width() - frame.width())
    height = min(qt_window.height(), avail.height() - frame.height())
    if fill_height:
        height = avail.height() - frame.height()
    if (width, height) != (qt_window.width(), qt_window.height()):
        qt_window.resize(width, height)
