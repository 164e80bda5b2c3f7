"""The project's SQLite store of slides, blocks, block views, estimates and prior edits.

Durability rules: WAL journal, ``synchronous=FULL``, every write is its own transaction that
is committed before the call returns, and a busy timeout so a second viewer on the same
project waits for a lock instead of failing. Estimates are never deleted: an undo marks the
estimate as undone, so the history of who typed what, and when, survives.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
#: How long a writer waits for another process's lock before giving up.
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS slides (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    labels TEXT,
    width INTEGER,
    height INTEGER,
    mpp REAL
);
CREATE TABLE IF NOT EXISTS blocks (
    id INTEGER PRIMARY KEY,
    slide_id INTEGER NOT NULL REFERENCES slides(id),
    x INTEGER NOT NULL, y INTEGER NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL,
    probability REAL NOT NULL,
    bin INTEGER NOT NULL,
    UNIQUE (slide_id, x, y, width, height)
);
CREATE INDEX IF NOT EXISTS blocks_bin ON blocks(bin);
CREATE TABLE IF NOT EXISTS views (
    id INTEGER PRIMARY KEY,
    block_id INTEGER NOT NULL REFERENCES blocks(id),
    annotator TEXT NOT NULL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS estimates (
    id INTEGER PRIMARY KEY,
    block_id INTEGER NOT NULL REFERENCES blocks(id),
    annotator TEXT NOT NULL,
    percent REAL CHECK (percent IS NULL OR (percent >= 0 AND percent <= 100)),
    skipped INTEGER NOT NULL DEFAULT 0,
    time REAL NOT NULL,
    undone_time REAL
);
CREATE INDEX IF NOT EXISTS estimates_block ON estimates(block_id, annotator);
CREATE TABLE IF NOT EXISTS prior_edits (
    id INTEGER PRIMARY KEY,
    bin INTEGER NOT NULL,
    mean_pct REAL NOT NULL,
    std_pct REAL NOT NULL,
    annotator TEXT NOT NULL,
    time REAL NOT NULL,
    note TEXT
);
"""


@dataclass(frozen=True)
class Estimate:
    """One live (not undone) estimate of a block's cancer percentage."""

    id: int
    block_id: int
    annotator: str
    percent: float | None
    skipped: bool
    time: float
    bin: int
    slide_id: int


class Store:
    """A connection to a project's ``annotations.sqlite``; one per thread is created lazily."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise PermissionError(f"{self.path}: store is not writable")
        self._local = threading.local()
        with self.transaction() as con:
            # One statement at a time: executescript() would COMMIT the open transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            con.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=True,
            )
            con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = FULL")
            con.execute("PRAGMA foreign_keys = ON")
            self._local.con = con
        return con

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction (BEGIN IMMEDIATE so writers queue on the busy timeout)."""
        con = self._connect()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        else:
            con.execute("COMMIT")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self._connect().execute(sql, params).fetchall()

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- slides and blocks -------------------------------------------------------------------

    def add_slide(
        self, path: str, labels: str | None, width: int, height: int, mpp: float | None
    ) -> int:
        """Register a slide (idempotent by path: a project passes the slide's path relative
        to the project folder, ``Project.slide_key``); returns its id."""
        with self.transaction() as con:
            con.execute(
                "INSERT INTO slides(path, labels, width, height, mpp) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET labels=excluded.labels, width=excluded.width, "
                "height=excluded.height, mpp=excluded.mpp",
                (path, labels, width, height, mpp),
            )
            return int(con.execute("SELECT id FROM slides WHERE path=?", (path,)).fetchone()[0])

    def slide_rows(self) -> list[tuple[int, str, int | None, int | None]]:
        """Every registered slide: (id, path key, width, height)."""
        return [
            (r[0], r[1], r[2], r[3])
            for r in self.query("SELECT id, path, width, height FROM slides ORDER BY id")
        ]

    def rename_slide(self, slide_id: int, path: str) -> None:
        """Give a registered slide another path key; its blocks and estimates stay with it."""
        with self.transaction() as con:
            con.execute("UPDATE slides SET path=? WHERE id=?", (path, slide_id))

    def add_blocks(
        self, slide_id: int, boxes: np.ndarray, prob: np.ndarray, bins: np.ndarray
    ) -> None:
        """Register a slide's blocks (idempotent); probabilities and bins are refreshed."""
        rows = [
            (slide_id, int(b[0]), int(b[1]), int(b[2]), int(b[3]), float(p), int(z))
            for b, p, z in zip(boxes, prob, bins)
        ]
        with self.transaction() as con:
            con.executemany(
                "INSERT INTO blocks(slide_id, x, y, width, height, probability, bin) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(slide_id, x, y, width, height) "
                "DO UPDATE SET probability=excluded.probability, bin=excluded.bin",
                rows,
            )

    def block_ids(self, slide_id: int) -> dict[tuple[int, int, int, int], int]:
        rows = self.query(
            "SELECT id, x, y, width, height FROM blocks WHERE slide_id=?", (slide_id,)
        )
        return {(r[1], r[2], r[3], r[4]): r[0] for r in rows}

    def block(self, block_id: int) -> tuple:
        """(id, slide_id, x, y, width, height, probability, bin) of one block."""
        rows = self.query(
            "SELECT id, slide_id, x, y, width, height, probability, bin FROM blocks WHERE id=?",
            (block_id,),
        )
        if not rows:
            raise KeyError(f"no block {block_id}")
        return rows[0]

    # -- estimates ---------------------------------------------------------------------------

    def record_view(self, block_id: int, annotator: str) -> None:
        with self.transaction() as con:
            con.execute(
                "INSERT INTO views(block_id, annotator, time) VALUES (?, ?, ?)",
                (block_id, annotator, time.time()),
            )

    def add_estimate(
        self, block_id: int, annotator: str, percent: float | None, skipped: bool = False
    ) -> int:
        """Commit one estimate (or a skip) and return its id. Percent must be in [0, 100]."""
        if not annotator or not annotator.strip():
            raise ValueError("an estimate needs an annotator name")
        if not skipped:
            if percent is None:
                raise ValueError("an estimate needs a percentage (or skipped=True)")
            percent = float(percent)
            if not 0.0 <= percent <= 100.0:
                raise ValueError(f"cancer percentage {percent} is outside 0-100")
        else:
            percent = None
        with self.transaction() as con:
            # A new estimate of the same block by the same annotator supersedes the old one.
            now = time.time()
            con.execute(
                "UPDATE estimates SET undone_time=? WHERE block_id=? AND annotator=? "
                "AND undone_time IS NULL",
                (now, block_id, annotator),
            )
            cur = con.execute(
                "INSERT INTO estimates(block_id, annotator, percent, skipped, time) "
                "VALUES (?, ?, ?, ?, ?)",
                (block_id, annotator, percent, int(skipped), now),
            )
            return int(cur.lastrowid)

    def undo_estimate(self, estimate_id: int, reinstate: int | None = None) -> None:
        """Mark an estimate as undone (kept in the history, no longer counted).

        ``reinstate``, the id of the estimate that this one superseded, is made live again in
        the same transaction, so undoing a changed estimate brings the earlier one back.
        """
        with self.transaction() as con:
            con.execute(
                "UPDATE estimates SET undone_time=? WHERE id=? AND undone_time IS NULL",
                (time.time(), estimate_id),
            )
            if reinstate is not None:
                con.execute("UPDATE estimates SET undone_time=NULL WHERE id=?", (reinstate,))

    def estimates(
        self, annotator: str | None = None, include_skipped: bool = False
    ) -> list[Estimate]:
        """Live estimates (latest per block and annotator), optionally for one annotator."""
        sql = (
            "SELECT e.id, e.block_id, e.annotator, e.percent, e.skipped, e.time, b.bin, "
            "b.slide_id FROM estimates e JOIN blocks b ON b.id = e.block_id "
            "WHERE e.undone_time IS NULL"
        )
        params: tuple = ()
        if annotator is not None:
            sql += " AND e.annotator = ?"
            params = (annotator,)
        if not include_skipped:
            sql += " AND e.skipped = 0"
        sql += " ORDER BY e.id"
        return [
            Estimate(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7])
            for r in self.query(sql, params)
        ]

    def annotators(self) -> list[str]:
        return [r[0] for r in self.query("SELECT DISTINCT annotator FROM estimates ORDER BY 1")]

    # -- prior edits -------------------------------------------------------------------------

    def add_prior_edit(
        self, bin: int, mean_pct: float, std_pct: float, annotator: str, note: str = ""
    ) -> None:
        if not 0 <= mean_pct <= 100 or std_pct < 0:
            raise ValueError(f"bin {bin}: mean must be in 0-100 and std non-negative")
        with self.transaction() as con:
            con.execute(
                "INSERT INTO prior_edits(bin, mean_pct, std_pct, annotator, time, note) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (bin, mean_pct, std_pct, annotator, time.time(), note),
            )

    def prior_edit_history(self) -> list[tuple[int, int, float, float, str, float, str]]:
        """Every prior edit, oldest first: (id, bin, mean_pct, std_pct, annotator, time, note)."""
        rows = self.query(
            "SELECT id, bin, mean_pct, std_pct, annotator, time, COALESCE(note, '') "
            "FROM prior_edits ORDER BY id"
        )
        return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def prior_edits(self) -> dict[int, tuple[float, float, str, float]]:
        """Latest edit per bin: bin -> (mean_pct, std_pct, annotator, time)."""
        rows = self.query(
            "SELECT bin, mean_pct, std_pct, annotator, time FROM prior_edits ORDER BY id"
        )
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}
