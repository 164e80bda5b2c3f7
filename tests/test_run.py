"""The training run in a child process (napari_lsr.learn.run): events, cancel, errors, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from napari_lsr.learn import run

from conftest import run_cancelled_at, tiny_plan


def test_subprocess_run_relays_every_event_and_saves_the_model(project_copy) -> None:
    plan = tiny_plan(project_copy, "p", steps=5)
    cancel, finished = threading.Event(), threading.Event()
    events = list(run.run_in_subprocess(plan, cancel, finished))
    assert finished.is_set() and not cancel.is_set()
    assert any(isinstance(e, run.Phase) for e in events)
    kinds = [getattr(e, "kind", "") for e in events]
    assert kinds[-1] == "done" and "start" in kinds
    assert [e.step for e in events if getattr(e, "kind", "") == "step"] == [1, 2, 3, 4, 5]
    card = json.loads(plan.out.with_suffix(".card.json").read_text())
    assert card["status"] == "done" and card["steps"] == 5
    assert card["device"] == "cpu" and card["slides"] == [str(project_copy.slides[0].path)]
    from napari_lsr.learn.training import load_checkpoint

    assert load_checkpoint(plan.out)["info"]["trained_with"] == "test"  # the plan arrived whole


def test_cancel_reaches_the_child_within_a_step(project_copy) -> None:
    plan = tiny_plan(project_copy, "c", steps=100_000)
    events = run_cancelled_at(run.run_in_subprocess, plan, 2)
    last = events[-1]
    assert last.kind == "cancelled" and last.step <= 3  # the step under way may finish
    card = json.loads(plan.out.with_suffix(".card.json").read_text())
    assert card["status"] == "cancelled" and card["steps"] == last.step


def test_closing_the_generator_cancels_and_waits_for_the_checkpoint(project_copy) -> None:
    plan = tiny_plan(project_copy, "g", steps=100_000)
    cancel, finished = threading.Event(), threading.Event()
    gen = run.run_in_subprocess(plan, cancel, finished)
    for ev in gen:
        if getattr(ev, "kind", "") == "step":
            break
    gen.close()
    assert finished.is_set() and cancel.is_set()
    card = json.loads(plan.out.with_suffix(".card.json").read_text())
    assert card["status"] == "cancelled"


def test_errors_in_the_child_arrive_as_readable_messages(project_copy) -> None:
    plan = tiny_plan(project_copy, "e", steps=5)
    plan.config.group_size = 500  # no bin holds such a group
    with pytest.raises(run.TrainingFailed) as err:
        list(run.run_in_subprocess(plan, threading.Event()))
    text = str(err.value)
    assert text.startswith("training 'e' stopped:") and "the group size" in text
    assert "Traceback" not in text


def test_a_killed_child_is_reported_and_its_checkpoint_kept(project_copy) -> None:
    plan = tiny_plan(project_copy, "k", steps=100_000)
    plan.config.checkpoint_every = 2
    pids, killed = [], []
    with pytest.raises(run.TrainingFailed) as err:
        for ev in run.run_in_subprocess(plan, threading.Event(), started=pids.append):
            if getattr(ev, "kind", "") == "checkpoint" and not killed:
                killed.append(pids[0])
                os.kill(pids[0], signal.SIGKILL)
    assert killed and pids[-1] is None  # the pid came through ``started``, then None
    text = str(err.value)
    assert "ended unexpectedly" in text and "SIGKILL" in text and "checkpoint" in text
    assert plan.out.exists()  # the periodic checkpoint survives


def _parent_script(tmp_path: Path, plan: run.RunPlan, body: str) -> Path:
    """A Python script that loads ``plan`` and runs ``body`` (a parent process of a run)."""
    import pickle

    (tmp_path / "plan.pkl").write_bytes(pickle.dumps(plan))
    script = tmp_path / "parent.py"
    head = (
        "import pickle, threading\n"
        "from napari_lsr.learn import run\n"
        f"plan = pickle.loads(open({str(tmp_path / 'plan.pkl')!r}, 'rb').read())\n"
    )
    script.write_text(head + textwrap.dedent(body))
    return script


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and SIGKILL")
def test_the_child_saves_a_checkpoint_when_its_parent_dies(project_copy, tmp_path) -> None:
    """A parent killed outright closes the child's control pipe: the child cancels with a
    checkpoint."""
    plan = tiny_plan(project_copy, "orphan", steps=100_000)
    script = _parent_script(
        tmp_path,
        plan,
        """
        for ev in run.run_in_subprocess(plan, threading.Event()):
            if getattr(ev, "kind", "") == "step":
                print("STEP", flush=True)
        """,
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    assert parent.stdout.readline().strip() == "STEP"
    parent.kill()  # SIGKILL: no cleanup in the parent at all
    parent.wait()
    card = plan.out.with_suffix(".card.json")
    deadline = time.monotonic() + 60
    while not card.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert card.exists(), "the orphaned child did not save its checkpoint"
    assert json.loads(card.read_text())["status"] == "cancelled"


def test_exit_descriptions() -> None:
    assert run._describe_exit(3) == "exit code 3"
    assert "SIGKILL" in run._describe_exit(-9) and "memory" in run._describe_exit(-9)
    assert "SIGSEGV" in run._describe_exit(-11)


def test_a_prepared_child_runs_the_next_plan_at_idle_priority(project_copy) -> None:
    run.prepare_subprocess("idle")
    proc = run._STANDBY["idle"]
    if hasattr(os, "SCHED_IDLE"):  # set by the child itself as it starts
        deadline = time.monotonic() + 30
        while os.sched_getscheduler(proc.pid) != os.SCHED_IDLE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.sched_getscheduler(proc.pid) == os.SCHED_IDLE
    run.prepare_subprocess("idle")  # one waits at most
    assert run._STANDBY["idle"] is proc
    plan = tiny_plan(project_copy, "s", steps=2)
    events = list(run.run_in_subprocess(plan, threading.Event(), priority="idle"))
    assert events[-1].kind == "done"
    assert proc.poll() == 0 and "idle" not in run._STANDBY  # that child ran it, and ended


def test_waiting_children_are_let_go_at_exit() -> None:
    run.prepare_subprocess("low")
    proc = run._STANDBY["low"]
    try:
        run._close_standby()  # what atexit runs
        assert proc.poll() is not None and not run._STANDBY and proc not in run._LIVE
        run.prepare_subprocess("low")  # exiting: no new waiting child
        assert not run._STANDBY
    finally:
        run._EXITING.clear()


def test_a_run_that_outlives_the_interpreter_saves_its_checkpoint(project_copy, tmp_path) -> None:
    """A script that exits in the middle of a run: the child is told to stop and saves."""
    plan = tiny_plan(project_copy, "atexit", steps=100_000)
    script = _parent_script(
        tmp_path,
        plan,
        """
        gen = run.run_in_subprocess(plan, threading.Event())
        for ev in gen:
            if getattr(ev, "kind", "") == "step":
                break
        # exits here with the run going on and the generator suspended
        """,
    )
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)
    card = json.loads(plan.out.with_suffix(".card.json").read_text())
    assert card["status"] == "cancelled"


@pytest.mark.skipif(sys.platform != "linux", reason="sends SIGINT to the child")
def test_ctrl_c_is_for_napari_not_the_child(project_copy) -> None:
    """SIGINT (Ctrl+C in napari's terminal reaches its whole process group) does not kill the
    child mid-step; napari handles it and cancels the run itself."""
    plan = tiny_plan(project_copy, "sigint", steps=6)
    events, pids = [], []
    for ev in run.run_in_subprocess(plan, threading.Event(), started=pids.append):
        events.append(ev)
        if getattr(ev, "kind", "") == "step" and ev.step == 2:
            os.kill(pids[0], signal.SIGINT)
    assert events[-1].kind == "done" and events[-1].step == 6


def test_the_default_child_runs_at_nice_10_not_idle() -> None:
    """Issue 24.2: at idle priority a busy machine starved the run; the default is nice 10."""
    assert run.CHILD_PRIORITY == "low"
    run.prepare_subprocess()
    proc = run._STANDBY[run.CHILD_PRIORITY]
    try:
        if hasattr(os, "getpriority"):
            want = min(19, os.nice(0) + 10)
            deadline = time.monotonic() + 30
            while os.getpriority(os.PRIO_PROCESS, proc.pid) != want:
                assert time.monotonic() < deadline, "the child never lowered its priority"
                time.sleep(0.05)
        if hasattr(os, "SCHED_IDLE"):
            assert os.sched_getscheduler(proc.pid) != os.SCHED_IDLE
    finally:
        with run._STANDBY_LOCK:
            run._STANDBY.pop(run.CHILD_PRIORITY, None)
        run._release(proc, kill=True)
