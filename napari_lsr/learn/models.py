"""The model registry: trained checkpoints in a ``models/`` folder and their JSON cards, Qt-free."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io.formats import MODEL_CARD_SUFFIX, PREDICTION_SIDECAR_SUFFIX, is_legacy_sidecar

log = logging.getLogger(__name__)

#: Card status of a checkpoint that has no card (a run that is going on, failed or was killed).
INCOMPLETE = "incomplete"
#: The status of a ``.pt`` file in ``models/`` that is no checkpoint (a renamed text file,
#: a truncated copy): listed so the user sees it, never offered for Resume.
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class ModelCard:
    """One trained model: its name, its checkpoint (``.pt``) and its card (``.card.json``).

    The card is what ``training.train`` writes on ``done`` or ``cancelled`` (keys such as
    ``loss``, ``distance``, ``steps``, ``final_loss``, ``status``, ``device``, ``slides``,
    ``prior``, ``duration_s``); a checkpoint without a card has ``{"status": "incomplete"}``.
    """

    name: str
    checkpoint: Path
    card: dict[str, Any]

    @property
    def card_path(self) -> Path:
        """The card's file: ``<model>.card.json``, or an older ``<model>.json`` card."""
        from ..io.formats import existing_model_card, model_card_path

        return existing_model_card(self.checkpoint) or model_card_path(self.checkpoint)

    @property
    def status(self) -> str:
        """``done``, ``cancelled`` or ``incomplete``."""
        return str(self.card.get("status", INCOMPLETE))

    @property
    def loss(self) -> str:
        return str(self.card.get("loss", ""))

    @property
    def distance(self) -> str:
        return str(self.card.get("distance", ""))

    @property
    def steps(self) -> int:
        return int(self.card.get("steps") or 0)

    @property
    def steps_planned(self) -> int:
        return int(self.card.get("steps_planned") or self.steps)

    @property
    def final_loss(self) -> float:
        v = self.card.get("final_loss")
        try:
            return math.nan if v is None else float(v)
        except (TypeError, ValueError):
            return math.nan

    @property
    def resumable(self) -> bool:
        """A run that stopped before its planned steps (cancelled, or a bare checkpoint); a
        file that is no checkpoint never is."""
        if self.status == UNREADABLE:
            return False
        return self.status != "done" or self.steps < self.steps_planned

    def summary(self) -> str:
        """One line for lists and tooltips, e.g. ``intra+inter / gaussian, 500/500 steps``."""
        if self.status == UNREADABLE:
            return f"{self.name}: not a checkpoint (not written by torch.save, or damaged)"
        if self.status == INCOMPLETE and "loss" not in self.card:
            return f"{self.name}: checkpoint without a card (run not finished)"
        loss = f", final loss {self.final_loss:.4g}" if math.isfinite(self.final_loss) else ""
        return (
            f"{self.name}: {self.loss} / {self.distance}, {self.steps}/{self.steps_planned} "
            f"steps{loss} ({self.status})"
        )


def _looks_like_checkpoint(path: Path) -> bool:
    """True when ``path`` is a zip archive, as every ``torch.save`` file since PyTorch 1.6
    is (only the header and directory are read; nothing in the file runs)."""
    import zipfile

    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _read_card(path: Path, errors: list[str] | None = None) -> dict[str, Any] | None:
    from ..io.formats import FormatError, read_json_object, read_model_card

    try:  # some other JSON file (neither entry) is no card: skipped without a word
        data = read_json_object(path, "JSON file", {})
        if not ("checkpoint" in data or "loss" in data):
            return None
        return read_model_card(path)
    except FormatError as exc:
        log.warning("%s; skipped", exc)
        if errors is not None:
            errors.append(f"{exc}; skipped")
        return None


def list_models(
    folder: str | os.PathLike,
    include_incomplete: bool = False,
    errors: list[str] | None = None,
) -> list[ModelCard]:
    """The models in ``folder`` (a project's ``models/``), newest first.

    A model is a ``NAME.card.json`` card (or an older ``NAME.json`` one, unless it is a
    prediction's sidecar or ``NAME.card.json`` exists too) whose checkpoint (the card's
    ``checkpoint`` entry, else ``NAME.pt``) exists. With ``include_incomplete``, checkpoints
    without a card are listed too (status ``incomplete``; a periodic checkpoint of a run that
    is going on, failed or was killed). Hidden and temporary files are ignored; an unreadable
    or malformed card (see ``formats.read_model_card``) is skipped with a logged warning, and
    its one-line reason appended to ``errors`` when given. A missing folder holds no models.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: list[tuple[float, ModelCard]] = []
    with_card: set[Path] = set()
    for js in folder.glob("*.json"):
        if js.name.startswith(".") or js.name.endswith(PREDICTION_SIDECAR_SUFFIX):
            continue
        if js.name.endswith(MODEL_CARD_SUFFIX):
            stem = js.name[: -len(MODEL_CARD_SUFFIX)]
        else:  # an older card, unless a new one replaced it or it is a prediction's sidecar
            stem = js.stem
            if (folder / f"{stem}{MODEL_CARD_SUFFIX}").exists() or is_legacy_sidecar(js):
                continue
        card = _read_card(js, errors)
        if card is None:
            continue
        ckpt = folder / str(card.get("checkpoint") or f"{stem}.pt")
        if not ckpt.is_file():
            continue
        with_card.add(ckpt.resolve())
        name = str(card.get("name") or ckpt.stem)
        found.append((js.stat().st_mtime, ModelCard(name, ckpt, card)))
    if include_incomplete:
        for pt in folder.glob("*.pt"):
            if pt.name.startswith(".") or pt.resolve() in with_card:
                continue
            status = INCOMPLETE if _looks_like_checkpoint(pt) else UNREADABLE
            card = {"name": pt.stem, "checkpoint": pt.name, "status": status}
            found.append((pt.stat().st_mtime, ModelCard(pt.stem, pt, card)))
    found.sort(key=lambda t: (-t[0], t[1].name))
    return [m for _, m in found]
