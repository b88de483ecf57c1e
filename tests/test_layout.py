"""The layout rule (README, Layout): data flows one way, and each package imports only packages upstream of it,

    radvis (core) -> drivers -> sim -> capture -> sync -> learner -> rig

so `drivers/` (real devices) never imports `sim/` (the emulated world): an emulated device is reached like
hardware, through a port URL or a UDP address. Every import statement of every module counts, including the
ones inside functions (a lazy import is still a dependency). tests/ and bench/ may import anything; the
`radvis` command itself (radvis/cli.py) composes the packages' CLIs by module name at run time."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ORDER = ["radvis", "drivers", "sim", "capture", "sync", "learner", "rig"]
RANK = {p: i for i, p in enumerate(ORDER)}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def back_edges(root: Path = REPO) -> list[str]:
    bad = []
    for pkg in ORDER:
        for path in sorted((root / pkg).rglob("*.py")):
            for line, mod in imports(path):
                top = mod.split(".")[0]
                if top in RANK and RANK[top] > RANK[pkg]:
                    bad.append(f"{path.relative_to(root)}:{line}: {pkg} imports {mod} (downstream of it)")
    return bad


def test_no_package_imports_downstream():
    bad = back_edges()
    assert not bad, "layout rule broken (order " + " -> ".join(ORDER) + "):\n" + "\n".join(bad)


def test_every_package_is_placed():
    """A new top-level package must be given its place in the order, or the rule silently skips it."""
    pkgs = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert pkgs - {"tests", "bench"} <= set(ORDER), sorted(pkgs - {"tests", "bench"} - set(ORDER))


def test_the_check_finds_a_back_edge(tmp_path):
    """The walker sees lazy imports inside functions and `from X import Y` forms."""
    for pkg in ORDER:
        (tmp_path / pkg).mkdir()
    (tmp_path / "drivers" / "ok.py").write_text("import numpy\nfrom radvis import wire\n")
    (tmp_path / "drivers" / "bad.py").write_text("def f():\n    from sim.scene import Scene\n    return Scene\n")
    (tmp_path / "capture" / "bad.py").write_text("import learner.models as m\n")
    assert sorted(back_edges(tmp_path)) == ["capture/bad.py:1: capture imports learner.models (downstream of it)",
                                            "drivers/bad.py:2: drivers imports sim.scene (downstream of it)"]


@pytest.mark.parametrize("pkg", ORDER)
def test_package_has_modules(pkg):
    assert any((REPO / pkg).rglob("*.py")), f"{pkg}/ is empty: is the order in this test stale?"
