"""A project folder: ``project.toml``, the SQLite store, ``models/`` and ``predictions/``."""

from __future__ import annotations

import os
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
    paper_prior,
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

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.folder / STORE_FILE)
        return self._store

    def prior(self) -> Prior:
        """The project's prior, or the paper's Table 1 when the project names none."""
        if self.prior_path is None or not self.prior_path.exists():
            return paper_prior()
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

    def register_blocks(self) -> None:
        """Put every slide's blocks into the store (idempotent) so estimates can refer to them."""
        for entry in self.slides:
            if entry.labels is None:
                continue
            with entry.open() as slide:
                labels = entry.read_labels(slide, self.bins)
                sid = self.store.add_slide(
                    str(entry.path), str(entry.labels), slide.width, slide.height, slide.mpp
                )
            self.store.add_blocks(sid, labels.boxes(), labels.probability, labels.bin)
