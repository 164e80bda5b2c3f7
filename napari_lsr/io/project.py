"""A project folder: ``project.toml``, the SQLite store, ``models/`` and ``predictions/``.

A project folder is portable: project.toml names files relative to the folder, and the store
keys each slide by that relative path (``Project.slide_key``), so a copied or moved folder,
on this machine or another, keeps its review progress. Stores written before keyed slides by
absolute path; opening the store renames such keys (and any key whose file the project.toml
no longer names, such as after a slide was moved and project.toml edited) to the project's
own, matching them by file name and the folders above it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from .formats import (
    Bins,
    FormatError,
    LowResLabels,
    Prior,
    atomic_write_text,
    default_prior,
    read_prior_csv,
)
from .interop import read_lowres
from .slide import Slide
from .store import Store

PROJECT_FILE = "project.toml"
STORE_FILE = "annotations.sqlite"


@dataclass
class SlideEntry:
    """One slide of a project, with absolute paths."""

    path: Path
    labels: Path | None = None
    truth: Path | None = None
    mpp: float | None = None
    #: Class of a WSInfer labels file (default: the tumour class) and the column mapping of
    #: another CSV (``x=...,y=...,width=...,height=...,probability=...``).
    labels_class: str | None = None
    labels_columns: str | None = None

    @property
    def name(self) -> str:
        return self.path.stem

    def open(self) -> Slide:
        return Slide(self.path, mpp=self.mpp)

    def read_labels(self, slide: Slide | None = None, bins: Bins | None = None) -> LowResLabels:
        if self.labels is None:
            raise FormatError(self.path, "this slide has no low-resolution labels CSV")
        size = slide.dimensions if slide is not None else None
        return read_lowres(self.labels, size, bins, self.labels_class, self.labels_columns)


@dataclass
class Project:
    """An open project folder."""

    folder: Path
    slides: list[SlideEntry] = field(default_factory=list)
    prior_path: Path | None = None
    bins: Bins = field(default_factory=Bins)
    config: dict[str, Any] = field(default_factory=dict)
    _store: Store | None = None

    @property
    def models_dir(self) -> Path:
        return self.folder / "models"

    @property
    def predictions_dir(self) -> Path:
        return self.folder / "predictions"

    @property
    def cache_dir(self) -> Path:
        return self.folder / "cache"

    def training_geometry(self) -> tuple[int | None, float | None]:
        """(block_size px, mpp) of training from ``[training]`` in project.toml; None where
        it gives none (the one reader of that table)."""
        cfg = self.config.get("training", {}) or {}
        size, mpp = cfg.get("block_size"), cfg.get("mpp")
        return (int(size) if size else None, float(mpp) if mpp else None)

    @property
    def store(self) -> Store:
        if self._store is None:
            store = Store(self.folder / STORE_FILE)
            self._reconcile_store(store)
            self._store = store
        return self._store

    def slide_key(self, path: str | os.PathLike) -> str:
        """How the store names a slide: its path relative to the project folder (posix)."""
        return self._rel(Path(path))

    def _reconcile_store(self, store: Store) -> None:
        """Rename the store's slide keys that no [[slides]] entry has (older absolute keys, a
        moved slide) to the key of the entry with the same file name: unambiguous matches
        only, the longest run of equal trailing path parts winning."""
        rows = store.slide_rows()
        wanted = {self.slide_key(e.path): e for e in self.slides}
        have = {r[1] for r in rows}
        orphans = [r for r in rows if r[1] not in wanted]
        for key, entry in wanted.items():
            if key in have or not orphans:
                continue
            parts = _parts(str(entry.path))
            scored = [(_common_tail(parts, _parts(r[1])), r) for r in orphans]
            best = max(score for score, _ in scored)
            matches = [r for score, r in scored if score == best]
            if best < 1 or len(matches) != 1:
                continue
            store.rename_slide(matches[0][0], key)
            orphans.remove(matches[0])
            have.add(key)

    def prior(self) -> Prior:
        """The project's prior, or ``prior.default_prior`` of its bins when it names none."""
        if self.prior_path is None or not self.prior_path.exists():
            return default_prior(self.bins)
        return read_prior_csv(self.prior_path)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- reading and writing project.toml ----------------------------------------------------

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Project:
        folder = Path(folder).resolve()
        path = folder / PROJECT_FILE
        if not path.exists():
            raise FormatError(path, "not a napari-lsr project (no project.toml)")
        try:
            cfg = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise FormatError(path, f"invalid TOML ({exc})") from exc
        slides = []
        for i, s in enumerate(cfg.get("slides", []), start=1):
            if "path" not in s:
                raise FormatError(path, f"[[slides]] entry {i} has no path")
            slides.append(
                SlideEntry(
                    (folder / s["path"]).resolve(),
                    (folder / s["labels"]).resolve() if s.get("labels") else None,
                    (folder / s["truth"]).resolve() if s.get("truth") else None,
                    float(s["mpp"]) if s.get("mpp") else None,
                    s.get("labels_class") or None,
                    s.get("labels_columns") or None,
                )
            )
        prior = cfg.get("prior", {}).get("path")
        bins = Bins()
        if cfg.get("bins", {}).get("edges"):
            edges = cfg["bins"]["edges"]
            bins = Bins(tuple(zip(map(float, edges[:-1]), map(float, edges[1:]))))
        return cls(folder, slides, (folder / prior).resolve() if prior else None, bins, cfg)

    @classmethod
    def create(
        cls,
        folder: str | os.PathLike,
        slides: list[SlideEntry],
        prior_path: str | os.PathLike | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Project:
        """Write ``project.toml`` (paths relative to the folder) and make the sub-folders."""
        folder = Path(folder).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        proj = cls(
            folder,
            slides,
            Path(prior_path).resolve() if prior_path else None,
            config=dict(extra or {}),
        )
        proj.save()
        proj.models_dir.mkdir(exist_ok=True)
        proj.predictions_dir.mkdir(exist_ok=True)
        return proj

    def _rel(self, p: Path) -> str:
        try:
            return Path(os.path.relpath(p, self.folder)).as_posix()
        except ValueError:  # another drive on Windows
            return str(p)

    def save(self) -> None:
        cfg = {k: v for k, v in self.config.items() if k not in ("prior", "slides")}
        if self.prior_path is not None:
            cfg["prior"] = {"path": self._rel(self.prior_path)}
        rows = []
        for s in self.slides:
            row: dict[str, Any] = {"path": self._rel(s.path)}
            if s.labels:
                row["labels"] = self._rel(s.labels)
            if s.truth:
                row["truth"] = self._rel(s.truth)
            if s.mpp:
                row["mpp"] = s.mpp
            if s.labels_class:
                row["labels_class"] = s.labels_class
            if s.labels_columns:
                row["labels_columns"] = s.labels_columns
            rows.append(row)
        cfg["slides"] = rows
        atomic_write_text(self.folder / PROJECT_FILE, tomli_w.dumps(cfg))


def _parts(path: str) -> list[str]:
    """A path's components, for POSIX and Windows spellings alike."""
    return [p for p in re.split(r"[\\/]+", path) if p and p != "."]


def _common_tail(a: list[str], b: list[str]) -> int:
    """How many trailing components two paths share (0 when their file names differ)."""
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n
