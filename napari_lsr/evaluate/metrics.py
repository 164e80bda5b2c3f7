"""Segmentation metrics of SPEC section 4: masked and unmasked IoU/DICE around the truth boundary.

Conventions (the paper, Sec. 3.2, and SPEC section 4):

* ``P`` is the predicted cancer mask, ``G`` the ground-truth cancer mask and ``M`` the *band
  mask*: the pixels within ``band_px`` pixels of the ground-truth cancer/non-cancer boundary
  (see :func:`band_mask` for the exact distance convention).
* masked IoU  = ``|P & G & M| / |(P | G) & M|``
* masked DICE = ``2 |P & G & M| / (|P & M| + |G & M|)``
* unmasked IoU/DICE are the same formulas with ``M`` = every pixel.
* A score whose denominator is zero (0/0, e.g. an empty band, or empty prediction *and* empty
  truth) is ``float('nan')``: it is undefined, not perfect and not zero.
* Over several images, scores are reported both *pooled* (the confusion counts are summed over
  images and the score is computed once) and as the *mean over images* (NaN scores, i.e.
  images where the score is undefined, are left out of the mean).

All masks are boolean arrays of the same shape (normally 2-D, ``(rows, cols)``; the functions
work for any number of dimensions). Inputs are coerced to ``bool`` with "non-zero = cancer";
floating-point inputs must hold only 0 and 1, so that a probability map passed by mistake is
refused rather than silently read as "everything above 0 is cancer". Threshold probability maps
first (``evaluation.prediction_mask``) and bring a prediction and a truth mask to a common pixel
grid (``evaluation.resample_to_grid``, or :func:`downsample_mask`) before scoring.

This module depends on numpy and scipy.ndimage only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "Counts",
    "band_mask",
    "confusion_counts",
    "downsample_mask",
    "evaluate_many",
    "masked_scores",
    "to_json_dict",
]

#: The four scores of a Table 2 row, in the table's order.
SCORE_KEYS = ("masked_iou", "masked_dice", "unmasked_iou", "unmasked_dice")


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def _as_bool(array: Any, name: str) -> np.ndarray:
    """Coerce ``array`` to a boolean ndarray (non-zero = True).

    Floating-point arrays must contain only 0 and 1 (a probability map has to be thresholded by
    the caller); NaN is refused.
    """
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(
                f"{name} is a floating-point array with values other than 0 and 1; "
                "threshold probabilities first (napari_lsr.evaluate.evaluation.prediction_mask)"
            )
        return arr == 1
    if np.issubdtype(arr.dtype, np.integer):
        return arr != 0
    raise TypeError(f"{name} must be a boolean, integer or 0/1 float array, got dtype {arr.dtype}")


def _check_same_shape(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} shape {tuple(a.shape)} does not match {b_name} shape {tuple(b.shape)}; "
            "bring them to a common grid first (evaluation.resample_to_grid / downsample_mask)"
        )


def _check_band(band_px: float) -> float:
    band = float(band_px)
    if math.isnan(band) or band < 0:
        raise ValueError(f"band_px must be a non-negative number of pixels, got {band_px!r}")
    return band


# --------------------------------------------------------------------------------------------
# geometry: band, resampling
# --------------------------------------------------------------------------------------------


def band_mask(truth: np.ndarray, band_px: float) -> np.ndarray:
    """Pixels within ``band_px`` of the ground-truth cancer/non-cancer boundary.

    Exact convention. Distances are Euclidean distances between pixel centres, in pixels of
    ``truth``'s grid, computed with :func:`scipy.ndimage.distance_transform_edt`:

    * a non-cancer pixel's distance is the distance to the nearest cancer pixel;
    * a cancer pixel's distance is the distance to the nearest non-cancer pixel;
    * a pixel is in the band when its distance is ``<= band_px``.

    So the pixels touching the boundary on either side have distance 1 (edge neighbours) or
    sqrt(2) (corner neighbours); ``band_px = 1`` gives a band two pixels wide across a straight
    boundary, ``band_px = b`` (integer) a band ``2 b`` pixels wide, and ``band_px < 1`` an empty
    band. The image edge is not a boundary: only the other class counts, so a region
    cut off by the image border has no band along that border.

    When ``truth`` has no cancer pixel, or only cancer pixels, there is no boundary and the
    band is empty (all False); masked scores of such an image are then NaN.

    ``band_px`` may be ``inf`` (every pixel, when a boundary exists); negative or NaN values
    raise ``ValueError``. Returns a boolean array of ``truth``'s shape.
    """
    g = _as_bool(truth, "truth")
    band = _check_band(band_px)
    if g.size == 0 or g.all() or not g.any():
        return np.zeros(g.shape, dtype=bool)
    # distance_transform_edt gives, for each non-zero element, the distance to the nearest zero.
    dist_outside = ndimage.distance_transform_edt(~g)  # non-cancer -> nearest cancer
    dist_inside = ndimage.distance_transform_edt(g)  # cancer -> nearest non-cancer
    dist = np.where(g, dist_inside, dist_outside)
    return dist <= band


def _positive_int_factor(factor: float) -> int:
    if isinstance(factor, (bool, np.bool_)) or not isinstance(factor, numbers.Real):
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    as_float = float(factor)
    if not math.isfinite(as_float) or as_float != int(as_float) or as_float < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    return int(as_float)


def downsample_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour downsampling by an exact integer ``factor`` along every axis.

    Every axis length must be divisible by ``factor`` (``ValueError`` otherwise). Output pixel
    ``i`` takes input pixel ``i * factor + factor // 2``, the centre of its ``factor``-wide
    block (for even factors the one just after the centre). The dtype is kept, so this works
    for masks and for probability maps alike.
    """
    f = _positive_int_factor(factor)
    arr = np.asarray(mask)
    bad = [n for n in arr.shape if n % f]
    if bad:
        raise ValueError(
            f"cannot downsample shape {tuple(arr.shape)} by {f}: every axis length must be "
            f"divisible by the factor"
        )
    if f == 1:
        return arr.copy()
    index = tuple(slice(f // 2, None, f) for _ in range(arr.ndim))
    return arr[index].copy()


# --------------------------------------------------------------------------------------------
# counts and scores
# --------------------------------------------------------------------------------------------


def _ratio(num: int, den: int) -> float:
    return float("nan") if den == 0 else num / den


@dataclass(frozen=True)
class Counts:
    """Confusion counts of a binary (cancer = positive) segmentation, as Python ints.

    ``Counts`` add up (``a + b``, and ``sum(list_of_counts)`` works), which is how scores are
    pooled over images.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __post_init__(self) -> None:
        for name in ("tp", "fp", "fn", "tn"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise ValueError(f"Counts.{name} must be a non-negative integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    def __add__(self, other: object) -> Counts:
        if not isinstance(other, Counts):
            return NotImplemented
        return Counts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )

    def __radd__(self, other: object) -> Counts:
        # Lets the built-in sum() start from 0.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    @property
    def total(self) -> int:
        """Number of pixels counted."""
        return self.tp + self.fp + self.fn + self.tn

    @property
    def iou(self) -> float:
        """``tp / (tp + fp + fn)``; NaN when prediction and truth are both empty."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def dice(self) -> float:
        """``2 tp / (2 tp + fp + fn)``; NaN when prediction and truth are both empty."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def as_dict(self) -> dict[str, int]:
        """``{"tp": ..., "fp": ..., "fn": ..., "tn": ...}``."""
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}


def confusion_counts(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> Counts:
    """Confusion counts of ``pred`` against ``truth``, restricted to ``mask`` when given.

    All arrays must have the same shape (``ValueError`` naming both shapes otherwise) and are
    coerced to bool (non-zero = cancer; see the module docstring).
    """
    p = _as_bool(pred, "pred")
    g = _as_bool(truth, "truth")
    _check_same_shape(p, "pred", g, "truth")
    if mask is not None:
        m = _as_bool(mask, "mask")
        _check_same_shape(m, "mask", g, "truth")
        p = p[m]
        g = g[m]
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    tn = int(p.size) - tp - fp - fn
    return Counts(tp=tp, fp=fp, fn=fn, tn=tn)


def masked_scores(pred: np.ndarray, truth: np.ndarray, band_px: float) -> dict[str, Any]:
    """Masked and unmasked IoU/DICE of one image.

    Returns a dict with

    * ``"masked_iou"``, ``"masked_dice"``: scores inside :func:`band_mask` ``(truth, band_px)``
      (NaN when the band is empty, i.e. truth has no boundary);
    * ``"unmasked_iou"``, ``"unmasked_dice"``: scores over the whole image (NaN when both
      prediction and truth are empty);
    * ``"masked_counts"``, ``"unmasked_counts"``: the :class:`Counts` behind them;
    * ``"band_px"`` (float) and ``"band_pixels"`` (int, the band's size).

    ``pred`` and ``truth`` must be binary masks on the same grid (ValueError naming both shapes
    otherwise).
    """
    p = _as_bool(pred, "pred")
    g = _as_bool(truth, "truth")
    _check_same_shape(p, "pred", g, "truth")
    band = band_mask(g, band_px)
    masked = confusion_counts(p, g, band)
    unmasked = confusion_counts(p, g)
    return {
        "masked_iou": masked.iou,
        "masked_dice": masked.dice,
        "unmasked_iou": unmasked.iou,
        "unmasked_dice": unmasked.dice,
        "masked_counts": masked,
        "unmasked_counts": unmasked,
        "band_px": float(band_px),
        "band_pixels": int(np.count_nonzero(band)),
    }


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return math.fsum(finite) / len(finite) if finite else float("nan")


def evaluate_many(pairs: Iterable[tuple[np.ndarray, np.ndarray]], band_px: float) -> dict[str, Any]:
    """Score several ``(pred, truth)`` pairs (each pair on its own common grid).

    ``pairs`` may be a generator, so images can be loaded one at a time. Returns a dict of
    plain Python types (NaN for undefined scores; pass it through :func:`to_json_dict` to get
    ``None`` instead, e.g. for strict JSON)::

        {
          "n_images": int,
          "band_px": float,
          "pooled": {"masked_iou", "masked_dice", "unmasked_iou", "unmasked_dice"},
          "mean":   {"masked_iou", "masked_dice", "unmasked_iou", "unmasked_dice"},
          "n_defined": {same keys: number of images whose score is not NaN},
          "counts": {"masked": {"tp","fp","fn","tn"}, "unmasked": {...}},
          "per_image": [{"masked_iou", ..., "band_pixels", "masked_counts",
                         "unmasked_counts"}, ...],
        }

    ``pooled`` scores come from the confusion counts summed over all images; ``mean`` is the
    mean over images of the per-image scores, leaving out images where the score is NaN
    (``n_defined`` says how many were averaged). Raises ``ValueError`` when ``pairs`` is
    empty.
    """
    band = _check_band(band_px)
    per_image: list[dict[str, Any]] = []
    masked_total = Counts()
    unmasked_total = Counts()
    for index, pair in enumerate(pairs):
        try:
            pred, truth = pair
        except (TypeError, ValueError):
            raise ValueError(f"pairs[{index}] is not a (pred, truth) pair") from None
        try:
            scores = masked_scores(pred, truth, band)
        except ValueError as err:
            raise ValueError(f"image {index}: {err}") from err
        masked_total = masked_total + scores["masked_counts"]
        unmasked_total = unmasked_total + scores["unmasked_counts"]
        entry = {key: float(scores[key]) for key in SCORE_KEYS}
        entry["band_pixels"] = scores["band_pixels"]
        entry["masked_counts"] = scores["masked_counts"].as_dict()
        entry["unmasked_counts"] = scores["unmasked_counts"].as_dict()
        per_image.append(entry)
    if not per_image:
        raise ValueError("evaluate_many needs at least one (pred, truth) pair")
    return {
        "n_images": len(per_image),
        "band_px": band,
        "pooled": {
            "masked_iou": masked_total.iou,
            "masked_dice": masked_total.dice,
            "unmasked_iou": unmasked_total.iou,
            "unmasked_dice": unmasked_total.dice,
        },
        "mean": {key: _nanmean([e[key] for e in per_image]) for key in SCORE_KEYS},
        "n_defined": {key: sum(not math.isnan(e[key]) for e in per_image) for key in SCORE_KEYS},
        "counts": {"masked": masked_total.as_dict(), "unmasked": unmasked_total.as_dict()},
        "per_image": per_image,
    }


def to_json_dict(value: Any) -> Any:
    """A copy of ``value`` that :func:`json.dumps` accepts with ``allow_nan=False``.

    NaN and infinite floats become ``None``; :class:`Counts` become dicts; numpy scalars and
    arrays become Python numbers and lists; tuples become lists; mappings are copied with
    string keys.
    """
    if isinstance(value, Counts):
        return value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): to_json_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_dict(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_dict(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value
