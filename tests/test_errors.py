"""Every error napari-lsr raises for the user derives from one base, config.LSRError."""

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
