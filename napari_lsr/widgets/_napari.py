"""napari's window as the widgets reach it: by public routes, but one private call kept here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QApplication, QMainWindow, QWidget

#: Substrings of GL_RENDERER that mean software rendering.
SOFTWARE_GL = ("llvmpipe", "softpipe", "swrast", "swiftshader", "software", "basic render")


def main_window(viewer: Any) -> QMainWindow | None:
    """napari's Qt main window, found above a docked widget (``Window.dock_widgets``, napari's
    documented route to a dock's Qt parents); None while no widget is docked."""
    for widget in viewer.window.dock_widgets.values():
        w = getattr(widget, "native", widget)
        while w is not None and not isinstance(w, QMainWindow):
            w = w.parentWidget()
        if w is not None:
            return w
    return None


def _gl_strings() -> tuple[str, str]:
    from vispy.gloo import gl

    return str(gl.glGetParameter(gl.GL_RENDERER)), str(gl.glGetParameter(gl.GL_VERSION))


def canvas_gl(widget: QWidget) -> tuple[str, str]:
    """GL_RENDERER and GL_VERSION of napari's canvas: of an OpenGL widget in ``widget``'s
    window (else in any window), else, before one has drawn, of a new context as Qt makes
    them here; ("", "") when it cannot tell."""
    try:
        from qtpy.QtGui import QOffscreenSurface, QOpenGLContext
        from qtpy.QtOpenGLWidgets import QOpenGLWidget

        for window in [widget.window(), *QApplication.topLevelWidgets()]:
            for canvas in window.findChildren(QOpenGLWidget):
                context = canvas.context()
                if context is not None and context.isValid():
                    canvas.makeCurrent()
                    return _gl_strings()
        surface = QOffscreenSurface()
        surface.create()
        context = QOpenGLContext()
        if not (context.create() and context.makeCurrent(surface)):
            return "", ""
        try:
            return _gl_strings()
        finally:
            context.doneCurrent()
    except Exception:
        return "", ""


def software_opengl(widget: QWidget) -> bool:
    """Whether napari's canvas renders with software OpenGL (False when it cannot tell)."""
    renderer = canvas_gl(widget)[0].lower()
    return any(k in renderer for k in SOFTWARE_GL)


# napari has no public API to list a task of one's own in its window (0.9: the private
# ``Window._register_task_status``; the public ``create_worker`` lists only the workers it
# makes, worded after their function, and in ``current_viewer()``). The private calls stay
# here; where they fail, the widgets' own hooks (closeEvent, aboutToQuit) still stop the run.


def _window(viewer: Any) -> Any:
    """The viewer's window itself: a widget made from the Plugins menu gets napari's
    ``PublicOnlyProxy`` of the viewer, which warns (FutureWarning) on every private call."""
    window = viewer.window
    return getattr(window, "__wrapped__", window)


def register_task(viewer: Any, provider: str, what: str, cancel: Callable[[], Any]) -> Any:
    """List a busy task in the viewer's window, so closing it asks first and then calls
    ``cancel``; the task's id, or None where napari does not allow it."""
    try:
        from napari.utils.task_status import Status

        return _window(viewer)._register_task_status(
            provider, Status.BUSY, what, cancel_callback=cancel
        )
    except Exception:
        return None


def end_task(viewer: Any, task_id: Any, status: str) -> None:
    """Mark a task of ``register_task`` done, cancelled or (any other status) failed."""
    if task_id is None:
        return
    try:
        from napari.utils.task_status import Status

        s = {"done": Status.COMPLETED, "cancelled": Status.CANCELLED}.get(status, Status.FAILED)
        _window(viewer)._update_task_status(task_id, s, status)
    except Exception:
        pass
