"""Errors for the user: one base (config.LSRError), one-line messages, out of memory by type."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import napari_lsr
from napari_lsr.config import LSRError

#: Internal control-flow exceptions, never shown to a user.
INTERNAL = {"_Cancelled", "_ExtractionCancelled"}


def test_every_package_error_derives_from_lsr_error() -> None:
    found = []
    for info in pkgutil.walk_packages(napari_lsr.__path__, "napari_lsr."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and name not in INTERNAL
            ):
                found.append(obj)
                assert issubclass(obj, LSRError), f"{module.__name__}.{name}"
    assert len(found) >= 8


def test_one_line_messages() -> None:
    from napari_lsr.config import first_line

    assert first_line(ValueError("\x1b[31mbad\x1b[0m value\nmore")) == "bad value"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("x" * 300), 200) == "x" * 200


def test_out_of_memory_is_known_by_its_type_not_its_name() -> None:
    import torch

    from napari_lsr.learn.run import readable_error

    class OutOfMemoryLookalike(Exception):
        pass

    for exc in (torch.OutOfMemoryError("CUDA error: allocation failed"), MemoryError()):
        assert "out of memory on cuda; lower the batch" in readable_error(exc, "m", "cuda")
    text = readable_error(OutOfMemoryLookalike("boom"), "m")
    assert text == "training 'm' stopped: OutOfMemoryLookalike: boom"
