"""The training dock's runs off the GUI thread: handle, worker, warm-up, and stopping at exit."""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from napari.qt.threading import GeneratorWorker
from qtpy.QtCore import QObject, Signal

from ..learn.run import SlideSource, prepare_subprocess, warm_up_engine

#: How long closing the viewer waits for the run to save its checkpoint and stop.
STOP_TIMEOUT_S = 30.0

#: Background threads and runs still going, stopped and joined at interpreter exit: a thread
#: left inside torch while Python and C++ tear down aborts the process.
_WARM_UPS: list[threading.Thread] = []
_RUNS: set[RunHandle] = set()


@atexit.register
def _stop_background_work(timeout: float = STOP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    runs = list(_RUNS)
    for handle in runs:
        handle.cancel.set()
    for handle in runs:
        handle.finished.wait(max(0.0, deadline - time.monotonic()))
    if runs:  # and let the Qt worker emit its last signals before Python goes away
        from qtpy.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(int(1000 * max(0.0, deadline - time.monotonic())))
    for thread in list(_WARM_UPS):
        thread.join(max(0.0, deadline - time.monotonic()))


class RunHandle:
    """Cancel and wait for one run, from any thread (Qt-free; outlives the widget)."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.finished = threading.Event()
        #: The training child's pid while it runs, else None.
        self.child_pid: int | None = None
        #: True once ``kill`` has ended the child.
        self.killed = False

    def set_child(self, pid: int | None) -> None:
        self.child_pid = pid

    def kill(self) -> bool:
        """End the training child at once (no new checkpoint); False if there is none."""
        import signal

        pid = self.child_pid
        if pid is None:
            return False
        self.killed = True
        self.cancel.set()
        try:
            os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        except OSError:
            return False
        return True

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Ask the run to stop (it saves a checkpoint) and wait up to ``timeout`` seconds."""
        self.cancel.set()
        return self.finished.wait(timeout)


class TrainWorker(GeneratorWorker):
    """napari's generator worker running ``func(*args, **kwargs)`` for ``handle``'s run, whose
    ``quit`` cancels gracefully (checkpoint and card).

    ``quit`` is what napari and superqt call to stop workers (e.g. when the window closes);
    the stock one abandons the generator mid-run, which would lose the checkpoint. The run is
    tracked until it finishes, so that interpreter exit stops it too.
    """

    def __init__(self, handle: RunHandle, func: Callable, *args: object, **kwargs: object) -> None:
        super().__init__(func, *args, **kwargs)
        self.handle = handle
        _RUNS.add(handle)
        self.finished.connect(lambda: _RUNS.discard(handle))

    def quit(self) -> None:
        self.handle.stop()


def model_out(sources: list[SlideSource], models_dir: Path | None, name: str) -> Path:
    """Where a new run on ``sources`` saves its model ``name``; a ValueError saying why when
    it cannot run (no slide, a slide without labels, no folder, a bad or taken name)."""
    if not sources:
        raise ValueError("tick at least one slide (open a project or a slide layer)")
    missing = [Path(s.slide).name for s in sources if s.labels is None]
    if missing:
        raise ValueError(f"no low-resolution labels for {', '.join(missing)}")
    if models_dir is None:
        raise ValueError("open a project first (or add a slide), so models have a folder")
    if not name or any(c in name for c in '/\\:*?"<>|') or name.startswith("."):
        raise ValueError(f"{name!r} is not a usable model name")
    out = models_dir / f"{name}.pt"
    if out.exists():
        raise ValueError(f"a model named {name!r} exists; choose another name or Resume it")
    return out


def ready_next_child(priority: str) -> None:
    """Start the next run's child process at ``priority`` in the background (it waits)."""
    threading.Thread(
        target=lambda: prepare_subprocess(priority), name="lsr-standby", daemon=True
    ).start()


def warm_up() -> list[str]:
    """Import torch, dask and the engine, run tiny dask and training steps; list the devices.

    Runs in a worker when the widget opens. torch imports modules lazily on first use (the
    first optimiser step imports ``torch._dynamo``); an import in the training thread holds
    the GIL for long stretches and stalls the GUI, so it happens here instead, once.
    """
    from ..learn.training import available_devices, select_device

    try:
        warm_up_engine()
    except Exception:  # only a warm-up: the run reports real errors
        pass
    devices = available_devices()
    try:
        auto = select_device("auto").type
    except Exception:
        auto = "cpu"
    return [f"auto ({auto})" if d == "auto" else d for d in devices]


class _Bridge(QObject):
    """Carries a value from a plain thread to the GUI thread; owned by that thread."""

    ready = Signal(object)


def start_warm_up(on_ready: Callable[[list[str]], object], priority: str) -> threading.Thread:
    """Warm torch up, list the devices and ready a child process at ``priority`` (Train then
    starts 4 s sooner) in a daemon thread; ``on_ready(devices)`` runs on the GUI thread.

    A plain daemon thread, not a Qt worker: if napari quits within the seconds the torch
    import takes, a Qt worker would emit into deleted objects during shutdown and abort.
    The result travels through a parentless bridge object that the thread keeps alive (a
    signal of the widget itself could be emitted after the widget is deleted: a crash).
    Call on the GUI thread.
    """
    bridge = _Bridge()
    bridge.ready.connect(on_ready)

    def work() -> None:
        try:
            devices = warm_up()
            prepare_subprocess(priority)
        except BaseException:  # e.g. the interpreter shutting down
            devices = ["auto", "cpu"]
        bridge.ready.emit(devices)

    thread = threading.Thread(target=work, name="lsr-warm-up", daemon=True)
    _WARM_UPS[:] = [t for t in _WARM_UPS if t.is_alive()] + [thread]
    thread.start()
    return thread
