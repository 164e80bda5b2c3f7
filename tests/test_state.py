"""The state the napari-lsr widgets of one viewer share: one project, prior, models and slide.

Run under Xvfb: ``xvfb-run -a python -m pytest tests/test_state.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from qtpy.QtCore import QCoreApplication, QEvent
from qtpy.QtWidgets import QLineEdit, QWidget

from napari_lsr.io.project import Project
from napari_lsr.learn.models import list_models
from napari_lsr.state import state_for

pytestmark = pytest.mark.gui


def add_model(project: Project, tiny_model: Path, name: str) -> None:
    """The tiny model (and its card) in the project's models/ as ``name``."""
    project.models_dir.mkdir(exist_ok=True)
    shutil.copy(tiny_model, project.models_dir / f"{name}.pt")
    card = json.loads(tiny_model.with_suffix(".card.json").read_text())
    card.update(name=name, checkpoint=f"{name}.pt")
    (project.models_dir / f"{name}.card.json").write_text(json.dumps(card))


def model_names(widget) -> list[str]:
    return sorted(e.name for e in widget.entries(checked_only=False))


def test_a_project_opened_in_one_widget_reaches_the_others(make_napari_viewer, project_copy):
    viewer = make_napari_viewer()
    # as napari makes them from napari.yaml: each gets its own proxy of the viewer
    _, review = viewer.window.add_plugin_dock_widget("napari-lsr", "Block review")
    _, table = viewer.window.add_plugin_dock_widget("napari-lsr", "Prior table")
    _, comparison = viewer.window.add_plugin_dock_widget("napari-lsr", "Comparison")
    state = state_for(viewer)
    assert review.state is table.state is comparison.state is state

    assert table.open_project(str(project_copy.folder))  # opened in the Prior table
    shared = state.project
    assert shared is not None and shared.folder == project_copy.folder
    assert table.project is shared and comparison.project is shared
    assert state.prior is table.prior  # the Prior table publishes its table
    assert review.project is None  # no review started behind the annotator's back...
    assert review.path_edit.text() == str(project_copy.folder)  # ...the project is offered

    review.annotator_edit.setText("ana")
    assert review.set_project(project_copy)  # then reviewed: everyone follows
    assert state.project is project_copy
    assert table.project is project_copy and comparison.project is project_copy
    assert table.name_edit.text() == "ana" and state.annotator == "ana"
    assert state.slide == project_copy.slides[0].path  # the slide on screen
    assert comparison.slide_combo.currentData() == str(project_copy.slides[0].path)
    review.shutdown()


def test_comparison_takes_project_and_models_from_the_state(
    make_napari_viewer, project_copy, tiny_model
):
    from napari_lsr._reader import slide_layer_data
    from napari_lsr.widgets.comparison import ComparisonWidget

    entry = project_copy.slides[0]
    assert (entry.path.parent / "project.toml").exists()  # the slide lies in its project
    viewer = make_napari_viewer()
    with entry.open() as slide:
        data, meta, _ = slide_layer_data(slide)
        viewer.add_image(data, **meta)
        widget = ComparisonWidget(viewer)
        assert widget.project is None  # a layer's file does not choose the project

        state = state_for(viewer)
        add_model(project_copy, tiny_model, "first")
        state.project = project_copy
        assert widget.project is project_copy  # the project the others opened
        assert model_names(widget) == ["first"]

        add_model(project_copy, tiny_model, "second")  # e.g. a run finished in Training
        state.models = tuple(list_models(project_copy.models_dir))
        assert model_names(widget) == ["first", "second"]  # listed without Refresh

        other = Project.open(project_copy.folder)
        state.project = other
        assert widget.project is other and state.models == ()


def test_training_publishes_the_models_comparison_lists(
    make_napari_viewer, project_copy, tiny_model
):
    from napari_lsr.widgets.comparison import ComparisonWidget
    from napari_lsr.widgets.training import TrainingWidget

    viewer = make_napari_viewer()
    add_model(project_copy, tiny_model, "first")
    training = TrainingWidget(viewer)
    comparison = ComparisonWidget(viewer)
    training.set_project(project_copy)  # opened in Training: shared
    state = state_for(viewer)
    assert comparison.project is project_copy
    assert [m.name for m in state.models] == ["first"]
    add_model(project_copy, tiny_model, "second")
    training.refresh_models()  # as after a run
    assert sorted(m.name for m in state.models) == ["first", "second"]
    assert model_names(comparison) == ["first", "second"]
    training.close()


class Listener(QWidget):
    """A widget that follows the shared project into a child field."""

    def __init__(self, state) -> None:
        super().__init__()
        self.field = QLineEdit(self)
        state.connect(self, project=self.on_project)

    def on_project(self, project) -> None:
        self.field.setText(str(project.folder))  # raises once the widget is deleted


def test_a_deleted_widget_does_not_break_emission(make_napari_viewer, project_copy):
    from napari_lsr.widgets.prior_table import PriorTableWidget

    viewer = make_napari_viewer()
    state = state_for(viewer)
    gone, kept = Listener(state), Listener(state)
    closed = PriorTableWidget(viewer)
    table = PriorTableWidget(viewer)
    for w in (gone, closed):
        w.deleteLater()  # as napari deletes a closed dock's widget; Python still holds it
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    with pytest.raises(RuntimeError):
        gone.field.text()  # deleted indeed

    state.project = project_copy  # no error from the deleted ones...
    assert kept.field.text() == str(project_copy.folder)  # ...and the others hear of it
    assert table.project is project_copy
    state.estimates_changed.emit()
    QCoreApplication.processEvents()  # the table's queued redraw runs while it lives
    table.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
