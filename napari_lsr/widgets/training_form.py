"""The training dock's settings form: the Loss and Hyperparameters groups, from ``config``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtGui import QDoubleValidator
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from .. import config

# Choices, defaults and presets are defined once, in the torch-free ``config`` (the command
# line and the demo use the same); each combo lists its default first.


def _default_first(choices: tuple[str, ...], key: str) -> list[str]:
    d = config.DEFAULTS[key]
    return [d, *(c for c in choices if c != d)]


def _spin(lo: int, hi: int, value: int, tip: str = "") -> QSpinBox:
    w = QSpinBox()
    w.setRange(lo, hi)
    w.setValue(value)
    w.setToolTip(tip)
    return w


def _combo(items: list[str], tip: str) -> QComboBox:
    w = QComboBox()
    w.addItems(items)
    w.setToolTip(tip)
    return w


def _row(*widgets: QWidget | str) -> QWidget:
    """Widgets (a string: a label) side by side, without margins."""
    row = QWidget()
    h = QHBoxLayout(row)
    h.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        h.addWidget(QLabel(w) if isinstance(w, str) else w)
    return row


class TrainingForm(QWidget):
    """The run's settings: loss, distance, pixel variance, optimiser, batch layout, U-Net and
    training resolution, and the presets that fill them. ``config_kwargs`` reads them."""

    #: The loss or the distance changed (the model's suggested name follows them).
    basis_changed = Signal()

    #: The controls the dock widget shows as its own attributes (scripts and tests use them).
    CONTROLS = (
        "loss_combo",
        "distance_combo",
        "variance_combo",
        "distance_hint",
        "steps_spin",
        "lr_edit",
        "schedule_combo",
        "ema_spin",
        "batch_spin",
        "groups_spin",
        "group_size_spin",
        "batch_stack",
        "seed_spin",
        "ckpt_spin",
        "depth_spin",
        "width_spin",
        "mpp_spin",
        "block_spin",
        "augment_check",
        "preset_combo",
        "norm_combo",
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self._build_loss())
        lay.addWidget(self._build_hyperparameters())
        self.loss_combo.currentTextChanged.connect(self.on_loss_changed)
        self.distance_combo.currentTextChanged.connect(self._on_distance_changed)
        self.preset_combo.activated.connect(self._on_preset)
        self.on_loss_changed()
        self._on_distance_changed()

    def _build_loss(self) -> QGroupBox:
        loss = QGroupBox("Loss")
        g = QGridLayout(loss)
        self.loss_combo = _combo(
            _default_first(config.LOSSES, "loss"),
            "intra: each block against p(c|z) (Sec. 2.1); inter: groups of blocks of one bin "
            "(Sec. 2.2); intra+inter: both (Sec. 2.3)",
        )
        self.distance_combo = _combo(
            _default_first(config.DISTANCES, "distance"),
            "gaussian: Malkin et al.'s statistics matching; kl: KL(N(mu,s2) || N(eta,rho2)); "
            "paper: Eq. 5/9 as printed (can collapse to confident pixels)",
        )
        self.variance_combo = _combo(
            _default_first(config.PIXEL_VARIANCES, "pixel_variance"),
            "paper: var_k = mean p(1-p); exact: the variance of the sampled fraction, / |X_k|",
        )
        g.addWidget(QLabel("Loss"), 0, 0)
        g.addWidget(self.loss_combo, 0, 1)
        g.addWidget(QLabel("Distance"), 0, 2)
        g.addWidget(self.distance_combo, 0, 3)
        g.addWidget(QLabel("Pixel variance"), 1, 0)
        g.addWidget(self.variance_combo, 1, 1)
        self.distance_hint = QLabel("paper distance alone can collapse; try a low LR")
        self.distance_hint.setWordWrap(True)
        self.distance_hint.setStyleSheet("color: #e0a030;")
        g.addWidget(self.distance_hint, 1, 2, 1, 2)
        return loss

    def _build_controls(self) -> None:
        """The hyperparameters' inputs, before they are laid out."""
        d = config.DEFAULTS
        self.steps_spin = _spin(1, 10_000_000, d["steps"], "optimiser steps")
        self.lr_edit = QLineEdit()
        self.lr_edit.setValidator(QDoubleValidator(1e-12, 10.0, 12))
        self.lr_edit.setToolTip("RMSprop learning rate; the paper: 1e-5 intra, 1e-3 intra+inter")
        self.schedule_combo = _combo(
            _default_first(config.LR_SCHEDULES, "lr_schedule"),
            "constant: the paper; cosine: decay to LR/20",
        )
        self.ema_spin = QDoubleSpinBox()
        self.ema_spin.setRange(0.0, 0.9999)
        self.ema_spin.setDecimals(4)
        self.ema_spin.setSingleStep(0.001)
        self.ema_spin.setValue(d["ema"])
        self.ema_spin.setToolTip("weight averaging decay (0: off; e.g. 0.99)")
        self.batch_spin = _spin(1, 10_000, d["batch_size"], "intra: blocks per batch (paper 30)")
        self.groups_spin = _spin(1, 100, d["groups"], "groups per batch, G (paper 2)")
        self.group_size_spin = _spin(2, 1000, d["group_size"], "blocks per group, N (paper 15)")
        self.batch_stack = QStackedWidget()
        self.batch_stack.addWidget(_row(self.batch_spin, "blocks"))
        self.batch_stack.addWidget(
            _row(self.groups_spin, "groups ×", self.group_size_spin, "blocks")
        )
        self.seed_spin = _spin(0, 2**31 - 1, d["seed"], "random seed (same seed, same run)")
        self.ckpt_spin = _spin(0, 1_000_000, d["checkpoint_every"], "steps between checkpoints")
        self.depth_spin = _spin(1, 6, d["depth"], "U-Net depth (levels)")
        self.width_spin = _spin(1, 256, d["width"], "U-Net width (channels at the top level)")
        self.mpp_spin = QDoubleSpinBox()
        self.mpp_spin.setRange(0.0, 100.0)
        self.mpp_spin.setDecimals(2)
        self.mpp_spin.setValue(0.0)
        self.mpp_spin.setSpecialValueText("auto")
        self.mpp_spin.setSuffix(" µm/px")
        self.mpp_spin.setToolTip("training resolution (paper: about 4.2 µm/px); 0: from block px")
        self.block_spin = _spin(
            0,
            4096,
            config.DEFAULT_BLOCK_PX,
            "block size in px (0: from the mpp); wins over an mpp",
        )
        self.block_spin.setSpecialValueText("auto")
        self.augment_check = QCheckBox("augment")
        self.augment_check.setChecked(d["augment"])
        self.augment_check.setToolTip("random flips, rotations and stain jitter")
        self.preset_combo = _combo(
            list(config.PRESETS),
            "fill LR, schedule, EMA, batch layout and normalisation: napari-lsr's recipe "
            f"(BatchNorm, lr {config.DEFAULTS['lr']:g} for every loss; BENCHMARKS.md), "
            "or the paper's "
            "settings (lr 1e-5 intra, 1e-3 inter/intra+inter) with the first engine's "
            f"per-pixel norm; {config.PAPER_PRESET_NOTE}",
        )
        self.norm_combo = _combo(
            _default_first(config.NORMS, "norm"),
            "normalisation after each conv: batch (the recipe; running statistics at "
            "inference, seamless tiles), channel (per pixel, the first engine's), group",
        )

    def _build_hyperparameters(self) -> QGroupBox:
        self._build_controls()
        hyper = QGroupBox("Hyperparameters")
        g = QGridLayout(hyper)
        rows = [
            ("Steps", self.steps_spin, "LR", self.lr_edit),
            ("Schedule", self.schedule_combo, "EMA", self.ema_spin),
            ("Seed", self.seed_spin, "Ckpt every", self.ckpt_spin),
            ("Depth", self.depth_spin, "Width", self.width_spin),
            ("Train mpp", self.mpp_spin, "Block px", self.block_spin),
            ("Norm", self.norm_combo, None, None),
        ]
        g.addWidget(QLabel("Batch"), 0, 0)
        g.addWidget(self.batch_stack, 0, 1, 1, 3)
        for i, (la, wa, lb, wb) in enumerate(rows, start=1):
            g.addWidget(QLabel(la), i, 0)
            g.addWidget(wa, i, 1)
            if wb is not None:
                g.addWidget(QLabel(lb), i, 2)
                g.addWidget(wb, i, 3)
        g.addWidget(self.augment_check, len(rows) + 1, 1)
        g.addWidget(self.preset_combo, len(rows) + 1, 2, 1, 2)
        g.setColumnStretch(1, 1)
        g.setColumnStretch(3, 1)
        return hyper

    # -- reactions -------------------------------------------------------------------------

    def on_loss_changed(self, *_: Any) -> None:
        """The preset's LR for the loss, and its batch layout (blocks, or groups × blocks)."""
        loss = self.loss_combo.currentText()
        preset = config.PRESETS[self.preset_combo.currentText()]
        self.lr_edit.setText(f"{preset['lr'][loss]:g}")
        self.batch_stack.setCurrentIndex(0 if loss == "intra" else 1)
        self.basis_changed.emit()

    def _on_distance_changed(self, *_: Any) -> None:
        self.distance_hint.setVisible(self.distance_combo.currentText() == "paper")
        self.basis_changed.emit()

    def _on_preset(self, *_: Any) -> None:
        self.apply_preset()

    def apply_preset(self, name: str | None = None) -> None:
        """Fill LR, schedule, EMA and batch layout from a preset (default: the selected one)."""
        if name is not None:
            self.preset_combo.setCurrentText(name)
        preset = config.PRESETS[self.preset_combo.currentText()]
        self.lr_edit.setText(f"{preset['lr'][self.loss_combo.currentText()]:g}")
        self.schedule_combo.setCurrentText(preset["lr_schedule"])
        self.ema_spin.setValue(preset["ema"])
        self.batch_spin.setValue(preset["batch_size"])
        self.groups_spin.setValue(preset["groups"])
        self.group_size_spin.setValue(preset["group_size"])
        self.norm_combo.setCurrentText(preset["norm"])

    # -- reading ---------------------------------------------------------------------------

    def name_basis(self) -> str:
        """A model name from the settings: ``LOSS-DISTANCE``."""
        return f"{self.loss_combo.currentText()}-{self.distance_combo.currentText()}"

    def config_kwargs(self, device: str = "auto") -> dict[str, Any]:
        """The form as ``TrainConfig`` keyword arguments, training on ``device``."""
        loss = self.loss_combo.currentText()
        try:
            lr = float(self.lr_edit.text())
        except ValueError:
            raise ValueError(f"the learning rate {self.lr_edit.text()!r} is not a number") from None
        return {
            "loss": loss,
            "distance": self.distance_combo.currentText(),
            "pixel_variance": self.variance_combo.currentText(),
            "steps": self.steps_spin.value(),
            "lr": lr,
            "lr_schedule": self.schedule_combo.currentText(),
            "ema": self.ema_spin.value(),
            "batch_size": self.batch_spin.value(),
            "groups": self.groups_spin.value(),
            "group_size": self.group_size_spin.value(),
            "seed": self.seed_spin.value(),
            "device": device,
            "depth": self.depth_spin.value(),
            "width": self.width_spin.value(),
            "augment": self.augment_check.isChecked(),
            "checkpoint_every": self.ckpt_spin.value(),
            "norm": self.norm_combo.currentText(),
            **self._preset_engine(),
        }

    def _preset_engine(self) -> dict[str, Any]:
        """Engine settings the form does not show, from the chosen preset (and, for the
        paper's, the first engine's companions of ChannelNorm)."""
        name = self.preset_combo.currentText()
        preset = config.PRESETS[name]
        out = {
            k: preset[k]
            for k in ("min_group", "group_draw", "bn_freeze", "bn_precise", "bn_rewarm", "bn_lr")
            if k in preset
        }
        if name == config.PAPER_PRESET:
            out.update({k: config.LEGACY[k] for k in ("init_bias", "colour")})
        return out


def unique_name(folder: Path, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``, ... : the first name no model in ``folder`` has."""
    name, k = base, 2
    while any((folder / f"{name}{ext}").exists() for ext in (".pt", ".card.json", ".json")):
        name, k = f"{base}-{k}", k + 1
    return name


#: The training process's CPU priorities, the default first (``run.PRIORITIES``).
PRIORITY_CHOICES = ("low", "idle", "normal")
PRIORITY_LABELS = {
    "low": "low (nice 10)",
    "idle": "idle (only spare CPU)",
    "normal": "normal",
}
PRIORITY_TIP = (
    "the training process's CPU priority: low (nice 10) keeps napari responsive and still "
    "trains when other programs are busy; idle trains only on CPU time nothing else wants "
    "(on a busy machine it can sit still); normal competes with napari"
)

CANCEL_TIP = "stop after this step; a checkpoint and a card are saved"
FORCE_STOP_TIP = (
    "the run has not stopped yet: end its process now (the last saved checkpoint is kept, the "
    "steps since are lost)"
)


class RunGroup(QGroupBox):
    """The Run group: the device, the model's name and folder; Train, Cancel, Resume."""

    #: The controls the dock widget shows as its own attributes (scripts and tests use them).
    CONTROLS = (
        "device_combo",
        "priority_combo",
        "name_edit",
        "models_label",
        "train_btn",
        "cancel_btn",
        "resume_btn",
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Run", parent)
        g = QGridLayout(self)
        self.device_combo = QComboBox()
        self.device_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.device_combo.addItems(["auto", "cpu"])
        self.device_combo.setToolTip("auto: CUDA, then MPS, then CPU; only devices found here")
        self.priority_combo = QComboBox()
        for key in PRIORITY_CHOICES:
            self.priority_combo.addItem(PRIORITY_LABELS[key], key)
        self.priority_combo.setToolTip(PRIORITY_TIP)
        self.name_edit = QLineEdit()
        self.name_edit.setToolTip("the model's file name in the models folder (NAME.pt, NAME.json)")
        self.name_edit.textEdited.connect(self._on_name_edited)
        #: True once the user typed a name: ``suggest_name`` leaves it.
        self.name_edited = False
        self.models_label = QLabel("models folder: –")
        self.models_label.setWordWrap(True)
        self.train_btn = QPushButton("Train")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip(CANCEL_TIP)
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.setToolTip("continue the selected (or last cancelled) run")
        self.priority_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.priority_combo.setMinimumContentsLength(len("low (nice 10)"))
        g.addWidget(QLabel("Device"), 0, 0)
        g.addWidget(self.device_combo, 0, 1)
        g.addWidget(QLabel("CPU priority"), 0, 2)
        g.addWidget(self.priority_combo, 0, 3)
        g.addWidget(QLabel("Name"), 1, 0)
        g.addWidget(self.name_edit, 1, 1, 1, 3)
        g.addWidget(self.models_label, 2, 0, 1, 4)
        buttons = QHBoxLayout()
        for b in (self.train_btn, self.cancel_btn, self.resume_btn):
            buttons.addWidget(b)
        g.addLayout(buttons, 3, 0, 1, 4)
        g.setColumnStretch(3, 1)

    def priority(self) -> str:
        """The chosen CPU priority of the training process (``run.PRIORITIES``)."""
        return str(self.priority_combo.currentData())

    def set_priority(self, priority: str) -> None:
        """Choose a CPU priority (``run.PRIORITIES``); ValueError for another."""
        index = self.priority_combo.findData(priority)
        if index < 0:
            raise ValueError(f"priority must be one of {PRIORITY_CHOICES}, not {priority!r}")
        self.priority_combo.setCurrentIndex(index)

    def device(self) -> str:
        """The chosen device, as ``TrainConfig.device`` takes it."""
        return self.device_combo.currentText().split(" ")[0]

    def set_devices(self, devices: list[str]) -> None:
        """Offer ``devices``, keeping the chosen one where it is still offered."""
        current = self.device()
        self.device_combo.clear()
        self.device_combo.addItems(devices)
        for i, d in enumerate(devices):
            if d.split(" ")[0] == current:
                self.device_combo.setCurrentIndex(i)

    def _on_name_edited(self, text: str) -> None:
        self.name_edited = bool(text.strip())

    def suggest_name(self, base: str, folder: Path | None) -> None:
        """Name the model ``base`` (``base-2``, ... where ``folder`` has one), unless the user
        typed a name."""
        if not self.name_edited:
            self.name_edit.setText(unique_name(folder, base) if folder else base)

    def offer_force_stop(self, offer: bool = True) -> None:
        """Cancel becomes Force stop (``offer``), or Cancel again."""
        self.cancel_btn.setText("Force stop" if offer else "Cancel")
        self.cancel_btn.setToolTip(FORCE_STOP_TIP if offer else CANCEL_TIP)
