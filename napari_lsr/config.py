"""Training settings defined once (torch-free): the choices, the recipe's defaults, the presets.

``TrainConfig``'s field defaults *are* the recipe that BENCHMARKS.md chose on real tissue; the
command line, the training widget's form, the demo and the model card are all built from it.
Importing this module does not import torch, so the widget opens without waiting for it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any


class LSRError(Exception):
    """Base of napari-lsr's errors: each carries a one-line message for the user."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an error's message, without terminal colour codes (the type name
    when it has none), cut to ``limit`` characters when given: the package's one helper."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


class TrainingError(LSRError, RuntimeError):
    """Training stopped: bad settings, or a non-finite loss (the last good checkpoint stays)."""


LOSSES: tuple[str, ...] = ("intra", "inter", "intra+inter")
DISTANCES: tuple[str, ...] = ("paper", "gaussian", "kl")
PIXEL_VARIANCES: tuple[str, ...] = ("paper", "exact")
NORMS: tuple[str, ...] = ("batch", "channel", "group")
OPTIMIZERS: tuple[str, ...] = ("rmsprop", "adam", "adamw")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
#: How the inter statistic's groups pick their bins: ``uniform`` over the bins holding a
#: group, or ``blocks`` in proportion to the bins' block counts.
GROUP_DRAWS: tuple[str, ...] = ("uniform", "blocks")
#: How the output starts: at the prior's mean cancer fraction, or at p = 0.12 (logit -2).
INIT_BIASES: tuple[str, ...] = ("prior", "fixed")

#: The paper's learning rates (Sec. 3.3) per loss.
PAPER_LR: dict[str, float] = {"intra": 1e-5, "inter": 1e-3, "intra+inter": 1e-3}

#: Training block side (px) when neither the project nor the user gives a geometry: label
#: blocks of any size in microns are resampled to it, the size of every benchmark run
#: (synthetic: 256 um blocks at 4 um/px; real tissue: 64 um blocks at 1 um/px; the paper:
#: 240 px). A fixed mpp instead would make 64 um blocks 16 px at 4 um/px.
DEFAULT_BLOCK_PX = 64
#: A pixel is cancer where the predicted probability is at least this (evaluation, export).
CANCER_THRESHOLD = 0.5
#: The synthetic sample (``napari-lsr sample``, the demo): a 4 x 4 mm slide at 1 um/px with
#: 256 um blocks, written with a training resolution of 4 um/px (64 px blocks: a useful model
#: on a 2-core CPU in minutes).
SAMPLE_SIZE = 4096
SAMPLE_MPP = 1.0
SAMPLE_BLOCK_UM = 256.0
SAMPLE_TRAIN_MPP = 4.0


@dataclass
class TrainConfig:
    """Everything that defines a run. The defaults are napari-lsr's recipe (BENCHMARKS.md)."""

    loss: str = "intra+inter"
    distance: str = "gaussian"
    pixel_variance: str = "paper"
    steps: int = 500
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # "constant" or "cosine" decay to lr/20
    warmup: int = 0  # steps of linear learning-rate warm-up
    optimizer: str = "rmsprop"
    ema: float = 0.99  # weight averaging decay; 0 disables (inference uses EMA weights if on)
    batch_size: int = 30  # intra: blocks per batch
    groups: int = 4  # inter, intra+inter: groups per batch (the paper: 2)
    group_size: int = 8  # blocks per group (the paper: 15)
    group_draw: str = "blocks"
    min_group: int = 2  # smallest bin that may form a group (0: half the group size)
    intra_steps: int = 0  # inter losses: train with intra for this many steps first
    rmsprop_alpha: float = 0.9  # RMSprop smoothing (the paper's beta)
    seed: int = 0
    device: str = "auto"
    depth: int = 3
    width: int = 16
    norm: str = "batch"
    init_bias: str = "prior"
    augment: bool = True  # flips and 90-degree rotations
    colour: float = 0.0  # colour jitter (stain) strength on top of augment; 0: none
    #: BatchNorm switches to its running statistics (inference's) from this step on, so the
    #: rest of training sees what inference sees, never the batch's mix of bins; 0: never.
    bn_freeze: int = 150
    #: At the switch, recompute BatchNorm's statistics over the training blocks with the
    #: weights of that step (``update_bn``) instead of keeping the running average, which lags
    #: weights that moved during its last ~10 batches: in one seed of the small project the
    #: first frozen forward pass jumped from -0.28 to 15.7 with it (issue 22).
    bn_precise: bool = True
    #: After the switch the learning rate ramps up again over this many steps: RMSprop's step
    #: sizes were estimated on gradients that BatchNorm's batch statistics had projected (no
    #: component that shifts or scales a channel), and the first unprojected gradients
    #: otherwise make a step about 3x too large in a direction the frozen network is most
    #: sensitive to: the loss jumped 50-7800 times its spread at step 152 (issue 22). 0: none.
    bn_rewarm: int = 50
    #: From the switch on, the learning rate is multiplied by this: without batch statistics a
    #: step also moves the channels' mean and scale, which BatchNorm had absorbed; at the full
    #: rate the loss still jumped once the second warm-up ended (issue 22).
    bn_lr: float = 0.3
    recalibrate: bool = False  # BatchNorm statistics recomputed with the final weights
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        for name, choices in (
            ("loss", LOSSES),
            ("distance", DISTANCES),
            ("pixel_variance", PIXEL_VARIANCES),
            ("norm", NORMS),
            ("optimizer", OPTIMIZERS),
            ("lr_schedule", LR_SCHEDULES),
            ("group_draw", GROUP_DRAWS),
            ("init_bias", INIT_BIASES),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise TrainingError(
                    f"unknown {name.replace('_', ' ')} {value!r}; choose from {', '.join(choices)}"
                )
        if self.steps < 1:
            raise TrainingError("steps must be at least 1")
        if self.lr is None:  # checkpoints from before the recipe: the paper's rate
            self.lr = PAPER_LR[self.loss]
        if not self.lr > 0:
            raise TrainingError(f"learning rate must be positive, got {self.lr}")
        if not 0.0 <= self.ema < 1.0:
            raise TrainingError("ema must be in [0, 1)")
        if min(self.warmup, self.intra_steps, self.min_group, self.bn_freeze, self.bn_rewarm) < 0:
            raise TrainingError(
                "warmup, intra steps, min group, bn freeze and bn rewarm must be 0 or more"
            )
        if not 0 < self.bn_lr <= 1:
            raise TrainingError("bn lr must be in (0, 1]")
        if self.colour < 0:
            raise TrainingError("colour jitter must be 0 or more")

    @property
    def learning_rate(self) -> float:
        return float(self.lr)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """From a dict (a checkpoint's); settings added later take their old behaviour."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        if "norm" not in d:
            return cls(**{**LEGACY, **known})
        # settings added after ``norm``: a checkpoint without one ran without it
        return cls(**{**{k: v for k, v in LEGACY.items() if k in ADDED_AFTER_NORM}, **known})


#: What runs written before a setting existed did (so their checkpoints resume as they ran).
LEGACY: dict[str, Any] = {
    "norm": "channel",
    "init_bias": "fixed",
    "colour": 0.05,
    "optimizer": "rmsprop",
    "warmup": 0,
    "intra_steps": 0,
    "group_draw": "uniform",
    "min_group": 0,
    "recalibrate": False,
    "bn_freeze": 0,
    "groups": 2,
    "group_size": 15,
    "lr": None,
    "bn_precise": False,
    "bn_rewarm": 0,
    "bn_lr": 1.0,
}
#: LEGACY's settings that came after ``norm``: a checkpoint that has ``norm`` but lacks one of
#: these was written before it existed.
ADDED_AFTER_NORM: tuple[str, ...] = ("bn_precise", "bn_rewarm", "bn_lr")

#: The recipe's defaults, as a dict (the form and argparse show these).
DEFAULTS: dict[str, Any] = TrainConfig().to_dict()

#: Named presets: napari-lsr's recipe, and the paper's settings (Sec. 3.3) with the engine as
#: it was first written. ``lr`` maps each loss to its learning rate.
RECIPE_PRESET = "napari-lsr (benchmarks)"
PAPER_PRESET = "paper (Sec. 3.3)"
#: What the paper's preset did on the real-tissue benchmark (BENCHMARKS.md), in one line.
PAPER_PRESET_NOTE = (
    "the paper's preset on the OCDC tiles: intra 0.000 (lr 1e-5 predicts no cancer after 500 "
    "steps), intra+inter 0.765, against 0.879 for the block labels and 0.940 for the recipe"
)
PRESETS: dict[str, dict[str, Any]] = {
    RECIPE_PRESET: {
        "lr": {loss: DEFAULTS["lr"] for loss in LOSSES},
        **{
            k: DEFAULTS[k]
            for k in (
                "lr_schedule",
                "ema",
                "batch_size",
                "groups",
                "group_size",
                "min_group",
                "group_draw",
                "bn_freeze",
                "bn_precise",
                "bn_rewarm",
                "bn_lr",
                "norm",
            )
        },
    },
    PAPER_PRESET: {
        "lr": dict(PAPER_LR),
        "lr_schedule": "constant",
        "ema": 0.0,
        "batch_size": 30,
        "groups": 2,
        "group_size": 15,
        "min_group": 0,
        "group_draw": "uniform",
        "bn_freeze": 0,
        "bn_precise": False,
        "bn_rewarm": 0,
        "bn_lr": 1.0,
        "norm": "channel",
    },
}
