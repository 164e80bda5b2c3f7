"""Open any whole-slide image or plain image as a slide: size, mpp, lazy pyramid, regions."""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..config import LSRError, first_line

#: Extensions that OpenSlide may read. TIFFs are tried with OpenSlide first and fall back to
#: plain images.
OPENSLIDE_EXTENSIONS = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".svslide",
)
#: Plain raster images read whole into memory as a one-level slide.
PLAIN_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: A plain image's DPI metadata is trusted as a microscope's resolution only when it gives a
#: pixel smaller than this (72 or 300 dpi screen defaults mean "unknown", not 85 or 352 um/px).
PLAIN_MPP_MAX = 50.0
#: Chunks of the napari pyramid are whole slide tiles, grouped up to at least this many pixels.
MIN_CHUNK = 512
#: Virtual pyramid levels are added (by 2x steps) until the smallest side is at most this.
PYRAMID_MIN_SIDE = 1024


class SlideError(LSRError):
    """A slide that cannot be opened or read; the message names the file and the reason."""


class MppUnknownError(SlideError):
    """The slide carries no microns-per-pixel and none was given."""


def _composite(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Composite an RGBA uint8 array onto an opaque background colour; returns RGB uint8."""
    alpha = rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha.astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32)
    rgb = rgba[..., :3].astype(np.float32) * a + bg * (1.0 - a)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Antialiased resize of an RGB uint8 array to (height, width)."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    img = Image.fromarray(rgb)
    return np.asarray(img.resize((max(width, 1), max(height, 1)), Image.Resampling.BILINEAR))


@dataclass(frozen=True)
class Level:
    """One pyramid level as napari sees it: its downsample from level 0 and its size."""

    downsample: float
    width: int
    height: int


class Slide:
    """A whole-slide image or plain image opened for reading.

    Coordinates are level-0 pixels everywhere. ``mpp`` is microns per level-0 pixel or None
    when the file does not say (pass ``mpp=`` to override). Reads are thread-safe: OpenSlide
    handles are safe to share between threads, and plain images are immutable arrays.
    """

    def __init__(self, path: str | os.PathLike, mpp: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SlideError(f"{self.path}: no such file")
        if not self.path.is_file():
            raise SlideError(f"{self.path}: not a file")
        self._lock = threading.Lock()
        self._closed = False
        self._osr: Any = None
        self._array: np.ndarray | None = None
        self.background: tuple[int, int, int] = (255, 255, 255)
        self.tile_size: tuple[int, int] = (256, 256)
        self.vendor: str | None = None
        file_mpp: float | None = None
        suffix = self.path.suffix.lower()
        fmt = None
        if suffix in OPENSLIDE_EXTENSIONS:
            fmt = _detect_openslide(self.path)
        if fmt is not None:
            file_mpp = self._open_openslide(fmt)
        elif suffix in PLAIN_EXTENSIONS:
            file_mpp = self._open_plain()
        elif suffix in OPENSLIDE_EXTENSIONS:
            raise SlideError(
                f"{self.path}: not a slide OpenSlide can read ({_openslide_reason(self.path)})"
            )
        else:
            raise SlideError(f"{self.path}: unsupported file type {suffix!r}")
        self.mpp: float | None = float(mpp) if mpp is not None else file_mpp
        if self.mpp is not None and not (self.mpp > 0 and math.isfinite(self.mpp)):
            raise SlideError(f"{self.path}: invalid mpp {self.mpp}")

    # -- opening -----------------------------------------------------------------------------

    def _open_openslide(self, fmt: str) -> float | None:
        import openslide

        try:
            osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideError as exc:
            raise SlideError(f"{self.path}: OpenSlide cannot read it ({first_line(exc)})") from exc
        self._osr = osr
        self.vendor = fmt
        props = osr.properties
        self.width, self.height = (int(v) for v in osr.dimensions)
        self.native_downsamples = [float(d) for d in osr.level_downsamples]
        self.native_dimensions = [tuple(int(v) for v in d) for d in osr.level_dimensions]
        bg = props.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR)
        if bg and len(bg) == 6:
            self.background = tuple(int(bg[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore
        tw = props.get("openslide.level[0].tile-width")
        th = props.get("openslide.level[0].tile-height")
        if tw and th:
            self.tile_size = (int(th), int(tw))
        mx = props.get(openslide.PROPERTY_NAME_MPP_X)
        my = props.get(openslide.PROPERTY_NAME_MPP_Y)
        try:
            mpps = [float(v) for v in (mx, my) if v not in (None, "")]
        except ValueError:
            mpps = []
        mpps = [v for v in mpps if v > 0 and math.isfinite(v)]
        return float(np.mean(mpps)) if mpps else None

    def _open_plain(self) -> float | None:
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(self.path) as img:
                dpi = img.info.get("dpi")
                resolution = _tiff_resolution_mpp(img)
                arr = np.asarray(img.convert("RGBA"))
        except Exception as exc:  # PIL raises many types for corrupt files
            raise SlideError(f"{self.path}: cannot read image ({first_line(exc)})") from exc
        self._array = _composite(arr, self.background)
        self.height, self.width = self._array.shape[:2]
        self.native_downsamples = [1.0]
        self.native_dimensions = [(self.width, self.height)]
        self.vendor = "image"
        self.tile_size = (min(512, self.height), min(512, self.width))
        if resolution is not None:
            return resolution
        if dpi:
            try:
                mpp = 25400.0 / float(dpi[0])
            except (TypeError, ValueError, ZeroDivisionError):
                return None
            if 0 < mpp < PLAIN_MPP_MAX:
                return mpp
        return None

    # -- properties --------------------------------------------------------------------------

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height)."""
        return self.width, self.height

    @property
    def name(self) -> str:
        return self.path.stem

    def require_mpp(self, what: str = "this step") -> float:
        """The slide's mpp, or a clear error saying how to give one."""
        if self.mpp is None:
            raise MppUnknownError(
                f"{self.path}: the slide has no microns-per-pixel (mpp) metadata, which {what} "
                "needs; pass --mpp (command line) or set mpp in project.toml"
            )
        return self.mpp

    def levels(self) -> list[Level]:
        """The pyramid napari shows: native levels, extended by 2x steps down to a small side."""
        out = [Level(d, w, h) for d, (w, h) in zip(self.native_downsamples, self.native_dimensions)]
        while min(out[-1].width, out[-1].height) > PYRAMID_MIN_SIDE:
            d = out[-1].downsample * 2
            out.append(Level(d, max(1, int(self.width // d)), max(1, int(self.height // d))))
        return out

    # -- reading -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SlideError(f"{self.path}: slide is closed")

    def read_level0(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Level-0 pixels of a region, RGB uint8 (h, w, 3); outside the slide is background."""
        return self._read(x, y, w, h, downsample=1.0)

    def read_region(
        self,
        x: int,
        y: int,
        w: int,
        h: int,
        mpp: float | None = None,
        *,
        downsample: float | None = None,
        size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Read the level-0 box (x, y, w, h) resampled to ``mpp`` microns per pixel.

        Give at most one of ``mpp`` (needs the slide's mpp), ``downsample`` (relative to level 0)
        or ``size`` (output (width, height)). Without any, level-0 pixels are returned. The
        best pyramid level (the finest one no finer than needed) is read and resampled.
        Returns RGB uint8 of shape (out_h, out_w, 3).
        """
        if sum(v is not None for v in (mpp, downsample, size)) > 1:
            raise ValueError("give at most one of mpp, downsample, size")
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {w}x{h}")
        if mpp is not None:
            if mpp <= 0:
                raise ValueError(f"mpp must be positive, got {mpp}")
            downsample = mpp / self.require_mpp("reading at a given mpp")
        if size is not None:
            out_w, out_h = int(size[0]), int(size[1])
            downsample = w / out_w
        else:
            ds = 1.0 if downsample is None else float(downsample)
            out_w = max(1, int(round(w / ds)))
            out_h = max(1, int(round(h / ds)))
            downsample = ds
        return self._read(x, y, w, h, downsample, out_w, out_h)

    def _read(
        self,
        x: int,
        y: int,
        w: int,
        h: int,
        downsample: float,
        out_w: int | None = None,
        out_h: int | None = None,
    ) -> np.ndarray:
        self._check_open()
        x, y, w, h = int(x), int(y), int(w), int(h)
        if out_w is None or out_h is None:
            out_w = max(1, int(round(w / downsample)))
            out_h = max(1, int(round(h / downsample)))
        if self._array is not None:
            rgb = _crop_padded(self._array, x, y, w, h, self.background)
            return _resize(rgb, out_w, out_h)
        level = self._osr.get_best_level_for_downsample(downsample * 1.0001)
        lds = self.native_downsamples[level]
        lw = max(1, int(math.ceil(w / lds)))
        lh = max(1, int(math.ceil(h / lds)))
        try:
            rgba = np.asarray(self._osr.read_region((x, y), level, (lw, lh)))
        except Exception as exc:
            if self._closed:
                raise SlideError(f"{self.path}: slide is closed") from exc
            raise SlideError(f"{self.path}: read failed at ({x}, {y}): {first_line(exc)}") from exc
        rgb = _composite(rgba, self.background)
        return _resize(rgb, out_w, out_h)

    def pyramid(self) -> list[Any]:
        """Lazy dask arrays (H, W, 3) uint8, one per level, finest first, for napari.

        Chunks are whole slide tiles (grouped to at least ``MIN_CHUNK`` pixels a side), so a
        chunk read decodes whole tiles once.
        """
        import dask.array as da

        th, tw = self.tile_size
        ch = th * max(1, math.ceil(MIN_CHUNK / th))
        cw = tw * max(1, math.ceil(MIN_CHUNK / tw))
        out = []
        for level in self.levels():
            src = _LevelSource(self, level)
            out.append(
                da.from_array(
                    src,
                    chunks=(min(ch, level.height), min(cw, level.width), 3),
                    lock=False,
                    asarray=False,
                    fancy=False,
                    name=f"slide-{self.path.name}-{id(self)}-{level.downsample}",
                )
            )
        return out

    # -- life cycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Release the file; further reads raise SlideError. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._osr is not None:
                self._osr.close()
            self._array = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mpp = "unknown" if self.mpp is None else f"{self.mpp:.4g}"
        return f"Slide({str(self.path)!r}, {self.width}x{self.height}, mpp={mpp})"

    def __reduce__(self) -> tuple:
        # Slides travel to Dask worker processes by path; the worker opens its own handle.
        return (Slide, (str(self.path), self.mpp))


class _LevelSource:
    """Array-like view of one pyramid level that dask slices chunk by chunk."""

    def __init__(self, slide: Slide, level: Level) -> None:
        self.slide = slide
        self.level = level
        self.shape = (level.height, level.width, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, key: tuple) -> np.ndarray:
        ys, xs = key[0], key[1]
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
        d = self.level.downsample
        rgb = self.slide._read(
            int(round(x0 * d)),
            int(round(y0 * d)),
            int(round((x1 - x0) * d)),
            int(round((y1 - y0) * d)),
            d,
            x1 - x0,
            y1 - y0,
        )
        return rgb[:, :, key[2]] if len(key) > 2 else rgb


def _crop_padded(
    arr: np.ndarray, x: int, y: int, w: int, h: int, background: tuple[int, int, int]
) -> np.ndarray:
    """arr[y:y+h, x:x+w] where the parts outside arr are the background colour."""
    H, W = arr.shape[:2]
    if x >= 0 and y >= 0 and x + w <= W and y + h <= H:
        return arr[y : y + h, x : x + w]
    out = np.empty((h, w, 3), np.uint8)
    out[:] = background
    sx0, sy0 = max(x, 0), max(y, 0)
    sx1, sy1 = min(x + w, W), min(y + h, H)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = arr[sy0:sy1, sx0:sx1]
    return out


def _detect_openslide(path: Path) -> str | None:
    """OpenSlide's vendor name for the file, or None when OpenSlide does not know it."""
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:
        return None


def _openslide_reason(path: Path) -> str:
    """OpenSlide's own words for why it cannot open a file."""
    import openslide

    try:
        openslide.OpenSlide(str(path)).close()
    except Exception as exc:
        return first_line(exc)
    return "unknown format"


def _tiff_resolution_mpp(img: Image.Image) -> float | None:
    """mpp from TIFF resolution tags in centimetres (unit 3), as slide writers use; else None."""
    tags = getattr(img, "tag_v2", None)
    if not tags:
        return None
    unit = tags.get(296)
    xres = tags.get(282)
    if unit != 3 or not xres:
        return None
    try:
        xres = float(xres)
    except (TypeError, ValueError):
        return None
    return 1e4 / xres if xres > 0 else None


def is_slide_file(path: str | os.PathLike) -> bool:
    """True when OpenSlide recognises the file as a slide or a tiled pyramid."""
    return _detect_openslide(Path(path)) is not None


_SHARED: dict[tuple[str, float | None], tuple[int, Slide]] = {}
_SHARED_LOCK = threading.Lock()


def shared_slide(path: str | os.PathLike, mpp: float | None = None) -> Slide:
    """A process-wide open handle per slide file, for workers that read many regions.

    Threads of a Dask worker (or of the local scheduler) share one handle, so OpenSlide's
    tile cache serves neighbouring regions. A file changed on disk is reopened. Do not close
    the returned slide.
    """
    key = (str(Path(path).resolve()), mpp)
    mtime = os.stat(key[0]).st_mtime_ns
    with _SHARED_LOCK:
        hit = _SHARED.get(key)
        if hit is None or hit[0] != mtime or hit[1].closed:
            _SHARED[key] = (mtime, Slide(key[0], mpp=mpp))
        return _SHARED[key][1]


#: The tissue rule (``blocks``' module doc): training keeps, and block review shows, only
#: blocks that pass it.
TISSUE_MIN_SATURATION = 0.07
TISSUE_MAX_BRIGHTNESS = 220.0
TISSUE_MIN_FRACTION = 0.25


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Tissue pixels of (..., H, W, 3) uint8 images: saturated enough and not near-white."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    # saturation (mx - mn) / mx >= TISSUE_MIN_SATURATION, without dividing; elementwise over
    # channel planes (reductions over a length-3 axis are several times slower)
    saturated = ((mx - mn).astype(np.float32) >= TISSUE_MIN_SATURATION * mx) & (mx > 0)
    return saturated & ((r + g + b) < 3 * TISSUE_MAX_BRIGHTNESS)


def tissue_fraction(rgb: np.ndarray) -> np.ndarray:
    """Fraction of tissue pixels in each of (..., H, W, 3) uint8 images (see the rule above)."""
    return tissue_mask(rgb).mean(axis=(-2, -1))
