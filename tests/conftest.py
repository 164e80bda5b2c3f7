"""Shared fixtures: tiny synthetic projects and models made on the fly (no ../shared needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
    from napari_lsr.project import Project
    from napari_lsr.synthetic import write_sample

    folder = tmp_path_factory.mktemp("tiny") / "project"
    write_sample(folder, size=768, mpp=2.0, seed=1, block_um=128.0)
    return Project.open(folder)


@pytest.fixture
def project_copy(tiny_project, tmp_path):
    """A writable copy of the tiny project."""
    import shutil

    from napari_lsr.project import Project

    dst = tmp_path / "project"
    shutil.copytree(tiny_project.folder, dst, ignore=shutil.ignore_patterns("cache", "*.sqlite*"))
    return Project.open(dst)


@pytest.fixture(scope="session")
def tiny_model(tiny_project, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained for a few steps on the tiny project (depth 2, width 4)."""
    from napari_lsr.blocks import SlideBlocks, extract_blocks
    from napari_lsr.training import TrainConfig, train

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
    """A training-run plan (``napari_lsr.run.RunPlan``) for the project's first slide on tiny
    settings (depth 2, width 4, groups of 4, 32 px blocks at 4 um/px, no periodic checkpoint)."""
    from napari_lsr.run import RunPlan, SlideSource
    from napari_lsr.training import TrainConfig

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
