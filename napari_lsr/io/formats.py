"""Read, validate and write napari-lsr's files: low-res CSV, prior CSV, ground truth, predictions.

Every reader validates the whole file before returning anything and raises ``FormatError``
naming the file, the row (1-based data row; the header is line 1, so row r is line r+1) and the
column. Every writer writes a temporary file beside the target and renames it, so a crash never
leaves a half-written file, and gives the file the umask's mode (not the temporary file's
0600), so a shared project folder stays readable to colleagues.

Ground truth (issue #23): a mask image is cancer where a pixel is above half its type's range
(127 for 8-bit), so a lossy format's noise is not cancer (:func:`read_mask_image`); GeoJSON
truth is QuPath's annotations of the tumour class, read as QuPath 0.2, 0.3 and 0.4+ write
them, and a file without a tumour class is refused with its classes listed
(:func:`truth_polygons`).
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LSRError

#: The paper's Table 1 bins, in percent of patch-classifier probability.
PAPER_BIN_EDGES: tuple[tuple[float, float], ...] = (
    (0, 20),
    (20, 30),
    (30, 40),
    (40, 50),
    (50, 60),
    (60, 70),
    (70, 80),
    (80, 90),
    (90, 95),
    (95, 100),
)
LOWRES_COLUMNS = ("x", "y", "width", "height", "probability")
PRIOR_COLUMNS = ("bin", "p_low", "p_high", "mean_pct", "std_pct", "n")
#: Where a prior row comes from (prior CSV column ``source``, optional so older files read):
#: ``reviewed`` (block-review estimates of this project), ``measured`` (measured from masks or
#: other data), ``edited`` (typed in the Prior table), ``paper`` (the paper's Table 1) and
#: ``default`` (0 ± 1 % for bins the paper's table does not have).
PRIOR_SOURCES = ("reviewed", "measured", "edited", "paper", "default")
#: Sources that are not this data: training with them is training on someone else's prior.
PRIOR_NOT_DATA = ("paper", "default")
TRUTH_CLASS_NAMES = ("tumor", "tumour", "cancer")


class FormatError(LSRError, ValueError):
    """Bad input file: the message names the file, and the row and column where known."""

    def __init__(
        self,
        path: str | os.PathLike,
        message: str,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = str(path)
        self.row = row
        self.column = column
        self.reason = message
        where = [self.path]
        if row is not None:
            where.append(self._row_words.format(row=row, line=row + 1))
        if column is not None:
            where.append(self._column_words.format(column=column))
        ValueError.__init__(self, f"{', '.join(where)}: {message}")

    #: How the message names the row and the column (a GeoJSON's say feature and property).
    _row_words = "row {row} (line {line})"
    _column_words = "column {column!r}"


# -- atomic writing ----------------------------------------------------------------------------


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux).

    Elsewhere it is read by setting and restoring it under a lock, with the most
    restrictive mask in between, so a file another thread creates meanwhile is never
    more open than asked.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    The file gets the mode ``open()`` would give it (0666 less the umask), not mkstemp's
    0600, so colleagues sharing a project folder can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"{path.parent}: directory is not writable")
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent
    )
    os.close(fd)
    try:
        os.chmod(tmp, file_mode())
    except OSError:  # a file system without modes: what it gives is what there is
        pass
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def same_file(a: object, b: str | os.PathLike) -> bool:
    """True when ``a`` (a path, or anything a sidecar held: None, "") names the file ``b``."""
    if not a:
        return False
    try:
        return Path(str(a)).resolve() == Path(b).resolve()
    except OSError:
        return False


# -- bins --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bins:
    """Probability bins in percent: lower edge inclusive, the last bin includes its upper edge."""

    edges: tuple[tuple[float, float], ...] = PAPER_BIN_EDGES

    def __post_init__(self) -> None:
        validate_bin_edges(self.edges)

    def __len__(self) -> int:
        return len(self.edges)

    @property
    def labels(self) -> list[str]:
        return [f"{_fmt(lo)}-{_fmt(hi)}" for lo, hi in self.edges]

    def assign(self, probability: np.ndarray | float) -> np.ndarray:
        """Bin index of each probability in [0, 1]."""
        pct = np.asarray(probability, dtype=np.float64) * 100.0
        lows = np.array([lo for lo, _ in self.edges])
        idx = np.searchsorted(lows, pct, side="right") - 1
        return np.clip(idx, 0, len(self.edges) - 1).astype(np.int64)

    @classmethod
    def from_string(cls, text: str) -> Bins:
        """Bins from edges like ``0,20,30,...,100`` (percent)."""
        try:
            values = [float(v) for v in text.replace(" ", "").split(",") if v]
        except ValueError as exc:
            raise ValueError(f"bin edges must be numbers separated by commas: {text!r}") from exc
        if len(values) < 2:
            raise ValueError(f"need at least two bin edges: {text!r}")
        return cls(tuple(zip(values[:-1], values[1:])))


def _fmt(v: float) -> str:
    return f"{v:g}"


def validate_bin_edges(
    edges: Iterable[tuple[float, float]], path: str | os.PathLike | None = None
) -> None:
    """Bins must cover 0-100 % in order, without gap or overlap."""
    edges = list(edges)
    where = path if path is not None else "bins"
    if not edges:
        raise FormatError(where, "no bins")
    prev_hi = 0.0
    for i, (lo, hi) in enumerate(edges):
        row = i + 1 if path is not None else None
        if not (hi > lo):
            raise FormatError(where, f"bin {i}: upper edge {hi} is not above lower edge {lo}", row)
        if not math.isclose(lo, prev_hi):
            kind = "overlaps the previous bin" if lo < prev_hi else "leaves a gap after"
            raise FormatError(
                where,
                f"bin {i} starts at {lo} %, which {kind} {prev_hi} %: bins must cover "
                "0-100 % without gap or overlap",
                row,
                "p_low",
            )
        prev_hi = hi
    if not math.isclose(prev_hi, 100.0):
        raise FormatError(where, f"bins end at {prev_hi} %, not 100 %", len(edges), "p_high")


# -- CSV parsing helpers -----------------------------------------------------------------------


def _read_csv_rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    if not path.exists():
        raise FormatError(path, "no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"not a UTF-8 text file ({exc.reason})") from exc
    rows = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
    if not rows:
        raise FormatError(
            path, "empty file (expected a header row with " + ",".join(required) + ")"
        )
    header = [c.strip().lower() for c in rows[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise FormatError(
            path,
            f"missing column(s) {', '.join(missing)}; found {', '.join(header)}",
            None,
            missing[0],
        )
    data = rows[1:]
    if not data:
        raise FormatError(path, "no data rows after the header")
    for i, r in enumerate(data, start=1):
        if len(r) != len(header):
            raise FormatError(path, f"{len(r)} fields, the header has {len(header)}", i)
    return header, data


def _number(path: Path, row: int, col: str, text: str, *, allow_blank: bool = False) -> float:
    t = text.strip()
    if t == "" and allow_blank:
        return math.nan
    try:
        v = float(t)
    except ValueError:
        raise FormatError(path, f"{t!r} is not a number", row, col) from None
    if not math.isfinite(v):
        raise FormatError(path, f"{t!r} is not a finite number", row, col)
    return v


def _integer(path: Path, row: int, col: str, text: str) -> int:
    v = _number(path, row, col, text)
    if v != int(v):
        raise FormatError(path, f"{text.strip()!r} is not an integer", row, col)
    return int(v)


# -- low-resolution labels ---------------------------------------------------------------------


@dataclass
class LowResLabels:
    """Blocks of one slide in level-0 pixels with their patch probability and bin."""

    path: Path | None
    x: np.ndarray
    y: np.ndarray
    width: np.ndarray
    height: np.ndarray
    probability: np.ndarray
    bin: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def boxes(self) -> np.ndarray:
        """(n, 4) int64 array of x, y, width, height."""
        return np.stack([self.x, self.y, self.width, self.height], axis=1)


def read_lowres_csv(
    path: str | os.PathLike,
    slide_size: tuple[int, int] | None = None,
    bins: Bins | None = None,
) -> LowResLabels:
    """Read and validate a low-resolution label CSV (``x,y,width,height,probability[,bin]``).

    ``slide_size`` (level-0 width, height), when given, refuses blocks outside the slide.
    ``bins`` assigns bins from probabilities unless the file has a ``bin`` column.
    """
    path = Path(path)
    bins = bins or Bins()
    header, data = _read_csv_rows(path, LOWRES_COLUMNS)
    col = {name: header.index(name) for name in header}
    has_bin = "bin" in col
    n = len(data)
    xs = np.empty(n, np.int64)
    ys = np.empty(n, np.int64)
    ws = np.empty(n, np.int64)
    hs = np.empty(n, np.int64)
    ps = np.empty(n, np.float64)
    zs = np.empty(n, np.int64)
    for i, r in enumerate(data, start=1):
        x = _integer(path, i, "x", r[col["x"]])
        y = _integer(path, i, "y", r[col["y"]])
        w = _integer(path, i, "width", r[col["width"]])
        h = _integer(path, i, "height", r[col["height"]])
        p = _number(path, i, "probability", r[col["probability"]])
        for name, v in (("width", w), ("height", h)):
            if v <= 0:
                raise FormatError(path, f"block {name} must be positive, got {v}", i, name)
        if not 0.0 <= p <= 1.0:
            raise FormatError(path, f"probability {p} is outside [0, 1]", i, "probability")
        if x < 0 or y < 0:
            c = "x" if x < 0 else "y"
            raise FormatError(path, f"block starts outside the slide ({c} = {min(x, y)})", i, c)
        if slide_size is not None:
            sw, sh = slide_size
            if x + w > sw or y + h > sh:
                c = "width" if x + w > sw else "height"
                raise FormatError(
                    path,
                    f"block ({x}, {y}, {w}x{h}) reaches outside the slide ({sw}x{sh})",
                    i,
                    c,
                )
        if has_bin:
            z = _integer(path, i, "bin", r[col["bin"]])
            if not 0 <= z < len(bins):
                raise FormatError(path, f"bin {z} is not in 0..{len(bins) - 1}", i, "bin")
        else:
            z = int(bins.assign(p))
        xs[i - 1], ys[i - 1], ws[i - 1], hs[i - 1], ps[i - 1], zs[i - 1] = x, y, w, h, p, z
    return LowResLabels(path, xs, ys, ws, hs, ps, zs)


def write_lowres_csv(path: str | os.PathLike, labels: LowResLabels, with_bin: bool = False) -> None:
    """Write a low-resolution label CSV atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*LOWRES_COLUMNS, *(["bin"] if with_bin else [])])
        for i in range(len(labels)):
            row = [
                int(labels.x[i]),
                int(labels.y[i]),
                int(labels.width[i]),
                int(labels.height[i]),
                f"{float(labels.probability[i]):.6f}",
            ]
            if with_bin:
                row.append(int(labels.bin[i]))
            w.writerow(row)


# -- prior -------------------------------------------------------------------------------------


@dataclass
class Prior:
    """The p(c|z) table: per bin, the mean and std of the cancer fraction, in percent."""

    bins: Bins
    mean_pct: np.ndarray
    std_pct: np.ndarray
    n: np.ndarray = field(default_factory=lambda: np.array([]))  # float; NaN = not measured
    path: Path | None = None
    #: Per bin, where the row comes from (one of PRIOR_SOURCES); by default as
    #: ``inferred_sources`` says (``paper`` only for a row equal to Table 1's).
    source: list[str] | None = None

    def __post_init__(self) -> None:
        self.mean_pct = np.asarray(self.mean_pct, dtype=np.float64)
        self.std_pct = np.asarray(self.std_pct, dtype=np.float64)
        if self.n is None or len(self.n) == 0:
            self.n = np.full(len(self.bins), np.nan)
        self.n = np.asarray(self.n, dtype=np.float64)
        if not (len(self.mean_pct) == len(self.std_pct) == len(self.n) == len(self.bins)):
            raise ValueError("prior: mean, std, n and bins must have the same length")
        if not self.source:
            self.source = inferred_sources(self.bins, self.mean_pct, self.std_pct, self.n)
        self.source = [str(s) for s in self.source]
        if len(self.source) != len(self.bins):
            raise ValueError("prior: one source per bin")
        bad = [s for s in self.source if s not in PRIOR_SOURCES]
        if bad:
            raise ValueError(f"prior: unknown source {bad[0]!r} ({', '.join(PRIOR_SOURCES)})")

    def not_data_bins(self) -> list[int]:
        """Bins whose row is the paper's Table 1 (or a default), not measured from this data."""
        return [b for b, s in enumerate(self.source) if s in PRIOR_NOT_DATA]

    def source_line(self) -> str:
        """One line saying how many bins come from the paper rather than from this data."""
        nb = len(self.bins)
        paper = sum(s == "paper" for s in self.source)
        default = sum(s == "default" for s in self.source)
        data = nb - paper - default
        text = f"prior: {paper} of {nb} bins from the paper's Table 1, {data} from this data"
        if default:
            text += f", {default} a default of 0 ± 1 %"
        return text

    @property
    def eta(self) -> np.ndarray:
        """Means as fractions (0..1), as the loss uses them."""
        return self.mean_pct / 100.0

    @property
    def rho(self) -> np.ndarray:
        """Standard deviations as fractions (0..1)."""
        return self.std_pct / 100.0

    def to_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "bin": i,
                "p_low": lo,
                "p_high": hi,
                "mean_pct": float(self.mean_pct[i]),
                "std_pct": float(self.std_pct[i]),
                "n": None if math.isnan(self.n[i]) else int(self.n[i]),
                "source": self.source[i],
            }
            for i, (lo, hi) in enumerate(self.bins.edges)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.to_rows()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prior:
        rows = d["rows"]
        bins = Bins(tuple((float(r["p_low"]), float(r["p_high"])) for r in rows))
        n = [math.nan if r.get("n") is None else float(r["n"]) for r in rows]
        source = [r["source"] for r in rows] if all(r.get("source") for r in rows) else None
        return cls(
            bins,
            [r["mean_pct"] for r in rows],
            [r["std_pct"] for r in rows],
            np.array(n),
            source=source,
        )


def read_prior_csv(path: str | os.PathLike) -> Prior:
    """Read and validate a prior CSV (``bin,p_low,p_high,mean_pct,std_pct,n[,source]``).

    Files without the ``source`` column (written before it existed) read as: a row equal to
    the paper's Table 1 (same bin, mean and std) is ``paper``; any other row ``measured``,
    so an older file's own values are kept and counted as this data, never taken for the
    paper's.
    """
    path = Path(path)
    header, data = _read_csv_rows(path, PRIOR_COLUMNS)
    col = {name: header.index(name) for name in header}
    edges, means, stds, ns, sources = [], [], [], [], []
    for i, r in enumerate(data, start=1):
        b = _integer(path, i, "bin", r[col["bin"]])
        if b != i - 1:
            raise FormatError(
                path, f"bins must be numbered 0, 1, 2, ... in order; got {b}", i, "bin"
            )
        lo = _number(path, i, "p_low", r[col["p_low"]])
        hi = _number(path, i, "p_high", r[col["p_high"]])
        for name, v in (("p_low", lo), ("p_high", hi)):
            if not 0 <= v <= 100:
                raise FormatError(path, f"{v} is outside [0, 100] %", i, name)
        m = _number(path, i, "mean_pct", r[col["mean_pct"]])
        if not 0 <= m <= 100:
            raise FormatError(path, f"mean {m} % is outside [0, 100]", i, "mean_pct")
        s = _number(path, i, "std_pct", r[col["std_pct"]])
        if s < 0:
            raise FormatError(path, f"standard deviation {s} is negative", i, "std_pct")
        if s > 100:
            raise FormatError(path, f"standard deviation {s} % is above 100", i, "std_pct")
        n = _number(path, i, "n", r[col["n"]], allow_blank=True)
        if not math.isnan(n) and (n < 0 or n != int(n)):
            raise FormatError(path, f"n must be a non-negative integer or blank, got {n}", i, "n")
        if "source" in col:
            src = r[col["source"]].strip().lower()
            if src not in PRIOR_SOURCES:
                raise FormatError(
                    path, f"source {src!r} is not one of {', '.join(PRIOR_SOURCES)}", i, "source"
                )
            sources.append(src)
        edges.append((lo, hi))
        means.append(m)
        stds.append(s)
        ns.append(n)
    validate_bin_edges(edges, path)
    bins = Bins(tuple(edges))
    if "source" not in col:
        sources = _legacy_sources(path, bins, means, stds)
    return Prior(bins, np.array(means), np.array(stds), np.array(ns), path, sources)


def _legacy_sources(path: Path, bins: Bins, means: list, stds: list) -> list[str]:
    """Sources of a prior file without the column: ``paper`` where a row is Table 1's."""
    table = resource_path(PAPER_PRIOR_FILE)
    if path.resolve() == table.resolve():
        return ["paper"] * len(bins)
    return inferred_sources(bins, means, stds)


@functools.lru_cache(maxsize=1)
def _paper_rows() -> tuple[Bins, tuple[float, ...], tuple[float, ...]]:
    p = read_prior_csv(resource_path(PAPER_PRIOR_FILE))
    return p.bins, tuple(p.mean_pct.tolist()), tuple(p.std_pct.tolist())


def inferred_sources(
    bins: Bins, means: Iterable[float], stds: Iterable[float], n: Iterable[float] | None = None
) -> list[str]:
    """Sources of rows that do not say: ``measured`` where n > 0; else ``paper`` where the
    row is the paper's Table 1 row (same bins, mean and std), else ``measured`` (a value not
    known to be the paper's is kept and counted as this data)."""
    means, stds = list(means), list(stds)
    counts = list(n) if n is not None else [math.nan] * len(means)
    pbins, pmean, pstd = _paper_rows()
    same = pbins == bins
    return [
        "measured"
        if c > 0 or not same
        else (
            "paper"
            if math.isclose(m, pmean[b], abs_tol=5e-3) and math.isclose(s, pstd[b], abs_tol=5e-3)
            else "measured"
        )
        for b, (m, s, c) in enumerate(zip(means, stds, counts))
    ]


def write_prior_csv(path: str | os.PathLike, prior: Prior) -> None:
    """Write a prior CSV atomically, with LF line endings on every system."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow([*PRIOR_COLUMNS, "source"])
        for r in prior.to_rows():
            w.writerow(
                [
                    r["bin"],
                    _fmt(r["p_low"]),
                    _fmt(r["p_high"]),
                    f"{r['mean_pct']:.4g}",
                    f"{r['std_pct']:.4g}",
                    "" if r["n"] is None else r["n"],
                    r["source"],
                ]
            )


PAPER_PRIOR_FILE = "prior_paper_table1.csv"


def paper_prior() -> Prior:
    """The paper's Table 1, shipped as ``resources/prior_paper_table1.csv``."""
    prior = read_prior_csv(resource_path(PAPER_PRIOR_FILE))
    prior.source = ["paper"] * len(prior.bins)
    return prior


#: A bin's std when it has fewer than two estimates (percent), so training still has a width.
FALLBACK_STD_PCT = 1.0


def default_prior(bins: Bins) -> Prior:
    """The prior of bins nothing was measured for: the paper's Table 1 when its bins are
    ``bins``, else 0 ± FALLBACK_STD_PCT % per bin (source ``default``). The one rule."""
    paper = paper_prior()
    if paper.bins == bins:
        return paper
    nb = len(bins)
    return Prior(bins, np.zeros(nb), np.full(nb, FALLBACK_STD_PCT), source=["default"] * nb)


def resource_path(name: str) -> Path:
    """Path of a file in the package's ``resources/``."""
    from importlib.resources import files

    return Path(str(files("napari_lsr") / "resources" / name))


# -- ground truth ------------------------------------------------------------------------------


#: QuPath object types read as ground truth unless asked otherwise (``--truth-objects``).
TRUTH_OBJECTS = ("annotation",)
#: Object types QuPath writes (``properties.objectType``; 0.3's ``object_type``; 0.2's feature
#: ``id``), as napari-lsr names them. A feature without one is an annotation, as QuPath reads it.
OBJECT_TYPES = ("annotation", "detection", "cell", "tile", "tmacore", "root")
_LEGACY_TYPE_IDS = {
    "pathannotationobject": "annotation",
    "pathdetectionobject": "detection",
    "pathcellobject": "cell",
    "pathtileobject": "tile",
    "tmacoreobject": "tmacore",
    "pathrootobject": "root",
}
_TUMOUR_NAME = re.compile(r"(?<![a-z])(tumou?r|cancer|carcinoma)")
_NEGATED_NAME = re.compile(r"(?:^|[^a-z])(no|non|not|anti)[^a-z]*(tumou?r|cancer|carcinoma)")


def default_class(classes: list[str]) -> str | None:
    """The class whose name says tumour, tumor or cancer (not "notumor"), if exactly one does.

    An exact name wins; a single class is its own default.
    """
    exact = [c for c in classes if c.lower() in TRUTH_CLASS_NAMES]
    if len(exact) == 1:
        return exact[0]
    named = [
        c for c in classes if _TUMOUR_NAME.search(c.lower()) and not _NEGATED_NAME.search(c.lower())
    ]
    if len(named) == 1:
        return named[0]
    if len(classes) == 1:
        return classes[0]
    return None


@dataclass
class Truth:
    """A binary cancer mask on a grid of ``downsample`` level-0 pixels per pixel."""

    mask: np.ndarray
    downsample: int
    path: Path | None = None


def read_truth(
    path: str | os.PathLike,
    slide_size: tuple[int, int],
    downsample: int | None = None,
    *,
    truth_class: str | None = None,
    objects: Iterable[str] | str | None = None,
    mask_threshold: float | None = None,
) -> Truth:
    """Read ground truth: a mask image at an integer downsample, or QuPath GeoJSON polygons.

    Masks keep their own downsample (derived from their size) unless ``downsample`` asks for
    another integer factor; GeoJSON is rasterised at ``downsample`` (default 1... capped so the
    mask stays under ~64 Mpx). ``truth_class`` and ``objects`` choose the GeoJSON features
    (:func:`truth_polygons`), ``mask_threshold`` the mask's cut (:func:`read_mask_image`).
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(path, "no such file")
    if path.suffix.lower() in (".geojson", ".json"):
        if downsample is None:
            downsample = max(1, math.ceil(math.sqrt(slide_size[0] * slide_size[1] / 64e6)))
        mask = rasterize_geojson(path, slide_size, downsample, truth_class, objects)
        return Truth(mask, downsample, path)
    mask, d = read_mask_image(path, slide_size, mask_threshold)
    if downsample is not None and downsample != d:
        if downsample % d:
            raise FormatError(path, f"cannot bring a mask at downsample {d} to {downsample}")
        f = downsample // d
        h, w = mask.shape[0] // f, mask.shape[1] // f
        mask = mask[: h * f, : w * f].reshape(h, f, w, f).mean(axis=(1, 3)) >= 0.5
        d = downsample
    return Truth(mask, d, path)


def mask_cut(arr: np.ndarray, threshold: float | None = None) -> float:
    """The value above which a mask pixel is cancer (see :func:`read_mask_image`)."""
    if threshold is not None:
        return float(threshold)
    if arr.dtype == bool:
        return 0.0
    top = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 1.0
    if arr.size and float(arr.max()) <= 1.0 and top > 1.0:
        return 0.0  # a 0/1 label image
    return float(np.floor(top / 2)) if top > 1.0 else 0.5


def read_mask_image(
    path: str | os.PathLike, slide_size: tuple[int, int], threshold: float | None = None
) -> tuple[np.ndarray, int]:
    """A mask image whose size is the slide's divided by an integer, read as cancer where a
    pixel (its largest channel) is above the cut.

    The cut by default is half the range of the image's type: 127 for 8-bit, 32767 for
    16-bit, 0.5 for floating point, so the noise of a lossy format (JPEG: values near 0 and
    255) is not read as cancer; a mask holding only 0 and 1 is a label image (1 = cancer). A
    mask with values above 1 but none above the cut (labels 0, 1, 2...) is refused: give
    ``threshold`` (``--mask-threshold``; 0 reads every non-zero pixel as cancer).
    """
    from PIL import Image

    path = Path(path)
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except Exception as exc:
        raise FormatError(path, f"cannot read mask image ({exc})") from exc
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2) if arr.shape[2] >= 3 else arr[..., 0]
    h, w = arr.shape
    sw, sh = slide_size
    d = sw / w
    di = int(round(d))
    if di < 1 or sw // di != w or sh // di != h:
        raise FormatError(
            path,
            f"mask is {w}x{h} but the slide is {sw}x{sh}: a mask must be the slide's level-0 "
            "size divided by an integer",
        )
    cut = mask_cut(arr, threshold)
    mask = arr > cut
    if threshold is None and not mask.any() and arr.size and float(arr.max()) > 1:
        raise FormatError(
            path,
            f"mask values are 0..{arr.max()}, none above {cut:g} (half the range of its "
            "type): a label image? give --mask-threshold 0 to read every non-zero pixel as "
            "cancer",
        )
    return mask, di


def geojson_features(path: str | os.PathLike, data: Any) -> Any:
    """The features of parsed GeoJSON: a FeatureCollection's (as stored), a lone Feature, or
    a bare list; anything else is a FormatError naming the file."""
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        return data.get("features")
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    if isinstance(data, list):
        return data
    raise FormatError(path, "not a GeoJSON FeatureCollection")


def object_type(feature: Any) -> str:
    """A feature's QuPath object type (one of OBJECT_TYPES): 0.4+'s
    ``properties.objectType``, 0.3's ``object_type``, the alias ``type``, 0.2's feature ``id``
    (``PathAnnotationObject``...); without one, or with a word QuPath does not know,
    ``annotation`` (as QuPath reads it)."""
    props = feature.get("properties") if isinstance(feature, dict) else None
    props = props if isinstance(props, dict) else {}
    for key in ("objectType", "object_type", "type"):
        v = props.get(key)
        if isinstance(v, str) and v.strip():
            t = v.strip().lower().replace("_", "")
            t = _LEGACY_TYPE_IDS.get(t, t)
            return t if t in OBJECT_TYPES else "annotation"  # QuPath: unknown -> annotation
    fid = feature.get("id") if isinstance(feature, dict) else None
    if isinstance(fid, str) and fid.lower() in _LEGACY_TYPE_IDS:
        return _LEGACY_TYPE_IDS[fid.lower()]
    return "annotation"


def class_names(feature: Any) -> tuple[str, ...] | None:
    """A feature's classification as QuPath writes it, as names from the base class on:
    ``{"name": "Tumor"}``, 0.4+'s derived ``{"names": ["Tumor", "Positive"]}``, a string
    ``"Tumor"`` or ``"Tumor: Positive"``, an older ``{"name": ..., "parentClass": {...}}``.
    None when unclassified; ``("?",)`` for a classification that none of these is."""
    props = feature.get("properties") if isinstance(feature, dict) else None
    props = props if isinstance(props, dict) else {}
    c = props.get("classification", props.get("class"))
    if c is None:
        return None

    def split(text: str) -> list[str]:
        return [t.strip() for t in text.split(":") if t.strip()]

    names: list[str] = []
    if isinstance(c, str):
        names = split(c)
    elif isinstance(c, dict):
        if isinstance(c.get("names"), list):
            names = [str(n).strip() for n in c["names"] if str(n).strip()]
        elif isinstance(c.get("name"), str):
            parent = class_names({"properties": {"classification": c.get("parentClass")}})
            names = [*(parent or ()), *split(c["name"])]
    elif isinstance(c, list):
        names = [str(n).strip() for n in c if str(n).strip()]
    if not names:
        return None if c in ("", {}, []) else ("?",)
    return tuple(names)


def _class_label(names: tuple[str, ...] | None) -> str:
    return "unclassified" if names is None else ": ".join(names)


def parse_objects(objects: Iterable[str] | str | None) -> tuple[str, ...]:
    """Object types to read as truth from ``annotation,detection`` (``detection`` includes
    cells; ``all`` is every type); default TRUTH_OBJECTS."""
    if objects is None:
        return TRUTH_OBJECTS
    items = objects.split(",") if isinstance(objects, str) else list(objects)
    out: list[str] = []
    for item in (str(i).strip().lower().replace("_", "") for i in items):
        if not item:
            continue
        item = (
            item[:-1] if item.endswith("s") and item[:-1] in (*OBJECT_TYPES, "detection") else item
        )
        if item == "all":
            out.extend(OBJECT_TYPES)
        elif item in OBJECT_TYPES:
            out.append(item)
            if item == "detection":
                out.append("cell")
        else:
            raise ValueError(
                f"--truth-objects: unknown object type {item!r}; the types are "
                + ", ".join(("annotation", "detection", "cell", "tile", "tmacore", "all"))
            )
    if not out:
        raise ValueError("--truth-objects: no object type given")
    return tuple(dict.fromkeys(out))


def _geometry_rings(geom: Any) -> list[list[np.ndarray]]:
    """Polygons (each a list of rings, exterior first) of a Polygon, MultiPolygon or
    GeometryCollection; other geometries (points, lines) hold none."""
    if not isinstance(geom, dict):
        return []
    kind = geom.get("type")
    if kind == "GeometryCollection":
        return [p for g in geom.get("geometries") or [] for p in _geometry_rings(g)]
    coords = geom.get("coordinates")
    if kind == "Polygon":
        parts = [coords]
    elif kind == "MultiPolygon":
        parts = coords
    else:
        return []
    polys = []
    for rings in parts or []:
        try:
            arrs = [np.asarray(r, dtype=np.float64)[:, :2] for r in rings if len(r) >= 3]
        except (TypeError, ValueError, IndexError):
            continue
        if arrs:
            polys.append(arrs)
    return polys


def _counted(items: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for it in items:
        counts[it] = counts.get(it, 0) + 1
    return ", ".join(f"{k} ({v})" for k, v in counts.items()) or "none"


def truth_polygons(
    path: str | os.PathLike,
    data: Any,
    truth_class: str | None = None,
    objects: Iterable[str] | str | None = None,
) -> list[list[np.ndarray]]:
    """The tumour polygons of a QuPath (or any) GeoJSON: each a list of rings, exterior first.

    Which features: those of the object types ``objects`` (default annotations only: QuPath's
    detections, cells and tiles, and WSInfer's tiles, are not truth unless asked), with a
    Polygon, MultiPolygon or GeometryCollection of polygons. Which class: ``truth_class``
    (case-insensitive) matches a class by its full name (``Tumor: Positive``) or its first
    name (``Tumor`` matches ``Tumor``, ``Tumor: Positive``...); by default the one first name
    that says tumour, tumor or cancer (see :func:`default_class`). When no feature is
    classified, all polygons are truth. Anything else is refused with a line that lists the
    object types and classes found; a non-tumour class is never read as tumour.
    """
    path = Path(path)
    wanted = parse_objects(objects)
    feats = [f for f in (geojson_features(path, data) or []) if isinstance(f, dict)]
    shaped = [(f, _geometry_rings(f.get("geometry"))) for f in feats]
    shaped = [(f, rings) for f, rings in shaped if rings]
    if not shaped:
        geoms = _counted(
            str((f.get("geometry") or {}).get("type", "no geometry"))
            if isinstance(f.get("geometry"), dict)
            else "no geometry"
            for f in feats
        )
        raise FormatError(
            path,
            "no tumour polygons (Polygon/MultiPolygon/GeometryCollection features) in the "
            f"GeoJSON; its geometries: {geoms}",
        )
    kept = [(f, rings) for f, rings in shaped if object_type(f) in wanted]
    found_types = _counted(object_type(f) for f, _ in shaped)
    if not kept:
        hint = ""
        if any(object_type(f) == "tile" for f, _ in shaped):
            hint = " (tiles: a WSInfer output is low-resolution labels, not truth)"
        raise FormatError(
            path,
            f"no {' or '.join(wanted)} polygons in the GeoJSON; it holds {found_types}{hint}; "
            "choose object types with --truth-objects (e.g. annotation,detection)",
        )
    classes = [class_names(f) for f, _ in kept]
    listed = _counted(_class_label(c) for c in classes)
    if truth_class is not None and truth_class.strip():
        want = ": ".join(t.strip() for t in truth_class.split(":") if t.strip()).lower()

        def match(c: tuple[str, ...] | None) -> bool:
            return c is not None and (c[0].lower() == want or ": ".join(c).lower() == want)

        chosen = [rings for (f, rings), c in zip(kept, classes) if match(c)]
        if not chosen:
            raise FormatError(
                path, f"no {' or '.join(wanted)} of class {truth_class!r}; classes found: {listed}"
            )
    elif any(c is not None for c in classes):
        roots = list(dict.fromkeys(c[0] for c in classes if c is not None))
        tumour = [r for r in roots if r.lower() in TRUTH_CLASS_NAMES]
        if len(tumour) != 1:
            named = [
                r
                for r in roots
                if _TUMOUR_NAME.search(r.lower()) and not _NEGATED_NAME.search(r.lower())
            ]
            tumour = named if len(named) == 1 else []
        if not tumour:
            raise FormatError(
                path,
                f"no tumour class (Tumor, Tumour, Cancer) among the classes found: {listed}; "
                "choose one with --truth-class",
            )
        chosen = [
            rings for (f, rings), c in zip(kept, classes) if c is not None and c[0] == tumour[0]
        ]
    else:
        chosen = [rings for _, rings in kept]
    return [poly for rings in chosen for poly in rings]


def rasterize_geojson(
    path: str | os.PathLike,
    slide_size: tuple[int, int],
    downsample: int = 1,
    truth_class: str | None = None,
    objects: Iterable[str] | str | None = None,
) -> np.ndarray:
    """Rasterise QuPath GeoJSON polygons (level-0 px) to a bool mask at ``downsample``
    (which polygons: :func:`truth_polygons`)."""
    from skimage.draw import polygon as draw_polygon

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(path, f"not valid JSON ({exc})") from exc
    polys = truth_polygons(path, data, truth_class, objects)
    sw, sh = slide_size
    w, h = sw // downsample, sh // downsample
    mask = np.zeros((h, w), bool)
    inside_any = False
    for rings in polys:
        for k, ring in enumerate(rings):
            xs, ys = ring[:, 0], ring[:, 1]
            if xs.max() >= 0 and ys.max() >= 0 and xs.min() < sw and ys.min() < sh:
                inside_any = True
            # Pixel (r, c) covers [c, c + 1) x [r, r + 1) of the grid: test its centre.
            rr, cc = draw_polygon(ys / downsample - 0.5, xs / downsample - 0.5, shape=mask.shape)
            mask[rr, cc] = k == 0  # exterior fills, holes clear
    if not inside_any:
        raise FormatError(path, f"all polygons fall outside the slide ({sw}x{sh} px)")
    return mask


# -- predictions -------------------------------------------------------------------------------

PREDICTION_TILE = 256


#: A prediction's sidecar and a model's card end differently, so a prediction written beside
#: a model (``m.tiff`` next to ``m.pt``) never replaces the model's card. Files written before
#: (both ``<name>.json``) are still read.
PREDICTION_SIDECAR_SUFFIX = ".pred.json"
MODEL_CARD_SUFFIX = ".card.json"
LEGACY_JSON_SUFFIX = ".json"


def prediction_sidecar(path: str | os.PathLike) -> Path:
    """Where a prediction TIFF's sidecar is written: ``<name>.pred.json`` beside it."""
    return Path(path).with_suffix(PREDICTION_SIDECAR_SUFFIX)


def model_card_path(checkpoint: str | os.PathLike) -> Path:
    """Where a checkpoint's model card is written: ``<model>.card.json`` beside it."""
    return Path(checkpoint).with_suffix(MODEL_CARD_SUFFIX)


def _json_keys(path: Path) -> set[str]:
    """The top-level keys of a small JSON object file (empty when it is anything else)."""
    try:
        if path.stat().st_size > JSON_LIMIT:
            return set()
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return set()
    return set(data) if isinstance(data, dict) else set()


def is_legacy_sidecar(path: str | os.PathLike) -> bool:
    """True when a ``<name>.json`` is a prediction's sidecar (it names its slide)."""
    return "slide" in _json_keys(Path(path))


def existing_prediction_sidecar(path: str | os.PathLike) -> Path:
    """The sidecar to read for prediction ``path``: ``<name>.pred.json``, else an older
    ``<name>.json`` that is a sidecar (not a model card); the new name when neither is."""
    new = prediction_sidecar(path)
    if new.exists():
        return new
    old = Path(path).with_suffix(LEGACY_JSON_SUFFIX)
    if old.exists() and is_legacy_sidecar(old):
        return old
    return new


def existing_model_card(checkpoint: str | os.PathLike) -> Path | None:
    """The card of ``checkpoint``: ``<model>.card.json``, else an older ``<model>.json`` that
    is a card (not a prediction's sidecar); None when there is none."""
    new = model_card_path(checkpoint)
    if new.exists():
        return new
    old = Path(checkpoint).with_suffix(LEGACY_JSON_SUFFIX)
    if old.exists() and not is_legacy_sidecar(old):
        return old
    return None


def write_prediction(
    path: str | os.PathLike,
    prob: Any,
    meta: dict[str, Any],
    tile: int = PREDICTION_TILE,
) -> None:
    """Write a uint8 probability map as a tiled pyramidal TIFF plus its JSON sidecar.

    ``prob`` is any 2-D uint8 array-like that supports slicing (numpy, zarr, memmap); it is
    read one tile row at a time, so memory stays bounded. ``meta`` must hold slide,
    downsample, mpp, model and loss.
    """
    import tifffile

    for key in ("slide", "downsample", "mpp", "model", "loss"):
        if key not in meta:
            raise ValueError(f"prediction metadata lacks {key!r}")
    path = Path(path)
    h, w = prob.shape
    levels = [(h, w, 1)]
    while min(levels[-1][0], levels[-1][1]) > tile:
        f = levels[-1][2] * 2
        levels.append((h // f, w // f, f))
    mpp = meta.get("mpp")
    res = {}
    if mpp:
        res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}

    def tiles(f: int, lh: int, lw: int) -> Iterator[np.ndarray]:
        for ty in range(0, lh, tile):
            rows = np.asarray(prob[ty * f : min(ty + tile, lh) * f, : lw * f])
            if f > 1:
                rh = rows.shape[0] // f
                rows = rows[: rh * f].reshape(rh, f, lw, f).mean(axis=(1, 3))
                rows = np.round(rows).astype(np.uint8)
            for tx in range(0, lw, tile):
                t = np.zeros((tile, tile), np.uint8)
                part = rows[:, tx : tx + tile]
                t[: part.shape[0], : part.shape[1]] = part
                yield t

    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=h * w > 2**31) as tif:
            for i, (lh, lw, f) in enumerate(levels):
                tif.write(
                    tiles(f, lh, lw),
                    shape=(lh, lw),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    compression="zlib",
                    photometric="minisblack",
                    subfiletype=1 if i else 0,
                    description=json.dumps(meta) if i == 0 else None,
                    metadata=None,
                    **res,
                )
    atomic_write_text(prediction_sidecar(path), json.dumps(meta, indent=2))


def read_prediction(path: str | os.PathLike, level: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """A prediction's uint8 probability map (at ``level``) and its sidecar metadata."""
    import tifffile

    path = Path(path)
    if not path.exists():
        raise FormatError(path, "no such file")
    meta = read_prediction_sidecar(path)
    try:
        with tifffile.TiffFile(path) as tif:
            arr = tif.pages[level].asarray()
    except Exception as exc:
        raise FormatError(path, f"cannot read prediction TIFF ({exc})") from exc
    return arr, meta


# -- JSON cards and sidecars: data, read with a size limit and a schema check -------------------

#: The largest model card or prediction sidecar read (ours are a few kB).
JSON_LIMIT = 1 << 20
_NUMBER = (int, float)
#: Model card (``<model>.card.json``) entries and their types (None is accepted for each: NaN is
#: written as null); other entries are kept unchecked.
CARD_SCHEMA: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "checkpoint": (str,),
    "status": (str,),
    "loss": (str,),
    "distance": (str,),
    "pixel_variance": (str,),
    "lr": _NUMBER,
    "lr_schedule": (str,),
    "ema": _NUMBER,
    "steps": (int,),
    "steps_planned": (int,),
    "final_loss": _NUMBER,
    "duration_s": _NUMBER,
    "device": (str,),
    "train_mpp": _NUMBER,
    "block_size": (int,),
    "blocks": (int,),
    "slides": (list,),
    "prior": (str, dict),
    "seed": (int,),
    "finished": (str,),
}
#: Prediction sidecar entries and their types; ``slide`` and ``downsample`` are required.
SIDECAR_SCHEMA: dict[str, tuple[type, ...]] = {
    "slide": (str,),
    "slide_width": (int,),
    "slide_height": (int,),
    "downsample": _NUMBER,
    "mpp": _NUMBER,
    "model": (str,),
    "loss": (str,),
    "tile": (int,),
    "margin": (int,),
}


def read_json_object(
    path: str | os.PathLike,
    what: str,
    schema: dict[str, tuple[type, ...]],
    required: Iterable[str] = (),
    limit: int = JSON_LIMIT,
) -> dict[str, Any]:
    """A JSON object from ``path``, at most ``limit`` bytes, its entries checked against
    ``schema`` (key: allowed types; None allowed) and ``required``; FormatError (one line,
    naming the file) otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except FileNotFoundError:
        raise FormatError(path, "no such file") from None
    except OSError as exc:
        raise FormatError(path, f"cannot read the {what} ({exc.strerror or exc})") from None
    if len(raw) > limit:
        raise FormatError(path, f"too large for a {what} (over {limit} bytes)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(path, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise FormatError(path, "not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise FormatError(path, f"not a {what} (expected a JSON object)")
    for key in required:
        if data.get(key) is None:
            raise FormatError(path, f"{what} lacks {key!r}")
    for key, types in schema.items():
        v = data.get(key)
        if v is None:
            continue
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            names = " or ".join(_JSON_TYPE_NAMES.get(t, t.__name__) for t in types)
            got = _JSON_TYPE_NAMES.get(type(v), type(v).__name__)
            raise FormatError(path, f"{what} entry {key!r} should be {names}, not {got}")
    return data


_JSON_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true/false",
    list: "a list",
    dict: "an object",
}


def read_model_card(path: str | os.PathLike) -> dict[str, Any]:
    """A model card (``<model>.card.json`` beside its checkpoint), size-limited and
    schema-checked.

    Its ``checkpoint`` entry must be a file name in the card's folder (no path)."""
    card = read_json_object(path, "model card", CARD_SCHEMA)
    ckpt = card.get("checkpoint")
    if ckpt is not None and (
        ckpt in ("", ".", "..") or "/" in ckpt or "\\" in ckpt or Path(ckpt).name != ckpt
    ):
        raise FormatError(path, f"model card entry 'checkpoint' is not a file name: {ckpt!r}")
    return card


def read_prediction_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar of prediction ``path`` (a TIFF), size-limited and schema-checked."""
    side = existing_prediction_sidecar(path)
    if not side.exists():
        raise FormatError(path, f"no sidecar {side.name} beside the prediction")
    return read_json_object(side, "sidecar", SIDECAR_SCHEMA, required=("slide", "downsample"))


def json_ready(v: Any) -> Any:
    """Plain JSON data: NaN and infinities as null, numpy scalars as numbers, tuples as lists."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_ready(x) for x in v]
    if isinstance(v, np.generic):
        return json_ready(v.item())
    return v


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """Write JSON atomically (NaN written as null)."""
    atomic_write_text(path, json.dumps(json_ready(data), indent=indent))
