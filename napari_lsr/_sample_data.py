"""napari sample-data contribution: a small synthetic H&E slide with its low-res labels."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ._reader import slide_layer_data
from .io.slide import Slide

#: Small enough to generate in seconds when chosen from the File > Open Sample menu.
SAMPLE_MENU_SIZE = 2048


def make_sample_data() -> list:
    """Generate (once per session) and open the synthetic sample with its label heat map."""
    from .io.project import Project
    from .layers import labels_layer_data, truth_layer_data
    from .sample.synthetic import write_sample

    folder = Path(tempfile.gettempdir()) / f"napari-lsr-sample-{SAMPLE_MENU_SIZE}"
    if not (folder / "project.toml").exists():
        write_sample(folder, size=SAMPLE_MENU_SIZE)
    project = Project.open(folder)
    entry = project.slides[0]
    slide = Slide(entry.path)
    labels = entry.read_labels(slide, project.bins)
    layers = [slide_layer_data(slide), labels_layer_data(labels, slide, project.bins)]
    if entry.truth:
        layers.append(truth_layer_data(entry.truth, slide))
    return layers
