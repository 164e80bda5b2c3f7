"""The package's layout (#26): the folders follow the method, imports only run downward.

Read from the source (``ast``, nothing imported): every import counts, at module level, in a
function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "napari_lsr"

#: The layers, lowest first: a module may import its own layer and the ones below it.
LAYERS = [
    ("base", ["napari_lsr", "napari_lsr.config", "napari_lsr.progress"]),
    ("io", ["napari_lsr.io"]),
    ("elicit", ["napari_lsr.elicit"]),
    ("learn", ["napari_lsr.learn"]),
    ("predict", ["napari_lsr.predict"]),
    ("evaluate", ["napari_lsr.evaluate"]),
    ("sample", ["napari_lsr.sample"]),
    (
        "top",
        [
            "napari_lsr.state",
            "napari_lsr.layers",
            "napari_lsr.compare",
            "napari_lsr.cli",
            "napari_lsr.demo",
            "napari_lsr._reader",
            "napari_lsr._sample_data",
            "napari_lsr.__main__",
            "napari_lsr.widgets",
        ],
    ),
]

QT = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari.qt", "napari._qt", "superqt")


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = ("napari_lsr", *p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every module ``name`` imports (absolute names), with its line."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:  # ``from pkg import module`` imports the module
                sub = f"{mod}.{a.name}"
                found.append((sub if sub in MODULES else mod, node.lineno))
    return sorted(set(found))


def _rank(name: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    assert best is not None, f"{name} is in no layer: add it to LAYERS"
    return best[0]


def _graph() -> dict[str, set[str]]:
    return {
        m: {t for t, _ in _imports(m, p) if t in MODULES and t != m} for m, p in MODULES.items()
    }


def test_every_module_has_a_layer() -> None:
    for m in MODULES:
        _rank(m)


def test_the_subpackages_exist() -> None:
    for pkg in ("io", "elicit", "learn", "predict", "evaluate", "sample", "widgets"):
        assert f"napari_lsr.{pkg}" in MODULES


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_runs_upward(name: str) -> None:
    rank = _rank(name)
    up = [
        f"{name}:{line} imports {t} ({LAYERS[_rank(t)][0]} is above {LAYERS[rank][0]})"
        for t, line in _imports(name, MODULES[name])
        if t in MODULES and _rank(t) > rank
    ]
    assert not up, "\n".join(up)


def test_no_qt_outside_the_widgets() -> None:
    hits = [
        f"{m}:{line} imports {t}"
        for m, p in MODULES.items()
        if not (m == "napari_lsr.widgets" or m.startswith("napari_lsr.widgets."))
        for t, line in _imports(m, p)
        if any(t == q or t.startswith(q + ".") for q in QT)
    ]
    assert not hits, "\n".join(hits)


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components: none with more than one module."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles
