"""A training run off the GUI thread: labels, block cache, then the engine's events (no Qt).

``run_training`` is the generator the training widget's worker iterates. ``run_in_subprocess``
runs the same generator in a child Python process (multiprocessing's spawn, two pipes) at a
lower CPU priority and relays its events, so that training never holds the GUI process's GIL
and the GUI always wins the CPU (benchmarks/gui_stall.py). The child saves a checkpoint and
stops when asked to cancel, and also when its parent goes away (its control pipe ends).
"""

from __future__ import annotations

import atexit
import math
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import LSRError
from ..io.formats import Prior

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
    if _out_of_memory(exc) or "out of memory" in text.lower():
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


def _out_of_memory(exc: BaseException) -> bool:
    """Python's MemoryError, or torch's out-of-memory error (of any device) once torch is
    imported (a torch error cannot come earlier; the GUI imports this without torch)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    kinds = (getattr(torch, "OutOfMemoryError", None), getattr(cuda, "OutOfMemoryError", None))
    return any(kind is not None and isinstance(exc, kind) for kind in kinds)


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

    from ..io.interop import read_lowres
    from ..io.slide import Slide
    from .blocks import SlideBlocks, resolve_geometry
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

#: The child's CPU priority: "low" (nice 10 / below normal: napari, at nice 0, gets the CPU
#: first, yet the run keeps a share of a busy machine), "idle" (Linux SCHED_IDLE: it runs
#: only on CPU time nothing else wants, so a browser or QuPath can starve it; elsewhere the
#: lowest nice value / idle priority class) or "normal". See benchmarks/gui_stall.py for
#: what each does to napari's stalls.
CHILD_PRIORITY = "low"
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


@dataclass(eq=False)
class _Child:
    """A training child and the parent's ends of its two pipes: ``control`` takes the plan,
    then a cancel; ``events`` brings the child's ``(kind, payload)`` messages (event, error,
    end)."""

    process: BaseProcess
    control: Connection
    events: Connection
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def poll(self) -> int | None:
        """The exit code (minus the signal that ended it), or None while it runs."""
        return self.process.exitcode

    def cancel(self) -> None:
        """Ask the run to stop with a checkpoint (nothing happens once the child has gone)."""
        with self.lock:
            try:
                self.control.send("cancel")
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        """Close the parent's pipe ends: the child cancels its run (a waiting child exits),
        and its writes fail instead of blocking on a full pipe."""
        with self.lock:
            for conn in (self.control, self.events):
                try:
                    conn.close()
                except OSError:
                    pass


#: Every child starts as a fresh interpreter (never a fork of napari's Qt and torch threads).
_SPAWN = multiprocessing.get_context("spawn")
_START_LOCK = threading.Lock()


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While a child starts, show multiprocessing an empty ``__main__``.

    spawn runs the parent's main script again in the child (as ``__mp_main__``) for the
    objects defined there. The child needs none of them (its target and its messages are
    napari_lsr's), and a script without an ``if __name__ == "__main__":`` guard (one that
    opens a napari viewer, say) would run a second time there. The swap lasts as long as
    ``Process.start``; the lock keeps two starts from overlapping.
    """
    with _START_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main
            else:
                del sys.modules["__main__"]


def _spawn(priority: str) -> _Child:
    """Start a child that imports the engine, then waits for a plan on its control pipe."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}, not {priority!r}")
    their_control, control = _SPAWN.Pipe(duplex=False)
    events, their_events = _SPAWN.Pipe(duplex=False)
    process = _SPAWN.Process(
        target=_child_main,
        args=(priority, their_control, their_events),
        name=f"napari-lsr-training-{priority}",
    )
    try:
        with _main_module_hidden():
            process.start()
    except BaseException:
        control.close()
        events.close()
        raise
    finally:  # the child's ends: it holds its own copies now
        their_control.close()
        their_events.close()
    child = _Child(process, control, events)
    _LIVE.add(child)
    return child


#: Children started ahead of a run, one per priority (``prepare_subprocess``).
_STANDBY: dict[str, _Child] = {}
_STANDBY_LOCK = threading.Lock()
#: How long exit waits for a run's child to save its checkpoint before killing it.
EXIT_WAIT_S = 15.0
#: Every child not yet reaped: the last resort at exit kills those still alive.
_LIVE: set[_Child] = set()
_EXITING = threading.Event()


def prepare_subprocess(priority: str = CHILD_PRIORITY) -> None:
    """Start a child now, so that the next run skips Python's and torch's start-up (about
    4 s here; the waiting child holds about 250 MB). Safe to call again: one waits at most."""
    with _STANDBY_LOCK:
        if _EXITING.is_set():
            return
        child = _STANDBY.get(priority)
        if child is None or child.poll() is not None:
            if child is not None:
                _release(child)
            _STANDBY[priority] = _spawn(priority)


def _take_child(priority: str) -> _Child:
    with _STANDBY_LOCK:
        child = _STANDBY.pop(priority, None)
    if child is not None and child.poll() is None:
        return child
    if child is not None:
        _release(child)
    return _spawn(priority)


def _release(child: _Child, kill: bool = False) -> None:
    """Close a child's pipes (a waiting child then exits), optionally kill it, and reap it."""
    if kill and child.poll() is None:
        child.process.kill()
    child.close()
    if child.poll() is not None or kill:
        child.process.join(5)
        _LIVE.discard(child)


@atexit.register
def _close_standby() -> None:
    """At exit: kill the waiting children (they hold nothing to save), and any run's child
    still alive (the widget has already asked those to stop and waited for them)."""
    _EXITING.set()
    with _STANDBY_LOCK:
        children = list(_STANDBY.values())
        _STANDBY.clear()
    for child in children:
        _release(child, kill=True)
    runs = [c for c in list(_LIVE) if c.poll() is None]
    for child in runs:  # its control pipe closing cancels a run: it saves and exits
        _release(child)
    deadline = time.monotonic() + EXIT_WAIT_S
    for child in runs:
        child.process.join(max(0.1, deadline - time.monotonic()))
        _release(child, kill=True)


def _relay(
    plan: RunPlan,
    cancel: threading.Event,
    priority: str,
    started: Callable[[int | None], None] | None = None,
) -> Iterator[Phase | TrainEvent]:
    name = plan.out.stem
    plan = _absolute(plan)
    try:
        child = _take_child(priority)
    except OSError as exc:
        raise TrainingFailed(f"training {name!r} could not start a process: {exc}") from exc
    done = threading.Event()

    def watch() -> None:  # cancel asked in the GUI: a message on the child's control pipe
        while not cancel.wait(0.1):
            if done.is_set():
                return
        child.cancel()

    error: str | None = None
    torn: Exception | None = None
    ended = False
    watcher = threading.Thread(target=watch, name="lsr-run-cancel", daemon=True)
    try:
        try:
            child.control.send(plan)
        except OSError:
            pass  # the child died at once: reported below from its exit code
        watcher.start()
        if started is not None:
            started(child.pid)
        while True:
            try:
                kind, payload = child.events.recv()
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
                    child.cancel()
                    while _next_message(child.events) is not None:
                        pass
                    raise
            elif kind == "error":
                error = str(payload)
            elif kind == "end":
                ended = True
    finally:
        if child.poll() is None:
            child.cancel()
        done.set()  # ends the watcher
        if watcher.is_alive():
            watcher.join()
        # Stop reading before waiting: a child still writing gets EPIPE, cancels and exits
        # instead of blocking on a full pipe.
        child.close()
        child.process.join()
        _LIVE.discard(child)
        if started is not None:
            started(None)
    if error is not None:
        raise TrainingFailed(error)
    if not ended:
        code = child.poll()
        why = _describe_exit(code)
        if torn is not None and code is not None and code >= 0:
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


def _next_message(conn: Connection) -> Any:
    try:
        return conn.recv()
    except Exception:
        return None


def _set_child_environ() -> None:
    """In the child, before torch is imported: a source tree stays importable for its own
    children, and Qt's platform setting goes (the child never touches Qt)."""
    import site

    root = str(Path(__file__).resolve().parents[2])
    installed = {os.path.normcase(os.path.abspath(p)) for p in site.getsitepackages()}
    if os.path.normcase(root) not in installed:
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, path) if p)
    os.environ.pop("QT_QPA_PLATFORM", None)


def _child_main(priority: str, control: Connection, events: Connection) -> None:
    """The child process's target: run ``_child_run``, then end the process at once.

    Everything is saved and the parent told by then: ``os._exit`` skips the interpreter's
    and torch's teardown (a second or more), so that the parent learns at once that the
    run has ended.
    """
    code = 1
    try:
        code = _child_run(priority, control, events)
    except BaseException:  # noqa: BLE001 (printed; the parent reports the exit code)
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _child_run(priority: str, control: Connection, events: Connection) -> int:
    """The child: take the plan from ``control``, run it, send every event on ``events``.

    Anything printed goes to stderr. Any message on ``control``, or its end (the parent
    gone), cancels the run.
    """
    _set_child_environ()
    if sys.stderr is None:  # e.g. started without a console: print nowhere
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
    if sys.stdout is not None:
        try:
            os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
    if hasattr(signal, "SIGINT"):  # Ctrl+C in a terminal is napari's: it cancels the run
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # should memory run out, the kernel kills this child rather than napari
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("500")
    except OSError:
        pass
    lower_priority(priority)
    broken = threading.Event()
    cancel = threading.Event()

    def send(msg: tuple[str, Any]) -> None:
        if broken.is_set():
            return
        try:
            events.send(msg)
        except (OSError, ValueError):  # the parent has gone: stop, with a checkpoint
            broken.set()
            cancel.set()

    try:
        warm_up_engine()
    except Exception:  # only a warm-up: the run reports real errors
        pass
    try:
        plan: RunPlan = control.recv()
    except EOFError:  # a waiting child let go (the parent exited): nothing to do
        return 0
    except Exception as exc:
        send(("error", f"training stopped: the training process got no plan ({exc})"))
        return 2

    def watch() -> None:
        try:
            control.recv()  # a message: cancel; EOF: the parent closed the pipe or died
        except Exception:
            pass
        cancel.set()

    threading.Thread(target=watch, name="lsr-run-control", daemon=True).start()
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
        events.close()
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
    if priority in ("idle", "low") and os.name == "nt":
        import ctypes

        # IDLE_PRIORITY_CLASS, BELOW_NORMAL_PRIORITY_CLASS
        flag, what = (0x40, "idle") if priority == "idle" else (0x4000, "below normal")
        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        if kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), flag):
            return f"{what} priority class"
    if priority in ("idle", "low") and hasattr(os, "nice"):
        try:
            os.nice(19 if priority == "idle" else 10)
            return f"nice {os.nice(0)}"
        except OSError:
            pass
    return "normal"
