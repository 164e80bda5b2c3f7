"""How many estimates a prior needs, and which blocks to show next (issue 25).

A simulated pathologist reviews blocks of a data set built as ``real_tissue.py`` builds it
(OCDC, CAMELYON16) or the demo's synthetic sample (as ``table2.py`` builds it). Each estimate
is the block's true tumour percentage plus Gaussian noise (sd ``--noises``, percentage points),
rounded to 5 and clipped to 0-100; a block's noise is drawn once per (seed, noise), so every
order sees the same estimate for the same block. The blocks come in one of these orders:

- ``stratified``: Block review's order until issue 25: K = budget / 10 blocks per bin, each
  bin's blocks in its seeded, slide-stratified order (``review.BinSampler``);
- ``bin-by-bin`` (``--priors-only``): the stratified order as the dock shows it, K = 12 per
  bin one bin after the other, stopped after ``budget`` estimates (a half-finished review);
- ``A+B-std`` (for example ``stratified+masks-std``): order A's means with order B's
  spreads, to tell which of the two a model feels; ``A+pooled-std`` and ``A+sample-std``: A's
  prior with the spreads rule named (below);
- ``guided``: Block review's default (``certainty.next_bin``): every bin's first estimate,
  then every bin's second, then the bin whose average is least sure, from the same per-bin
  draws; ``guided-stop`` goes on until the stop rule holds (``certainty.good_enough``) and
  records how many estimates that took.

The prior is built with the product's own rule (``prior.prior_from_values``: bins without an
estimate keep the paper's Table 1 row; a reviewed bin's spread is its estimates' pooled with a
typical spread, ``certainty.pooled_spread``). ``--spreads sample`` builds it with the rule
before session 11 (the estimates' bare spread) to reproduce those runs; each run records its
rule, and the tables show the runs of the rule asked for (the bounds do not depend on it).
Bounds: ``masks`` (the prior measured from the masks, the ceiling) and ``paper`` (Table 1
unchanged, the floor). Each prior trains intra+inter with the defaults a user gets
(``TrainConfig()``, only the seed set: the same seed drives the annotator's noise, the draws
and the training) and is scored by pooled masked DICE, as ``table2.py`` scores.
``--priors-only`` skips training and prints the priors' error (blocks' mean absolute error of
their bin's mean against the ceiling's, percentage points) over many seeds: cheap, and what the
ordering optimises.

Usage: python benchmarks/prior_budget.py [--datasets ocdc,camelyon,synthetic] [--seeds 3]
           [--budgets 10,20,40,80,120] [--noises 5,15] [--orders stratified,guided]
           [--bounds masks,paper] [--stop] [--workers 2] [--plot FILE.png]
       python benchmarks/prior_budget.py --priors-only [--seeds 20]
       python benchmarks/prior_budget.py --summary [--plot FILE.png]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402

DATASETS = ("ocdc", "camelyon", "synthetic")
BUDGETS = (10, 20, 40, 80, 120)
NOISES = (5, 15)
ORDERS = ("stratified", "guided")
BOUNDS = ("masks", "paper")
WITHIN = 0.01  # "within 0.01 masked DICE of the ceiling"
MAX_STOP = 400  # guided-stop gives up here
REVIEW_K = 12  # Block review's K
KEY = ("dataset", "order", "budget", "noise", "seed")
#: How reviewed bins get their spread: ``pooled`` (the product's rule) or ``sample`` (the
#: estimates' bare population std: the rule before session 11; runs recorded without a rule).
SPREAD_RULES = ("pooled", "sample")
SPREADS = "pooled"
#: Orders whose prior today's code rebuilds exactly as it was trained (for ``prior_key``).
REBUILT = ("stratified", "bin-by-bin", "masks", "paper")


# -- data ----------------------------------------------------------------------------------------


def build(name: str, work: Path) -> dict | None:
    """A data set's blocks, evaluation images, ceiling prior and each training block's true
    tumour percentage; None when its files are absent."""
    from napari_lsr.learn.blocks import load_block_set

    if name == "synthetic":
        from table2 import build_synthetic

        d = build_synthetic(work, 4096, 64)
        blocks = load_block_set(d["blocks"])
        pct = synthetic_truth(work / "synthetic-4096", blocks)
    else:
        from real_tissue import build_real

        d = build_real(name, work)
        if d is None:
            return None
        blocks = load_block_set(d["blocks"])
        pct_of = {(t, *box): p for t, box, p in zip(d["tile"], d["boxes"], d["pct"], strict=True)}
        pct = [pct_of[(int(s), *map(int, b))] for s, b in zip(blocks.slide_index, blocks.boxes)]
    d["block_pct"] = [float(p) for p in pct]
    d["block_z"] = [int(z) for z in blocks.z]
    d["block_slide"] = [int(s) for s in blocks.slide_index]
    d["ceiling"] = d["prior"].to_dict()
    return d


def synthetic_truth(folder: Path, blocks) -> list[float]:  # noqa: ANN001
    """True tumour percentage of each training block of the synthetic sample (its truth)."""
    from napari_lsr.io.formats import read_truth
    from napari_lsr.io.project import Project

    p = Project.open(folder)
    truths = []
    for e in p.slides:
        with e.open() as s:
            truths.append(read_truth(e.truth, s.dimensions))
    out = []
    for s, (x, y, w, h) in zip(blocks.slide_index, blocks.boxes.tolist()):
        t = truths[int(s)]
        ds = t.downsample
        cut = t.mask[
            int(y / ds) : int(math.ceil((y + h) / ds)), int(x / ds) : int(math.ceil((x + w) / ds))
        ]
        out.append(100.0 * float(cut.mean()) if cut.size else 0.0)
    return out


# -- the simulated review ------------------------------------------------------------------------


def estimates_for(pct: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """The simulated pathologist's estimate of every block (fixed per seed and noise)."""
    rng = np.random.default_rng([int(seed), int(noise), 25])
    est = 5.0 * np.round((pct + rng.normal(0.0, noise, size=pct.shape)) / 5.0)
    return np.clip(est, 0.0, 100.0)


def review(data: dict, order: str, budget: int, noise: float, seed: int) -> tuple[list, list, int]:
    """Which blocks the review shows, in ``order``, for ``budget`` estimates: (bins,
    estimates, how many estimates were made). ``guided-stop``: until the stop rule holds."""
    from napari_lsr.elicit.certainty import bin_certainty, good_enough, next_bin
    from napari_lsr.elicit.review import BinSampler, ReviewBlock

    z = np.asarray(data["block_z"])
    est = estimates_for(np.asarray(data["block_pct"]), noise, seed)
    nb = len(data["ceiling"]["rows"])
    blocks = [
        ReviewBlock(i, int(s), 0, 0, 1, 1, 0.0, int(zz))
        for i, (s, zz) in enumerate(zip(data["block_slide"], z))
    ]
    by_bin = {b: [blk for blk in blocks if blk.bin == b] for b in range(nb)}
    samplers = {b: BinSampler(by_bin[b], seed, b) for b in range(nb) if by_bin[b]}
    shown: list[int] = []
    if order == "bin-by-bin":  # the stratified order as the dock shows it, stopped early
        for sampler in samplers.values():
            for _ in range(REVIEW_K):
                blk = sampler.draw() if len(shown) < budget else None
                if blk is None:
                    break
                shown.append(blk.id)
    elif order == "stratified":
        k = budget // nb
        for sampler in samplers.values():
            for _ in range(k):
                blk = sampler.draw()
                if blk is None:
                    break
                shown.append(blk.id)
    else:
        sizes = [len(by_bin[b]) for b in range(nb)]
        values: dict[int, list[float]] = {}
        exhausted: set[int] = set()
        limit = MAX_STOP if order == "guided-stop" else budget
        while len(shown) < limit:
            rows = bin_certainty(sizes, values, exhausted)
            if order == "guided-stop" and good_enough(rows):
                break
            b = next_bin(rows)
            if b is None:
                break
            blk = samplers[b].draw()
            if blk is None:
                exhausted.add(b)
                continue
            shown.append(blk.id)
            values.setdefault(b, []).append(float(est[blk.id]))
    return [int(z[i]) for i in shown], [float(est[i]) for i in shown], len(shown)


def rule_of(r: dict) -> str:
    """The spreads rule a recorded run's prior was built with (none recorded: ``sample``)."""
    return r.get("spreads", "sample")


def current(r: dict) -> bool:
    """Whether a recorded run is one of today's rule (``SPREADS``); the bounds and the
    ``A+B-std`` runs do not depend on it."""
    return r["order"] in BOUNDS or "+" in r["order"] or rule_of(r) == SPREADS


def prior_for(  # noqa: ANN201
    data: dict, order: str, budget: int, noise: float, seed: int, spreads: str | None = None
):
    """The prior a job trains with, and how many estimates it took; ``spreads``: the rule of
    reviewed bins' spreads (default ``SPREADS``)."""
    from napari_lsr.elicit.prior import prior_from_values
    from napari_lsr.io.formats import Bins, Prior, paper_prior

    spreads = spreads or SPREADS
    ceiling = Prior.from_dict(data["ceiling"])
    if "+" in order:  # "A+B-std": order A's means with order B's spreads
        a, b = order.removesuffix("-std").split("+")
        if b in SPREAD_RULES:  # order A with that rule
            return prior_for(data, a, budget, noise, seed, spreads=b)
        means, n = prior_for(data, a, budget, noise, seed, spreads)
        spreads_of, _ = prior_for(data, b, budget, noise, seed, spreads)
        return Prior(
            means.bins, means.mean_pct, spreads_of.std_pct, means.n, source=means.source
        ), n
    if order == "masks":
        return ceiling, 0
    if order == "paper":
        paper = paper_prior()
        return Prior(ceiling.bins, paper.mean_pct, paper.std_pct, source=paper.source), 0
    zs, est, n = review(data, order, budget, noise, seed)
    if spreads == "pooled":
        return prior_from_values(Bins(), zs, est, source="reviewed"), n
    # the rule before session 11 is the one measured rows keep (the values' bare spread); the
    # rows are the estimates' all the same
    p = prior_from_values(Bins(), zs, est, source="measured")
    source = ["reviewed" if s == "measured" else s for s in p.source]
    return Prior(p.bins, p.mean_pct, p.std_pct, p.n, source=source), n


def prior_error(data: dict, prior) -> float:  # noqa: ANN001
    """Mean over the training blocks of |their bin's prior mean - the ceiling's| (points)."""
    from napari_lsr.io.formats import Prior

    ceiling = Prior.from_dict(data["ceiling"])
    z = np.asarray(data["block_z"])
    return float(np.mean(np.abs(prior.mean_pct[z] - ceiling.mean_pct[z])))


def prior_key(prior) -> str:  # noqa: ANN001
    """A fingerprint of what training sees of a prior (its means and spreads): two jobs of a
    data set and seed with the same key train the same run, so the second reuses the first."""
    a = np.round(np.concatenate([prior.mean_pct, prior.std_pct]), 6)
    return hashlib.sha1(a.tobytes()).hexdigest()[:16]


# -- training ------------------------------------------------------------------------------------


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from table2 import score, train_and_predict

    from napari_lsr.config import TrainConfig
    from napari_lsr.learn.blocks import load_block_set
    from napari_lsr.learn.training import card_path

    data = job["data"]
    prior, n = prior_for(
        data, job["order"], job["budget"], job["noise"], job["seed"], job["spreads"]
    )
    cfg = TrainConfig(seed=job["seed"], checkpoint_every=0, device="cpu")
    # the rule before session 11 kept the plain names: a new rule's run never resumes one
    pooled = job["spreads"] == "pooled" and job["order"] not in BOUNDS
    ckpt = Path(job["work"]) / "runs" / f"{run_name(job)}{'-pooled' if pooled else ''}.pt"
    probs, _last, seconds = train_and_predict(
        load_block_set(data["blocks"]), prior, cfg, ckpt, data
    )
    s = score(data["images"], [p >= 0.5 for p in probs], data["band"])
    card = json.loads(card_path(ckpt).read_text())
    return {k: job[k] for k in KEY} | {
        "spreads": job["spreads"],
        "estimates": n,
        "prior_error": prior_error(data, prior),
        "prior_key": prior_key(prior),
        "masked_dice": s["masked_dice"],
        "degenerate": bool(card["health"]["degenerate"]),
        "seconds": seconds,
    }


def jobs_for(args: argparse.Namespace, names: list[str]) -> list[dict]:
    """Jobs seed by seed (a partial run is a whole first seed), each data set's bounds first."""
    jobs = []
    for seed in range(args.seeds):
        for name in names:
            for bound in args.bounds:
                jobs.append(
                    {"dataset": name, "order": bound, "budget": 0, "noise": 0, "seed": seed}
                )
            for noise in args.noises:
                for budget in args.budgets:
                    for order in args.orders:
                        jobs.append(
                            {
                                "dataset": name,
                                "order": order,
                                "budget": budget,
                                "noise": noise,
                                "seed": seed,
                            }
                        )
                if args.stop:
                    jobs.append(
                        {
                            "dataset": name,
                            "order": "guided-stop",
                            "budget": 0,
                            "noise": noise,
                            "seed": seed,
                        }
                    )
    return jobs


# -- tables and the plot -------------------------------------------------------------------------


def curve(rs: list[dict]) -> dict[tuple, dict]:
    """Mean estimates and DICE per (data set, order, noise, budget) over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rs:
        groups.setdefault((r["dataset"], r["order"], r["noise"], r["budget"]), []).append(r)
    return {
        k: {
            "estimates": float(np.mean([r["estimates"] for r in v])),
            "dice": float(np.mean([r["masked_dice"] for r in v])),
            "dice_std": float(np.std([r["masked_dice"] for r in v])),
            "error": float(np.mean([r["prior_error"] for r in v])),
            "seeds": sorted(r["seed"] for r in v),
            "per_seed": [r["masked_dice"] for r in sorted(v, key=lambda r: r["seed"])],
            "by_seed": {r["seed"]: r["masked_dice"] for r in v},
            "degenerate": sum(r["degenerate"] for r in v),
        }
        for k, v in groups.items()
    }


def needed(points: list[tuple[float, float]]) -> float:
    """Fewest estimates whose DICE is within ``WITHIN`` of the ceiling's (points: estimates
    and the difference to the ceiling; nan: none)."""
    ok = [n for n, gap in sorted(points) if gap >= -WITHIN]
    return ok[0] if ok else math.nan


def gap(v: dict, ceiling: dict | None) -> float:
    """Mean DICE difference to the ceiling over the seeds both have (paired by seed: the
    seed also drives the training)."""
    if not ceiling:
        return math.nan
    both = sorted(set(v["by_seed"]) & set(ceiling["by_seed"]))
    if not both:
        return math.nan
    return float(np.mean([v["by_seed"][s] - ceiling["by_seed"][s] for s in both]))


def summarise(results: list[dict]) -> str:
    c = curve(results)
    out = []
    for ds in [d for d in DATASETS if any(k[0] == d for k in c)]:
        ceiling = c.get((ds, "masks", 0, 0))
        floor = c.get((ds, "paper", 0, 0))
        rows = []
        for (d, order, noise, budget), v in sorted(
            c.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][3])
        ):
            if d != ds:
                continue
            rows.append(
                [
                    order,
                    noise or "-",
                    budget or "-",
                    f"{v['estimates']:.0f}",
                    f"{v['error']:.1f}",
                    " ".join(f"{x:.3f}" for x in v["per_seed"]),
                    f"{v['dice']:.4f}",
                    f"{gap(v, ceiling):+.3f}",
                    v["degenerate"],
                ]
            )
        out.append(f"### {ds}\n")
        out.append(
            table(
                [
                    "order",
                    "noise sd",
                    "budget",
                    "estimates",
                    "prior error (pts)",
                    "masked DICE per seed",
                    "mean",
                    "vs ceiling (same seeds)",
                    "degenerate",
                ],
                rows,
            )
        )
        if ceiling:
            lines = []
            for noise in sorted({k[2] for k in c if k[0] == ds and k[2]}):
                for order in ORDERS:
                    pts = [
                        (v["estimates"], gap(v, ceiling))
                        for k, v in c.items()
                        if k[:3] == (ds, order, noise)
                    ]
                    if pts:
                        lines.append(
                            f"- noise sd {noise}, {order}: within {WITHIN} of the ceiling from "
                            f"{needed(pts):.0f} estimates (estimates: difference to the "
                            "ceiling "
                            + ", ".join(f"{n:.0f}: {d:+.3f}" for n, d in sorted(pts))
                            + ")"
                        )
            out.append("\n" + "\n".join(lines))
        if floor and ceiling:
            out.append(
                f"\nceiling (masks) {ceiling['dice']:.4f}, floor (paper) {floor['dice']:.4f}"
            )
        out.append("")
    return "\n".join(out)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = curve(results)
    names = [d for d in DATASETS if any(k[0] == d and k[1] in ORDERS for k in c)]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, ds in zip(axes[0], names):
        for d, order, noise, _b in sorted(
            {k[:3] + (0,) for k in c if k[0] == ds and k[1] in ORDERS}
        ):
            pts = sorted(
                (v["estimates"], v["dice"], v["dice_std"])
                for k, v in c.items()
                if k[:3] == (d, order, noise)
            )
            x, y, e = zip(*pts)
            ax.errorbar(
                x,
                y,
                yerr=e,
                marker="o" if order == "guided" else "s",
                capsize=3,
                linestyle="-" if order == "guided" else "--",
                color=f"C{ORDERS.index(order) + 2 * (noise != NOISES[0])}",  # same in every panel
                label=f"{order}, noise sd {noise}",
            )
        seeds = {s for k, v in c.items() if k[0] == ds and k[1] in ORDERS for s in v["by_seed"]}
        for bound, style in (("masks", "g-"), ("paper", "r:")):
            v = c.get((ds, bound, 0, 0))
            if v:  # the same seeds as the curves (the seed also drives the training)
                level = np.mean([d for s, d in v["by_seed"].items() if s in seeds] or [v["dice"]])
                ax.axhline(
                    level,
                    color=style[0],
                    linestyle=style[1:],
                    label="ceiling: masks" if bound == "masks" else "floor: paper Table 1",
                )
        for (d, order, noise, _b), v in c.items():
            if d == ds and order == "guided-stop":
                ax.plot(
                    [v["estimates"]],
                    [v["dice"]],
                    "k*",
                    markersize=12,
                    label=f"stop rule, noise sd {noise}",
                )
        rule = "pooled" if SPREADS == "pooled" else "bare (before session 11)"
        ax.set_title(f"{ds}\nreviewed bins' spreads: {rule}", fontsize=10)
        ax.set_xlabel("estimates")
        ax.set_ylabel("pooled masked DICE")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def priors_only(datas: dict[str, dict], args: argparse.Namespace) -> str:
    """The priors' error against the ceiling, both orders, every budget, many seeds."""
    rows = []
    for ds, data in datas.items():
        for noise in args.noises:
            for order in [*args.orders, "bin-by-bin", "guided-stop"]:
                for budget in args.budgets if order != "guided-stop" else [0]:
                    errs, ns = [], []
                    for seed in range(args.seeds):
                        prior, n = prior_for(data, order, budget, noise, seed)
                        errs.append(prior_error(data, prior))
                        ns.append(n)
                    rows.append(
                        [
                            ds,
                            noise,
                            order,
                            budget or "-",
                            f"{np.mean(ns):.0f}",
                            f"{np.mean(errs):.2f} ± {np.std(errs):.2f}",
                        ]
                    )
        for bound in BOUNDS:
            prior, _ = prior_for(data, bound, 0, 0, 0)
            rows.append([ds, "-", bound, "-", "-", f"{prior_error(data, prior):.2f}"])
    return table(
        ["data set", "noise sd", "order", "budget", "estimates", "prior error (pts)"], rows
    )


def run_name(r: dict) -> str:
    """A job's or a run's name, as its checkpoint is named."""
    return "-".join(str(r[k]) for k in KEY)


def same_run(run: dict, job: dict, estimates: int) -> dict:
    """``run`` recorded for ``job``, whose prior, seed and blocks are the run's."""
    return (
        run
        | {k: job[k] for k in KEY}
        | {
            "estimates": estimates,
            "same_as": run_name(run),
            "spreads": SPREADS,
        }
    )


def reusable(runs: list[dict], datas: dict[str, dict]) -> dict[tuple, dict]:
    """Trained runs (of any rule) by (data set, seed, prior key); runs recorded before keys
    were (orders in ``REBUILT``) get theirs from today's code with the run's rule."""
    out: dict[tuple, dict] = {}
    for r in runs:
        if "same_as" in r or r["dataset"] not in datas:
            continue
        key = r.get("prior_key")
        if key is None and r["order"] in REBUILT:
            prior, _ = prior_for(
                datas[r["dataset"]], r["order"], r["budget"], r["noise"], r["seed"], rule_of(r)
            )
            key = prior_key(prior)
        if key is not None:
            out.setdefault((r["dataset"], r["seed"], key), r)
    return out


def main() -> None:
    global SPREADS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--noises", default=",".join(map(str, NOISES)))
    ap.add_argument("--orders", default=",".join(ORDERS))
    ap.add_argument("--bounds", default=",".join(BOUNDS))
    ap.add_argument("--stop", action="store_true", default=True, help="train guided-stop too")
    ap.add_argument("--no-stop", dest="stop", action="store_false")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--spreads",
        choices=SPREAD_RULES,
        default="pooled",
        help="reviewed bins' spreads: pooled (the product's rule) or sample (before session 11)",
    )
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--priors-only", action="store_true", help="the priors' error, no training")
    ap.add_argument("--summary", action="store_true", help="print the runs on record only")
    ap.add_argument("--plot", default=None, help="write the DICE-against-estimates plot here")
    ap.add_argument(
        "--ceiling-from",
        default=None,
        help="a table2.py results.json whose intra+inter/gaussian runs are the masks rows "
        "(the same runs: TrainConfig() with the seed, the same blocks)",
    )
    args = ap.parse_args()
    SPREADS = args.spreads
    args.budgets = [int(b) for b in args.budgets.split(",")]
    args.noises = [int(n) for n in args.noises.split(",")]
    args.orders = args.orders.split(",")
    args.bounds = [b for b in args.bounds.split(",") if b]
    names = args.datasets.split(",")
    work = Path(args.out).resolve() / "prior_budget"
    (work / "runs").mkdir(parents=True, exist_ok=True)
    log = work / "results.jsonl"
    done: dict[tuple, dict] = {}  # today's rule's runs
    other: list[dict] = []  # the other rule's (their trained priors may be today's)
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            if current(r):
                done[tuple(r[k] for k in KEY)] = r
            else:
                other.append(r)
    if args.ceiling_from:
        for r in json.loads(Path(args.ceiling_from).read_text())["runs"]:
            if (r["loss"], r["distance"]) == ("intra+inter", "gaussian"):
                row = {"dataset": r["dataset"], "order": "masks", "budget": 0, "noise": 0}
                row |= {"seed": r["seed"], "estimates": 0, "prior_error": 0.0}
                row |= {"masked_dice": r["masked_dice"], "degenerate": bool(r.get("degenerate"))}
                row["seconds"] = r.get("seconds", math.nan)
                key = tuple(row[k] for k in KEY)
                if key not in done:
                    done[key] = row
                    with log.open("a") as fh:
                        fh.write(json.dumps(row | {"from": args.ceiling_from}) + "\n")
    t0 = time.perf_counter()
    print(f"machine: {machine()}")
    print(f"reviewed bins' spreads: {SPREADS}")
    if not args.summary:
        datas = {n: d for n in names if (d := build(n, work)) is not None}
        if args.priors_only:
            print(priors_only(datas, args))
            print(f"{time.perf_counter() - t0:.0f} s")
            return
        payload = {
            n: {
                k: d[k]
                for k in (
                    "name",
                    "scale",
                    "blocks",
                    "images",
                    "band",
                    "ceiling",
                    "block_pct",
                    "block_z",
                    "block_slide",
                )
            }
            for n, d in datas.items()
        }
        trained = reusable([*other, *done.values()], datas)
        twins: dict[tuple, list] = {}
        jobs = []

        def record(row: dict) -> None:
            done[tuple(row[k] for k in KEY)] = row
            with log.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

        for j in jobs_for(args, list(datas)):
            if tuple(j[k] for k in KEY) in done:
                continue
            prior, n = prior_for(
                datas[j["dataset"]], j["order"], j["budget"], j["noise"], j["seed"]
            )
            key = (j["dataset"], j["seed"], prior_key(prior))
            if key in trained:  # the same prior, seed and blocks: the same run
                record(same_run(trained[key], j, n))
                print(f"{run_name(trained[key])} trained {run_name(j)}'s prior")
            elif key in twins:  # trained once, recorded for both when it ends
                twins[key].append((j, n))
            else:
                twins[key] = []
                jobs.append(
                    j | {"data": payload[j["dataset"]], "work": str(work), "spreads": SPREADS}
                )
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = [pool.submit(run_one, j) for j in jobs]
            for i, f in enumerate(as_completed(futures), start=1):
                r = f.result()
                record(r)
                for j, n in twins.get((r["dataset"], r["seed"], r["prior_key"]), []):
                    record(same_run(r, j, n))
                print(
                    f"[{i}/{len(jobs)}] {r['dataset']} {r['order']} budget {r['budget']} noise "
                    f"{r['noise']} seed {r['seed']}: {r['estimates']} estimates, prior error "
                    f"{r['prior_error']:.1f}, masked DICE {r['masked_dice']:.4f} "
                    f"({r['seconds']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    results = list(done.values())
    print(summarise(results))
    if args.plot:
        plot(results, Path(args.plot))


if __name__ == "__main__":
    main()
