"""The state the napari-lsr widgets of one viewer share, evented: project, prior, models, slide."""

from __future__ import annotations

import operator
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from psygnal import Signal, SignalGroupDescriptor

from .elicit.review import ReviewError
from .io.formats import FormatError, Prior
from .io.project import PROJECT_FILE, Project, SlideEntry
from .io.slide import SlideError
from .learn.models import ModelCard

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


@dataclass(eq=False)
class SharedState:
    """What one viewer's napari-lsr widgets share, as an evented model (psygnal).

    Fields, each with a signal of the same name in ``events`` that is emitted with the new
    value when it changes: ``project`` (the open project), ``annotator`` (who reviews),
    ``prior`` (the Prior table's current table; ``None`` until it shows one), ``models``
    (the project's trained models, as the Training widget lists them) and ``slide`` (the
    slide being reviewed or compared). ``estimates_changed`` is emitted when an estimate is
    entered or undone. Another project clears ``prior`` and ``models`` before its listeners
    hear of it, so none reads the previous project's.

    Widgets subscribe with ``connect``; whoever opens a project or a slide sets the field.
    """

    events: ClassVar[SignalGroupDescriptor] = SignalGroupDescriptor(
        equality_operators={"project": operator.is_, "prior": operator.is_}
    )
    estimates_changed: ClassVar[Signal] = Signal()

    project: Project | None = None
    annotator: str | None = None
    prior: Prior | None = None
    models: tuple[ModelCard, ...] = ()
    slide: Path | None = None

    def __post_init__(self) -> None:
        # Before every other listener: they hear of the project with nothing stale beside it.
        self.events.project.connect(self._project_changed, priority=100)

    def _project_changed(self, _project: Project | None) -> None:
        self.prior = None  # the Prior table publishes the new project's prior
        self.models = ()  # and the Training widget its models

    def connect(self, owner: Any, **slots: Callable[..., Any]) -> None:
        """Call each of ``owner``'s bound methods ``slots`` (by signal name: ``project``,
        ``annotator``, ``prior``, ``models``, ``slide``, ``estimates_changed``) on changes.

        The methods are held weakly, and a Qt ``owner`` is disconnected when it is destroyed
        (a deleted widget's method would raise and stop the emission to the others).
        """
        pairs = []
        for name, slot in slots.items():
            if getattr(slot, "__self__", None) is not owner:
                raise TypeError(f"{name}: connect a method of the owner, not {slot!r}")
            signal = self.events[name] if name in self.events else getattr(self, name)
            signal.connect(slot)
            pairs.append((signal, slot.__func__))
        destroyed = getattr(owner, "destroyed", None)
        if destroyed is None:
            return
        ref = weakref.ref(owner)  # the connection must not keep the widget alive

        def forget(*_: Any) -> None:
            obj = ref()
            if obj is not None:  # (a collected owner's methods are already forgotten)
                for signal, func in pairs:
                    signal.disconnect(func.__get__(obj), missing_ok=True)

        destroyed.connect(forget)


_STATES: weakref.WeakKeyDictionary[Any, SharedState] = weakref.WeakKeyDictionary()


def state_for(viewer: Any) -> SharedState:
    """The shared state of a viewer's napari-lsr widgets (created on first use; forgotten
    with the viewer).

    napari hands plugin widgets a proxy of the viewer, a new one per widget: the state is
    kept by the viewer behind the proxy, so every widget of one viewer shares it.
    """
    viewer = getattr(viewer, "__wrapped__", viewer)
    state = _STATES.get(viewer)
    if state is None:
        state = _STATES[viewer] = SharedState()
    return state
