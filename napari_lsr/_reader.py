"""napari reader contribution: whole-slide images as one multiscale RGB image layer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .io.slide import OPENSLIDE_EXTENSIONS, PLAIN_EXTENSIONS, Slide, SlideError, is_slide_file

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | list[str]) -> Callable[[str], list] | None:
    """Return the slide reader for slides and plain RGB images; None for files another
    reader should try.

    PNG, JPEG and BMP images get the reader (one RGB layer, in microns where the file says
    its resolution). A TIFF gets it when OpenSlide recognises it (a vendor slide or a tiled
    pyramid) or when it is a single RGB(A) image (an H&E tile); other TIFFs (stacks, grey or
    multichannel microscopy) are left to other readers. Other slide extensions always get
    the reader, so a corrupt slide is reported instead of silently ignored.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return read_slide_layers if is_slide_file(p) or _rgb_image(p) else None
    if suffix in OPENSLIDE_EXTENSIONS or suffix in PLAIN_EXTENSIONS:
        return read_slide_layers
    return None


def _rgb_image(path: Path) -> bool:
    """True for a single-frame RGB or RGBA image file that PIL reads (header only)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode in ("RGB", "RGBA") and getattr(img, "n_frames", 1) == 1
    except Exception:  # not an image PIL knows: another reader's business
        return False


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
