"""Durability of the project store: SIGKILL mid-review loses nothing; two writers coexist."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from napari_lsr.io.project import Project
from napari_lsr.io.store import Store

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX-only")

#: Enters estimates forever through the store, printing each committed id.
STORE_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from napari_lsr.io.store import Store

    store = Store(sys.argv[1])
    sid = store.add_slide("slide.tiff", None, 1000, 1000, 1.0)
    boxes = np.array([[10 * i, 0, 10, 10] for i in range(10)])
    store.add_blocks(sid, boxes, np.full(10, 0.5), np.full(10, 3))
    ids = sorted(store.block_ids(sid).values())
    print("ready", flush=True)
    i = 0
    while True:
        # a new annotator every 10 entries: no estimate supersedes another
        eid = store.add_estimate(ids[i % 10], f"a{i // 10}", float(i % 101))
        print(eid, flush=True)
        i += 1
    """
)

#: Reviews a project through the review session (as the widget does), printing each id.
SESSION_WRITER = textwrap.dedent(
    """
    import sys
    from napari_lsr.io.project import Project
    from napari_lsr.elicit.review import ReviewSession

    session = ReviewSession(Project.open(sys.argv[1]), "ana", k=1000, seed=0)
    print("ready", flush=True)
    i = 0
    while session.current is not None:
        eid = session.skip() if i % 7 == 3 else session.enter(i % 101)
        print(eid, flush=True)
        i += 1
    print("finished", flush=True)
    """
)

#: Writes N estimates (annotator from argv) after a start signal file appears.
CONCURRENT_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from napari_lsr.io.store import Store

    path, who, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = Store(path)
    ids = [r[0] for r in store.query("SELECT id FROM blocks ORDER BY id")]
    while not os.path.exists(go):
        time.sleep(0.005)
    for i in range(n):
        store.add_estimate(ids[i % len(ids)], f"{who}{i // len(ids)}", float(i % 101))
        if i % 10 == 0:
            store.add_prior_edit(i % 10, float(i % 100), 1.0, who)
    print("done", flush=True)
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _kill_after(script: str, arg: str, n: int) -> list[int]:
    """Run a writer, read ``n`` committed ids, SIGKILL it; the ids it reported."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    ids: list[int] = []
    try:
        first = proc.stdout.readline().strip()
        assert first == "ready", proc.stderr.read()
        while len(ids) < n:
            line = proc.stdout.readline().strip()
            assert line and line != "finished", "writer stopped early: " + proc.stderr.read()
            ids.append(int(line))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # ids printed between our last read and the kill also count
        ids += [int(x) for x in proc.stdout.read().split() if x.isdigit()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return ids


def _integrity(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def test_sigkill_loses_no_committed_estimate(tmp_path):
    path = tmp_path / "annotations.sqlite"
    ids = _kill_after(STORE_WRITER, str(path), 60)
    assert len(ids) >= 60
    store = Store(path)  # reopening recovers the WAL
    live = {e.id for e in store.estimates()}
    assert set(ids) <= live
    assert _integrity(path) == "ok"
    # the store still takes writes after the crash
    block = store.query("SELECT id FROM blocks LIMIT 1")[0][0]
    assert store.add_estimate(block, "after", 1.0) > max(ids)
    store.close()


def test_sigkill_during_a_review_session(project_copy):
    ids = _kill_after(SESSION_WRITER, str(project_copy.folder), 25)
    project = Project.open(project_copy.folder)
    stored = {e.id for e in project.store.estimates("ana", include_skipped=True)}
    assert set(ids) <= stored
    assert _integrity(project.store.path) == "ok"
    project.close()


def test_two_writers_on_one_project(tmp_path):
    """A second viewer on the same project: concurrent writers, nothing lost, no corruption."""
    path = tmp_path / "annotations.sqlite"
    store = Store(path)
    sid = store.add_slide("slide.tiff", None, 1000, 1000, 1.0)
    boxes = np.array([[10 * i, 0, 10, 10] for i in range(20)])
    store.add_blocks(sid, boxes, np.full(20, 0.5), np.full(20, 3))
    go = tmp_path / "go"
    n = 120
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WRITER, str(path), who, str(n), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for who in ("ana", "ben")
    ]
    time.sleep(0.5)
    go.touch()
    # this process reads (and writes) while the two others write
    for _ in range(20):
        store.record_view(int(store.query("SELECT id FROM blocks LIMIT 1")[0][0]), "viewer")
        store.estimates()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "done"
    est = store.estimates()
    for who in ("ana", "ben"):
        assert sum(1 for e in est if e.annotator.startswith(who)) == n
    assert len(store.prior_edit_history()) == 2 * (n // 10)
    assert store.query("SELECT COUNT(*) FROM views")[0][0] == 20
    assert _integrity(path) == "ok"
    store.close()


def test_undo_with_reinstate_is_one_transaction(tmp_path):
    store = Store(tmp_path / "a.sqlite")
    sid = store.add_slide("s", None, 10, 10, 1.0)
    store.add_blocks(sid, np.array([[0, 0, 5, 5]]), np.array([0.5]), np.array([3]))
    block = store.query("SELECT id FROM blocks")[0][0]
    first = store.add_estimate(block, "ana", 10)
    second = store.add_estimate(block, "ana", 20)
    assert [e.id for e in store.estimates("ana")] == [second]
    store.undo_estimate(second, reinstate=first)
    assert [(e.id, e.percent) for e in store.estimates("ana")] == [(first, 10.0)]
    history = store.query("SELECT COUNT(*) FROM estimates")[0][0]
    assert history == 2  # nothing is deleted
    store.close()
