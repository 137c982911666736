"""The package's architecture, checked from its source: the rooms' import rules hold, there are
no import circles, and an installed (non-editable) wheel carries the files trials read."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "trex_ray"


def module_imports() -> dict[str, set[str]]:
    """Every module of trex_ray and the names it imports anywhere in its source (function-local
    imports included: a lazy import is still a dependency)."""
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    pkg = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
                    base = ".".join([*pkg[: len(pkg) - node.level + 1], *([base] if base else [])])
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
        mods[name] = found
    return mods


MODS = module_imports()
INTERNAL = {m: {i for i in imps if i in MODS and i != m} for m, imps in MODS.items()}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += INTERNAL[m]
    return seen


def room(prefix: str) -> list[str]:
    return [m for m in MODS if m.startswith(f"trex_ray.{prefix}.") or m == f"trex_ray.{prefix}"]


def test_the_rooms_exist_and_the_package_is_not_flat():
    for name in ("search", "researcher", "executor", "recipes", "report"):
        assert (PACKAGE / name / "__init__.py").is_file(), name
    top = [p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")]
    assert len(top) <= 10, top


@pytest.mark.parametrize("prefix", ["search", "researcher"])
def test_search_and_researcher_never_reach_ray(prefix):
    """Not directly, and not through anything they import: the core runs without Ray."""
    offenders = {}
    for m in room(prefix):
        for dep in reachable(m):
            ray = sorted(i for i in MODS[dep] if i == "ray" or i.startswith("ray."))
            if ray:
                offenders[m] = (dep, ray)
    assert not offenders


def test_the_executor_imports_nothing_from_the_researcher():
    """A trial worker never loads the LLM code (it needs only the pure bad-case sampling)."""
    bad = {m: sorted(d for d in reachable(m) if d.startswith("trex_ray.researcher")) for m in room("executor")}
    assert not {m: d for m, d in bad.items() if d}


def test_no_import_circles():
    circles = [m for m in MODS if any(m in reachable(d) for d in INTERNAL[m])]
    assert not circles


def test_the_rules_above_can_fail():
    """The walker sees lazy and relative imports, so a violation would not slip through."""
    source = "def f():\n    import ray\n    from .tree import Tree\n"
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    assert "ray" in found
    assert "trex_ray.search.state" in INTERNAL["trex_ray.actors"]  # edges are really collected


def test_an_installed_wheel_ships_the_zero_configs(tmp_path):
    """``pip wheel .`` installed into a fresh folder (not editable, the repository not on the
    path): a multi-worker trial's DeepSpeed config loads from inside the package."""
    import shutil

    # built from a clean copy of the checkout's files: a build/ folder left in the checkout by an
    # earlier build would otherwise lend the wheel files its configuration no longer ships
    src, wheels, target = tmp_path / "src", tmp_path / "wheels", tmp_path / "site"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("trex_ray-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import trex_ray; "
             "assert trex_ray.__file__.startswith(sys.argv[1]), trex_ray.__file__; "
             "from trex_ray.executor.distributed import deepspeed_config; "
             "c = deepspeed_config(3, True); print(c['zero_optimization']['stage'], c['zero_optimization']['offload_param']['device'])")
    out = subprocess.run([sys.executable, "-c", probe, str(target)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "cpu"]
