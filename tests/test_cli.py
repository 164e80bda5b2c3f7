"""The command line: the whole pipeline, and one-line errors (exit 2) on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from napari_lsr.cli import main
from napari_lsr.learn.training import card_path

TRAIN_TINY = ["--mpp", "4", "--steps", "3", "--depth", "2", "--width", "4", "--group-size", "4"]


def one_line_error(capsys, argv, *words):
    assert main(argv) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1, lines  # progress lines may come before; one error line, no traceback
    err = lines[0]
    assert "error:" in err and "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


def train_args(p, *extra):
    e = p.slides[0]
    return [
        "train",
        "--slide",
        str(e.path),
        "--labels",
        str(e.labels),
        "--prior",
        str(p.prior_path),
        "--loss",
        "intra+inter",
        *TRAIN_TINY,
        *extra,
    ]


def test_pipeline_train_predict_evaluate(project_copy, tmp_path, capsys):
    p = project_copy
    e = p.slides[0]
    model = tmp_path / "m.pt"
    assert main(train_args(p, "--out", str(model))) == 0
    out, err = capsys.readouterr()
    assert "finished: 3/3 steps" in out and model.exists()
    # the prior's origin in one line: the sample's prior.csv is measured from its masks
    assert "prior: 0 of 10 bins from the paper's Table 1, 10 from this data" in err
    health = [ln for ln in out.splitlines() if ln.startswith("model health: ")]
    assert len(health) == 1  # one line, healthy or degenerate with what to try
    card = json.loads(card_path(model).read_text())
    assert card["health"]["message"] in health[0] and len(card["health"]["bins"]) >= 2
    assert card["settings"]["loss"] == "intra+inter"
    # issue 14: a prediction written beside its model (m.tiff by m.pt) keeps the model's card
    pred = tmp_path / "m.tiff"
    assert main(["predict", "--model", str(model), "--slide", str(e.path), "--out", str(pred)]) == 0
    assert pred.exists() and pred.with_suffix(".pred.json").exists()
    assert json.loads(card_path(model).read_text()) == card
    js = tmp_path / "e.json"
    assert (
        main(
            [
                "evaluate",
                "--truth",
                str(e.truth),
                "--slide",
                str(e.path),
                "--pred",
                str(pred),
                "--json",
                str(js),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "masked IoU" in table and "band:" in table
    res = json.loads(js.read_text())
    assert {"masked_iou", "masked_dice", "unmasked_iou", "unmasked_dice", "band_px_level0"} <= set(
        res
    )
    assert (
        main(
            ["evaluate", "--truth", str(e.truth), "--slide", str(e.path), "--labels", str(e.labels)]
        )
        == 0
    )
    assert "low resolution" in capsys.readouterr().out


def test_resume_from_cli(project_copy, tmp_path, capsys):
    model = tmp_path / "m.pt"
    assert main(train_args(project_copy, "--out", str(model))) == 0
    assert (
        main(
            [*train_args(project_copy, "--steps", "5"), "--out", str(model), "--resume", str(model)]
        )
        == 0
    )
    assert "finished: 5/5 steps" in capsys.readouterr().out


def test_prior_missing_a_bin_the_labels_use(project_copy, tmp_path, capsys):
    prior = tmp_path / "p.csv"
    prior.write_text("bin,p_low,p_high,mean_pct,std_pct,n\n0,0,50,1,1,\n1,50,100,50,5,\n")
    e = project_copy.slides[0]
    labels = tmp_path / "l.csv"
    labels.write_text("x,y,width,height,probability,bin\n0,0,64,64,0.5,7\n")
    one_line_error(
        capsys,
        [
            "train",
            "--slide",
            str(e.path),
            "--labels",
            str(labels),
            "--prior",
            str(prior),
            "--loss",
            "intra",
            *TRAIN_TINY,
            "--out",
            str(tmp_path / "m.pt"),
        ],
        "l.csv",
        "bin 7",
        "column 'bin'",
    )


def test_groups_larger_than_every_bin(project_copy, tmp_path, capsys):
    one_line_error(
        capsys,
        train_args(project_copy, "--group-size", "500", "--out", str(tmp_path / "m.pt")),
        "no bin holds a full group of 500",
    )


def test_slide_without_mpp(project_copy, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((128, 128, 3), 200, np.uint8)).save(tmp_path / "s.png")
    (tmp_path / "l.csv").write_text("x,y,width,height,probability\n0,0,64,64,0.5\n")
    one_line_error(
        capsys,
        [
            "train",
            "--slide",
            str(tmp_path / "s.png"),
            "--labels",
            str(tmp_path / "l.csv"),
            "--prior",
            str(project_copy.prior_path),
            "--loss",
            "intra",
            "--mpp",
            "4",
            "--out",
            str(tmp_path / "m.pt"),
        ],
        "s.png",
        "mpp",
    )


def test_labels_outside_slide(project_copy, tmp_path, capsys):
    labels = tmp_path / "l.csv"
    # centred outside the 768 px slide (a block that only runs past the edge is clipped)
    labels.write_text("x,y,width,height,probability\n720,720,128,128,0.5\n")
    e = project_copy.slides[0]
    one_line_error(
        capsys,
        [
            "train",
            "--slide",
            str(e.path),
            "--labels",
            str(labels),
            "--prior",
            str(project_copy.prior_path),
            "--loss",
            "intra",
            *TRAIN_TINY,
            "--out",
            str(tmp_path / "m.pt"),
        ],
        "outside the slide",
        "row 1",
    )


def test_unwritable_cache_and_checkpoint(project_copy, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(
        capsys,
        train_args(project_copy, "--cache", str(blocker / "c"), "--out", str(tmp_path / "m.pt")),
        "block cache",
    )
    one_line_error(
        capsys,
        train_args(project_copy, "--cache", str(tmp_path / "c"), "--out", str(blocker / "m.pt")),
        "output directory",
    )
    assert not list(tmp_path.glob("*.pt"))


def test_evaluate_needs_pred_or_labels(project_copy, capsys):
    e = project_copy.slides[0]
    one_line_error(
        capsys, ["evaluate", "--truth", str(e.truth), "--slide", str(e.path)], "exactly one of"
    )


def test_sample_command(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "s"), "--size", "512", "--mpp", "2", "--seed", "3"]) == 0
    for f in (
        "slide_0.tiff",
        "slide_0_truth.png",
        "slide_0_lowres.csv",
        "prior.csv",
        "project.toml",
    ):
        assert (tmp_path / "s" / f).exists()


def test_every_subcommand_has_help():
    for cmd in ("sample", "train", "predict", "evaluate", "demo"):
        out = subprocess.run(
            [sys.executable, "-m", "napari_lsr", cmd, "--help"], capture_output=True, text=True
        )
        assert out.returncode == 0 and "usage:" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "napari_lsr", "train", "--help"], capture_output=True, text=True
    ).stdout
    assert "1e-5" in out and "2 x 15" in out and "paper (Sec. 3.3)" in out


def test_train_defaults_are_the_recipe_and_the_paper_preset_is_named():
    from napari_lsr.cli import build_parser, train_config
    from napari_lsr.config import LEGACY, PAPER_LR, TrainConfig

    base = ["train", "--slide", "s.tiff", "--labels", "s.csv", "--prior", "p.csv", "--out", "m.pt"]
    for loss in ("intra", "inter", "intra+inter"):
        args = build_parser().parse_args([*base, "--loss", loss])
        assert train_config(args) == TrainConfig(loss=loss)
        paper = train_config(
            build_parser().parse_args([*base, "--loss", loss, "--preset", "paper (Sec. 3.3)"])
        )
        assert paper.learning_rate == PAPER_LR[loss]
        assert (paper.norm, paper.init_bias, paper.colour) == (
            LEGACY["norm"],
            LEGACY["init_bias"],
            LEGACY["colour"],
        )
    # an explicit option wins over the preset
    args = build_parser().parse_args(
        [
            *base,
            "--loss",
            "intra",
            "--preset",
            "paper (Sec. 3.3)",
            "--lr",
            "0.002",
            "--norm",
            "batch",
        ]
    )
    c = train_config(args)
    assert c.learning_rate == 0.002 and c.norm == "batch"


@pytest.mark.parametrize("argv", [["train"], ["predict", "--model"], ["nope"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
