"""The synthetic sample: an OpenSlide-readable pyramid with truth, labels, prior and project."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lsr.io.formats import read_lowres_csv, read_prior_csv, read_truth
from napari_lsr.io.project import Project
from napari_lsr.io.slide import Slide
from napari_lsr.sample.synthetic import block_fractions, write_sample


def test_sample_files_are_consistent(tiny_project):
    p = tiny_project
    e = p.slides[0]
    with Slide(e.path) as s:
        assert s.vendor == "generic-tiff" and s.mpp == pytest.approx(2.0)
        truth = read_truth(e.truth, s.dimensions)
        labels = read_lowres_csv(e.labels, s.dimensions)
        rgb = s.read_region(0, 0, s.width, s.height, downsample=truth.downsample)
    assert truth.downsample == 4 and truth.mask.any() and not truth.mask.all()
    assert len(labels) == (768 // 64) ** 2 and (labels.width == 64).all()
    # tumour pixels are darker and more purple than the rest of the tissue
    tissue = rgb.mean(-1) < 220
    tum, rest = rgb[truth.mask & tissue].astype(float), rgb[~truth.mask & tissue].astype(float)
    assert tum.mean() < rest.mean()
    assert (tum[:, 2] - tum[:, 1]).mean() > (rest[:, 2] - rest[:, 1]).mean()
    # the simulated classifier is monotonic on average: high bins hold more tumour
    frac = block_fractions(truth.mask, truth.downsample, labels.boxes())
    assert np.corrcoef(frac, labels.probability)[0, 1] > 0.5
    prior = read_prior_csv(p.prior_path)
    assert (prior.n >= 0).all() and prior.mean_pct[-1] > prior.mean_pct[0]
    assert p.config["training"] == {"mpp": 4.0, "block_size": 32}


def test_sample_is_deterministic(tmp_path):
    a = write_sample(tmp_path / "a", size=512, mpp=2.0, seed=5, block_um=128)
    b = write_sample(tmp_path / "b", size=512, mpp=2.0, seed=5, block_um=128)
    c = write_sample(tmp_path / "c", size=512, mpp=2.0, seed=6, block_um=128)
    ra = Slide(a.slides[0].path).read_level0(0, 0, 512, 512)
    rb = Slide(b.slides[0].path).read_level0(0, 0, 512, 512)
    rc = Slide(c.slides[0].path).read_level0(0, 0, 512, 512)
    assert np.array_equal(ra, rb) and not np.array_equal(ra, rc)
    assert a.slides[0].labels.read_text() == b.slides[0].labels.read_text()


def test_sample_options_and_errors(tmp_path):
    p = write_sample(tmp_path / "s", size=600, mpp=0.5, seed=0, block_um=100, n_slides=2)
    assert len(p.slides) == 2
    assert Slide(p.slides[1].path).mpp == pytest.approx(0.5)
    assert Project.open(tmp_path / "s").slides[1].path.name == "slide_1.tiff"
    with pytest.raises(ValueError, match="at least 256"):
        write_sample(tmp_path / "x", size=100)
    with pytest.raises(ValueError, match="do not fit"):
        write_sample(tmp_path / "y", size=300, mpp=1.0, block_um=1000)
