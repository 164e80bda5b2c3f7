"""Tests of napari_lsr.learn.losses against an independent NumPy reference (SPEC section 3)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from napari_lsr.learn import losses
from napari_lsr.learn.losses import (
    DISTANCES,
    PIXEL_VARIANCES,
    RHO_MIN,
    STATISTICS,
    VAR_FLOOR,
    block_stats,
    distance_fn,
    group_index,
    group_stats,
    lsr_loss,
)

# Table 1 of the paper, as fractions.
ETA = np.array([0.0, 0.01, 0.02, 0.05, 0.06, 0.08, 0.10, 0.10, 0.20, 0.70])
RHO = np.array([0.001, 0.004, 0.004, 0.008, 0.010, 0.010, 0.010, 0.010, 0.020, 0.050])

COMBOS = list(itertools.product(STATISTICS, DISTANCES, PIXEL_VARIANCES))
COMBO_IDS = ["-".join(c) for c in COMBOS]
DTYPES = [torch.float32, torch.float64]
# Within this many epsilons of the dtype, times max(1, |loss|): the worst seen on x86 (with and
# without vectorised kernels) is 2 in float32 and 17 in float64.
TOL = {
    torch.float32: 64 * torch.finfo(torch.float32).eps,  # 7.6e-06
    torch.float64: 4096 * torch.finfo(torch.float64).eps,  # 9.1e-13
}


# ------------------------------------------------------------------------------------------
# Independent reference: plain loops, float64, formulas exactly as in SPEC section 3, no floors.
# ------------------------------------------------------------------------------------------


def ref_distance(name: str, mu: float, s2: float, eta: float, rho: float) -> float:
    if name == "paper":
        return 0.5 * s2 * (eta - mu) ** 2 / (rho**2 + s2) ** 2 + 0.5 * math.log(2 * math.pi * s2)
    if name == "gaussian":
        return 0.5 * (eta - mu) ** 2 / (rho**2 + s2) + 0.5 * math.log(2 * math.pi * (rho**2 + s2))
    if name == "kl":
        sigma = math.sqrt(s2)
        return math.log(rho / sigma) + (s2 + (mu - eta) ** 2) / (2 * rho**2) - 0.5
    raise AssertionError(name)


def ref_loss(prob, z, eta, rho, statistic, distance, pixel_variance, groups=None) -> float:
    prob = np.asarray(prob, dtype=np.float64)
    n_blocks = prob.shape[0]
    blocks = prob.reshape(n_blocks, -1)
    n_pix = blocks.shape[1]
    mu_k, var_k = [], []
    for k in range(n_blocks):
        total = 0.0
        total_var = 0.0
        for p in blocks[k]:
            total += p
            total_var += p * (1.0 - p)
        mu_k.append(total / n_pix)
        v = total_var / n_pix
        if pixel_variance == "exact":
            v /= n_pix
        var_k.append(v)
    z = [int(v) for v in z]
    if statistic == "intra":
        d = [
            ref_distance(distance, mu_k[k], var_k[k], eta[z[k]], rho[z[k]]) for k in range(n_blocks)
        ]
        return sum(d) / len(d)
    keys = z if groups is None else [int(g) for g in groups]
    d = []
    for g in sorted(set(keys)):
        members = [k for k in range(n_blocks) if keys[k] == g]
        n = len(members)
        mu = sum(mu_k[k] for k in members) / n
        if statistic == "inter":
            s2 = sum((mu_k[k] - mu) ** 2 for k in members) / n
        else:  # Eq. 11 as written in the spec
            s2 = sum(var_k[k] for k in members) / n + sum(mu_k[k] ** 2 for k in members) / n - mu**2
        b = z[members[0]]
        d.append(ref_distance(distance, mu, s2, eta[b], rho[b]))
    return sum(d) / len(d)


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def make_prob(rng: np.random.Generator, n_blocks: int, size: int = 8, margin: float = 0.02):
    """Soft maps whose block means differ (a per-block level plus pixel noise)."""
    level = rng.normal(0.0, 1.2, size=(n_blocks, 1, 1))
    logits = level + rng.normal(0.0, 1.0, size=(n_blocks, size, size))
    p = 1.0 / (1.0 + np.exp(-logits))
    return np.clip(p, margin, 1.0 - margin)


CASES = ["two_groups", "uneven", "shared_bin"]


def make_case(name: str):
    """Return (prob, z, groups) numpy arrays for a named batch."""
    rng = np.random.default_rng(CASES.index(name))
    if name == "two_groups":  # paper sampling: G=2 groups x N=15 blocks, two bins
        z = np.array([3] * 15 + [9] * 15)
        groups = None
    elif name == "uneven":  # three bins of uneven sizes, shuffled
        z = rng.permutation(np.array([1] * 2 + [5] * 5 + [8] * 9))
        groups = None
    elif name == "shared_bin":  # two groups drawn from the same bin, one from another
        z = np.array([8] * 12 + [2] * 4)
        groups = np.array([0] * 6 + [1] * 6 + [7] * 4)
    else:
        raise AssertionError(name)
    return make_prob(rng, len(z)), z, groups


def to_t(prob, z, groups, dtype):
    return (
        torch.tensor(prob, dtype=dtype),
        torch.tensor(z, dtype=torch.long),
        None if groups is None else torch.tensor(groups, dtype=torch.long),
        torch.tensor(ETA, dtype=dtype),
        torch.tensor(RHO, dtype=dtype),
    )


# ------------------------------------------------------------------------------------------
# Values against the reference
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(("statistic", "distance", "pixel_variance"), COMBOS, ids=COMBO_IDS)
def test_matches_numpy_reference(case, dtype, statistic, distance, pixel_variance):
    prob, z, groups = make_case(case)
    p, zt, gt, eta, rho = to_t(prob, z, groups, dtype)
    got = lsr_loss(
        p,
        zt,
        eta,
        rho,
        statistic=statistic,
        distance=distance,
        pixel_variance=pixel_variance,
        groups=gt,
    )
    want = ref_loss(prob, z, ETA, RHO, statistic, distance, pixel_variance, groups)
    assert got.ndim == 0
    assert got.dtype == dtype
    tol = TOL[dtype] * max(1.0, abs(want))
    assert abs(got.item() - want) <= tol, (got.item(), want, tol)


@pytest.mark.parametrize(("statistic", "distance", "pixel_variance"), COMBOS, ids=COMBO_IDS)
def test_accepts_channel_dim_and_is_order_invariant(statistic, distance, pixel_variance):
    prob, z, _ = make_case("uneven")
    p, zt, _, eta, rho = to_t(prob, z, None, torch.float64)
    kw = dict(statistic=statistic, distance=distance, pixel_variance=pixel_variance)
    base = lsr_loss(p, zt, eta, rho, **kw)
    torch.testing.assert_close(lsr_loss(p.unsqueeze(1), zt, eta, rho, **kw), base)
    perm = torch.randperm(len(zt), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lsr_loss(p[perm], zt[perm], eta, rho, **kw), base)


# ------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("statistic", "distance", "pixel_variance"), COMBOS, ids=COMBO_IDS)
def test_gradcheck(statistic, distance, pixel_variance):
    gen = torch.Generator().manual_seed(1)
    prob = 0.15 + 0.7 * torch.rand(6, 3, 3, generator=gen, dtype=torch.float64)
    prob.requires_grad_(True)
    z = torch.tensor([1, 4, 1, 4, 1, 4])
    eta = torch.tensor([0.1, 0.3, 0.2, 0.5, 0.6], dtype=torch.float64, requires_grad=True)
    rho = torch.tensor([0.05, 0.1, 0.02, 0.08, 0.2], dtype=torch.float64, requires_grad=True)

    def f(p, e, r):
        return lsr_loss(
            p, z, e, r, statistic=statistic, distance=distance, pixel_variance=pixel_variance
        )

    assert torch.autograd.gradcheck(f, (prob, eta, rho))


def test_gradcheck_with_groups():
    gen = torch.Generator().manual_seed(2)
    prob = 0.15 + 0.7 * torch.rand(8, 3, 3, generator=gen, dtype=torch.float64)
    prob.requires_grad_(True)
    z = torch.tensor([2] * 8)
    groups = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    eta = torch.tensor([0.1, 0.3, 0.5], dtype=torch.float64)
    rho = torch.tensor([0.05, 0.1, 0.08], dtype=torch.float64)
    for statistic in ("inter", "intra+inter"):
        assert torch.autograd.gradcheck(
            lambda p, s=statistic: lsr_loss(
                p, z, eta, rho, statistic=s, distance="kl", groups=groups
            ),
            (prob,),
        )


# ------------------------------------------------------------------------------------------
# Behaviour of the distances
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", range(1, 10))
def test_paper_distance_collapses(row):
    """Eq. 5/9 alone: a tiny sigma^2 always beats sigma^2 = rho^2, whatever mu is."""
    eta, rho = float(ETA[row]), float(RHO[row])
    d = distance_fn("paper")
    mu = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    e = torch.full_like(mu, eta)
    r = torch.full_like(mu, rho)
    s2_tiny = min(1e-6, rho**2 * 1e-3)
    at_tiny = d(mu, torch.full_like(mu, s2_tiny), e, r)
    at_prior = d(mu, torch.full_like(mu, rho**2), e, r)
    assert bool((at_tiny < at_prior).all())
    # For every mu the minimiser over sigma^2 (log grid 1e-12 .. 1) is the smallest sigma^2:
    # the loss rewards confident pixels whatever the block mean.
    s2 = torch.logspace(-12, 0, 121, dtype=torch.float64)
    grid = d(mu[:, None], s2[None, :], e[:, None], r[:, None])
    assert bool((grid.argmin(dim=1) == 0).all())


def test_paper_collapse_through_lsr_loss():
    """intra + paper cannot tell a confident map with the right count from an all-cancer map."""
    eta = torch.tensor([0.25], dtype=torch.float64)
    rho = torch.tensor([0.05], dtype=torch.float64)
    z = torch.tensor([0])
    right = torch.zeros(1, 8, 8, dtype=torch.float64)
    right[0, :2] = 1.0  # confident, exactly 25 % cancer
    wrong = torch.ones(1, 8, 8, dtype=torch.float64)  # confident, 100 % cancer
    soft = torch.full((1, 8, 8), 0.25, dtype=torch.float64)  # right mean, unconfident

    def loss(p, distance):
        return lsr_loss(p, z, eta, rho, statistic="intra", distance=distance).item()

    floor_value = 0.5 * math.log(2 * math.pi * VAR_FLOOR)
    assert loss(right, "paper") == pytest.approx(floor_value)
    assert loss(wrong, "paper") == pytest.approx(floor_value)
    assert loss(wrong, "paper") < loss(soft, "paper")
    for distance in ("gaussian", "kl"):
        assert loss(right, distance) < loss(wrong, distance)


@pytest.mark.parametrize(("eta", "rho"), [(0.2, 0.02), (0.7, 0.05), (0.05, 0.008)])
def test_kl_minimised_at_prior(eta, rho):
    d = distance_fn("kl")
    # Grid search: the grid holds (eta, rho) exactly.
    mu = eta + torch.arange(-40, 41, dtype=torch.float64) * (eta / 40)
    sigma = rho * torch.arange(1, 81, dtype=torch.float64) / 20  # 0.05 rho .. 4 rho
    mm, ss = torch.meshgrid(mu, sigma, indexing="ij")
    e = torch.tensor(eta, dtype=torch.float64)
    r = torch.tensor(rho, dtype=torch.float64)
    values = d(mm, ss.square(), e, r)
    i, j = divmod(int(values.argmin()), values.shape[1])
    assert mm[i, j].item() == pytest.approx(eta)
    assert ss[i, j].item() == pytest.approx(rho)
    assert values.min().item() == pytest.approx(0.0, abs=1e-12)
    assert bool((values >= -1e-12).all())  # a KL divergence is non-negative

    # Stationary point with a positive-definite Hessian in (mu, sigma^2).
    x = torch.tensor([eta, rho**2], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(d(x[0], x[1], e, r), x)
    torch.testing.assert_close(grad, torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)
    hess = torch.autograd.functional.hessian(lambda v: d(v[0], v[1], e, r), x.detach())
    assert bool((torch.linalg.eigvalsh(hess) > 0).all())


@pytest.mark.parametrize("s2", [0.0, 1e-4, 1e-2])
def test_gaussian_mean_minimised_at_eta(s2):
    d = distance_fn("gaussian")
    eta, rho = 0.2, 0.02
    mu = torch.linspace(0.0, 1.0, 201, dtype=torch.float64)  # holds 0.2
    values = d(
        mu,
        torch.full_like(mu, s2),
        torch.tensor(eta, dtype=torch.float64),
        torch.tensor(rho, dtype=torch.float64),
    )
    assert mu[values.argmin()].item() == pytest.approx(eta)
    x = torch.tensor(eta, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(
        d(
            x,
            torch.tensor(s2, dtype=torch.float64),
            torch.tensor(eta, dtype=torch.float64),
            torch.tensor(rho, dtype=torch.float64),
        ),
        x,
    )
    assert grad.item() == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------
# Floors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(("statistic", "distance", "pixel_variance"), COMBOS, ids=COMBO_IDS)
def test_floors_do_not_change_well_conditioned_values(
    monkeypatch, dtype, statistic, distance, pixel_variance
):
    prob, z, groups = make_case("shared_bin")
    p, zt, gt, eta, rho = to_t(prob, z, groups, dtype)
    p.requires_grad_(True)
    kw = dict(statistic=statistic, distance=distance, pixel_variance=pixel_variance, groups=gt)
    with_floors = lsr_loss(p, zt, eta, rho, **kw)
    (g_floors,) = torch.autograd.grad(with_floors, p)
    monkeypatch.setattr(losses, "RHO_MIN", 0.0)
    monkeypatch.setattr(losses, "VAR_FLOOR", 0.0)
    monkeypatch.setattr(losses, "EPS", 0.0)
    without = lsr_loss(p, zt, eta, rho, **kw)
    (g_without,) = torch.autograd.grad(without, p)
    torch.testing.assert_close(with_floors, without, rtol=0, atol=0)
    torch.testing.assert_close(g_floors, g_without, rtol=0, atol=0)


def test_floor_values():
    assert RHO_MIN == 1e-4
    assert 0 < VAR_FLOOR <= RHO_MIN**2
    assert 0 < losses.EPS <= RHO_MIN**2
    f64 = torch.float64
    zero = torch.tensor(0.0, dtype=f64)
    mu, eta = torch.tensor(0.3, dtype=f64), torch.tensor(0.2, dtype=f64)
    for name in DISTANCES:
        d = distance_fn(name)
        # rho below RHO_MIN (including 0) counts as RHO_MIN.
        torch.testing.assert_close(
            d(mu, torch.tensor(0.01, dtype=f64), eta, zero),
            d(mu, torch.tensor(0.01, dtype=f64), eta, torch.tensor(RHO_MIN, dtype=f64)),
        )
    # sigma^2 = 0 is evaluated at VAR_FLOOR inside the paper log and in kl.
    rho = torch.tensor(0.05, dtype=f64)
    assert distance_fn("paper")(mu, zero, eta, rho).item() == pytest.approx(
        0.5 * math.log(2 * math.pi * VAR_FLOOR)
    )
    assert distance_fn("kl")(mu, zero, eta, rho).item() == pytest.approx(
        ref_distance("kl", 0.3, VAR_FLOOR, 0.2, 0.05)
    )
    assert distance_fn("gaussian")(mu, zero, eta, rho).item() == pytest.approx(
        ref_distance("gaussian", 0.3, 0.0, 0.2, 0.05)
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(("statistic", "distance", "pixel_variance"), COMBOS, ids=COMBO_IDS)
def test_saturated_probabilities_stay_finite(dtype, statistic, distance, pixel_variance):
    """prob exactly 0 or 1, one-block groups, identical blocks, rho = 0, eta at 0 and 1."""
    prob = torch.zeros(7, 4, 4, dtype=dtype)
    prob[1] = 1.0
    prob[2, :2] = 1.0
    prob[3] = 1.0  # identical to block 1
    prob[5] = 1.0  # alone in its bin
    prob[6, :, :1] = 1.0
    z = torch.tensor([0, 1, 1, 1, 2, 3, 0])
    prob.requires_grad_(True)
    eta = torch.tensor([0.0, 1.0, 0.5, 0.7], dtype=dtype, requires_grad=True)
    rho = torch.tensor([0.0, 0.0, 0.1, 0.05], dtype=dtype, requires_grad=True)
    loss = lsr_loss(
        prob, z, eta, rho, statistic=statistic, distance=distance, pixel_variance=pixel_variance
    )
    assert torch.isfinite(loss)
    loss.backward()
    for t in (prob, eta, rho):
        assert t.grad is not None
        assert bool(torch.isfinite(t.grad).all())


# ------------------------------------------------------------------------------------------
# Groups and helpers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("statistic", ["inter", "intra+inter"])
@pytest.mark.parametrize("distance", DISTANCES)
def test_groups_argument(statistic, distance):
    prob, z, groups = make_case("shared_bin")
    p, zt, gt, eta, rho = to_t(prob, z, groups, torch.float64)
    kw = dict(statistic=statistic, distance=distance)
    split = lsr_loss(p, zt, eta, rho, groups=gt, **kw)
    # Equals the mean of the three groups' losses computed one at a time.
    parts = [lsr_loss(p[gt == g], zt[gt == g], eta, rho, **kw) for g in (0, 1, 7)]
    torch.testing.assert_close(split, torch.stack(parts).mean())
    # Differs from the default grouping, which pools the two groups of bin 8.
    assert not torch.isclose(split, lsr_loss(p, zt, eta, rho, **kw))
    # groups = z and any relabelling of the ids give the default / same result.
    torch.testing.assert_close(
        lsr_loss(p, zt, eta, rho, groups=zt, **kw), lsr_loss(p, zt, eta, rho, **kw)
    )
    torch.testing.assert_close(lsr_loss(p, zt, eta, rho, groups=100 - 3 * gt, **kw), split)


def test_groups_do_not_change_intra():
    prob, z, groups = make_case("shared_bin")
    p, zt, gt, eta, rho = to_t(prob, z, groups, torch.float64)
    kw = dict(statistic="intra", distance="kl")
    torch.testing.assert_close(
        lsr_loss(p, zt, eta, rho, groups=gt, **kw), lsr_loss(p, zt, eta, rho, **kw)
    )


def test_helpers():
    prob = torch.tensor([[[0.0, 1.0], [0.5, 0.5]], [[0.2, 0.2], [0.2, 0.2]]], dtype=torch.float64)
    mu_k, var_k = block_stats(prob)
    torch.testing.assert_close(mu_k, torch.tensor([0.5, 0.2], dtype=torch.float64))
    torch.testing.assert_close(var_k, torch.tensor([0.125, 0.16], dtype=torch.float64))
    _, var_exact = block_stats(prob.unsqueeze(1), "exact")
    torch.testing.assert_close(var_exact, var_k / 4)

    inverse, group_bin = group_index(torch.tensor([5, 2, 5, 5]))
    assert inverse.tolist() == [1, 0, 1, 1]
    assert group_bin.tolist() == [2, 5]
    inverse, group_bin = group_index(torch.tensor([5, 2, 5, 5]), torch.tensor([9, 4, 9, 1]))
    assert inverse.tolist() == [2, 1, 2, 0]
    assert group_bin.tolist() == [5, 2, 5]

    mu_k = torch.tensor([0.1, 0.3, 0.5, 0.9], dtype=torch.float64)
    var_k = torch.tensor([0.01, 0.02, 0.03, 0.04], dtype=torch.float64)
    inverse = torch.tensor([0, 0, 1, 1])
    mu, s2 = group_stats(mu_k, var_k, inverse, "inter")
    torch.testing.assert_close(mu, torch.tensor([0.2, 0.7], dtype=torch.float64))
    torch.testing.assert_close(s2, torch.tensor([0.01, 0.04], dtype=torch.float64))
    mu, s2 = group_stats(mu_k, var_k, inverse, "intra+inter", n_groups=2)
    eq11 = torch.tensor(
        [0.015 + (0.01 + 0.09) / 2 - 0.04, 0.035 + (0.25 + 0.81) / 2 - 0.49], dtype=torch.float64
    )
    torch.testing.assert_close(s2, eq11)
    mu, s2 = group_stats(mu_k, var_k, inverse, "intra")
    assert mu is mu_k and s2 is var_k

    assert set(STATISTICS) == {"intra", "inter", "intra+inter"}
    assert set(DISTANCES) == {"paper", "gaussian", "kl"}
    assert set(PIXEL_VARIANCES) == {"paper", "exact"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("statistic", "distance", "pixel_variance"), COMBOS, ids=COMBO_IDS)
def test_cuda_matches_cpu(statistic, distance, pixel_variance):
    prob, z, groups = make_case("shared_bin")
    p, zt, gt, eta, rho = to_t(prob, z, groups, torch.float32)
    kw = dict(statistic=statistic, distance=distance, pixel_variance=pixel_variance)
    cpu = lsr_loss(p, zt, eta, rho, groups=gt, **kw)
    gpu = lsr_loss(p.cuda(), zt.cuda(), eta.cuda(), rho.cuda(), groups=gt.cuda(), **kw)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------
# Bad arguments
# ------------------------------------------------------------------------------------------


def _good():
    prob = torch.full((4, 3, 3), 0.3)
    z = torch.tensor([0, 0, 1, 1])
    eta = torch.tensor([0.1, 0.2])
    rho = torch.tensor([0.01, 0.02])
    return prob, z, eta, rho


BAD = {
    "statistic": dict(statistic="intra_inter"),
    "distance": dict(distance="l2"),
    "pixel_variance": dict(pixel_variance="bernoulli"),
    "prob_ndim": dict(prob=torch.full((4, 9), 0.3)),
    "prob_channels": dict(prob=torch.full((4, 2, 3, 3), 0.3)),
    "prob_int": dict(prob=torch.zeros((4, 3, 3), dtype=torch.long)),
    "prob_empty": dict(prob=torch.zeros((0, 3, 3)), z=torch.zeros(0, dtype=torch.long)),
    "z_length": dict(z=torch.tensor([0, 0, 1])),
    "z_float": dict(z=torch.tensor([0.0, 0.0, 1.0, 1.0])),
    "z_2d": dict(z=torch.tensor([[0, 0, 1, 1]])),
    "z_too_big": dict(z=torch.tensor([0, 0, 1, 2])),
    "z_negative": dict(z=torch.tensor([0, -1, 1, 1])),
    "eta_rho_shape": dict(rho=torch.tensor([0.01, 0.02, 0.03])),
    "eta_percent": dict(eta=torch.tensor([10.0, 20.0])),
    "rho_negative": dict(rho=torch.tensor([-0.01, 0.02])),
    "eta_nan": dict(eta=torch.tensor([float("nan"), 0.2])),
    "eta_2d": dict(eta=torch.tensor([[0.1, 0.2]])),
    "groups_length": dict(groups=torch.tensor([0, 1])),
    "groups_float": dict(groups=torch.tensor([0.0, 0.0, 1.0, 1.0])),
    "groups_mix_bins": dict(groups=torch.tensor([0, 0, 0, 1]), statistic="inter"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_arguments_raise_value_error(name):
    prob, z, eta, rho = _good()
    args = dict(prob=prob, z=z, eta=eta, rho=rho, statistic="intra+inter", distance="kl")
    args.update(BAD[name])
    with pytest.raises(ValueError):
        lsr_loss(**args)


def test_helpers_reject_bad_names():
    with pytest.raises(ValueError, match="distance"):
        distance_fn("euclid")
    with pytest.raises(ValueError, match="pixel_variance"):
        block_stats(torch.zeros(1, 2, 2), "binomial")
    with pytest.raises(ValueError, match="statistic"):
        group_stats(torch.zeros(2), torch.zeros(2), torch.zeros(2, dtype=torch.long), "both")
