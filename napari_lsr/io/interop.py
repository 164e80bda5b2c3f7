"""Other tools' files: patch-classifier outputs in (WSInfer, any CSV), QuPath GeoJSON out.

Low-resolution labels come as napari-lsr's own CSV, WSInfer's per-slide CSV
(``minx,miny,width,height,prob_<Class>``), WSInfer's GeoJSON (one box Polygon per patch, the
probabilities under ``properties.measurements``) or any CSV with a column mapping.
:func:`read_lowres` tells them apart and validates each like the native format: one line
naming the file, the row (or feature) and the column.

Layout rules (issue #23). Patches lie on one grid without overlapping (napari-lsr's own
layout), or all overlap in one regular way, as WSInfer's ``--patch-overlap-ratio`` makes them
(one patch size, positions every ``step`` < size px: :func:`patch_lattice`). Overlapping
patches are each a training block, and the low-resolution model paints each pixel with the
probability of the nearest patch centre (``evaluation.paint_labels``); on OCDC and CAMELYON16
tiles (``benchmarks/overlap.py``) that rule beat the last-painted and the mean of the
covering patches, and training on every patch tied training on the non-overlapping quarter.
A patch that runs past the slide's right or bottom edge (WSInfer keeps every patch whose
centre is in tissue) is clipped to the part inside, which is then its block, so its cancer
fraction is taken over that part (training resamples it to the square training size like any
block: at least half of it is inside, so it is stretched by less than 2x along the cut); a
patch centred outside the slide is refused.

:func:`export_geojson` writes a prediction's cancer regions as a GeoJSON FeatureCollection
that QuPath imports by drag and drop (level-0 px, valid Polygon/MultiPolygon annotations,
holes kept); :func:`write_estimates_csv` writes every estimate of a project for audit.
"""

from __future__ import annotations

import csv
import json
import math
import os
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CANCER_THRESHOLD
from .formats import (
    Bins,
    FormatError,
    LowResLabels,
    _integer,
    _number,
    _read_csv_rows,
    atomic_path,
    default_class,
    geojson_features,
    read_lowres_csv,
    read_prediction,
    write_json,
)

#: Names :func:`detect_lowres_format` returns.
NATIVE = "napari-lsr CSV"
WSINFER_CSV = "WSInfer CSV"
WSINFER_GEOJSON = "WSInfer GeoJSON"
MAPPED_CSV = "CSV with a column mapping"

#: The fields of a low-resolution label; ``bin`` is optional.
LOWRES_FIELDS = ("x", "y", "width", "height", "probability")
WSINFER_BOX = ("minx", "miny", "width", "height")
#: Class of the exported regions, as QuPath names and colours it (RGB).
REGION_CLASS = "Tumor"
REGION_COLOR = (200, 0, 0)
#: Above this many cells the overlap check falls back to exact duplicates only.
_MAX_CANVAS = 64_000_000


class FeatureError(FormatError):
    """Bad input in a GeoJSON: names the file, the feature (1-based) and the property."""

    _row_words = "feature {row}"
    _column_words = "property {column!r}"


# -- which format, which class -----------------------------------------------------------------


def parse_columns(text: str | dict[str, str] | None) -> dict[str, str] | None:
    """A column mapping from ``x=minx,y=miny,width=w,height=h,probability=prob_Tumor``.

    Keys are napari-lsr's fields (``x``, ``y``, ``width``, ``height``, ``probability`` and an
    optional ``bin``); values are the file's column names (matched case-insensitively).
    """
    if text is None or isinstance(text, dict):
        mapping = dict(text) if text else None
    else:
        mapping = {}
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(f"--columns: {part!r} is not FIELD=COLUMN (e.g. x=minx)")
            mapping[key.strip().lower()] = value.strip()
    if mapping is None:
        return None
    unknown = sorted(set(mapping) - {*LOWRES_FIELDS, "bin"})
    if unknown:
        raise ValueError(
            f"--columns: unknown field(s) {', '.join(unknown)}; the fields are "
            + ", ".join((*LOWRES_FIELDS, "bin"))
        )
    missing = [k for k in LOWRES_FIELDS if k not in mapping]
    if missing:
        raise ValueError(f"--columns: no column given for {', '.join(missing)}")
    return mapping


def _csv_header(path: Path) -> list[str]:
    if not path.exists():
        raise FormatError(path, "no such file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for row in csv.reader(fh):
                if any(c.strip() for c in row):
                    return [c.strip() for c in row]
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"not a UTF-8 text file ({exc.reason})") from exc
    return []


def _is_geojson(path: Path) -> bool:
    return path.suffix.lower() in (".geojson", ".json")


def detect_lowres_format(path: str | os.PathLike, columns: Any = None) -> str:
    """Which low-resolution format a file is: by its extension, then its CSV header."""
    path = Path(path)
    if _is_geojson(path):
        return WSINFER_GEOJSON
    if columns:
        return MAPPED_CSV
    header = [c.lower() for c in _csv_header(path)]
    if all(c in header for c in WSINFER_BOX) and any(c.startswith("prob_") for c in header):
        return WSINFER_CSV
    if all(c in header for c in LOWRES_FIELDS) or not header:
        return NATIVE
    raise FormatError(
        path,
        "unknown low-resolution format: expected x,y,width,height,probability (napari-lsr), "
        "minx,miny,width,height,prob_<Class> (WSInfer) or a column mapping (--columns "
        f"x=...,y=...,width=...,height=...,probability=...); found {', '.join(header)}",
    )


def _class_of(name: str) -> str:
    return name[5:] if name.lower().startswith("prob_") else name


def lowres_classes(path: str | os.PathLike) -> list[str]:
    """The classes a WSInfer CSV or GeoJSON holds probabilities of ([] for other formats)."""
    path = Path(path)
    fmt = detect_lowres_format(path)
    if fmt == WSINFER_CSV:
        return [_class_of(c) for c in _csv_header(path) if c.lower().startswith("prob_")]
    if fmt == WSINFER_GEOJSON:
        names: dict[str, None] = {}
        for f in _geojson_features(path)[:1000]:
            for key in _measurements(f):
                names.setdefault(_class_of(key), None)
        return list(names)
    return []


def choose_class(path: str | os.PathLike, classes: list[str], class_name: str | None) -> str:
    """The class to read: ``class_name`` (case-insensitive, with or without ``prob_``), or the
    tumour class; a FormatError lists the classes when neither is found."""
    listed = ", ".join(classes) or "none"
    if class_name:
        want = _class_of(class_name.strip()).lower()
        for c in classes:
            if c.lower() == want:
                return c
        raise FormatError(path, f"no class {class_name!r}; the file has: {listed}")
    chosen = default_class(classes)
    if chosen is None:
        raise FormatError(
            path, f"cannot tell the tumour class; choose one with --class (classes: {listed})"
        )
    return chosen


# -- reading -----------------------------------------------------------------------------------

ErrorFactory = Callable[[str, int | None, str | None], FormatError]


def read_lowres(
    path: str | os.PathLike,
    slide_size: tuple[int, int] | None = None,
    bins: Bins | None = None,
    class_name: str | None = None,
    columns: str | dict[str, str] | None = None,
) -> LowResLabels:
    """Read and validate low-resolution labels in any accepted format.

    ``class_name`` picks the class of a WSInfer file (default: the tumour class);
    ``columns`` maps napari-lsr's fields to a CSV's columns (see :func:`parse_columns`).
    Every format is checked the same way: numbers, probabilities in [0, 1], positive sizes,
    patches centred inside the slide (when ``slide_size`` is given; those running past its
    edge are clipped, :func:`clip_to_slide`), on one grid without overlap or on one lattice of
    overlapping patches (:func:`check_layout`).
    """
    path = Path(path)
    bins = bins or Bins()
    mapping = parse_columns(columns)
    fmt = detect_lowres_format(path, mapping)
    if fmt == NATIVE:
        labels = read_lowres_csv(path, None, bins)
        names = {k: k for k in LOWRES_FIELDS}
        check_layout(labels, names, _csv_error(path))
        return clip_to_slide(labels, slide_size, names, _csv_error(path))
    if fmt == WSINFER_GEOJSON:
        return _read_wsinfer_geojson(path, slide_size, bins, class_name)
    if fmt == WSINFER_CSV:
        cls = choose_class(path, lowres_classes(path), class_name)
        prob = next(c for c in _csv_header(path) if _class_of(c).lower() == cls.lower())
        mapping = {"x": "minx", "y": "miny", "width": "width", "height": "height"}
        mapping["probability"] = prob
    assert mapping is not None
    return _read_mapped_csv(path, mapping, slide_size, bins)


def _csv_error(path: Path) -> ErrorFactory:
    return lambda message, row, column: FormatError(path, message, row, column)


def _read_mapped_csv(
    path: Path, mapping: dict[str, str], slide_size: tuple[int, int] | None, bins: Bins
) -> LowResLabels:
    names = {k: v.strip().lower() for k, v in mapping.items()}
    header, data = _read_csv_rows(path, tuple(dict.fromkeys(names.values())))
    col = {name: header.index(name) for name in header}
    spelt = {c.lower(): c for c in _csv_header(path)}  # messages use the file's spelling
    shown = {k: spelt.get(v, v) for k, v in names.items()}
    err = _csv_error(path)

    def cell(i: int, r: list[str], key: str, integer: bool = True) -> Any:
        read = _integer if integer else _number
        return read(path, i, shown[key], r[col[names[key]]])

    records = []
    for i, r in enumerate(data, start=1):
        x, y, w, h = (cell(i, r, k) for k in ("x", "y", "width", "height"))
        p = cell(i, r, "probability", integer=False)
        z = cell(i, r, "bin") if "bin" in names else None
        records.append((x, y, w, h, p, z))
    return _build_labels(path, records, shown, slide_size, bins, err)


def _build_labels(
    path: Path,
    records: list[tuple[int, int, int, int, float, int | None]],
    names: dict[str, str],
    slide_size: tuple[int, int] | None,
    bins: Bins,
    err: ErrorFactory,
) -> LowResLabels:
    """Check each patch as the native reader does, then the grid; bins from probabilities."""
    if not records:
        raise err("no patches", None, None)
    for i, (x, y, w, h, p, z) in enumerate(records, start=1):
        for key, v in (("width", w), ("height", h)):
            if v <= 0:
                raise err(f"patch {key} must be positive, got {v}", i, names[key])
        if not 0.0 <= p <= 1.0:
            raise err(f"probability {p} is outside [0, 1]", i, names["probability"])
        if x < 0 or y < 0:
            key = "x" if x < 0 else "y"
            raise err(f"patch starts outside the slide ({key} = {min(x, y)})", i, names[key])
        if z is not None and not 0 <= z < len(bins):
            raise err(f"bin {z} is not in 0..{len(bins) - 1}", i, names.get("bin", "bin"))
    arr = np.array([r[:4] for r in records], dtype=np.int64)
    prob = np.array([r[4] for r in records], dtype=np.float64)
    zs = np.array(
        [int(bins.assign(r[4])) if r[5] is None else r[5] for r in records], dtype=np.int64
    )
    labels = LowResLabels(path, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], prob, zs)
    check_layout(labels, names, err)
    return clip_to_slide(labels, slide_size, names, err)


def clip_to_slide(
    labels: LowResLabels,
    slide_size: tuple[int, int] | None,
    names: dict[str, str],
    err: ErrorFactory,
) -> LowResLabels:
    """Clip patches that run past the slide's right or bottom edge to the part inside.

    WSInfer keeps every patch whose centre lies in tissue, so on a slide whose tissue reaches
    an edge the last column and row of patches run past it. Such a patch becomes the block of
    its part inside the slide (its cancer fraction is then taken over that part). A patch
    whose centre lies outside the slide is refused: it is not this slide's patch.
    """
    if slide_size is None or len(labels) == 0:
        return labels
    sw, sh = int(slide_size[0]), int(slide_size[1])
    x, y, w, h = (
        np.asarray(a, np.int64) for a in (labels.x, labels.y, labels.width, labels.height)
    )
    outside = (2 * x + w > 2 * sw) | (2 * y + h > 2 * sh)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        key = "x" if 2 * x[i] + w[i] > 2 * sw else "y"
        raise err(
            f"patch ({x[i]}, {y[i]}, {w[i]}x{h[i]}) has its centre outside the slide "
            f"({sw}x{sh}): is this the slide the patches were made for?",
            i + 1,
            names[key],
        )
    if ((x + w <= sw) & (y + h <= sh)).all():
        return labels
    return LowResLabels(
        labels.path,
        x,
        y,
        np.minimum(x + w, sw) - x,
        np.minimum(y + h, sh) - y,
        labels.probability,
        labels.bin,
    )


def _step(pos: np.ndarray, size: int) -> int:
    """The most common gap between the sorted distinct positions (``size`` when one)."""
    u = np.unique(pos)
    if len(u) < 2:
        return size
    gaps, counts = np.unique(np.diff(u), return_counts=True)
    return int(gaps[counts.argmax()])


def _mode(values: np.ndarray) -> int:
    vals, counts = np.unique(values, return_counts=True)
    return int(vals[counts.argmax()])


def patch_lattice(x: Any, y: Any, width: Any, height: Any) -> tuple[int, int, int, int] | None:
    """``(step_x, step_y, patch_w, patch_h)`` of overlapping patches on one lattice (WSInfer's
    ``--patch-overlap-ratio``: patches of one size every ``step`` px, step < size); None when
    the patches do not overlap (a grid, napari-lsr's own layout).

    The patch size is the most common one; the step is the most common gap between distinct
    positions (tissue gaps make larger gaps, never smaller ones).
    """
    x, y, w, h = (np.asarray(a, np.int64) for a in (x, y, width, height))
    if len(x) < 2:
        return None
    pw, ph = _mode(w), _mode(h)
    sx, sy = _step(x, pw), _step(y, ph)
    if sx >= pw and sy >= ph:
        return None
    return min(sx, pw), min(sy, ph), pw, ph


def check_layout(labels: LowResLabels, names: dict[str, str], err: ErrorFactory) -> None:
    """Refuse patches off the first patch's grid, and patches that overlap an earlier one,
    unless all patches overlap in one regular way (:func:`patch_lattice`, WSInfer's
    ``--patch-overlap-ratio``): then every patch must be of that size and on that lattice.
    The same box twice is always refused (which of its probabilities would be right?)."""
    n = len(labels)
    if n == 0:
        return
    x, y, w, h = (
        np.asarray(a, np.int64) for a in (labels.x, labels.y, labels.width, labels.height)
    )
    boxes = np.stack([x, y, w, h], axis=1)
    _, first, inverse = np.unique(boxes, axis=0, return_index=True, return_inverse=True)
    dup = np.flatnonzero(first[inverse.ravel()] != np.arange(n))
    if len(dup):
        j = int(dup[0])
        _overlap(err, names, labels, int(first[inverse.ravel()[j]]), j)
    lattice = patch_lattice(x, y, w, h)
    if lattice is not None:  # overlapping patches: one step, smaller than the patch
        sx, sy, pw, ph = lattice
        ox, oy = int(x[0] % sx), int(y[0] % sy)
        steps: dict[str, Any] = {"x": sx, "y": sy}
    else:  # a grid: patches start at multiples of their size
        ox, oy = int(x[0] % w[0]), int(y[0] % h[0])
        steps = {"x": w, "y": h}
    for key, off, pos in (("x", ox, x), ("y", oy, y)):
        bad = np.flatnonzero((pos - off) % steps[key])
        if len(bad):
            i = int(bad[0])
            how = (
                f"overlapping patches of {pw}x{ph} px start every {sx}x{sy} px"
                if lattice is not None
                else f"patches of {w[i]}x{h[i]} px start at multiples of their size"
            )
            raise err(
                f"patch at ({x[i]}, {y[i]}) is off the patch grid ({how} from ({ox}, {oy}), "
                "as row 1's does)",
                i + 1,
                names[key],
            )
    if lattice is not None:
        odd = np.flatnonzero((w != pw) | (h != ph))
        if len(odd):
            i = int(odd[0])
            raise err(
                f"patch of {w[i]}x{h[i]} px among overlapping patches of {pw}x{ph} px",
                i + 1,
                names["width" if w[i] != pw else "height"],
            )
        return
    gx, gy = int(np.gcd.reduce(w)), int(np.gcd.reduce(h))
    cols = int((x + w).max() - ox) // gx
    rows = int((y + h).max() - oy) // gy
    if rows * cols > _MAX_CANVAS:  # too large to paint: exact duplicates were checked above
        return
    owner = np.zeros((rows, cols), np.int64)  # 1-based row of the patch covering each cell
    c0, r0 = (x - ox) // gx, (y - oy) // gy
    c1, r1 = c0 + w // gx, r0 + h // gy
    for j in range(n):
        cell = owner[r0[j] : r1[j], c0[j] : c1[j]]
        taken = cell[cell > 0]
        if len(taken):
            _overlap(err, names, labels, int(taken.min()) - 1, j)
        cell[...] = j + 1


def _overlap(
    err: ErrorFactory, names: dict[str, str], labels: LowResLabels, i: int, j: int
) -> None:
    def box(k: int) -> str:
        return f"({labels.x[k]}, {labels.y[k]}, {labels.width[k]}x{labels.height[k]})"

    raise err(f"patch {box(j)} overlaps row {i + 1}'s patch {box(i)}", j + 1, names["x"])


def _geojson_features(path: Path) -> list[Any]:
    if not path.exists():
        raise FormatError(path, "no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(path, f"not valid JSON ({exc})") from exc
    feats = geojson_features(path, data)
    if not isinstance(feats, list) or not feats:
        raise FormatError(path, "no features in the GeoJSON")
    return feats


def _measurements(feature: Any) -> dict[str, Any]:
    """A feature's measurements as a dict: recent WSInfer writes a dict, older versions (and
    QuPath) a list of ``{"name": ..., "value": ...}``."""
    props = feature.get("properties") if isinstance(feature, dict) else None
    m = (props or {}).get("measurements")
    if isinstance(m, dict):
        return m
    if isinstance(m, list):
        return {
            str(e["name"]): e.get("value")
            for e in m
            if isinstance(e, dict) and isinstance(e.get("name"), str)
        }
    return {}


def _read_wsinfer_geojson(
    path: Path, slide_size: tuple[int, int] | None, bins: Bins, class_name: str | None
) -> LowResLabels:
    feats = _geojson_features(path)
    cls = choose_class(path, lowres_classes(path), class_name)

    def err(message: str, row: int | None, column: str | None) -> FormatError:
        return FeatureError(path, message, row, column)

    names = {k: "geometry" for k in ("x", "y", "width", "height")}
    records = []
    for i, f in enumerate(feats, start=1):
        geom = f.get("geometry") if isinstance(f, dict) else None
        if not isinstance(geom, dict) or geom.get("type") != "Polygon":
            raise err("not a Polygon feature (WSInfer writes one box per patch)", i, "geometry")
        try:
            ring = np.asarray(geom["coordinates"][0], dtype=np.float64)[:, :2]
        except (KeyError, IndexError, TypeError, ValueError):
            raise err("polygon coordinates are not a list of [x, y]", i, "geometry") from None
        if not np.isfinite(ring).all() or len(ring) < 4:
            raise err("polygon coordinates are not a box", i, "geometry")
        lo, hi = ring.min(axis=0), ring.max(axis=0)
        on_edges = np.isclose(ring, lo) | np.isclose(ring, hi)
        if not on_edges.all():
            raise err("polygon is not an axis-aligned box (one patch)", i, "geometry")
        if not np.allclose(np.round([*lo, *hi]), [*lo, *hi], atol=1e-6):
            raise err(f"box corners {lo.tolist()} are not whole pixels", i, "geometry")
        (x0, y0), (x1, y1) = np.round(lo).astype(int), np.round(hi).astype(int)
        meas = {_class_of(k).lower(): (k, v) for k, v in _measurements(f).items()}
        key, value = meas.get(cls.lower(), (f"prob_{cls}", None))
        names["probability"] = key
        if value is None:
            raise err(f"no measurement for class {cls!r}", i, key)
        try:
            p = float(value)
        except (TypeError, ValueError):
            raise err(f"{value!r} is not a number", i, key) from None
        if not math.isfinite(p):
            raise err(f"{value!r} is not a finite number", i, key)
        records.append((int(x0), int(y0), int(x1 - x0), int(y1 - y0), p, None))
    return _build_labels(path, records, names, slide_size, bins, err)


# -- prediction regions to QuPath --------------------------------------------------------------


def mask_polygons(mask: np.ndarray, downsample: float = 1.0) -> list[Any]:
    """The connected regions of a bool mask as valid shapely Polygons (holes kept), in the
    coordinates of a grid of ``downsample`` level-0 px per mask pixel.

    Each row's runs become boxes that shapely unions (GEOS), so outlines follow pixel edges
    exactly.
    """
    import shapely

    mask = np.asarray(mask, bool)
    if not mask.any():
        return []
    pad = np.pad(mask, ((0, 0), (1, 1))).astype(np.int8)
    d = np.diff(pad, axis=1)
    r0, c0 = np.nonzero(d == 1)
    _, c1 = np.nonzero(d == -1)
    boxes = shapely.box(c0, r0, c1, r0 + 1)
    parts = []
    for s in range(0, mask.shape[0], 256):  # union strips first: faster for large masks
        sel = (r0 >= s) & (r0 < s + 256)
        if sel.any():
            parts.append(shapely.union_all(boxes[sel]))
    merged = shapely.union_all(parts)
    if downsample != 1:
        merged = shapely.transform(merged, lambda c: c * float(downsample))
    return _polygons(merged)


def _polygons(geom: Any) -> list[Any]:
    """The non-empty Polygons of any geometry, made valid."""
    import shapely

    if not shapely.is_valid(geom):
        geom = shapely.make_valid(geom)
    out = []
    for part in shapely.get_parts(geom):
        if part.geom_type == "Polygon" and not part.is_empty and part.area > 0:
            out.append(part)
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            out.extend(_polygons(part))
    return out


def prediction_mpp(meta: dict[str, Any], slide_mpp: float | None = None) -> float | None:
    """Level-0 microns per pixel of a prediction's slide (from its sidecar or ``slide_mpp``)."""
    if slide_mpp:
        return float(slide_mpp)
    if meta.get("mpp") and meta.get("downsample"):
        return float(meta["mpp"]) / float(meta["downsample"])
    return None


#: QuPath measurement names of an exported region (QuPath's measurements are numbers).
MEASUREMENT_THRESHOLD = "LSR threshold"
MEASUREMENT_AREA_UM2 = "LSR area um^2"
MEASUREMENT_AREA_PX = "LSR area px^2"
#: Holes smaller than this many prediction pixels are filled unless a minimum is given.
DEFAULT_MIN_HOLE_PIXELS = 2
#: Smoothing: the pixel-edged outline cut into edges of one prediction pixel, this many rounds
#: of Chaikin's corner cutting (the outline moves by a quarter of a prediction pixel at most),
#: then collinear points dropped (Douglas-Peucker at this many prediction pixels).
SMOOTH_ROUNDS = 2
SMOOTH_TOLERANCE_PIXELS = 0.05


def _chaikin(ring: np.ndarray, rounds: int) -> np.ndarray:
    """A closed ring (first point repeated last) after ``rounds`` of corner cutting."""
    pts = np.asarray(ring, np.float64)[:-1]
    for _ in range(rounds):
        nxt = np.roll(pts, -1, axis=0)
        q, r = 0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt
        pts = np.stack([q, r], axis=1).reshape(-1, 2)
    return np.vstack([pts, pts[:1]])


def smooth_polygon(poly: Any, pixel: float) -> list[Any]:
    """A pixel-edged polygon without the staircase of its grid (``pixel``: one grid pixel in
    the polygon's units): its edges cut to one pixel at most, corners cut SMOOTH_ROUNDS times
    (Chaikin), then collinear points dropped; made valid, so it may come back as several
    polygons.

    On blobs a few prediction pixels across the round trip (export, read back as truth) keeps
    masked DICE within 0.01 of the pixel-edged outline's.
    """
    import shapely
    from shapely.geometry import Polygon

    out = []
    # edges of one pixel at most, so a corner is cut by a quarter pixel, not a quarter of a
    # long edge (a large blocky region keeps its shape; only the staircase goes)
    for part in _polygons(shapely.segmentize(poly, pixel)):
        shell = _chaikin(np.asarray(part.exterior.coords)[:, :2], SMOOTH_ROUNDS)
        holes = [_chaikin(np.asarray(r.coords)[:, :2], SMOOTH_ROUNDS) for r in part.interiors]
        smooth = Polygon(shell, holes)
        smooth = shapely.simplify(smooth, SMOOTH_TOLERANCE_PIXELS * pixel, preserve_topology=True)
        out.extend(_polygons(smooth))
    return out


def fill_holes(poly: Any, min_area: float) -> Any:
    """``poly`` without the holes smaller than ``min_area``."""
    from shapely.geometry import Polygon

    if min_area <= 0 or not poly.interiors:
        return poly
    keep = [r for r in poly.interiors if Polygon(r).area >= min_area]
    return Polygon(poly.exterior, keep)


def region_features(
    values: np.ndarray,
    meta: dict[str, Any],
    threshold: float = CANCER_THRESHOLD,
    min_area_um2: float = 0.0,
    simplify_um: float | None = None,
    slide_mpp: float | None = None,
    min_hole_um2: float | None = None,
    smooth: bool = False,
) -> list[dict[str, Any]]:
    """GeoJSON features (level-0 px) of the regions where a uint8 prediction >= threshold.

    ``min_area_um2`` drops smaller regions; ``min_hole_um2`` fills smaller holes (default: the
    region minimum, and at least DEFAULT_MIN_HOLE_PIXELS prediction pixels, so one-pixel holes
    go; 0 keeps every hole). ``smooth`` removes the staircase of the prediction grid
    (:func:`smooth_polygon`; the outline moves by a quarter of a prediction pixel at most);
    otherwise ``simplify_um`` is the simplification tolerance (default: half a prediction
    pixel). Topology is preserved and every polygon is valid.

    Each feature is a QuPath annotation classified ``Tumor``; its numbers (threshold, area in
    um² and px²) are QuPath ``measurements`` (a dict of numbers, as QuPath 0.4+ writes them;
    QuPath's measurements hold numbers only), the model and loss are in its ``name`` and
    ``metadata`` (strings), and everything again as top-level properties for other readers.
    """
    import shapely
    from shapely.geometry import mapping
    from shapely.geometry.polygon import orient

    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold {threshold} must be in (0, 1]")
    if (
        min_area_um2 < 0
        or (simplify_um is not None and simplify_um < 0)
        or (min_hole_um2 is not None and min_hole_um2 < 0)
    ):
        raise ValueError("minimum areas and the simplification tolerance cannot be negative")
    d = float(meta["downsample"])
    mpp0 = prediction_mpp(meta, slide_mpp)
    if mpp0 is None and (min_area_um2 > 0 or simplify_um or min_hole_um2):
        raise ValueError("the slide's mpp is unknown: give --slide-mpp for areas in um")
    cut = max(1, math.ceil(threshold * 255 - 1e-9))
    polys = mask_polygons(np.asarray(values) >= cut, d)
    tol = 0.5 * d if simplify_um is None else simplify_um / (mpp0 or 1.0)
    min_area = min_area_um2 / (mpp0 * mpp0) if mpp0 else 0.0
    if min_hole_um2 is None:
        min_hole = max(min_area, DEFAULT_MIN_HOLE_PIXELS * d * d + 1e-9)
    else:
        min_hole = min_hole_um2 / (mpp0 * mpp0) if mpp0 else 0.0
    model = meta.get("model")
    model_name = Path(str(model)).stem if model else None
    loss = meta.get("loss")
    props = {
        "model": model_name,
        "model_path": str(model) if model else None,
        "loss": loss,
        "threshold": float(threshold),
        "slide": str(meta.get("slide", "")),
    }
    about = ", ".join(str(v) for v in (model_name, loss) if v)
    feats = []
    for poly in polys:
        if poly.area < min_area:
            continue
        poly = fill_holes(poly, min_hole)
        if smooth:
            parts = smooth_polygon(poly, d)
        else:
            geom = shapely.simplify(poly, tol, preserve_topology=True) if tol > 0 else poly
            parts = _polygons(geom)
        parts = [fill_holes(p, min_hole) for p in parts if p.area >= min_area]
        if not parts:
            continue
        parts = [orient(p, 1.0) for p in parts]
        geom = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
        area = float(geom.area)
        area_um2 = area * mpp0 * mpp0 if mpp0 else None
        measurements = {MEASUREMENT_THRESHOLD: float(threshold), MEASUREMENT_AREA_PX: area}
        if area_um2 is not None:
            measurements[MEASUREMENT_AREA_UM2] = area_um2
        n = len(feats) + 1
        feats.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid4()),
                "geometry": mapping(geom),
                "properties": {
                    "objectType": "annotation",
                    "name": f"{REGION_CLASS} {n} ({about})" if about else f"{REGION_CLASS} {n}",
                    "classification": {"name": REGION_CLASS, "color": list(REGION_COLOR)},
                    "isLocked": False,
                    "measurements": measurements,
                    **props,
                    "area_px": area,
                    "area_um2": area_um2,
                    "metadata": {k: str(v) for k, v in props.items() if v is not None},
                },
            }
        )
    return feats


def export_geojson(
    pred: str | os.PathLike,
    out: str | os.PathLike,
    threshold: float = CANCER_THRESHOLD,
    min_area_um2: float = 0.0,
    simplify_um: float | None = None,
    slide_mpp: float | None = None,
    min_hole_um2: float | None = None,
    smooth: bool = False,
) -> dict[str, Any]:
    """Write a prediction's cancer regions to ``out`` as a QuPath-ready FeatureCollection
    (see :func:`region_features`).

    Returns a summary: features, holes, total area (level-0 px and um² when the mpp is known).
    """
    values, meta = read_prediction(pred)
    feats = region_features(
        values, meta, threshold, min_area_um2, simplify_um, slide_mpp, min_hole_um2, smooth
    )
    collection = {"type": "FeatureCollection", "features": feats}
    write_json(out, collection, indent=None)
    area = sum(f["properties"]["area_px"] for f in feats)
    mpp0 = prediction_mpp(meta, slide_mpp)
    holes = 0
    for f in feats:
        g = f["geometry"]
        polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        holes += sum(len(rings) - 1 for rings in polys)
    return {
        "path": str(out),
        "features": len(feats),
        "holes": holes,
        "area_px": area,
        "area_um2": area * mpp0 * mpp0 if mpp0 else None,
        "model": meta.get("model"),
        "loss": meta.get("loss"),
        "threshold": threshold,
    }


# -- what the reviewers typed ------------------------------------------------------------------

ESTIMATE_COLUMNS = (
    "estimate_id",
    "annotator",
    "time",
    "slide",
    "x",
    "y",
    "width",
    "height",
    "bin",
    "bin_label",
    "probability",
    "percent",
    "status",
    "undone_time",
)


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(float(t), timezone.utc).isoformat(timespec="seconds")


def estimate_history(store: Any, bins: Bins | None = None) -> list[dict[str, Any]]:
    """Every estimate ever recorded, oldest first, with its status: recorded, skipped or
    undone (undone also covers an estimate replaced by a later one of the same block)."""
    labels = (bins or Bins()).labels
    rows = store.query(
        "SELECT e.id, e.annotator, e.time, s.path, b.x, b.y, b.width, b.height, b.bin, "
        "b.probability, e.percent, e.skipped, e.undone_time FROM estimates e "
        "JOIN blocks b ON b.id = e.block_id JOIN slides s ON s.id = b.slide_id ORDER BY e.id"
    )
    out = []
    for eid, who, t, slide, x, y, w, h, z, p, pct, skipped, undone in rows:
        status = "undone" if undone is not None else ("skipped" if skipped else "recorded")
        out.append(
            {
                "estimate_id": eid,
                "annotator": who,
                "time": _iso(t),
                "slide": slide,
                "x": x,
                "y": y,
                "width": w,
                "height": h,
                "bin": z,
                "bin_label": labels[z] if 0 <= z < len(labels) else "",
                "probability": p,
                "percent": pct,
                "status": status,
                "undone_time": _iso(undone),
            }
        )
    return out


def write_estimates_csv(project: Any, path: str | os.PathLike) -> int:
    """Write every estimate of a project (see :func:`estimate_history`) as CSV; the count."""
    rows = estimate_history(project.store, project.bins)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=ESTIMATE_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r[k] is None else r[k] for k in ESTIMATE_COLUMNS})
    return len(rows)
