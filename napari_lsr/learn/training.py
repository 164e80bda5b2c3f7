"""The training loop: a generator of progress events, with cancel, checkpoints and exact resume."""

from __future__ import annotations

import copy
import math
import os
import pickle
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import (  # noqa: F401 (PAPER_LR, first_line re-exported)
    DEFAULTS,
    PAPER_LR,
    PRESETS,
    RECIPE_PRESET,
    TrainConfig,
    TrainingError,
    first_line,
)
from ..elicit.prior import check_prior
from ..io.formats import Prior, atomic_path, write_json
from .blocks import BlockSet, GroupSampler, IntraSampler, augment
from .health import (
    JUMP_WINDOW,
    Alarm,
    Health,
    Watch,
    assess,
    block_fractions,
    sample_blocks,
)
from .losses import lsr_loss
from .unet import UNet, UNetConfig, build_model

CHECKPOINT_FORMAT = "napari-lsr-checkpoint"
#: Model health (health.py) is checked every this many steps, on this many blocks per bin.
HEALTH_EVERY = 50
HEALTH_PER_BIN = 24
#: A run that collapses after following the bins goes back to its last healthy weights at
#: most this many times (each recovery is in the log, the events and the card).
MAX_RECOVERIES = 2
#: Under this many training blocks, advice for a degenerate run suggests more.
FEW_BLOCKS = 200
#: 2: plain data only (dicts, lists, tuples, numbers, strings, tensors), written so that the
#: safe loader (``torch.load(weights_only=True)``) opens it; 1: the same keys, not checked.
CHECKPOINT_VERSION = 2


@dataclass
class TrainEvent:
    """One progress report. kind: start, step, checkpoint, done, cancelled."""

    kind: str
    step: int
    total: int
    loss: float = math.nan
    lr: float = math.nan
    blocks_per_s: float = math.nan
    eta_s: float = math.nan
    device: str = ""
    message: str = ""
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def select_device(name: str = "auto") -> torch.device:
    """auto: CUDA, then MPS, then CPU. An explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device cuda was asked for but no CUDA GPU is available")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise TrainingError("device mps was asked for but MPS is not available")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise TrainingError(f"unknown device {name!r} (auto, cpu, cuda, mps)")
    return torch.device(name)


def available_devices() -> list[str]:
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


class _Prefetcher:
    """Draws and augments the next batches in a thread while the current step runs.

    Each batch carries the sampler RNG state from *before* it was drawn, so a checkpoint can
    store the state that reproduces the next batch exactly (``peek_state``). Up to ``depth``
    batches wait: in the queue, and the one ``peek_state`` took out of it.
    """

    def __init__(
        self,
        blocks: BlockSet,
        sampler: Callable[[int], tuple[Any, str]],
        rng: np.random.Generator,
        do_augment: bool,
        depth: int = 2,
        colour: float = 0.0,
        first_step: int = 1,
    ) -> None:
        self.blocks, self.sampler, self.rng, self.do_augment = blocks, sampler, rng, do_augment
        self.colour, self.next_step = colour, first_step
        self.q: queue.Queue = queue.Queue(maxsize=max(1, depth - 1))
        self.head: Any = None  # the next item, taken from the queue by ``peek_state``
        self.has_head = False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="lsr-prefetch")
        self.thread.start()

    def _draw(self) -> tuple:
        state = self.rng.bit_generator.state
        sampler, statistic = self.sampler(self.next_step)  # the batch of step next_step
        self.next_step += 1
        idx, gid = sampler.sample(self.rng)
        order = np.argsort(idx, kind="stable")  # sorted reads from the memory map
        raw = np.asarray(self.blocks.images[idx[order]])
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        raw = raw[inv]
        if self.do_augment:
            x = augment(raw, self.rng, colour=self.colour)
        else:
            x = raw.astype(np.float32) / 255.0
        return state, x, self.blocks.z[idx], gid, statistic

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                item = self._draw()
            except BaseException as exc:  # hand the error to the consumer
                item = exc
            while not self.stop.is_set():
                try:
                    self.q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def _next(self) -> Any:
        if not self.has_head:
            self.head, self.has_head = self.q.get(), True
        return self.head

    def get(self) -> tuple:
        item, self.head, self.has_head = self._next(), None, False
        if isinstance(item, BaseException):
            raise item
        return item

    def peek_state(self) -> dict:
        """The RNG state from before the next batch was drawn (waiting for the draw, so that
        the state is consistent); the generator's own state when drawing failed."""
        item = self._next()
        return item[0] if isinstance(item, tuple) else self.rng.bit_generator.state

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """Learning-rate factor at a step: linear warm-up, then constant or cosine to 1/20; from
    the BatchNorm switch, a second linear warm-up over ``bn_rewarm`` steps.

    For ``LambdaLR``, not ``SequentialLR(LinearLR, CosineAnnealingLR(eta_min))``: those
    compute each rate from the previous one (this curve to about 1e-15, not exactly), the
    cosine climbs again past its end where this one stays at the floor, and their state
    (the cosine's length) is saved in the checkpoint, where a resumed run takes the curve
    from its own settings.
    """
    warm = config.warmup
    floor = 0.05
    total = max(1, config.steps - warm)
    switch, rewarm = config.bn_freeze, config.bn_rewarm

    def factor(step: int) -> float:
        # ``step`` optimiser steps done: this factor sets the rate of training step step + 1
        again = 1.0
        if switch and step >= switch:  # from the first frozen step on
            again = config.bn_lr
            if step < switch + rewarm:
                again *= (step - switch + 1) / (rewarm + 1)
        if step < warm:
            return again * (step + 1) / warm
        if config.lr_schedule == "constant":
            return again
        t = min(step - warm, total) / total
        return again * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))

    return factor


def _ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights (``ema += (1 - decay) * (model -
    ema)`` after each step), starting from its current weights; the buffers (BatchNorm's
    running statistics) are not averaged but copied from ``model`` at each update. The
    checkpoint's ``ema_model`` is ``.module``'s state dict, a plain U-Net's."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
    ema.update_parameters(model)  # the first update copies: the average starts at ``model``
    return ema.requires_grad_(False)


def _optimizer(config: TrainConfig, params: Any) -> torch.optim.Optimizer:
    lr = config.learning_rate
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    return torch.optim.RMSprop(params, lr=lr, alpha=config.rmsprop_alpha)


def _unet_config(config: TrainConfig) -> UNetConfig:
    return UNetConfig(depth=config.depth, width=config.width, norm=config.norm)


def prior_mean_fraction(prior: Prior, z: np.ndarray) -> float:
    """The cancer fraction the prior expects over these blocks: mean of eta over their bins."""
    return float(np.mean(np.asarray(prior.eta, dtype=np.float64)[np.asarray(z)]))


#: Blocks whose batch statistics set BatchNorm's inference statistics at the end of a run.
RECALIBRATION_BLOCKS = 960


def recalibrate_batch_norm(
    model: torch.nn.Module, blocks: BlockSet, seed: int = 0, batch: int = 30
) -> bool:
    """Set a model's BatchNorm statistics to the mean over batches of its training blocks.

    During training BatchNorm keeps an exponential average of recent batches, taken with
    weights that were still moving (and, for EMA weights, with the live model's weights).
    At the end of a run this recomputes them with the final weights over up to
    ``RECALIBRATION_BLOCKS`` random blocks (un-augmented, as inference sees tissue), with
    ``torch.optim.swa_utils.update_bn``. Uses its own RNG: training's stays untouched.
    Returns whether the model had BatchNorm layers.
    """
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return False
    rng = np.random.default_rng([seed, 0x42])
    idx = np.sort(rng.permutation(len(blocks))[:RECALIBRATION_BLOCKS])
    batches = (
        torch.from_numpy(np.asarray(blocks.images[idx[a : a + batch]], np.float32) / 255.0).permute(
            0, 3, 1, 2
        )
        for a in range(0, len(idx), batch)
        if len(idx[a : a + batch]) >= 2  # a lone block gives no batch statistics
    )
    was_training = model.training
    device = next(model.parameters()).device
    with torch.no_grad():
        torch.optim.swa_utils.update_bn(batches, model, device=device)
    model.train(was_training)
    return True


def _freeze_batch_norm(model: torch.nn.Module) -> None:
    """BatchNorm layers normalise with their running statistics and stop updating them."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    state = _plain(state, path)
    try:
        with atomic_path(path, suffix=".tmp") as tmp:
            torch.save(state, tmp)
    except OSError as exc:
        raise TrainingError(f"{path}: cannot write the checkpoint ({exc.strerror or exc})") from exc


def _plain(value: Any, path: Path) -> Any:
    """``value`` as the plain data the safe loader opens: numpy scalars and arrays become
    numbers and lists, paths strings; any other object is refused here, at the first save,
    rather than written into a file that then needs the unsafe loader."""
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        out = type(value)() if type(value) in (dict, OrderedDict) else {}
        for k, v in value.items():
            out[_plain(k, path)] = _plain(v, path)
        versions = getattr(value, "_metadata", None)  # a module state dict's versions
        if versions is not None:
            out._metadata = versions  # type: ignore[attr-defined]
        return out
    if isinstance(value, list):
        return [_plain(v, path) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v, path) for v in value)
    for kind in (bool, int, float, str):  # subclasses (enums, ...): their plain value
        if isinstance(value, kind):
            return kind(value)
    raise TrainingError(
        f"{path}: cannot save a {type(value).__name__} in a checkpoint (plain data only)"
    )


class UntrustedCheckpoint(TrainingError):
    """A file the safe loader refuses: opening it would run code it names (``needs``).

    Older checkpoints that hold more than plain data open only once the user trusts the file
    (``trust=True``, ``trust_checkpoint``): the command line's ``--trust-checkpoint``, a
    confirmation dialog naming the file in the widgets.
    """

    def __init__(self, path: str | os.PathLike, needs: list[str]) -> None:
        self.path, self.needs = Path(path), list(needs)
        calls = ", ".join(self.needs[:3]) + (", ..." if len(self.needs) > 3 else "")
        super().__init__(
            f"{self.path}: not a plain napari-lsr checkpoint (opening it would call {calls}); "
            "refused. Open it only if you trust its source: --trust-checkpoint on the command "
            "line, or confirm in the widget"
        )


#: Files the user chose to trust in this process: (path, size, mtime); a file changed since
#: is no longer trusted.
_TRUSTED: set[tuple[str, int, int]] = set()


def _file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    p = Path(path).resolve()
    st = p.stat()
    return os.path.normcase(str(p)), st.st_size, st.st_mtime_ns


def trust_checkpoint(path: str | os.PathLike) -> None:
    """Let this process open ``path`` with the unsafe loader (the user's explicit choice)."""
    _TRUSTED.add(_file_key(path))


def is_trusted(path: str | os.PathLike) -> bool:
    try:
        return _file_key(path) in _TRUSTED
    except OSError:
        return False


def _refused_globals(path: Path, exc: BaseException) -> list[str]:
    """What the safe loader refused in ``path``, read from the pickle's opcodes (nothing in
    the file runs); [] when it refused the file for another reason (not a checkpoint)."""
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint: the loader's message names the global
        found = []
    return found or re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))


def checkpoint_needs_trust(path: str | os.PathLike) -> list[str]:
    """The calls the safe loader would refuse in ``path`` (e.g. ``['builtins.exec']``); []
    for a plain checkpoint, or one this process trusts already. Runs nothing in the file."""
    if is_trusted(path):
        return []
    try:
        load_checkpoint(path)
    except UntrustedCheckpoint as exc:
        return exc.needs
    except TrainingError:  # unreadable: opening it will say so
        return []
    return []


#: Why a file is no checkpoint, in words (never the loader's internals).
UNREADABLE_CHECKPOINT = "not a readable checkpoint (not written by torch.save, or damaged)"


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", *, trust: bool = False
) -> dict:
    """A checkpoint's contents, checked to be one of ours: the one loader of the package.

    Files open with the safe loader (``weights_only=True``: tensors and plain data, nothing in
    the file runs). A file that needs more (an older or foreign checkpoint, or a crafted one)
    raises ``UntrustedCheckpoint`` unless the user trusts it (``trust``, or
    ``trust_checkpoint`` earlier); only then does the unsafe loader run.
    """
    path = Path(path)
    if not path.exists():
        raise TrainingError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = _refused_globals(path, exc)
        if not needs:
            raise TrainingError(f"{path}: {UNREADABLE_CHECKPOINT}") from None
        if not (trust or is_trusted(path)):
            raise UntrustedCheckpoint(path, needs) from None
        try:  # the opt-in path: the user trusts this file's source
            ckpt = torch.load(path, map_location=map_location, weights_only=False)
        except OSError as exc2:
            raise TrainingError(f"{path}: cannot read the checkpoint ({exc2.strerror})") from exc2
        except Exception as exc2:  # torch's and pickle's internals mean nothing to a user
            raise TrainingError(f"{path}: {UNREADABLE_CHECKPOINT}") from exc2
    except OSError as exc:
        raise TrainingError(f"{path}: cannot read the checkpoint ({exc.strerror})") from exc
    except Exception as exc:  # e.g. "pop from empty list" for a text file: no message
        raise TrainingError(f"{path}: {UNREADABLE_CHECKPOINT}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a napari-lsr checkpoint")
    return ckpt


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, trust: bool = False
) -> tuple[UNet, dict]:
    """The trained network (EMA weights when the run kept them) in eval mode, and its metadata."""
    ckpt = load_checkpoint(path, map_location="cpu", trust=trust)
    with torch.device("meta"):  # no random initialisation of weights about to be replaced
        model = build_model(ckpt["unet"])
    model.load_state_dict(ckpt.get("ema_model") or ckpt["model"], assign=True)
    model.eval().to(device)
    meta = {
        k: v
        for k, v in ckpt.items()
        if k not in ("model", "ema_model", "optimizer", "scheduler", "rng")
    }
    return model, meta


def card_path(checkpoint: str | os.PathLike) -> Path:
    """The JSON model card beside a checkpoint: ``<model>.card.json`` (a prediction's sidecar
    is ``<name>.pred.json``, so neither replaces the other; older ``<model>.json`` cards are
    still read, see ``formats.existing_model_card``)."""
    from ..io.formats import model_card_path

    return model_card_path(checkpoint)


def recipe_differences(config: TrainConfig) -> list[str]:
    """The settings in which ``config`` differs from the napari-lsr preset (the recipe)."""
    out = []
    for key, value in PRESETS[RECIPE_PRESET].items():
        mine = config.learning_rate if key == "lr" else getattr(config, key)
        want = value[config.loss] if key == "lr" else value
        if mine != want:
            out.append(key.replace("_", " "))
    return out


def advice(config: TrainConfig, prior: Prior, z: np.ndarray, steps: int) -> str:
    """What to try after a degenerate or collapsing run, naming what differs from what works:
    the preset when the run is not the recipe (another seed when it is), the prior's bins that
    do not rise, too few blocks, a run (of ``steps``) shorter than the default. Never the
    settings in use."""
    tips = []
    differs = recipe_differences(config)
    if differs:
        tips.append(
            f"try the napari-lsr preset (this run differs in {', '.join(differs[:4])}"
            + (", ..." if len(differs) > 4 else "")
            + ")"
        )
    else:
        tips.append(f"try another seed (this run: {config.seed})")
    empty = set(range(len(prior.bins))) - {int(b) for b in np.asarray(z).ravel()}
    falling = check_prior(prior, empty_bins=empty).not_monotonic
    if falling:
        labels = prior.bins.labels
        tips.append(
            "check the prior: its mean falls in bin "
            + ", ".join(labels[b] for b in falling)
            + " (review more blocks there or edit it)"
        )
    if len(z) < FEW_BLOCKS:
        tips.append(f"add slides: {len(z)} training blocks is few")
    if steps < DEFAULTS["steps"]:
        tips.append(f"train longer (this run: {steps} steps; the default is {DEFAULTS['steps']})")
    return "; ".join(tips)


def train(
    blocks: BlockSet,
    prior: Prior,
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    cancel: Callable[[], bool] | threading.Event | None = None,
    resume: str | os.PathLike | None = None,
    info: dict[str, Any] | None = None,
) -> Iterator[TrainEvent]:
    """Train a U-Net on cached blocks; yields a TrainEvent per step and on checkpoints.

    ``cancel`` (an Event or a callable) is checked before every step; when set the run saves a
    checkpoint, writes its card and yields a ``cancelled`` event. ``resume`` continues from a
    checkpoint so that the next step equals that of an uninterrupted run with the same seed.
    A non-finite loss raises TrainingError and leaves the last good checkpoint in place.
    ``info`` (slides, prior path, ...) is stored in the checkpoint and the model card.

    The phases are the methods of ``_Run``: ``setup`` (the model, optimiser and samplers, or
    a checkpoint's), ``one_step`` (a batch of blocks, the loss against the prior, an update),
    ``health_check`` (the watch: loss jumps, collapses, going back), ``checkpoint`` and
    ``finish`` (the served model's last health, the checkpoint and the model card).
    """
    is_cancelled = _cancel_fn(cancel)
    run = _Run.setup(blocks, prior, config, out, resume=resume, info=info)
    yield run.event(
        "start", run.start, message=f"{len(blocks)} blocks, {config.loss} / {config.distance}"
    )
    if run.start >= config.steps:
        yield run.finish(run.start, "done")
        return
    prefetch = _Prefetcher(
        blocks, run.sampler, run.rng, config.augment, colour=config.colour, first_step=run.start + 1
    )
    try:
        for step in range(run.start + 1, config.steps + 1):
            if is_cancelled():
                yield run.finish(step - 1, "cancelled")
                return
            yield run.one_step(step, prefetch)
            if (
                config.checkpoint_every
                and step % config.checkpoint_every == 0
                and step < config.steps
            ):
                yield run.checkpoint(step)
        yield run.finish(config.steps, "done")
    finally:
        prefetch.close()


class _Run:
    """One training run's state, in the phases of ``train``."""

    @classmethod
    def setup(
        cls,
        blocks: BlockSet,
        prior: Prior,
        config: TrainConfig,
        out: str | os.PathLike,
        *,
        resume: str | os.PathLike | None = None,
        info: dict[str, Any] | None = None,
    ) -> _Run:
        """Setup: check the inputs, build the U-Net (its output bias at the prior's mean when
        ``init_bias`` is ``prior``), the optimiser, rate schedule and EMA, or take them from
        the checkpoint ``resume``; the samplers (intra, then groups of one bin each) and the
        blocks the health checks predict."""
        out = Path(out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrainingError(f"{out.parent}: cannot create the output directory") from exc
        if not os.access(out.parent, os.W_OK):
            raise TrainingError(f"{out.parent}: the checkpoint directory is not writable")
        return cls(blocks, prior, config, out, resume, info)

    def __init__(
        self,
        blocks: BlockSet,
        prior: Prior,
        config: TrainConfig,
        out: Path,
        resume: str | os.PathLike | None,
        info: dict[str, Any] | None,
    ) -> None:
        self.blocks, self.prior, self.config, self.out = blocks, prior, config, out
        n_bins = len(prior.bins)
        if len(blocks) == 0:
            raise TrainingError("no training blocks")
        if blocks.z.max() >= n_bins:
            raise TrainingError(
                f"the labels use bin {int(blocks.z.max())} but the prior has only {n_bins} bins"
            )
        self.device = device = select_device(config.device)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.model = model = build_model(_unet_config(config))
        if config.init_bias == "prior":
            model.set_output_prior(prior_mean_fraction(prior, blocks.z))
        model.to(device)
        self.opt = _optimizer(config, model.parameters())
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(config))
        self.ema = _ema(model, config.ema) if config.ema > 0 else None
        self.ema_model = self.ema.module if self.ema is not None else None
        self.start, self.history, self.elapsed0 = 0, [], 0.0
        self.alarms: list[dict[str, Any]] = []  # what the watch reported (health.Watch)
        self.recoveries: list[dict[str, Any]] = []  # the alarms after which the run went back
        if resume is not None:
            self._resume(resume)
        self.eta = torch.as_tensor(prior.eta, dtype=torch.float32, device=device)
        self.rho = torch.as_tensor(prior.rho, dtype=torch.float32, device=device)
        self.intra_sampler = IntraSampler(blocks.z, config.batch_size)
        if config.loss == "intra":
            self.group_sampler: Any = self.intra_sampler
        else:
            try:
                self.group_sampler = GroupSampler(
                    blocks.z,
                    config.groups,
                    config.group_size,
                    min_group=config.min_group or None,
                    bin_labels=prior.bins.labels,
                    draw=config.group_draw,
                )
            except ValueError as exc:
                raise TrainingError(str(exc)) from exc
        self.amp = device.type == "cuda"
        self.info = dict(info or {})
        self.t0 = time.perf_counter()
        self.last_loss = math.nan
        self.next_state = self.rng.bit_generator.state
        self.step_time: float | None = None
        self.health_idx = sample_blocks(blocks.z, HEALTH_PER_BIN)
        self.health_images = np.asarray(blocks.images[self.health_idx])
        self.eta_np, self.rho_np = np.asarray(prior.eta), np.asarray(prior.rho)
        # The watch (health.Watch): loss jumps and collapses are reported at once; a collapse
        # after the model followed the bins sends the run back to its last healthy weights.
        self.watch = Watch()
        self.healthy: dict[str, Any] = {}  # the last healthy check's step and weights
        self.jumped: list[int] = []  # steps of loss jumps

    def _resume(self, resume: str | os.PathLike) -> None:
        """The model, optimiser, schedule, EMA, RNGs and history of a checkpoint."""
        config = self.config
        ckpt = load_checkpoint(resume, map_location=self.device)
        old = TrainConfig.from_dict(ckpt["config"])
        for key in ("loss", "distance", "pixel_variance", "depth", "width", "seed"):
            if getattr(old, key) != getattr(config, key):
                raise TrainingError(
                    f"{resume}: checkpoint has {key}={getattr(old, key)!r}, this run "
                    f"{key}={getattr(config, key)!r}"
                )
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        if self.ema_model is not None and ckpt.get("ema_model"):
            self.ema_model.load_state_dict(ckpt["ema_model"])
        self.rng.bit_generator.state = ckpt["rng"]["numpy"]
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        self.start = int(ckpt["step"])
        self.history = list(ckpt.get("history", []))
        self.elapsed0 = float(ckpt.get("elapsed_s", 0.0))
        self.alarms = list(ckpt.get("alarms", []))
        self.recoveries = list(ckpt.get("recoveries", []))

    @property
    def served(self) -> torch.nn.Module:
        """The model predictions come from: the EMA's when on."""
        return self.ema_model if self.ema_model is not None else self.model

    def event(self, kind: str, step: int, **kw: Any) -> TrainEvent:
        return TrainEvent(kind, step, self.config.steps, device=str(self.device), **kw)

    def sampler(self, step: int) -> tuple[Any, str]:
        """The sampler and statistic of a step: intra for the first ``intra_steps``."""
        if self.config.loss == "intra" or step <= self.config.intra_steps:
            return self.intra_sampler, "intra"
        return self.group_sampler, self.config.loss

    def one_step(self, step: int, prefetch: _Prefetcher) -> TrainEvent:
        """One step: a batch of blocks (groups of one bin after ``intra_steps``), the U-Net's
        per-pixel cancer probabilities, the loss of their statistics against the prior's
        (Sec. 2), an update of the weights, the rate and the EMA; then the health check."""
        config, model, device = self.config, self.model, self.device
        ts = time.perf_counter()
        _state, x_np, z_np, gid_np, statistic = prefetch.get()
        x = torch.from_numpy(x_np).permute(0, 3, 1, 2).to(device, non_blocking=True)
        z = torch.from_numpy(z_np).to(device)
        gid = torch.from_numpy(gid_np).to(device)
        model.train()
        if config.bn_freeze and step > config.bn_freeze:
            if step == config.bn_freeze + 1 and config.bn_precise:
                # the switch: statistics of these weights over the blocks, not the lagging
                # running average (its own RNG: a resumed run does the same)
                recalibrate_batch_norm(model, self.blocks, seed=config.seed)
            _freeze_batch_norm(model)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.amp):
            logits = model(x)
        prob = torch.sigmoid(logits.float())
        loss = lsr_loss(
            prob,
            z,
            self.eta,
            self.rho,
            statistic=statistic,
            distance=config.distance,
            pixel_variance=config.pixel_variance,
            groups=None if statistic == "intra" else gid,
        )
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(
                f"the loss became {value} at step {step}; stopped, the last good checkpoint "
                f"({self.out.name}, step {_ckpt_step(self.out)}) is kept; try a lower --lr"
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update_parameters(model)
        self.last_loss = value
        # The state from before the *next* batch was drawn: what a resume needs.
        self.next_state = prefetch.peek_state()
        self.history.append((step, value))
        dt = time.perf_counter() - ts
        self.step_time = dt if self.step_time is None else 0.9 * self.step_time + 0.1 * dt
        extra = self.health_check(step, value)
        return self.event(
            "step",
            step,
            loss=value,
            lr=self.sched.get_last_lr()[0],
            blocks_per_s=len(z_np) / max(dt, 1e-9),
            eta_s=self.step_time * (config.steps - step),
            extra=extra,
        )

    def health(self, step: int) -> Health:
        """The served model's predicted fractions against the prior."""
        fr = block_fractions(self.served, self.health_images)
        h = assess(fr, self.blocks.z[self.health_idx], self.eta_np, self.rho_np)
        if h.degenerate:
            h.advice = advice(self.config, self.prior, self.blocks.z, max(step, self.config.steps))
        return h

    def health_check(self, step: int, value: float) -> dict[str, Any]:
        """The watch after a step: a loss jump is reported at once and checked for a collapse,
        and every ``HEALTH_EVERY`` steps the health is checked; a collapse after the model
        followed the bins goes back to the last healthy weights. The event's extras."""
        extra: dict[str, Any] = {}
        alarm = self.watch.loss(step, value)
        if alarm is not None:
            self.jumped.append(step)
        if alarm is not None or (step % HEALTH_EVERY == 0 and step < self.config.steps):
            check = self.health(step)  # at once after a jump: did the model collapse?
            check.final, check.step = False, step  # provisional until the run ends
            extra["health"] = check.to_dict()
            collapse = self.watch.health(step, check)
            if collapse is not None:
                if alarm is not None:  # the jump that came with it
                    collapse.message = f"{alarm.message}; {collapse.message}"
                alarm = collapse
                self.go_back(alarm)
            elif alarm is None and not check.degenerate:
                self.keep_healthy(step)
        if alarm is not None:
            if alarm.restored is None:
                alarm.message += "; " + advice(
                    self.config, self.prior, self.blocks.z, self.config.steps
                )
            self.alarms.append(alarm.to_dict())
            extra["alarm"] = alarm.to_dict()
        return extra

    def keep_healthy(self, step: int) -> None:
        """Remember the served weights that a check found healthy (not within JUMP_WINDOW
        steps of a loss jump: the EMA weights may still be taking it in)."""
        if self.jumped and step - self.jumped[-1] <= JUMP_WINDOW:
            return
        self.healthy.update(
            step=step,
            weights={k: v.detach().clone() for k, v in self.served.state_dict().items()},
            opt=copy.deepcopy(self.opt.state_dict()),
        )

    def go_back(self, alarm: Alarm) -> bool:
        """Restore the last healthy weights (the live and the EMA model both take them) and
        the optimiser's state of then; False when there are none or the run has gone back
        MAX_RECOVERIES times already."""
        if not self.healthy or len(self.recoveries) >= MAX_RECOVERIES:
            return False
        self.model.load_state_dict(self.healthy["weights"])
        if self.ema_model is not None:
            self.ema_model.load_state_dict(self.healthy["weights"])
        self.opt.load_state_dict(copy.deepcopy(self.healthy["opt"]))
        self.watch.restart()
        alarm.restored = int(self.healthy["step"])
        alarm.message += f"; went back to the healthy weights of step {alarm.restored}"
        self.recoveries.append(alarm.to_dict())
        return True

    def snapshot(self, step: int) -> dict[str, Any]:
        """What a checkpoint holds: enough to resume exactly and to predict."""
        prior, blocks = self.prior, self.blocks
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "ema_model": self.ema_model.state_dict() if self.ema_model is not None else None,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": {"numpy": self.next_state, "torch": torch.get_rng_state()},
            "step": step,
            "config": self.config.to_dict(),
            "unet": self.model.config.to_dict(),
            "prior": prior.to_dict(),
            "bins": [list(e) for e in prior.bins.edges],
            "train_mpp": blocks.mpp,
            "block_size": blocks.block_size,
            "slides": blocks.slides,
            "history": self.history,
            "elapsed_s": self.elapsed0 + time.perf_counter() - self.t0,
            "device": str(self.device),
            "info": self.info,
            "alarms": self.alarms,
            "recoveries": self.recoveries,
        }

    def checkpoint(self, step: int) -> TrainEvent:
        """Checkpoint: the run so far, atomically, every ``checkpoint_every`` steps."""
        _save_checkpoint(self.out, self.snapshot(step))
        return self.event("checkpoint", step, loss=self.last_loss, path=str(self.out))

    def finish(self, step: int, status: str) -> TrainEvent:
        """Finish (``done`` or ``cancelled``): BatchNorm recalibrated when asked, the served
        model's health decides the run (a collapse at the end goes back to the last healthy
        weights), then the checkpoint and the model card."""
        config, blocks, prior, out = self.config, self.blocks, self.prior, self.out
        if config.recalibrate:
            recalibrate_batch_norm(self.served, blocks, seed=config.seed)
        verdict = self.health(step)
        end_alarm = None
        if verdict.collapsed and self.healthy and self.healthy["step"] < step:
            end = Alarm(step, "collapse", f"at the end ({verdict.reason})")
            if self.go_back(end):
                verdict = self.health(step)
                end_alarm = end
        _save_checkpoint(out, self.snapshot(step))
        card = {
            "name": out.stem,
            "checkpoint": out.name,
            "status": status,
            "loss": config.loss,
            "distance": config.distance,
            "pixel_variance": config.pixel_variance,
            "lr": config.learning_rate,
            "lr_schedule": config.lr_schedule,
            "ema": config.ema,
            "steps": step,
            "steps_planned": config.steps,
            "final_loss": self.last_loss,
            "duration_s": self.elapsed0 + time.perf_counter() - self.t0,
            "device": str(self.device),
            "train_mpp": blocks.mpp,
            "block_size": blocks.block_size,
            "blocks": len(blocks),
            "slides": blocks.slides,
            "prior": self.info.get("prior_path") or prior.to_dict(),
            "seed": config.seed,
            "settings": config.to_dict(),
            "health": verdict.to_dict(),
            "alarms": self.alarms,
            "recoveries": self.recoveries,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_json(card_path(out), card)
        if status == "cancelled":
            return self.event(
                "cancelled",
                step,
                loss=self.last_loss,
                path=str(out),
                extra={"health": verdict.to_dict()},
            )
        if step == self.start:  # nothing left to train: no loss, no message
            return self.event("done", step, path=str(out), extra={"health": verdict.to_dict()})
        return self.event(
            "done",
            step,
            loss=self.last_loss,
            path=str(out),
            message=verdict.message,
            extra={"health": verdict.to_dict()}
            | ({"alarm": end_alarm.to_dict()} if end_alarm is not None else {}),
        )


def _ckpt_step(path: Path) -> str:
    if not path.exists():
        return "none yet"
    try:
        return str(load_checkpoint(path)["step"])
    except Exception:
        return "?"


def _cancel_fn(cancel: Callable[[], bool] | threading.Event | None) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel
