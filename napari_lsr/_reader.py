"""napari reader contribution: whole-slide images as one multiscale RGB image layer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .io.slide import OPENSLIDE_EXTENSIONS, Slide, SlideError, is_slide_file

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | list[str]) -> Callable[[str], list] | None:
    """Return the slide reader for slide files; None for files another reader should try.

    TIFFs that OpenSlide does not recognise (neither a vendor slide nor a tiled pyramid)
    are left to other readers. Other slide extensions always get the reader, so a corrupt
    slide is reported instead of silently ignored.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in OPENSLIDE_EXTENSIONS:
        return None
    if suffix in (".tif", ".tiff") and not is_slide_file(p):
        return None
    return read_slide_layers


def slide_layer_data(slide: Slide) -> LayerData:
    """The multiscale RGB layer of an open slide, with physical scale in um when known."""
    scale = (slide.mpp, slide.mpp) if slide.mpp else (1.0, 1.0)
    meta = {
        "name": slide.name,
        "rgb": True,
        "multiscale": True,
        "scale": scale,
        "units": "um" if slide.mpp else "pixel",
        "metadata": {
            "napari_lsr": {
                "path": str(slide.path),
                "mpp": slide.mpp,
                "width": slide.width,
                "height": slide.height,
                "vendor": slide.vendor,
            }
        },
    }
    return (slide.pyramid(), meta, "image")


def read_slide(path: str) -> list[LayerData]:
    """Open a slide as layer data; raises SlideError with a one-line message."""
    return [slide_layer_data(Slide(path))]


def read_slide_layers(path: str | list[str]) -> list:
    """napari reader: the slide's layer, or a one-line error notification (no traceback)."""
    if isinstance(path, list):
        path = path[0]
    try:
        return read_slide(path)
    except SlideError as exc:
        from napari.utils.notifications import show_error

        show_error(f"napari-lsr: {exc}")
        return [(None,)]
