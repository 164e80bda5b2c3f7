"""The training loop: a generator of progress events, with cancel, checkpoints and exact resume."""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .blocks import BlockSet, GroupSampler, IntraSampler, augment
from .formats import Prior, atomic_path, write_json
from .losses import DISTANCES, PIXEL_VARIANCES, STATISTICS, lsr_loss
from .unet import UNet, UNetConfig, build_model

#: The paper's learning rates (Sec. 3.3) per loss.
PAPER_LR = {"intra": 1e-5, "inter": 1e-3, "intra+inter": 1e-3}
CHECKPOINT_FORMAT = "napari-lsr-checkpoint"
CHECKPOINT_VERSION = 1


class TrainingError(RuntimeError):
    """Training stopped: bad settings, or a non-finite loss (the last good checkpoint stays)."""


@dataclass
class TrainConfig:
    """Everything that defines a run. Defaults follow the paper unless noted."""

    loss: str = "intra+inter"
    distance: str = "gaussian"
    pixel_variance: str = "paper"
    steps: int = 500
    lr: float | None = None  # None: the paper's rate for the loss (PAPER_LR)
    lr_schedule: str = "constant"  # "constant" (paper) or "cosine" decay to lr/20
    ema: float = 0.0  # weight averaging decay; 0 disables (inference uses EMA weights if on)
    batch_size: int = 30  # intra: blocks per batch
    groups: int = 2  # inter, intra+inter: groups per batch
    group_size: int = 15  # blocks per group
    rmsprop_alpha: float = 0.9  # RMSprop smoothing (the paper's beta)
    seed: int = 0
    device: str = "auto"
    depth: int = 3
    width: int = 16
    augment: bool = True
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        if self.loss not in STATISTICS:
            raise TrainingError(f"unknown loss {self.loss!r}; choose from {', '.join(STATISTICS)}")
        if self.distance not in DISTANCES:
            raise TrainingError(
                f"unknown distance {self.distance!r}; choose {', '.join(DISTANCES)}"
            )
        if self.pixel_variance not in PIXEL_VARIANCES:
            raise TrainingError(f"unknown pixel variance {self.pixel_variance!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise TrainingError(f"unknown lr schedule {self.lr_schedule!r}")
        if self.steps < 1:
            raise TrainingError("steps must be at least 1")
        if self.lr is not None and not self.lr > 0:
            raise TrainingError(f"learning rate must be positive, got {self.lr}")
        if not 0.0 <= self.ema < 1.0:
            raise TrainingError("ema must be in [0, 1)")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else PAPER_LR[self.loss]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


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
    store the state that reproduces the next batch exactly.
    """

    def __init__(
        self,
        blocks: BlockSet,
        sampler: Any,
        rng: np.random.Generator,
        do_augment: bool,
        depth: int = 2,
    ) -> None:
        self.blocks, self.sampler, self.rng, self.do_augment = blocks, sampler, rng, do_augment
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="lsr-prefetch")
        self.thread.start()

    def _draw(self) -> tuple:
        state = self.rng.bit_generator.state
        idx, gid = self.sampler.sample(self.rng)
        order = np.argsort(idx, kind="stable")  # sorted reads from the memory map
        raw = np.asarray(self.blocks.images[idx[order]])
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        raw = raw[inv]
        x = augment(raw, self.rng) if self.do_augment else raw.astype(np.float32) / 255.0
        return state, x, self.blocks.z[idx], gid

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

    def get(self) -> tuple:
        item = self.q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    if config.lr_schedule == "constant":
        return lambda step: 1.0
    floor = 0.05
    total = max(1, config.steps)
    return lambda step: (
        floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    try:
        with atomic_path(path, suffix=".tmp") as tmp:
            torch.save(state, tmp)
    except OSError as exc:
        raise TrainingError(f"{path}: cannot write the checkpoint ({exc.strerror or exc})") from exc


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint's contents, checked to be one of ours."""
    path = Path(path)
    if not path.exists():
        raise TrainingError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise TrainingError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a napari-lsr checkpoint")
    return ckpt


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[UNet, dict]:
    """The trained network (EMA weights when the run kept them) in eval mode, and its metadata."""
    ckpt = load_checkpoint(path, map_location="cpu")
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
    """The JSON model card beside a checkpoint."""
    return Path(checkpoint).with_suffix(".json")


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
    """
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"{out.parent}: cannot create the output directory") from exc
    if not os.access(out.parent, os.W_OK):
        raise TrainingError(f"{out.parent}: the checkpoint directory is not writable")
    is_cancelled = _cancel_fn(cancel)
    n_bins = len(prior.bins)
    if len(blocks) == 0:
        raise TrainingError("no training blocks")
    if blocks.z.max() >= n_bins:
        raise TrainingError(
            f"the labels use bin {int(blocks.z.max())} but the prior has only {n_bins} bins"
        )
    device = select_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_model(UNetConfig(depth=config.depth, width=config.width)).to(device)
    opt = torch.optim.RMSprop(
        model.parameters(), lr=config.learning_rate, alpha=config.rmsprop_alpha
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config))
    ema_model = None
    if config.ema > 0:
        ema_model = build_model(UNetConfig(depth=config.depth, width=config.width)).to(device)
        ema_model.load_state_dict(model.state_dict())
        ema_model.requires_grad_(False)
    start, history, elapsed0 = 0, [], 0.0
    if resume is not None:
        ckpt = load_checkpoint(resume, map_location=device)
        old = TrainConfig.from_dict(ckpt["config"])
        for key in ("loss", "distance", "pixel_variance", "depth", "width", "seed"):
            if getattr(old, key) != getattr(config, key):
                raise TrainingError(
                    f"{resume}: checkpoint has {key}={getattr(old, key)!r}, this run "
                    f"{key}={getattr(config, key)!r}"
                )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ema_model is not None and ckpt.get("ema_model"):
            ema_model.load_state_dict(ckpt["ema_model"])
        rng.bit_generator.state = ckpt["rng"]["numpy"]
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        start = int(ckpt["step"])
        history = list(ckpt.get("history", []))
        elapsed0 = float(ckpt.get("elapsed_s", 0.0))
    eta = torch.as_tensor(prior.eta, dtype=torch.float32, device=device)
    rho = torch.as_tensor(prior.rho, dtype=torch.float32, device=device)
    if config.loss == "intra":
        sampler: Any = IntraSampler(blocks.z, config.batch_size)
    else:
        try:
            sampler = GroupSampler(
                blocks.z, config.groups, config.group_size, bin_labels=prior.bins.labels
            )
        except ValueError as exc:
            raise TrainingError(str(exc)) from exc
    amp = device.type == "cuda"
    info = dict(info or {})
    t0 = time.perf_counter()
    last_loss = math.nan
    next_state = rng.bit_generator.state

    def snapshot(step: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": model.state_dict(),
            "ema_model": ema_model.state_dict() if ema_model is not None else None,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": {"numpy": next_state, "torch": torch.get_rng_state()},
            "step": step,
            "config": config.to_dict(),
            "unet": model.config.to_dict(),
            "prior": prior.to_dict(),
            "bins": [list(e) for e in prior.bins.edges],
            "train_mpp": blocks.mpp,
            "block_size": blocks.block_size,
            "slides": blocks.slides,
            "history": history,
            "elapsed_s": elapsed0 + time.perf_counter() - t0,
            "device": str(device),
            "info": info,
        }

    def finish(step: int, status: str) -> Path:
        _save_checkpoint(out, snapshot(step))
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
            "final_loss": last_loss,
            "duration_s": elapsed0 + time.perf_counter() - t0,
            "device": str(device),
            "train_mpp": blocks.mpp,
            "block_size": blocks.block_size,
            "blocks": len(blocks),
            "slides": blocks.slides,
            "prior": info.get("prior_path") or prior.to_dict(),
            "seed": config.seed,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_json(card_path(out), card)
        return out

    yield TrainEvent(
        "start",
        start,
        config.steps,
        device=str(device),
        message=f"{len(blocks)} blocks, {config.loss} / {config.distance}",
    )
    if start >= config.steps:
        path = finish(start, "done")
        yield TrainEvent("done", start, config.steps, device=str(device), path=str(path))
        return
    prefetch = _Prefetcher(blocks, sampler, rng, config.augment)
    step_time = None
    step = start
    try:
        for step in range(start + 1, config.steps + 1):
            if is_cancelled():
                path = finish(step - 1, "cancelled")
                yield TrainEvent(
                    "cancelled",
                    step - 1,
                    config.steps,
                    loss=last_loss,
                    device=str(device),
                    path=str(path),
                )
                return
            ts = time.perf_counter()
            _state, x_np, z_np, gid_np = prefetch.get()
            x = torch.from_numpy(x_np).permute(0, 3, 1, 2).to(device, non_blocking=True)
            z = torch.from_numpy(z_np).to(device)
            gid = torch.from_numpy(gid_np).to(device)
            model.train()
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            prob = torch.sigmoid(logits.float())
            loss = lsr_loss(
                prob,
                z,
                eta,
                rho,
                statistic=config.loss,
                distance=config.distance,
                pixel_variance=config.pixel_variance,
                groups=None if config.loss == "intra" else gid,
            )
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(
                    f"the loss became {value} at step {step}; stopped, the last good checkpoint "
                    f"({out.name}, step {_ckpt_step(out)}) is kept; try a lower --lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema_model is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(
                        list(ema_model.parameters()), list(model.parameters()), 1 - config.ema
                    )
                    for b_ema, b in zip(ema_model.buffers(), model.buffers()):
                        b_ema.copy_(b)
            last_loss = value
            # The state from before the *next* batch was drawn: what a resume needs.
            next_state = _peek_state(prefetch, rng)
            history.append((step, value))
            dt = time.perf_counter() - ts
            step_time = dt if step_time is None else 0.9 * step_time + 0.1 * dt
            yield TrainEvent(
                "step",
                step,
                config.steps,
                loss=value,
                lr=sched.get_last_lr()[0],
                blocks_per_s=len(z_np) / max(dt, 1e-9),
                eta_s=step_time * (config.steps - step),
                device=str(device),
            )
            if (
                config.checkpoint_every
                and step % config.checkpoint_every == 0
                and step < config.steps
            ):
                _save_checkpoint(out, snapshot(step))
                yield TrainEvent(
                    "checkpoint", step, config.steps, loss=value, device=str(device), path=str(out)
                )
        path = finish(config.steps, "done")
        yield TrainEvent(
            "done", config.steps, config.steps, loss=last_loss, device=str(device), path=str(path)
        )
    finally:
        prefetch.close()


def _peek_state(prefetch: _Prefetcher, rng: np.random.Generator) -> dict:
    """RNG state before the next batch: from the queue head, else the generator itself."""
    with prefetch.q.mutex:
        if prefetch.q.queue:
            head = prefetch.q.queue[0]
            if isinstance(head, tuple):
                return head[0]
    # The thread has not drawn the next batch yet; wait for it so the state is consistent.
    item = prefetch.q.get()
    with prefetch.q.mutex:
        prefetch.q.queue.appendleft(item)
        prefetch.q.unfinished_tasks += 1
    if isinstance(item, tuple):
        return item[0]
    return rng.bit_generator.state


def _ckpt_step(path: Path) -> str:
    if not path.exists():
        return "none yet"
    try:
        return str(torch.load(path, map_location="cpu", weights_only=False)["step"])
    except Exception:
        return "?"


def _cancel_fn(cancel: Callable[[], bool] | threading.Event | None) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
