"""A training run off the GUI thread: labels, block cache, then the engine's events (no Qt).

``run_training`` is the generator the training widget's worker iterates. ``run_in_subprocess``
runs the same generator in a child Python process (``python -m napari_lsr.run``) at a lower
CPU priority and relays its events, so that training never holds the GUI process's GIL and the
GUI always wins the CPU (benchmarks/gui_stall.py). The child saves a checkpoint and stops when
asked to cancel, and also when its parent goes away (its stdin closes).
"""

from __future__ import annotations

import atexit
import math
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import LSRError
from .formats import Prior

if TYPE_CHECKING:
    from .blocks import BlockSet, SlideBlocks
    from .training import TrainConfig, TrainEvent


class TrainingFailed(LSRError):
    """A run stopped on an error; the message is for the user.

    Deliberately not a RuntimeError: superqt's generator worker swallows RuntimeErrors (it
    takes them for a deleted worker) and then never emits ``finished``.
    """


class _Cancelled(Exception):
    """Raised by the block-extraction progress callback once cancel is set."""


@dataclass
class SlideSource:
    """A slide with its low-res labels CSV, from the project or from a viewer layer."""

    slide: Path
    labels: Path | None = None
    mpp: float | None = None
    origin: str = "project"

    @property
    def key(self) -> str:
        return os.path.normcase(str(Path(self.slide).resolve()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "slide": str(self.slide),
            "labels": str(self.labels) if self.labels else None,
            "mpp": self.mpp,
        }


@dataclass
class Phase:
    """A report from before the first step: what is happening, and how far (NaN: unknown)."""

    what: str
    frac: float = math.nan
    kind: str = "phase"  # "phase", or "cancelled" when stopped before training began
    history: list = field(default_factory=list)  # a resumed run's (step, loss) so far


@dataclass
class RunPlan:
    """Everything a run needs, made on the GUI thread and handed to the worker."""

    out: Path
    cache_dir: Path
    config: TrainConfig
    sources: list[SlideSource] = field(default_factory=list)
    prior: Prior | None = None
    mpp: float | None = None
    block_size: int | None = None
    resume: Path | None = None
    #: The user confirmed that ``resume``, a checkpoint that is not plain data (an older
    #: file), may be opened with the unsafe loader (``training.trust_checkpoint``).
    trust_checkpoint: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    torch_threads: int | None = None  # None: leave a core for the GUI; 0: torch's default


def readable_error(exc: BaseException, name: str, device: str = "") -> str:
    """A one-paragraph message for a notification, from any exception a run can raise."""
    text = str(exc).strip()
    low = text.lower()
    if (
        isinstance(exc, MemoryError)
        or "out of memory" in low
        or "OutOfMemory" in type(exc).__name__
    ):
        where = f" on {device}" if device else ""
        text = (
            f"out of memory{where}; lower the batch or group size, the block size or the "
            "U-Net width, or train on another device"
        )
    elif isinstance(exc, (LSRError, OSError)):
        text = text or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    for flag, words in (
        ("--lr", "the learning rate"),
        ("--group-size", "the group size"),
        ("--mpp", "the training mpp"),
    ):
        text = text.replace(flag, words)
    return f"training {name!r} stopped: {text}"


def _sources_from_checkpoint(ckpt: dict[str, Any]) -> list[SlideSource]:
    info = ckpt.get("info") or {}
    if info.get("sources"):
        return [
            SlideSource(Path(s["slide"]), Path(s["labels"]) if s.get("labels") else None, s["mpp"])
            for s in info["sources"]
        ]
    slides, labels = ckpt.get("slides") or [], info.get("labels") or []
    if not slides or len(slides) != len(labels):
        raise TrainingFailed(
            "the checkpoint does not name its slides and labels; resume it with the command line"
        )
    return [SlideSource(Path(s), Path(lab)) for s, lab in zip(slides, labels)]


def _extract(
    sources: list[SlideBlocks],
    cache_dir: Path,
    block_size: int,
    mpp: float,
    cancel: threading.Event,
) -> Iterator[Phase]:
    """Run ``extract_blocks`` in a helper thread, yielding its progress; returns the blocks.

    Returns None when cancelled (checked at each progress report, i.e. every 1/20 of the
    slides' blocks).
    """
    from .blocks import extract_blocks

    reports: queue.Queue = queue.Queue()
    box: dict[str, Any] = {}

    def progress(what: str, frac: float) -> None:
        if cancel.is_set():
            raise _Cancelled
        reports.put(Phase(what, frac))

    def work() -> None:
        try:
            box["blocks"] = extract_blocks(sources, cache_dir, block_size, mpp, progress=progress)
        except BaseException as exc:  # handed to the generator below
            box["error"] = exc
        finally:
            reports.put(None)

    thread = threading.Thread(target=work, name="lsr-extract", daemon=True)
    thread.start()
    try:
        while (item := reports.get()) is not None:
            yield item
    finally:
        if thread.is_alive():  # closed early: stop extracting
            cancel.set()
        thread.join()
    err = box.get("error")
    if isinstance(err, _Cancelled):
        return None
    if err is not None:
        raise err
    return box["blocks"]


def run_training(
    plan: RunPlan, cancel: threading.Event, finished: threading.Event | None = None
) -> Iterator[Phase | TrainEvent]:
    """The worker's generator: read labels, extract blocks, then yield ``train``'s events.

    Cancel (``cancel.set()``) is honoured within one block-extraction chunk or one training
    step; once training has begun the engine saves a checkpoint and card. Every error is
    raised as ``TrainingFailed`` with a readable message. ``finished`` is set on exit.
    """
    yield from _readable_errors(_run(plan, cancel), plan, finished)


def _readable_errors(
    events: Iterator[Phase | TrainEvent], plan: RunPlan, finished: threading.Event | None
) -> Iterator[Phase | TrainEvent]:
    """``events``, with every error raised as ``TrainingFailed`` (never a RuntimeError:
    superqt's worker would drop it) and ``finished`` set on exit."""
    try:
        yield from events
    except TrainingFailed:
        raise
    except Exception as exc:
        raise TrainingFailed(readable_error(exc, plan.out.stem, plan.config.device)) from exc
    finally:
        if finished is not None:
            finished.set()


def _run(plan: RunPlan, cancel: threading.Event) -> Iterator[Phase | TrainEvent]:
    import torch

    from .blocks import SlideBlocks, resolve_geometry
    from .interop import read_lowres
    from .slide import Slide
    from .training import TrainConfig, load_checkpoint, train, trust_checkpoint

    config, prior, sources = plan.config, plan.prior, list(plan.sources)
    mpp, block_size, info = plan.mpp, plan.block_size, dict(plan.info)
    if plan.resume is not None:
        yield Phase(f"reading {plan.resume.name}")
        if plan.trust_checkpoint:  # this process too (a child): the user said so
            trust_checkpoint(plan.resume)
        ckpt = load_checkpoint(plan.resume)
        config = TrainConfig.from_dict(ckpt["config"])
        config.device = plan.config.device
        prior = Prior.from_dict(ckpt["prior"])
        info = dict(ckpt.get("info") or {})
        sources = _sources_from_checkpoint(ckpt)
        block_size, mpp = int(ckpt["block_size"]), float(ckpt["train_mpp"])
        history = [tuple(h) for h in ckpt.get("history", [])]
        yield Phase(f"resuming at step {ckpt['step']}/{config.steps}", history=history)
        del ckpt
    if prior is None:
        raise TrainingFailed("no prior p(c|z) was given")
    yield Phase("reading the low-resolution labels", 0.0)
    slide_blocks = []
    for s in sources:
        if s.labels is None:
            raise TrainingFailed(f"{s.slide}: no low-resolution labels CSV for this slide")
        with Slide(s.slide, mpp=s.mpp) as slide:
            labels = read_lowres(s.labels, slide.dimensions, prior.bins)  # any format
        slide_blocks.append(SlideBlocks(s.slide, labels, s.mpp))
    if plan.resume is None:
        block_size, mpp = resolve_geometry(slide_blocks, mpp, block_size)
    assert block_size is not None and mpp is not None
    blocks: BlockSet | None = yield from _extract(
        slide_blocks, plan.cache_dir, block_size, mpp, cancel
    )
    if blocks is None or cancel.is_set():
        yield Phase("cancelled before training began; nothing was saved", kind="cancelled")
        return
    yield Phase(f"{len(blocks)} tissue blocks of {block_size} px at {mpp:.3g} µm/px", 1.0)
    old_threads = torch.get_num_threads()
    threads = plan.torch_threads
    if threads is None:  # leave one core to the GUI (and software OpenGL)
        threads = min(old_threads, max(1, (os.cpu_count() or 2) - 1))
    if threads > 0:
        torch.set_num_threads(threads)
    gen = train(blocks, prior, config, plan.out, cancel=cancel, resume=plan.resume, info=info)
    try:
        for event in gen:
            try:
                yield event
            except GeneratorExit:  # the worker was dropped: stop cleanly, with a checkpoint
                cancel.set()
                for _ in gen:
                    pass
                raise
    finally:
        gen.close()
        torch.set_num_threads(old_threads)


# -- in a child process -----------------------------------------------------------------------

#: The child's CPU priority: "idle" (Linux SCHED_IDLE: it runs only on CPU time nothing
#: else wants; elsewhere the lowest nice value / idle priority class), "low" (nice 10 / below
#: normal) or "normal". See benchmarks/gui_stall.py for what each does to napari's stalls.
CHILD_PRIORITY = "idle"
PRIORITIES = ("idle", "low", "normal")
#: torch intra-op threads in the child when the plan leaves it open (None): 0 = torch's
#: default, every core: the lowered priority already gives the GUI the CPU when it needs it.
CHILD_TORCH_THREADS = 0


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = ", often the system running out of memory" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


def run_in_subprocess(
    plan: RunPlan,
    cancel: threading.Event,
    finished: threading.Event | None = None,
    priority: str = CHILD_PRIORITY,
    started: Callable[[int | None], None] | None = None,
) -> Iterator[Phase | TrainEvent]:
    """``run_training`` in a child process at lower priority; yields the child's events.

    Same contract as ``run_training``: cancel is honoured within one extraction chunk or one
    training step (the child saves a checkpoint and card); errors are raised as
    ``TrainingFailed`` with a readable message, including the child dying (killed for memory,
    say: the last periodic checkpoint stays). Closing the generator early cancels the run and
    waits for its checkpoint. ``finished`` is set once the child has exited. ``started`` is
    called with the child's pid once it has the plan, and with None once it has exited.
    """
    yield from _readable_errors(_relay(plan, cancel, priority, started), plan, finished)


def _child_env() -> dict[str, str]:
    import site

    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    installed = {os.path.normcase(os.path.abspath(p)) for p in site.getsitepackages()}
    if os.path.normcase(root) not in installed:  # a source tree: make it importable there too
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.pop("QT_QPA_PLATFORM", None)  # the child never touches Qt
    return env


def _spawn(priority: str) -> subprocess.Popen:
    """Start a child (``python -m napari_lsr.run``) that imports the engine, then waits for a
    plan on its stdin."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}, not {priority!r}")
    kwargs: dict[str, Any] = {}
    if os.name == "nt" and priority != "normal":
        flag = "IDLE_PRIORITY_CLASS" if priority == "idle" else "BELOW_NORMAL_PRIORITY_CLASS"
        kwargs["creationflags"] = getattr(subprocess, flag, 0)
    if sys.stderr is None:  # pythonw: nowhere to print; the child must not inherit nothing
        kwargs["stderr"] = subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_lsr.run", priority],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_child_env(),
        **kwargs,
    )
    _LIVE.add(proc)
    return proc


#: Children started ahead of a run, one per priority (``prepare_subprocess``).
_STANDBY: dict[str, subprocess.Popen] = {}
_STANDBY_LOCK = threading.Lock()
#: How long exit waits for a run's child to save its checkpoint before killing it.
EXIT_WAIT_S = 15.0
#: Every child not yet reaped: the last resort at exit kills those still alive.
_LIVE: set[subprocess.Popen] = set()
_EXITING = threading.Event()


def prepare_subprocess(priority: str = CHILD_PRIORITY) -> None:
    """Start a child now, so that the next run skips Python's and torch's start-up (about
    4 s here; the waiting child holds about 250 MB). Safe to call again: one waits at most."""
    with _STANDBY_LOCK:
        if _EXITING.is_set():
            return
        proc = _STANDBY.get(priority)
        if proc is None or proc.poll() is not None:
            if proc is not None:
                _release(proc)
            _STANDBY[priority] = _spawn(priority)


def _take_child(priority: str) -> subprocess.Popen:
    with _STANDBY_LOCK:
        proc = _STANDBY.pop(priority, None)
    if proc is not None and proc.poll() is None:
        return proc
    if proc is not None:
        _release(proc)
    return _spawn(priority)


def _release(proc: subprocess.Popen, kill: bool = False) -> None:
    """Close a child's pipes (a waiting child then exits), optionally kill it, and reap it."""
    if kill and proc.poll() is None:
        proc.kill()
    _close_pipes(proc)
    if proc.poll() is not None or kill:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        _LIVE.discard(proc)


def _close_pipes(proc: subprocess.Popen) -> None:
    for f in (proc.stdin, proc.stdout):
        try:
            if f is not None:
                f.close()
        except OSError:
            pass


@atexit.register
def _close_standby() -> None:
    """At exit: kill the waiting children (they hold nothing to save), and any run's child
    still alive (the widget has already asked those to stop and waited for them)."""
    _EXITING.set()
    with _STANDBY_LOCK:
        procs = list(_STANDBY.values())
        _STANDBY.clear()
    for proc in procs:
        _release(proc, kill=True)
    runs = [p for p in list(_LIVE) if p.poll() is None]
    for proc in runs:  # stdin closing cancels a run: it saves its checkpoint and exits
        _release(proc)
    deadline = time.monotonic() + EXIT_WAIT_S
    for proc in runs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _release(proc, kill=True)


def _relay(
    plan: RunPlan,
    cancel: threading.Event,
    priority: str,
    started: Callable[[int | None], None] | None = None,
) -> Iterator[Phase | TrainEvent]:
    name = plan.out.stem
    data = pickle.dumps(_absolute(plan), protocol=pickle.HIGHEST_PROTOCOL)
    try:
        proc = _take_child(priority)
    except OSError as exc:
        raise TrainingFailed(f"training {name!r} could not start a process: {exc}") from exc
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def tell_cancel() -> None:
        try:
            stdin.write(b"c")
            stdin.flush()
        except (OSError, ValueError):  # the child has gone already
            pass

    done = threading.Event()

    def watch() -> None:  # cancel asked in the GUI: one byte on the child's stdin
        while not cancel.wait(0.1):
            if done.is_set() or proc.poll() is not None:
                return
        tell_cancel()

    error: str | None = None
    torn: Exception | None = None
    ended = False
    watcher = threading.Thread(target=watch, name="lsr-run-cancel", daemon=True)
    try:
        try:
            stdin.write(len(data).to_bytes(8, "little") + data)
            stdin.flush()
        except OSError:
            pass  # the child died at once: reported below from its exit code
        watcher.start()
        if started is not None:
            started(proc.pid)
        while True:
            try:
                kind, payload = pickle.load(stdout)
            except EOFError:
                break
            except Exception as exc:  # a torn message: the child died mid-write
                torn = exc
                break
            if kind == "event":
                try:
                    yield payload
                except GeneratorExit:  # the worker was dropped: stop cleanly, checkpoint first
                    cancel.set()
                    tell_cancel()
                    for _ in iter(lambda: _next_message(stdout), None):
                        pass
                    raise
            elif kind == "error":
                error = str(payload)
            elif kind == "end":
                ended = True
    finally:
        if proc.poll() is None:
            tell_cancel()
        done.set()  # ends the watcher
        if watcher.is_alive():
            watcher.join()
        # Stop reading before waiting: a child still writing gets EPIPE, cancels and exits
        # instead of blocking on a full pipe.
        _close_pipes(proc)
        proc.wait()
        _LIVE.discard(proc)
        if started is not None:
            started(None)
    if error is not None:
        raise TrainingFailed(error)
    if not ended:
        why = _describe_exit(proc.returncode)
        if torn is not None and proc.returncode is not None and proc.returncode >= 0:
            why = f"lost contact with it: {torn}"
        raise TrainingFailed(
            f"training {name!r} stopped: the training process ended unexpectedly "
            f"({why}); the last saved checkpoint, if any, is kept"
        )


def _absolute(plan: RunPlan) -> RunPlan:
    """The plan with absolute paths: a waiting child was started in another directory."""
    from dataclasses import replace

    def a(p: Path | None) -> Path | None:
        return None if p is None else Path(os.path.abspath(p))

    return replace(
        plan,
        out=a(plan.out),
        cache_dir=a(plan.cache_dir),
        resume=a(plan.resume),
        sources=[replace(s, slide=a(s.slide), labels=a(s.labels)) for s in plan.sources],
    )


def _next_message(stream: Any) -> Any:
    try:
        return pickle.load(stream)
    except Exception:
        return None


def _child_main(argv: list[str]) -> int:
    """The child: read the plan from stdin, run it, send every event to the parent.

    The protocol goes on the original stdout; anything else printed goes to stderr. Any
    byte on stdin, or stdin closing (the parent gone), cancels the run.
    """
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    if sys.stderr is None:  # e.g. started without a console: print nowhere
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if hasattr(signal, "SIGINT"):  # Ctrl+C in a terminal is napari's: it cancels the run
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # should memory run out, the kernel kills this child rather than napari
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("500")
    except OSError:
        pass
    lower_priority(argv[0] if argv else CHILD_PRIORITY)
    fd = sys.stdin.fileno()  # raw reads: a thread blocked in the buffered reader at exit aborts
    broken = threading.Event()

    def send(msg: tuple[str, Any]) -> None:
        if broken.is_set():
            return
        try:
            pickle.dump(msg, proto, protocol=pickle.HIGHEST_PROTOCOL)
            proto.flush()
        except (OSError, ValueError):  # the parent has gone: stop, with a checkpoint
            broken.set()
            cancel.set()

    cancel = threading.Event()
    try:
        warm_up_engine()
    except Exception:  # only a warm-up: the run reports real errors
        pass
    try:
        plan: RunPlan = pickle.loads(
            _read_exactly(fd, int.from_bytes(_read_exactly(fd, 8), "little"))
        )
    except EOFError:  # a waiting child let go (the parent exited): nothing to do
        return 0
    except Exception as exc:
        send(("error", f"training stopped: the training process got no plan ({exc})"))
        return 2

    def watch() -> None:
        try:
            os.read(fd, 1)  # a byte: cancel; b"": the parent closed stdin or died
        except OSError:
            pass
        cancel.set()

    threading.Thread(target=watch, name="lsr-run-stdin", daemon=True).start()
    if plan.torch_threads is None:
        plan.torch_threads = CHILD_TORCH_THREADS
    try:
        for ev in run_training(plan, cancel):
            send(("event", ev))
        send(("end", None))
    except TrainingFailed as exc:
        send(("error", str(exc)))
    except BaseException as exc:  # noqa: BLE001 (anything reaches the parent as a message)
        send(("error", readable_error(exc, plan.out.stem, plan.config.device)))
    try:
        proto.close()
    except OSError:
        pass
    return 0


def warm_up_engine() -> None:
    """Import torch, dask and the engine, and run a tiny Dask task and training step.

    torch imports modules lazily on first use (the first optimiser step imports
    ``torch._dynamo``, seconds here): a waiting child runs this before its plan comes, and
    the training widget in its own process (where an import inside a training thread would
    hold napari's GIL for long stretches).
    """
    import io

    import dask
    import torch

    from . import blocks, training  # noqa: F401
    from .losses import lsr_loss
    from .unet import UNetConfig, build_model

    dask.compute(dask.delayed(int)(1), scheduler="threads")  # what extraction imports
    model = build_model(UNetConfig(depth=1, width=2))
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    prob = torch.sigmoid(model(torch.rand(2, 3, 16, 16)).float())
    loss = lsr_loss(
        prob,
        torch.zeros(2, dtype=torch.long),
        torch.full((10,), 0.1),
        torch.full((10,), 0.05),
        statistic="intra",
        distance="gaussian",
    )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, io.BytesIO())


def lower_priority(priority: str) -> str:
    """Lower this process's CPU priority (threads started later inherit it); what was set."""
    if priority == "idle" and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return "SCHED_IDLE"
        except OSError:
            pass
    if priority in ("idle", "low") and hasattr(os, "nice"):
        try:
            os.nice(19 if priority == "idle" else 10)
            return f"nice {os.nice(0)}"
        except OSError:
            pass
    return "normal"


def _read_exactly(fd: int, n: int) -> bytes:
    parts, left = [], n
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise EOFError(f"stdin closed after {n - left} of {n} bytes")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


if __name__ == "__main__":
    # Run the imported module's function, not this __main__ copy's: the events' classes must
    # pickle as napari_lsr.run.Phase etc., which the parent can load.
    from napari_lsr.run import _child_main as main

    code = main(sys.argv[1:])
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    # Everything is saved and the parent told: skip the interpreter's and torch's teardown
    # (a second or more), so that the parent learns at once that the run has ended.
    os._exit(code)
