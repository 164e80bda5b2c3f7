"""What the napari-lsr widgets of one viewer share: project, prior, and who to tell of changes."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .formats import FormatError, Prior
from .project import PROJECT_FILE, Project, SlideEntry
from .review import ReviewError
from .slide import SlideError

# -- projects from what is in the viewer --------------------------------------------------------


def project_for_slide(
    slide_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    folder: str | os.PathLike | None = None,
    labels_class: str | None = None,
) -> Project:
    """Open (or create) a project for one slide and its low-res labels (any format
    ``interop.read_lowres`` reads; ``labels_class`` picks a WSInfer file's class).

    The folder defaults to ``<slide folder>/<slide name>_lsr``. The labels are read first:
    a file that cannot be used raises ReviewError and nothing is written. An existing project
    there is opened with the slide bound to the labels chosen now (project.toml follows the
    last choice, so a bad file chosen before never sticks).
    """
    slide_path = Path(slide_path).resolve()
    labels_path = Path(labels_path).resolve()
    if not labels_path.exists():
        raise ReviewError(f"no such low-res CSV: {labels_path}")
    folder = Path(folder) if folder else slide_path.parent / f"{slide_path.stem}_lsr"
    existing = Project.open(folder) if (folder / PROJECT_FILE).exists() else None
    entry = SlideEntry(slide_path, labels_path, labels_class=labels_class)
    try:
        with entry.open() as slide:
            entry.read_labels(slide, existing.bins if existing is not None else None)
    except (SlideError, FormatError, OSError) as exc:
        raise ReviewError(f"not used: {exc}") from exc
    if existing is not None:
        return _bind_labels(existing, entry)
    try:
        Project.create(folder, [entry])
    except OSError as exc:
        raise ReviewError(f"cannot create a project here ({exc.strerror}): {folder}") from exc
    # Reopen, so slide paths are spelled as every later Project.open spells them.
    return Project.open(folder)


def _bind_labels(project: Project, chosen: SlideEntry) -> Project:
    """``project`` with ``chosen``'s slide bound to ``chosen``'s labels (added when absent);
    project.toml is rewritten only when that changes it."""
    for entry in project.slides:
        if entry.path.resolve() == chosen.path:
            if (entry.labels, entry.labels_class) == (chosen.labels, chosen.labels_class):
                return project
            entry.labels, entry.labels_class = chosen.labels, chosen.labels_class
            entry.labels_columns = None
            break
    else:
        project.slides.append(chosen)
    try:
        project.save()
    except OSError as exc:
        raise ReviewError(f"cannot update project.toml ({exc.strerror}): {project.folder}") from exc
    project.close()
    return Project.open(project.folder)


# -- what the dock widgets of one viewer share ---------------------------------------------------


class SharedState:
    """What one viewer's napari-lsr widgets share, and who to tell when it changes: the open
    project, its annotator and the Prior table's current prior (``None`` until it shows one).

    Listeners get ``"project"`` (another project was opened), ``"estimates"`` (an estimate
    was entered or undone) or ``"prior"`` (the Prior table's table changed).
    """

    def __init__(self) -> None:
        self.project: Project | None = None
        self.annotator: str | None = None
        self.prior: Prior | None = None
        self._listeners: list[Callable[[], Callable[[str], None] | None]] = []

    def set_project(self, project: Project | None, annotator: str | None = None) -> None:
        self.project = project
        self.prior = None  # the Prior table publishes the new project's prior
        if annotator:
            self.annotator = annotator
        self.notify("project")

    def set_prior(self, prior: Prior | None) -> None:
        """The Prior table's current table (what training's "Prior table widget" choice uses)."""
        self.prior = prior
        self.notify("prior")

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(kind)`` on changes; bound methods are held weakly."""
        ref: Callable[[], Callable[[str], None] | None]
        if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
            ref = weakref.WeakMethod(callback)  # type: ignore[arg-type]
        else:
            ref = lambda: callback  # noqa: E731
        self._listeners.append(ref)

    def unsubscribe(self, callback: Callable[[str], None]) -> None:
        self._listeners = [r for r in self._listeners if r() not in (None, callback)]

    def notify(self, kind: str) -> None:
        alive = []
        for ref in list(self._listeners):
            cb = ref()
            if cb is None:
                continue
            alive.append(ref)
            try:
                cb(kind)
            except RuntimeError:  # a deleted Qt widget
                alive.pop()
        self._listeners = alive


_HUBS: weakref.WeakKeyDictionary[Any, SharedState] = weakref.WeakKeyDictionary()


def hub_for(viewer: Any) -> SharedState:
    """The hub of a viewer (created on first use; forgotten with the viewer).

    napari hands plugin widgets a proxy of the viewer, a new one per widget: the hub is kept
    by the viewer behind the proxy, so every widget of one viewer shares it.
    """
    viewer = getattr(viewer, "__wrapped__", viewer)
    hub = _HUBS.get(viewer)
    if hub is None:
        hub = _HUBS[viewer] = SharedState()
    return hub
