"""The demo: synthetic sample -> train intra and intra+inter -> predict -> evaluate -> napari."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .config import DEFAULT_BLOCK_PX, DEFAULTS, SAMPLE_BLOCK_UM, SAMPLE_SIZE
from .io.formats import write_json
from .progress import Progress


def has_display() -> bool:
    """True when a GUI can open (macOS/Windows always; Linux needs DISPLAY or WAYLAND)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def run_demo(
    out_dir: Path,
    headless: bool = False,
    steps: int = DEFAULTS["steps"],
    size: int = SAMPLE_SIZE,
    train_overrides: dict | None = None,
) -> int:
    """Run the whole pipeline on the synthetic sample; open napari unless headless.

    ``train_overrides`` replaces TrainConfig fields (tests use tiny networks and groups).
    """
    from .evaluate.evaluation import evaluate_files, format_table
    from .io.project import Project
    from .learn.blocks import SlideBlocks, extract_blocks
    from .learn.training import TrainConfig, train
    from .predict.inference import predict_slide
    from .sample.synthetic import write_sample

    out_dir = Path(out_dir).resolve()
    folder = out_dir / "project"
    if (folder / "project.toml").exists():
        project = Project.open(folder)
        print(f"using the sample project in {folder}")
    else:
        print(f"writing a synthetic sample project to {folder}")
        project = write_sample(folder, size=size, progress=Progress("sample"))
    entry = project.slides[0]
    prior = project.prior()
    block_size, mpp = project.training_geometry()
    block_size = block_size or DEFAULT_BLOCK_PX
    mpp = mpp or SAMPLE_BLOCK_UM / block_size
    with entry.open() as slide:
        labels = entry.read_labels(slide, prior.bins)
    blocks = extract_blocks(
        [SlideBlocks(entry.path, labels)],
        project.cache_dir,
        block_size,
        mpp,
        progress=Progress("blocks"),
    )
    print(f"{len(blocks)} tissue blocks of {block_size} px at {mpp:g} um/px")
    results = [
        evaluate_files(
            truth=entry.truth, slide=entry.path, labels=entry.labels, name="Low resolution model"
        )
    ]
    for loss, name in (("intra", "Intra-instance"), ("intra+inter", "Intra+inter-instance")):
        ckpt = project.models_dir / f"{loss}.pt"
        if not ckpt.exists():
            bar = Progress(f"train {loss}")
            cfg = TrainConfig(**{"loss": loss, "steps": steps, **(train_overrides or {})})
            health = None
            for ev in train(blocks, prior, cfg, ckpt, info={"prior_path": str(project.prior_path)}):
                if ev.kind == "step":
                    bar("steps", ev.step / ev.total, f"loss {ev.loss:.3f}")
                health = ev.extra.get("health", health)
            if health:  # one line, as `napari-lsr train` prints it
                print(f"{loss} model health: {health['message']}")
        pred = project.predictions_dir / f"{loss}.tiff"
        if not pred.exists():
            predict_slide(ckpt, entry.path, pred, progress=Progress(f"predict {loss}"))
        results.append(evaluate_files(truth=entry.truth, slide=entry.path, pred=pred, name=name))
    table = format_table(results)
    print("\n" + table)
    write_json(out_dir / "metrics.json", results)
    (out_dir / "metrics.txt").write_text(table + "\n")
    print(f"\noutputs in {out_dir}:")
    print(f"  project       {folder} (slide, labels, truth, prior.csv, project.toml)")
    print(f"  models        {project.models_dir}")
    print(f"  predictions   {project.predictions_dir}")
    print(f"  metrics       {out_dir / 'metrics.json'} and metrics.txt")
    if headless or not has_display():
        if not headless:
            print("no display: skipped opening napari (run `make demo` on a desktop to see it)")
        return 0
    return open_viewer(project)


def open_viewer(project: object) -> int:
    """Open napari with the sample, its heat overlay, the boundaries and the plugin's widgets."""
    import napari

    show_demo(napari.Viewer(title="napari-lsr demo"), project)
    napari.run()
    return 0


def show_demo(viewer: Any, project: Any) -> dict[str, Any]:
    """Fill ``viewer``: the sample slide, the plugin's docks as tabs (Block review in front,
    which adds the one heat overlay) and the comparison of the demo's models: ground truth,
    low-resolution and model boundaries, the band and the scores (predictions reused).
    Returns the widgets by dock name."""
    from .widgets._docks import open_docks

    entry = project.slides[0]
    viewer.open(str(entry.path), plugin="napari-lsr")
    widgets = open_docks(viewer, project)  # tabbed, Block review in front, within the screen
    comparison = widgets.get("Comparison")
    if comparison is not None:
        try:
            show_comparison(comparison)
        except Exception as exc:  # the viewer still opens, saying why there are no boundaries
            print(f"could not draw the boundaries: {exc}", file=sys.stderr)
    return widgets


def show_comparison(widget: Any) -> None:
    """Run the Comparison dock's comparison here (the demo's predictions exist, so it only
    scores and draws) and show it in the dock and on the canvas."""
    from .compare import run_comparison

    gen = run_comparison(widget.request())
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            widget._on_done(stop.value)
            return
