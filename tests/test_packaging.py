"""Packaging: the manifest and resources are inside the package, editable and wheel alike."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_and_resources_in_installed_package():
    pkg = files("napari_lsr")
    assert (pkg / "napari.yaml").is_file()
    assert (pkg / "resources" / "prior_paper_table1.csv").is_file()


def test_npe2_validates_manifest():
    from npe2 import PluginManifest

    mf = PluginManifest.from_distribution("napari-lsr")
    assert mf.name == "napari-lsr"
    assert {r.command for r in mf.contributions.readers} == {"napari-lsr.get_reader"}
    assert len(mf.contributions.widgets) == 4 and mf.contributions.sample_data


@pytest.mark.slow
def test_wheel_contains_manifest_and_resources(tmp_path):
    pytest.importorskip("build")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("napari_lsr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_lsr/napari.yaml" in names
    assert "napari_lsr/resources/prior_paper_table1.csv" in names
    assert "napari_lsr/learn/losses.py" in names
    entry = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith("entry_points.txt")))
        .decode()
    )
    assert "napari_lsr:napari.yaml" in entry and "napari-lsr = napari_lsr.cli:main" in entry


def test_console_script_and_module_help():
    out = subprocess.run(
        [sys.executable, "-m", "napari_lsr", "--help"], capture_output=True, text=True, check=True
    )
    for cmd in ("sample", "train", "predict", "evaluate"):
        assert cmd in out.stdout


def test_npe2_validate_command():
    exe = Path(sys.executable).with_name("npe2")
    if not exe.exists():
        pytest.skip("npe2 command not installed beside this Python")
    out = subprocess.run([str(exe), "validate", "napari-lsr"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout
