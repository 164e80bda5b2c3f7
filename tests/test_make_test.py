"""`make test` on any machine: the system packages (scripts/system_packages.sh), the runner
without Xvfb (scripts/test.sh), GUI tests without a display, and the seeded test order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "scripts" / "system_packages.sh"
RUNNER = ROOT / "scripts" / "test.sh"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux shell scripts")


def fake_bin(tmp_path: Path, hide=("xvfb-run",), **fakes: str) -> str:
    """A PATH holding links to every program of this PATH but ``hide``, and ``fakes``
    (name -> bash script body) in their place: a machine without Xvfb, or with a fake apt."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, body in fakes.items():
        script = folder / name
        script.write_text(f"#!/usr/bin/env bash\n{body}\n")
        script.chmod(0o755)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            link = folder / entry.name
            if entry.name in hide or os.path.lexists(link) or not os.access(entry.path, os.X_OK):
                continue
            link.symlink_to(entry.path)
    return str(folder)


def no_display_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAPARI_LSR_")}
    for k in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "PYTEST_ADDOPTS"):
        env.pop(k, None)
    env.update(extra)
    return env


# dpkg knows only `make`; apt-get records its calls (and must not run where it may not)
NOTHING_INSTALLED = "echo 'ii  make '"


def run(cmd, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_package_list_lives_in_one_place():
    listed = subprocess.run(
        ["bash", str(PACKAGES), "list"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert {"xvfb", "xauth", "libgl1-mesa-dri", "libxcb-cursor0"} <= set(listed)
    ci = (ROOT / ".ci" / "run").read_text()
    for other in (ci, (ROOT / "Makefile").read_text(), RUNNER.read_text()):
        assert "libxcb-cursor0" not in other
    assert "scripts/system_packages.sh install" in ci
    assert "NAPARI_LSR_REQUIRE_DISPLAY=1" in ci  # CI never skips the GUI tests silently
    assert ci.count("make test") >= 2 and "--test-order=shuffle" in ci  # and runs twice


@linux_only
def test_without_root_one_line_names_the_packages_and_the_command(tmp_path):
    log = tmp_path / "apt.log"
    path = fake_bin(tmp_path, **{"dpkg-query": NOTHING_INSTALLED, "apt-get": f"echo $* >> {log}"})
    env = no_display_env(PATH=path, NAPARI_LSR_NO_APT="1")
    out = run(["bash", str(PACKAGES), "remedy"], env)
    assert out.returncode == 0 and out.stdout.count("\n") == 1, out
    line = out.stdout.strip()
    assert line.startswith("missing system packages for the GUI tests: xvfb xauth libgl1 ")
    assert "sudo apt-get install -y --no-install-recommends xvfb xauth libgl1 " in line
    assert " make" not in line  # installed
    assert run(["bash", str(PACKAGES), "install"], env).returncode == 2  # cannot install
    assert not log.exists()


@linux_only
def test_as_root_it_installs_the_packages(tmp_path):
    log = tmp_path / "apt.log"
    path = fake_bin(
        tmp_path,
        **{"dpkg-query": NOTHING_INSTALLED, "apt-get": f"echo $* >> {log}", "id": "echo 0"},
    )
    out = run(["bash", str(PACKAGES), "install", "make"], no_display_env(PATH=path))
    assert out.returncode == 0, out
    update, install = log.read_text().splitlines()
    assert update == "update -qq"
    assert install.startswith("install -y -qq --no-install-recommends xvfb xauth ")
    assert install.endswith(" libxcb-xkb1 make")


@linux_only
def test_make_test_without_xvfb_runs_the_rest_then_fails(tmp_path):
    """No display, no Xvfb, no root: the remedy in one line, the tests that need no display
    run (here one that passes), and then a failure saying the GUI tests did not run."""
    if not (Path(sys.prefix) / "bin" / "python").exists():
        pytest.skip("not in a virtual environment")
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    path = fake_bin(tmp_path, **{"dpkg-query": NOTHING_INSTALLED, "apt-get": "exit 99"})
    env = no_display_env(PATH=path, NAPARI_LSR_NO_APT="1", VENV=sys.prefix)
    cmd = ["bash", str(RUNNER), "-c", str(tmp_path / "pytest.ini"), str(tmp_path / "test_ok.py")]
    out = run(cmd, env, timeout=300)
    assert out.returncode == 1, out
    assert "1 passed" in out.stdout
    remedy = [line for line in out.stderr.splitlines() if "sudo apt-get install" in line]
    assert remedy and remedy[0].startswith("make test: missing system packages")
    assert "make test: FAILED: the GUI tests did not run" in out.stderr


@linux_only
@pytest.mark.parametrize("require", ["", "1"])
def test_gui_tests_without_a_display_skip_or_fail(require):
    test = "tests/test_gui_reader.py::test_sample_data_contribution"
    env = no_display_env(NAPARI_LSR_REQUIRE_DISPLAY=require)
    out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], env)
    assert "GUI tests did not run (1): no display" in out.stdout, out.stdout
    if require:
        assert out.returncode == 1 and "1 error" in out.stdout
    else:
        assert out.returncode == 0 and "1 skipped" in out.stdout


def collected(*args: str) -> list[str]:
    files = ["tests/test_metrics.py", "tests/test_formats.py", "tests/test_synthetic.py"]
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    out = run([*cmd, *args, *files], no_display_env())
    assert out.returncode == 0, out
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_the_test_order_is_seeded_and_keeps_modules_together():
    written = collected()
    shuffled = collected("--test-order=shuffle", "--test-order-seed=3")
    assert collected("--test-order=shuffle", "--test-order-seed=3") == shuffled  # seeded
    assert collected("--test-order=shuffle", "--test-order-seed=4") != shuffled
    assert sorted(shuffled) == sorted(written) and shuffled != written
    modules = [t.split("::")[0] for t in shuffled]
    assert len({m for i, m in enumerate(modules) if i and m != modules[i - 1]}) <= 2  # contiguous
    reverse = collected("--test-order=reverse")
    assert reverse == written[::-1]
