"""Label-super-resolution statistics-matching losses (intra, inter, intra+inter) in PyTorch.

The network gives, for every pixel of block ``X_k``, a cancer probability ``p``. Each block has a
low-resolution label ``z_k`` (a bin index) and the prior table gives, per bin, the mean ``eta`` and
the standard deviation ``rho`` of the fraction of cancer pixels (as fractions, never percent).

Per block (paper Eq. 3)::

    mu_k  = mean_ij p
    var_k = mean_ij p (1 - p)              pixel_variance="paper"
          | mean_ij p (1 - p) / |X_k|      pixel_variance="exact" (variance of the sampled fraction)

Statistics, each giving the ``(mu, sigma^2)`` of one comparison with ``(eta_z, rho_z)``:

* ``"intra"`` (Sec. 2.1): one comparison per block, ``(mu_k, var_k)``; averaged over blocks.
* ``"inter"`` (Sec. 2.2, Eq. 8): one per group, ``mu = mean_k mu_k``,
  ``sigma^2 = mean_k (mu_k - mu)^2`` (population variance); averaged over groups.
* ``"intra+inter"`` (Sec. 2.3, Eq. 11): one per group, ``mu = mean_k mu_k``,
  ``sigma^2 = mean_k var_k + mean_k mu_k^2 - mu^2``; averaged over groups. It is computed in the
  algebraically identical, cancellation-free form ``mean_k var_k + mean_k (mu_k - mu)^2``.

A group is, by default, every block of the batch that shares the same ``z``; pass ``groups`` to
split blocks of one bin into several groups. Group statistics use a one-hot membership matrix
(no Python loop over blocks or groups, deterministic on every device).

Distances ``D(mu, sigma^2; eta, rho)`` (see :func:`distance_fn`):

* ``"paper"``: Eq. 5/9 as printed,
  ``1/2 sigma^2 (eta-mu)^2 / (rho^2+sigma^2)^2 + 1/2 log(2 pi sigma^2)``. Taken alone it is
  minimised by ``sigma^2 -> 0`` whatever ``mu`` is (collapse); kept for faithfulness.
* ``"gaussian"``: Malkin et al.'s statistics matching, the negative log overlap of the two
  Gaussians, ``1/2 (eta-mu)^2 / (rho^2+sigma^2) + 1/2 log(2 pi (rho^2+sigma^2))``.
* ``"kl"``: ``KL(N(mu, sigma^2) || N(eta, rho^2))
  = log(rho/sigma) + (sigma^2 + (mu-eta)^2) / (2 rho^2) - 1/2``.

Numerical floors (:data:`RHO_MIN`, :data:`VAR_FLOOR`, :data:`EPS`) are applied with ``clamp_min``,
so they leave the value unchanged wherever ``sigma^2`` and ``rho^2`` are above them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..config import DISTANCES, LOSSES, PIXEL_VARIANCES

__all__ = [
    "DISTANCES",
    "EPS",
    "PIXEL_VARIANCES",
    "RHO_MIN",
    "STATISTICS",
    "VAR_FLOOR",
    "DistanceFn",
    "block_stats",
    "distance_fn",
    "group_index",
    "group_stats",
    "lsr_loss",
]

# Names accepted by ``lsr_loss(statistic=..., distance=..., pixel_variance=...)``,
# :func:`distance_fn` and :func:`block_stats`: the training choices of ``config``.
STATISTICS = LOSSES

RHO_MIN: float = 1e-4
"""Lower bound on the prior standard deviation ``rho`` (a fraction, i.e. 0.01 percent).

Table 1 of the paper has rows with ``rho`` = 0.1 percent (0.001); a prior measured on few blocks
can have ``rho`` = 0, which would make ``gaussian`` and ``kl`` infinite. ``rho`` is clamped to at
least this value, so ``rho^2 >= 1e-8`` in every distance.
"""

VAR_FLOOR: float = 1e-8
"""Lower bound on the predicted variance ``sigma^2`` wherever the distance takes its log or divides
by it (``paper``: inside ``log(2 pi sigma^2)``; ``kl``: the whole distance is evaluated at
``max(sigma^2, VAR_FLOOR)``, which keeps it a true KL divergence, hence >= 0).

``sigma^2`` is exactly 0 for an ``inter`` group of identical blocks (or of one block), and for
saturated pixels (``p`` = 0 or 1) with ``intra``. Below the floor the gradient with respect to
``sigma^2`` through the log vanishes; this bounds the ``paper`` collapse at
``1/2 log(2 pi VAR_FLOOR)`` ~= -8.29 instead of ``-inf``. ``gaussian`` needs no floor on
``sigma^2`` since ``rho^2 + sigma^2 >= RHO_MIN^2``.
"""

EPS: float = 1e-12
"""Lower bound on the denominator ``rho^2 + sigma^2`` (``paper`` and ``gaussian``).

With ``RHO_MIN`` = 1e-4 the denominator is already >= 1e-8, so this guard never binds; it keeps the
distances finite should ``RHO_MIN`` be lowered to 0.
"""

_LOG_2PI: float = math.log(2.0 * math.pi)

DistanceFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``D(mu, s2, eta, rho) -> Tensor``, elementwise, broadcasting its four arguments."""


# --------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------


def _paper_distance(
    mu: torch.Tensor, s2: torch.Tensor, eta: torch.Tensor, rho: torch.Tensor
) -> torch.Tensor:
    """Eq. 5/9 as printed: ``s2 (eta-mu)^2 / (2 (rho^2+s2)^2) + log(2 pi s2) / 2`` (with floors)."""
    rho2 = rho.clamp_min(RHO_MIN).square()
    denom = (rho2 + s2).clamp_min(EPS)
    return 0.5 * s2 * (eta - mu).square() / denom.square() + 0.5 * (
        torch.log(s2.clamp_min(VAR_FLOOR)) + _LOG_2PI
    )


def _gaussian_distance(
    mu: torch.Tensor, s2: torch.Tensor, eta: torch.Tensor, rho: torch.Tensor
) -> torch.Tensor:
    """Negative log overlap: ``(eta-mu)^2 / (2 (rho^2+s2)) + log(2 pi (rho^2+s2)) / 2``."""
    total = (rho.clamp_min(RHO_MIN).square() + s2).clamp_min(EPS)
    return 0.5 * (eta - mu).square() / total + 0.5 * (torch.log(total) + _LOG_2PI)


def _kl_distance(
    mu: torch.Tensor, s2: torch.Tensor, eta: torch.Tensor, rho: torch.Tensor
) -> torch.Tensor:
    """``KL(N(mu, s2) || N(eta, rho^2)) = log(rho/sigma) + (s2 + (mu-eta)^2) / (2 rho^2) - 1/2``."""
    rho2 = rho.clamp_min(RHO_MIN).square()
    s2f = s2.clamp_min(VAR_FLOOR)
    return 0.5 * (torch.log(rho2) - torch.log(s2f)) + 0.5 * (s2f + (mu - eta).square()) / rho2 - 0.5


_DISTANCE_FNS: dict[str, DistanceFn] = {
    "paper": _paper_distance,
    "gaussian": _gaussian_distance,
    "kl": _kl_distance,
}


def _check_choice(kind: str, value: object, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {', '.join(choices)}")


def distance_fn(name: str) -> DistanceFn:
    """Return the distance ``D(mu, s2, eta, rho)`` called ``name`` (one of :data:`DISTANCES`).

    The returned function is elementwise and broadcasts its tensor arguments; ``rho`` is a standard
    deviation and ``s2`` a variance, both as fractions. The floors :data:`RHO_MIN`,
    :data:`VAR_FLOOR` and :data:`EPS` are applied inside it.
    """
    _check_choice("distance", name, DISTANCES)
    return _DISTANCE_FNS[name]


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def _as_blocks(prob: torch.Tensor) -> torch.Tensor:
    """Validate ``prob`` ((B,H,W) or (B,1,H,W), floating) and return it flattened to (B, H*W)."""
    if not isinstance(prob, torch.Tensor):
        raise ValueError(f"prob must be a torch.Tensor, got {type(prob).__name__}")
    if not prob.is_floating_point():
        raise ValueError(f"prob must be a floating-point tensor, got dtype {prob.dtype}")
    if prob.ndim == 4 and prob.shape[1] == 1:
        prob = prob[:, 0]
    if prob.ndim != 3:
        raise ValueError(f"prob must have shape (B, H, W) or (B, 1, H, W), got {tuple(prob.shape)}")
    if prob.shape[0] == 0 or prob.shape[1] * prob.shape[2] == 0:
        raise ValueError(
            f"prob must hold at least one block of at least one pixel, got {tuple(prob.shape)}"
        )
    return prob.reshape(prob.shape[0], -1)


def block_stats(
    prob: torch.Tensor, pixel_variance: str = "paper"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block mean and variance of the predicted cancer fraction (paper Eq. 3).

    Args:
        prob: cancer probabilities, shape (B, H, W) or (B, 1, H, W), values in [0, 1].
        pixel_variance: ``"paper"`` gives ``var_k = mean p(1-p)`` (Eq. 3 as printed);
            ``"exact"`` gives ``mean p(1-p) / |X_k|``, the variance of the fraction of cancer
            pixels when every pixel is an independent Bernoulli draw.

    Returns:
        ``(mu_k, var_k)``, two tensors of shape (B,) with the dtype and device of ``prob``.
    """
    _check_choice("pixel_variance", pixel_variance, PIXEL_VARIANCES)
    return _flat_block_stats(_as_blocks(prob), pixel_variance)


def _flat_block_stats(flat: torch.Tensor, pixel_variance: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`block_stats` on already validated probabilities of shape (B, n_pixels)."""
    mu_k = flat.mean(dim=1)
    var_k = (flat * (1.0 - flat)).mean(dim=1)
    if pixel_variance == "exact":
        var_k = var_k / flat.shape[1]
    return mu_k, var_k


def _check_index(name: str, index: torch.Tensor, n_blocks: int) -> None:
    if not isinstance(index, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(index).__name__}")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {index.dtype}")
    if index.ndim != 1 or index.shape[0] != n_blocks:
        raise ValueError(
            f"{name} must have shape ({n_blocks},) (one entry per block), got {tuple(index.shape)}"
        )


def group_index(
    z: torch.Tensor, groups: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign blocks to groups.

    Args:
        z: integer tensor (B,), the bin of each block.
        groups: optional integer tensor (B,), a group id per block (any integers). Without it,
            the blocks sharing a bin form one group. Every block of a group must share the bin.

    Returns:
        ``(inverse, group_bin)``: ``inverse`` (B,) long, the group of each block as 0..G-1
        (groups ordered by increasing id, or by increasing bin by default); ``group_bin`` (G,)
        long, the bin of each group. Both on the device of ``z``.
    """
    if not isinstance(z, torch.Tensor) or z.ndim != 1:
        raise ValueError("z must be a 1-d integer tensor (one bin per block)")
    _check_index("z", z, z.shape[0])
    z = z.long()
    if groups is None:
        group_bin, inverse = torch.unique(z, sorted=True, return_inverse=True)
        return inverse, group_bin
    _check_index("groups", groups, z.shape[0])
    ids, inverse = torch.unique(groups.to(z.device).long(), sorted=True, return_inverse=True)
    group_bin = torch.zeros(ids.shape[0], dtype=torch.long, device=z.device)
    group_bin = group_bin.scatter(0, inverse, z)  # any member's bin; checked below
    if not bool((group_bin[inverse] == z).all()):
        raise ValueError("every block of a group must have the same bin z; groups mixes bins")
    return inverse, group_bin


def group_stats(
    mu_k: torch.Tensor,
    var_k: torch.Tensor,
    inverse: torch.Tensor,
    statistic: str,
    n_groups: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool per-block statistics into per-group ``(mu, sigma^2)`` (paper Eq. 8 and Eq. 11).

    Args:
        mu_k, var_k: per-block mean and variance, shape (B,) (see :func:`block_stats`).
        inverse: long (B,), group of each block as 0..G-1 with every group non-empty
            (see :func:`group_index`).
        statistic: ``"inter"`` (``sigma^2 = mean_k (mu_k - mu)^2``) or ``"intra+inter"``
            (``sigma^2 = mean_k var_k + mean_k (mu_k - mu)^2``, equal to Eq. 11's
            ``mean_k var_k + mean_k mu_k^2 - mu^2`` without its cancellation). ``"intra"``
            returns ``(mu_k, var_k)`` unchanged.
        n_groups: G; default ``inverse.max() + 1`` (one device-to-host sync).

    Returns:
        ``(mu, s2)``, shape (G,) (or (B,) for ``"intra"``). Population statistics (divide by N).
    """
    _check_choice("statistic", statistic, STATISTICS)
    if statistic == "intra":
        return mu_k, var_k
    inverse = inverse.to(mu_k.device)
    if n_groups is None:
        n_groups = int(inverse.max().item()) + 1
    # One-hot membership (G, B): sums by matrix product, deterministic on every device.
    member = inverse.unsqueeze(0) == torch.arange(n_groups, device=mu_k.device).unsqueeze(1)
    member = member.to(mu_k.dtype)
    counts = member.sum(dim=1).clamp_min(1.0)
    mu = (member @ mu_k) / counts
    s2 = (member @ (mu_k - mu[inverse]).square()) / counts
    if statistic == "intra+inter":
        s2 = s2 + (member @ var_k) / counts
    return mu, s2


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


def _as_prior(name: str, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(values)
    if values.ndim != 1 or values.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (n_bins,) with n_bins >= 1, got {tuple(values.shape)}"
        )
    if not values.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {values.dtype}")
    values = values.to(device=like.device, dtype=like.dtype)
    finite = torch.isfinite(values).all()
    low, high = values.min(), values.max()
    if not bool(finite) or bool(low < 0) or bool(high > 1):
        raise ValueError(
            f"{name} must hold finite fractions in [0, 1] (not percent); got values "
            f"in [{float(low):g}, {float(high):g}]"
        )
    return values


def lsr_loss(
    prob: torch.Tensor,
    z: torch.Tensor,
    eta: torch.Tensor,
    rho: torch.Tensor,
    *,
    statistic: str,
    distance: str,
    pixel_variance: str = "paper",
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Label-super-resolution loss of a batch of blocks: mean distance to the bins' prior.

    Args:
        prob: cancer probability per pixel, float tensor (B, H, W) or (B, 1, H, W), in [0, 1].
        z: integer tensor (B,), bin index of each block, ``0 <= z < n_bins``.
        eta: (n_bins,) mean fraction of cancer pixels per bin (fraction, not percent).
        rho: (n_bins,) standard deviation of that fraction per bin (fraction); clamped to
            at least :data:`RHO_MIN`.
        statistic: one of :data:`STATISTICS` (``"intra"``, ``"inter"``, ``"intra+inter"``).
        distance: one of :data:`DISTANCES` (``"paper"``, ``"gaussian"``, ``"kl"``).
        pixel_variance: one of :data:`PIXEL_VARIANCES` (``"paper"``, ``"exact"``); used by
            ``"intra"`` and ``"intra+inter"``.
        groups: optional integer tensor (B,) of group ids overriding the default grouping (all
            blocks sharing a bin); every block of a group must share the bin. Ignored by
            ``"intra"`` apart from validation.

    Returns:
        0-d tensor with the dtype and device of ``prob``: the mean of ``D`` over blocks
        (``"intra"``) or over groups (``"inter"``, ``"intra+inter"``). Differentiable with
        respect to ``prob`` (and ``eta``, ``rho`` if they require grad).

    Raises:
        ValueError: unknown statistic / distance / pixel_variance, bad shapes or dtypes, ``z``
            out of range of ``eta``, ``eta``/``rho`` not fractions, or groups mixing bins.
    """
    _check_choice("statistic", statistic, STATISTICS)
    _check_choice("distance", distance, DISTANCES)
    _check_choice("pixel_variance", pixel_variance, PIXEL_VARIANCES)
    flat = _as_blocks(prob)
    n_blocks = flat.shape[0]
    _check_index("z", z, n_blocks)
    eta_t = _as_prior("eta", eta, flat)
    rho_t = _as_prior("rho", rho, flat)
    if eta_t.shape != rho_t.shape:
        raise ValueError(
            f"eta and rho must have the same shape, got {tuple(eta_t.shape)} and "
            f"{tuple(rho_t.shape)}"
        )
    n_bins = eta_t.shape[0]
    z = z.to(flat.device).long()
    if bool((z < 0).any()) or bool((z >= n_bins).any()):
        raise ValueError(
            f"z must lie in [0, {n_bins - 1}] (n_bins = len(eta) = {n_bins}); got "
            f"values in [{int(z.min())}, {int(z.max())}]"
        )
    if groups is not None:
        _check_index("groups", groups, n_blocks)

    mu_k, var_k = _flat_block_stats(flat, pixel_variance)
    if statistic == "intra":
        mu, s2, bins = mu_k, var_k, z
    else:
        inverse, bins = group_index(z, groups)
        mu, s2 = group_stats(mu_k, var_k, inverse, statistic, n_groups=bins.shape[0])
    return distance_fn(distance)(mu, s2, eta_t[bins], rho_t[bins]).mean()
