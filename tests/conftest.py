"""Shared fixtures: tiny synthetic projects and models made on the fly (no ../shared needed).

Also two suite-wide rules:

* GUI tests (marked ``gui``) need a display. On Linux without ``DISPLAY``/``WAYLAND_DISPLAY``
  (and no ``QT_QPA_PLATFORM`` chosen) they are skipped with the reason, or fail when
  ``NAPARI_LSR_REQUIRE_DISPLAY=1`` (CI: a missing display must never pass silently).
  ``make test`` (scripts/test.sh) runs the suite under Xvfb when there is no display.
* ``--test-order=shuffle`` (with ``--test-order-seed=N``, printed in the header) runs the
  modules, and the tests within each module, in a seeded random order; ``reverse`` reverses
  both. CI runs the suite a second time shuffled, to catch tests that depend on others.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

REQUIRE_DISPLAY = "NAPARI_LSR_REQUIRE_DISPLAY"

# float32 machine epsilon (1.19e-07): tolerances of float32 results are multiples of it, scaled
# by the size of the values, never a fixed absolute number that holds on one CPU only.
EPS32 = float(np.finfo(np.float32).eps)


def f32_tolerance(ref, ulps: float) -> float:
    """An absolute tolerance for a float32 result near ``ref``: ``ulps`` float32 epsilons of
    the largest magnitude in ``ref`` (at least 1)."""
    scale = max(1.0, float(np.max(np.abs(np.asarray(ref, dtype=np.float64)))))
    return ulps * EPS32 * scale


# -- display -------------------------------------------------------------------------------


def display_problem() -> str | None:
    """Why Qt cannot open windows here, or None when it can (macOS and Windows always can)."""
    if not sys.platform.startswith("linux"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    if os.environ.get("QT_QPA_PLATFORM"):
        return None  # the user picked a Qt platform (offscreen, vnc, ...)
    return (
        "no display (DISPLAY and WAYLAND_DISPLAY unset): run `make test`, which uses Xvfb, "
        "or install the packages `scripts/system_packages.sh list` names"
    )


_GUI_NOT_RUN: list[str] = []


@pytest.hookimpl(tryfirst=True)  # before skipif marks: CI must not skip a GUI test silently
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gui") is None:
        return
    problem = display_problem()
    if problem is None:
        return
    _GUI_NOT_RUN.append(item.nodeid)
    if os.environ.get(REQUIRE_DISPLAY, "") not in ("", "0"):
        pytest.fail(f"GUI test without a display ({REQUIRE_DISPLAY}=1): {problem}", pytrace=False)
    pytest.skip(f"GUI test: {problem}")


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    header = pytest_report_header(config)
    if header:  # also under -q, which hides the header
        terminalreporter.write_line(header)
    if _GUI_NOT_RUN:
        terminalreporter.write_line(
            f"GUI tests did not run ({len(_GUI_NOT_RUN)}): {display_problem()}",
            red=True,
            bold=True,
        )


# -- test order ----------------------------------------------------------------------------

ORDERS = ("as-written", "reverse", "shuffle")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("napari-lsr")
    group.addoption(
        "--test-order",
        choices=ORDERS,
        default=os.environ.get("NAPARI_LSR_TEST_ORDER", "as-written"),
        help="order of the modules and of the tests within each module "
        "(default: as written, or $NAPARI_LSR_TEST_ORDER)",
    )
    group.addoption(
        "--test-order-seed",
        type=int,
        default=None,
        help="seed of --test-order=shuffle (default: $NAPARI_LSR_TEST_SEED, else random)",
    )


def _order_seed(config: pytest.Config) -> int:
    seed = config.getoption("--test-order-seed")
    if seed is None:
        env = os.environ.get("NAPARI_LSR_TEST_SEED", "")
        seed = int(env) if env else random.SystemRandom().randrange(10**6)
        config.option.test_order_seed = seed
    return seed


def pytest_report_header(config: pytest.Config) -> str | None:
    order = config.getoption("--test-order")
    if order == "shuffle":
        seed = _order_seed(config)
        again = f"--test-order=shuffle --test-order-seed={seed}"
        return f"test order: shuffle, seed {seed} (the same order again: {again})"
    if order == "reverse":
        return "test order: reverse"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = config.getoption("--test-order")
    if order == "as-written":
        return
    # Reorder whole modules and the tests within each one, so that module-scoped fixtures are
    # still set up once per module.
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    buckets = list(modules.values())
    if order == "reverse":
        buckets = [b[::-1] for b in buckets[::-1]]
    else:
        rng = random.Random(_order_seed(config))
        rng.shuffle(buckets)
        for b in buckets:
            rng.shuffle(b)
    items[:] = [item for b in buckets for item in b]


def shared_file(*parts: str) -> Path:
    """A file in ../shared/data, or skip the test when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent (../shared/data is optional)")
    return p


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory):
    """A 768 x 768 px synthetic project at 2 um/px with 128 um blocks (64 px, 12 x 12 grid).

    Read-only for tests: copy it (``copy_project``) before writing into it.
    """
    from napari_lsr.io.project import Project
    from napari_lsr.sample.synthetic import write_sample

    folder = tmp_path_factory.mktemp("tiny") / "project"
    write_sample(folder, size=768, mpp=2.0, seed=1, block_um=128.0)
    return Project.open(folder)


@pytest.fixture
def project_copy(tiny_project, tmp_path):
    """A writable copy of the tiny project."""
    import shutil

    from napari_lsr.io.project import Project

    dst = tmp_path / "project"
    shutil.copytree(tiny_project.folder, dst, ignore=shutil.ignore_patterns("cache", "*.sqlite*"))
    return Project.open(dst)


@pytest.fixture(scope="session")
def tiny_model(tiny_project, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained for a few steps on the tiny project (depth 2, width 4)."""
    from napari_lsr.learn.blocks import SlideBlocks, extract_blocks
    from napari_lsr.learn.training import TrainConfig, train

    out = tmp_path_factory.mktemp("model") / "intra+inter.pt"
    entry = tiny_project.slides[0]
    prior = tiny_project.prior()
    with entry.open() as slide:
        labels = entry.read_labels(slide, prior.bins)
    blocks = extract_blocks([SlideBlocks(entry.path, labels)], out.parent / "cache", 32, 4.0)
    cfg = TrainConfig(loss="intra+inter", steps=4, depth=2, width=4, group_size=4, groups=2)
    for _ in train(blocks, prior, cfg, out):
        pass
    return out


def tiny_plan(project, name: str, steps: int, **config):
    """A training-run plan (``napari_lsr.learn.run.RunPlan``) for the project's first slide on tiny
    settings (depth 2, width 4, groups of 4, 32 px blocks at 4 um/px, no periodic checkpoint)."""
    from napari_lsr.learn.run import RunPlan, SlideSource
    from napari_lsr.learn.training import TrainConfig

    config = {"checkpoint_every": 0, **config}
    entry = project.slides[0]
    return RunPlan(
        out=project.models_dir / f"{name}.pt",
        cache_dir=project.cache_dir,
        config=TrainConfig(depth=2, width=4, group_size=4, steps=steps, **config),
        sources=[SlideSource(entry.path, entry.labels)],
        prior=project.prior(),
        mpp=4.0,
        block_size=32,
        info={"trained_with": "test"},
    )


def run_cancelled_at(runner, plan, step: int) -> list:
    """Every event of ``runner(plan, cancel)`` (``run.run_in_subprocess`` or the in-process
    ``run_training``), with cancel set once the event of ``step`` arrives."""
    import threading

    cancel = threading.Event()
    events = []
    for ev in runner(plan, cancel):
        events.append(ev)
        if getattr(ev, "kind", "") == "step" and ev.step == step:
            cancel.set()
    return events
