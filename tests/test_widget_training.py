"""GUI tests of the training dock widget (napari_lsr.widgets.training), under Xvfb."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from napari_lsr.learn.training import TrainEvent
from napari_lsr.widgets import training as tw

from conftest import run_cancelled_at, tiny_plan

pytestmark = pytest.mark.gui

#: Tiny settings: every run takes seconds on a CPU.
TINY = {"depth": 2, "width": 4, "block": 32, "group_size": 4}


def _tiny(widget: tw.TrainingWidget, steps: int, checkpoint_every: int = 10) -> None:
    widget.depth_spin.setValue(TINY["depth"])
    widget.width_spin.setValue(TINY["width"])
    widget.block_spin.setValue(TINY["block"])
    widget.group_size_spin.setValue(TINY["group_size"])
    widget.steps_spin.setValue(steps)
    widget.ckpt_spin.setValue(checkpoint_every)


@pytest.fixture
def widget(make_napari_viewer, project_copy, qtbot):
    viewer = make_napari_viewer()
    w = tw.TrainingWidget(viewer)
    viewer.window.add_dock_widget(w, name="Training")
    w.set_project(project_copy.folder)
    w.napari_progress = True  # auto would skip napari's bar under Xvfb (software OpenGL)
    _tiny(w, steps=24, checkpoint_every=8)
    yield w
    if w.is_running:
        w.cancel()
        w.wait(30)
        qtbot.waitUntil(lambda: not w.is_running, timeout=30_000)


class Recorder:
    """Collects a widget's run events and its end (on the GUI thread)."""

    def __init__(self, widget: tw.TrainingWidget) -> None:
        self.events: list = []
        self.finished: list[tuple[str, str]] = []
        widget.run_event.connect(self.events.append)
        widget.run_finished.connect(lambda path, status: self.finished.append((path, status)))

    def steps(self) -> list[int]:
        return [e.step for e in self.events if getattr(e, "kind", "") == "step"]


def test_the_form_offers_the_config_choices_default_first(make_napari_viewer) -> None:
    """One source of truth: the engine and the form use config's choices, defaults, presets."""
    from napari_lsr import config
    from napari_lsr.learn import losses, training, unet

    assert losses.STATISTICS is config.LOSSES and losses.DISTANCES is config.DISTANCES
    assert losses.PIXEL_VARIANCES is config.PIXEL_VARIANCES and unet.NORMS is config.NORMS
    assert training.PAPER_LR is config.PAPER_LR
    for preset in config.PRESETS.values():
        assert set(preset["lr"]) == set(config.LOSSES)
    assert config.DEFAULTS == training.TrainConfig().to_dict()
    w = tw.TrainingWidget(make_napari_viewer())
    for combo, choices, key in (
        (w.loss_combo, config.LOSSES, "loss"),
        (w.distance_combo, config.DISTANCES, "distance"),
        (w.variance_combo, config.PIXEL_VARIANCES, "pixel_variance"),
        (w.schedule_combo, config.LR_SCHEDULES, "lr_schedule"),
        (w.norm_combo, config.NORMS, "norm"),
    ):
        items = [combo.itemText(i) for i in range(combo.count())]
        assert sorted(items) == sorted(choices) and items[0] == config.DEFAULTS[key], key
    presets = [w.preset_combo.itemText(i) for i in range(w.preset_combo.count())]
    assert presets == list(config.PRESETS)


def test_the_form_prefills_the_command_line_defaults(make_napari_viewer) -> None:
    """What a user gets from Train as shown equals `napari-lsr train` with no options."""
    from napari_lsr.cli import build_parser, train_config

    w = tw.TrainingWidget(make_napari_viewer())
    base = ["train", "--slide", "s.tiff", "--labels", "s.csv", "--prior", "p.csv", "--out", "m"]
    for loss in ("intra+inter", "intra", "inter"):
        w.loss_combo.setCurrentText(loss)
        cli = train_config(build_parser().parse_args([*base, "--loss", loss])).to_dict()
        form = {**cli, **w.config_kwargs()}  # fields the form does not show: the engine's
        form["device"] = cli["device"]  # the form lists only the devices found here
        assert form == cli, loss
    assert w.loss_combo.currentText() == "inter"
    from napari_lsr.config import DEFAULT_BLOCK_PX

    assert w.mpp_spin.value() == 0 and w.block_spin.value() == DEFAULT_BLOCK_PX  # as the CLI


def test_importing_the_widget_module_does_not_import_torch() -> None:
    code = "import sys, napari_lsr.widgets.training; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_form_prefills_the_recipe_and_offers_the_paper_preset(widget) -> None:
    assert widget.loss_combo.currentText() == "intra+inter"
    assert float(widget.lr_edit.text()) == 1e-3
    assert widget.norm_combo.currentText() == "batch"
    assert widget.batch_stack.currentIndex() == 1  # groups x blocks
    widget.loss_combo.setCurrentText("intra")
    assert float(widget.lr_edit.text()) == 1e-3  # the recipe's LR for every loss
    assert widget.batch_stack.currentIndex() == 0
    assert widget.name_edit.text() == "intra-gaussian"
    widget.batch_spin.setValue(7)
    widget.apply_preset("paper (Sec. 3.3)")
    assert float(widget.lr_edit.text()) == 1e-5 and widget.batch_spin.value() == 30
    assert widget.norm_combo.currentText() == "channel"
    widget.loss_combo.setCurrentText("inter")
    assert float(widget.lr_edit.text()) == 1e-3
    widget.loss_combo.setCurrentText("intra")
    assert widget.schedule_combo.currentText() == "constant"
    kw = widget.config_kwargs()
    assert kw["loss"] == "intra" and kw["lr"] == 1e-5 and kw["depth"] == TINY["depth"]
    assert kw["norm"] == "channel" and kw["init_bias"] == "fixed"
    widget.apply_preset("napari-lsr (benchmarks)")
    assert float(widget.lr_edit.text()) == 1e-3 and widget.norm_combo.currentText() == "batch"
    widget.apply_preset("paper (Sec. 3.3)")
    # project: its slide, its prior, its training resolution
    assert [s.slide.name for s in widget.sources()] == ["slide_0.tiff"]
    assert widget.prior_combo.currentText().startswith("project: prior.csv")
    assert widget.mpp_spin.value() == 4.0
    assert widget.models_dir == widget.project.models_dir
    widget.set_prior_choice("paper")
    prior, label = widget.current_prior()
    assert len(prior.bins) == 10 and label.endswith("prior_paper_table1.csv")
    widget.distance_combo.setCurrentText("paper")
    assert not widget.distance_hint.isHidden()


def test_train_cancel_resume_and_card(widget, qtbot) -> None:
    """Start on tiny settings, see progress and rising steps, cancel, resume, find the card."""
    from napari.utils import progress

    rec = Recorder(widget)
    assert widget.start()
    assert widget.is_running and not widget.train_btn.isEnabled()
    # issue 14: one line says how much of the prior is the paper's rather than this data's
    assert "prior: 0 of 10 bins from the paper's Table 1, 10 from this data" in (
        widget.status_label.text()
    )
    qtbot.waitUntil(lambda: len(rec.steps()) >= 3, timeout=30_000)
    bars = [p for p in progress._all_instances if "training" in p.desc]
    assert bars and bars[0].total == 24
    widget.cancel()
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=30_000)
    path, status = rec.finished[-1]
    assert status == "cancelled"
    steps = rec.steps()
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] > steps[0]
    assert {"start", "cancelled"} <= {getattr(e, "kind", "") for e in rec.events}
    assert any(isinstance(e, tw.Phase) for e in rec.events)  # labels and blocks phase
    out = Path(path)
    card = json.loads(out.with_suffix(".card.json").read_text())
    stopped = card["steps"]
    assert card["status"] == "cancelled" and stopped < 24
    assert card["prior"].endswith("prior.csv") and card["slides"]
    assert widget.resume_btn.isEnabled()
    assert not any(p for p in progress._all_instances if "training" in p.desc)
    assert "cancelled" in widget.status_label.text()

    # Resume continues from the checkpoint to the planned 24 steps.
    rec.events.clear()
    assert widget.resume()
    qtbot.waitUntil(lambda: len(rec.finished) == 2, timeout=60_000)
    assert rec.finished[-1] == (str(out), "done")
    resumed = rec.steps()
    assert resumed[0] == stopped + 1 and resumed[-1] == 24
    card = json.loads(out.with_suffix(".card.json").read_text())
    assert card["status"] == "done" and card["steps"] == 24
    for key in ("loss", "distance", "prior", "slides", "final_loss", "duration_s", "device"):
        assert key in card
    assert len(widget.curve) == 24  # the curve kept the first part of the run
    # model health beside the curve: per-bin predicted cancer against the prior, one verdict
    assert widget.health is not None and widget.health == card["health"]
    bins = widget.health_table.columnCount()  # one column per bin (issue 24.5)
    assert bins == len(card["health"]["bins"]) >= 2
    assert widget.health_table.horizontalHeaderItem(0).text() == "0–\n20"
    assert widget.health_label.text().startswith("model health: ")
    # a check during a run that does not follow the bins yet is amber, a final one red
    early = {**card["health"], "degenerate": True, "final": False, "message": "not yet"}
    widget.show_health(early)
    assert "#e0a030" in widget.health_label.styleSheet()
    widget.show_health({**early, "final": True})
    assert "#ff6b6b" in widget.health_label.styleSheet()
    healthy = {**card["health"], "degenerate": False, "final": True, "message": "healthy: ok"}
    widget.show_health(healthy)
    assert widget.health_label.styleSheet() == ""
    # an alarm during a run (a loss jump, a collapse) is red at once, and stays above the
    # health line whatever the later checks say, until the next run
    alarm = {"step": 152, "kind": "collapse", "message": "the loss jumped at step 152"}
    widget._on_event(TrainEvent("step", 152, 500, loss=25.6, extra={"alarm": alarm}))
    assert "#ff6b6b" in widget.health_label.styleSheet()
    assert widget.health_label.text().startswith("alarm: the loss jumped at step 152")
    assert "alarm: the loss jumped at step 152" in widget.status_label.text()
    widget.show_health(healthy)  # a healthy check later: the alarm stays
    assert "#ff6b6b" in widget.health_label.styleSheet()
    assert widget.health_label.text().endswith("model health: healthy: ok")
    models = widget.models()
    assert [m.checkpoint for m in models] == [out]
    names = [
        widget.models_tree.topLevelItem(i).text(0)
        for i in range(widget.models_tree.topLevelItemCount())
    ]
    assert names == [out.stem]
    assert "24/24" in widget.step_label.text() and "blocks/s" in widget.speed_label.text()
    assert widget.progress_bar.value() == widget.progress_bar.maximum() == 24
    assert "ETA" in widget.speed_label.text() and "cpu" in widget.speed_label.text()
    # A name that exists is refused (no overwrite).
    widget.name_edit.setText(out.stem)
    assert not widget.start()


def test_closing_the_viewer_stops_training_with_a_checkpoint(
    make_napari_viewer, project_copy, qtbot
) -> None:
    viewer = make_napari_viewer()
    w = tw.TrainingWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.set_project(project_copy.folder)
    _tiny(w, steps=100_000)
    rec = Recorder(w)
    assert w.start()
    handle = w._handle
    qtbot.waitUntil(lambda: len(rec.steps()) >= 2, timeout=30_000)
    viewer.close()  # napari cancels its tasks: ours stops and waits for the checkpoint
    assert handle.finished.is_set()
    card = json.loads((project_copy.models_dir / "intra+inter-gaussian.card.json").read_text())
    assert card["status"] == "cancelled" and card["steps"] < 100_000


def test_errors_become_readable_notifications(widget, qtbot) -> None:
    from napari.utils.notifications import notification_manager

    seen: list[str] = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    rec = Recorder(widget)
    widget.group_size_spin.setValue(500)  # no bin holds a group that big
    assert widget.start()
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=30_000)
    assert rec.finished[-1] == ("", "failed")
    assert not widget.is_running and widget.train_btn.isEnabled()
    text = widget.status_label.text()
    assert "no bin holds a full group of 500 blocks" in text
    assert "RuntimeError" not in text and "the group size" in text
    assert any("no bin holds a full group" in s for s in seen)
    # Bad input refused before starting: no slide ticked.
    widget.slide_list.item(0).setCheckState(tw.Qt.CheckState.Unchecked)
    assert not widget.start()
    assert any("tick at least one slide" in s for s in seen)
    # issue 14: the status shows the failure too (it said "idle"), reason first
    assert widget.status_label.text().startswith("⚠ cannot start training: tick at least")


def test_readable_error_for_out_of_memory_and_nan() -> None:
    from napari_lsr.learn.training import TrainingError

    msg = tw.readable_error(MemoryError(), "m", "cuda")
    assert "out of memory on cuda" in msg and "group size" in msg
    msg = tw.readable_error(TrainingError("the loss became nan at step 3; try a lower --lr"), "m")
    assert msg.startswith("training 'm' stopped: the loss became nan")
    assert "the learning rate" in msg and "--lr" not in msg


def test_cancel_before_training_saves_nothing(project_copy) -> None:
    plan = tiny_plan(project_copy, "x", steps=5, checkpoint_every=100)
    cancel, finished = threading.Event(), threading.Event()
    cancel.set()
    events = list(tw.run_training(plan, cancel, finished))
    assert events[-1].kind == "cancelled" and isinstance(events[-1], tw.Phase)
    assert finished.is_set() and not plan.out.exists()


def test_slide_layers_offer_their_slide(make_napari_viewer, project_copy) -> None:
    from napari_lsr._reader import read_slide

    viewer = make_napari_viewer()
    w = tw.TrainingWidget(viewer)
    assert w.project is None and w.sources() == []
    data, meta, _ = read_slide(str(project_copy.slides[0].path))[0]
    viewer.add_image(data, **meta)
    assert w.project is None  # the layer tells its slide; the project is the shared one
    (src,) = w.sources()
    assert src.labels == project_copy.slides[0].labels


def test_plugin_manifest_builds_the_widget(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-lsr", "Training")
    assert isinstance(w, tw.TrainingWidget)


def test_loss_curve_draws_the_running_mean(qtbot) -> None:
    curve = tw.LossCurve()
    qtbot.addWidget(curve)
    curve.resize(300, 150)
    curve.total = 50
    curve.extend([(i, 1.0 / (1 + i)) for i in range(1, 51)])
    image = curve.grab().toImage()
    orange = sum(
        1
        for x in range(0, 300, 2)
        for y in range(0, 150, 2)
        if (c := image.pixelColor(x, y)).red() > 200 and 120 < c.green() < 200 and c.blue() < 90
    )
    assert len(curve) == 50 and orange > 20


def test_project_is_shared_with_the_other_widgets(make_napari_viewer, project_copy) -> None:
    from napari_lsr.state import state_for

    viewer = make_napari_viewer()
    state = state_for(viewer)
    state.project = project_copy  # e.g. opened in Block review
    w = tw.TrainingWidget(viewer)
    assert w.project is project_copy  # picked up when the widget opens
    from napari_lsr.io.project import Project

    other = Project.open(project_copy.folder)
    state.project = other
    assert w.project is other  # and when it changes
    w.set_project(project_copy.folder)  # opened here: the others follow
    assert state.project is w.project


def test_prior_table_choice_reads_the_shared_prior(make_napari_viewer, project_copy) -> None:
    from napari_lsr.state import state_for
    from napari_lsr.widgets.prior_table import PriorTableWidget

    viewer = make_napari_viewer()
    w = tw.TrainingWidget(viewer)
    w.set_project(project_copy)  # shared: the Prior table opens it too
    w.set_prior_choice("widget")
    with pytest.raises(ValueError, match="open the Prior table"):
        w.current_prior()
    table = PriorTableWidget(viewer)
    assert table.project is project_copy and state_for(viewer).prior is table.prior
    assert w.current_prior()[0] is table.prior


def test_cancel_is_honoured_at_the_next_step(project_copy) -> None:
    """The worker's generator stops at the step after cancel, with a checkpoint and card."""
    plan = tiny_plan(project_copy, "c", steps=1000)
    events = run_cancelled_at(tw.run_training, plan, 3)
    assert events[-1].kind == "cancelled" and events[-1].step == 3
    card = json.loads(plan.out.with_suffix(".card.json").read_text())
    assert card["status"] == "cancelled" and card["steps"] == 3


def test_gui_keeps_running_while_training(widget, qtbot) -> None:
    """A loose stall bound (the 50 ms figures are in benchmarks/gui_stall.py): the event loop
    keeps ticking while the worker trains, with no per-step GUI work or GC pauses blocking it."""
    import time

    from qtpy.QtCore import QTimer

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    rec = Recorder(widget)
    widget.steps_spin.setValue(100_000)
    assert widget.start()
    qtbot.waitUntil(lambda: len(rec.steps()) >= 1, timeout=30_000)
    timer.start()
    qtbot.waitUntil(lambda: len(rec.steps()) >= 15, timeout=30_000)
    qtbot.wait(300)
    timer.stop()
    widget.cancel()
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=30_000)
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(gaps) > 20 and max(gaps) < 1.0


@pytest.mark.skipif(sys.platform == "win32", reason="pauses the child with SIGSTOP")
def test_force_stop_ends_a_run_whose_step_never_finishes(widget, qtbot) -> None:
    """A child stuck inside a step cannot honour Cancel: after a while the button offers
    Force stop, which ends the process; the GUI is free again with a clear message."""
    import os
    import signal

    rec = Recorder(widget)
    widget.steps_spin.setValue(100_000)
    widget.force_stop_after_ms = 500
    assert widget.start()
    qtbot.waitUntil(lambda: len(rec.steps()) >= 2, timeout=30_000)
    pid = widget._handle.child_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a step that never ends
    widget.cancel_btn.click()
    assert widget.cancel_btn.text() == "Cancel" and not widget.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: widget.cancel_btn.text() == "Force stop", timeout=5_000)
    assert widget.cancel_btn.isEnabled() and widget.is_running
    widget.cancel_btn.click()
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=30_000)
    assert rec.finished[-1] == ("", "failed")
    assert "force-stopped" in widget.status_label.text()
    assert widget.cancel_btn.text() == "Cancel" and widget.train_btn.isEnabled()


# -- issue 24.2: priority, ETA as a duration, elapsed after Resume ---------------------------


def test_eta_and_elapsed_read_as_durations() -> None:
    from napari_lsr.widgets.training_view import fmt_duration

    assert fmt_duration(4 * 3600 + 34 * 60 + 43) == "4 h 35 min"  # was "4:34:43"
    assert fmt_duration(200) == "3 min 20 s"
    assert fmt_duration(45) == "45 s"
    assert fmt_duration(120) == "2 min"
    assert fmt_duration(7200) == "2 h"
    assert fmt_duration(float("nan")) == "–"


def test_training_priority_is_low_by_default_and_a_setting(make_napari_viewer, monkeypatch) -> None:
    """A busy workstation must not starve the run: nice 10 by default, idle on request."""
    from napari_lsr.learn import run

    assert run.CHILD_PRIORITY == "low"
    w = tw.TrainingWidget(make_napari_viewer())
    assert w.priority == "low" and w.priority_combo.currentData() == "low"
    assert "nice 10" in w.priority_combo.currentText()
    assert [w.priority_combo.itemData(i) for i in range(w.priority_combo.count())] == [
        "low",
        "idle",
        "normal",
    ]
    w.priority_combo.setCurrentIndex(w.priority_combo.findData("idle"))
    assert w.priority == "idle"
    monkeypatch.setattr(tw, "TrainWorker", lambda handle, func, *args, **kwargs: kwargs)
    assert w.make_worker(tiny_plan_stub(), tw.RunHandle())["priority"] == "idle"
    w.set_priority("normal")
    assert w.priority == "normal" and tw.TrainingWidget.priority == "low"
    with pytest.raises(ValueError):
        w.set_priority("realtime")


def tiny_plan_stub():
    from napari_lsr.config import TrainConfig
    from napari_lsr.learn.run import RunPlan

    return RunPlan(out=Path("never.pt"), cache_dir=Path("."), config=TrainConfig())


def test_elapsed_goes_on_after_resume(widget, qtbot, monkeypatch) -> None:
    """The resumed run's elapsed time starts at its card's duration, not at 0."""
    from napari_lsr.learn.training import TrainEvent

    ckpt = widget.models_dir / "half.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"")
    card = {"name": "half", "checkpoint": "half.pt", "status": "cancelled", "loss": "intra"}
    card.update(steps=12, steps_planned=24, duration_s=2 * 3600 + 60, distance="gaussian")
    ckpt.with_suffix(".card.json").write_text(json.dumps(card))
    monkeypatch.setattr("napari_lsr.widgets.training.vet_checkpoint", lambda *a: True)
    monkeypatch.setattr("napari_lsr.learn.training.is_trusted", lambda path: True)

    def fake_run(plan, cancel, finished):
        yield TrainEvent("start", 12, 24, device="cpu")
        yield TrainEvent("step", 13, 24, loss=0.5, lr=1e-3, blocks_per_s=10.0, eta_s=90.0)
        finished.set()

    def make_worker(plan, handle):
        return tw.TrainWorker(handle, fake_run, plan, handle.cancel, handle.finished)

    monkeypatch.setattr(widget, "make_worker", make_worker)
    rec = Recorder(widget)
    assert widget.resume(ckpt)
    qtbot.waitUntil(lambda: bool(rec.finished), timeout=30_000)
    widget.progress_view.mark_dirty()
    widget._refresh()
    text = widget.speed_label.text()
    assert "ETA 1 min 30 s" in text and "elapsed 2 h 1 min" in text, text


def test_a_text_file_in_models_is_not_offered_for_resume(make_napari_viewer, project_copy):
    """Issue 24.10: listed as unreadable, and Resume stays off when it is selected."""
    w = tw.TrainingWidget(make_napari_viewer())
    w.set_project(project_copy.folder)
    project_copy.models_dir.mkdir(exist_ok=True)
    (project_copy.models_dir / "notes.pt").write_text("not a model\n")
    w.refresh_models()
    item = w.models_tree.topLevelItem(0)
    assert item.text(0) == "notes" and item.text(5) == "unreadable"
    w.models_tree.setCurrentItem(item)
    item.setSelected(True)
    assert not w.resume_btn.isEnabled()


def test_selecting_a_saved_model_shows_its_health_from_the_card(
    make_napari_viewer, project_copy, tiny_model
) -> None:
    """Issue 24.12: the Models list's model shows the health its card recorded."""
    import shutil

    w = tw.TrainingWidget(make_napari_viewer())
    w.set_project(project_copy.folder)
    project_copy.models_dir.mkdir(exist_ok=True)
    shutil.copy(tiny_model, project_copy.models_dir / "saved.pt")
    card = json.loads(tiny_model.with_suffix(".card.json").read_text())
    card.update(name="saved", checkpoint="saved.pt")
    (project_copy.models_dir / "saved.card.json").write_text(json.dumps(card))
    w.refresh_models()
    assert w.health_table.columnCount() == 0
    w.models_tree.topLevelItem(0).setSelected(True)
    assert w.health == card["health"]
    assert w.health_table.columnCount() == len(card["health"]["bins"])
    assert w.health_label.text().startswith("model health of saved (from its card): ")


def test_an_alarm_stays_red_until_the_next_run(qtbot) -> None:
    from napari_lsr.widgets.training_view import ProgressView

    view = ProgressView()
    qtbot.addWidget(view)
    view.show_alarm({"step": 62, "kind": "collapse", "message": "every block under 5 %"})
    view.show_health({"bins": [], "degenerate": False, "final": False, "message": "healthy"})
    assert view.health_label.text() == "alarm: every block under 5 %\nmodel health: healthy"
    assert "#ff6b6b" in view.health_label.styleSheet()
    view.reset(10)
    assert view.health_label.styleSheet() == "" and "alarm" not in view.health_label.text()
