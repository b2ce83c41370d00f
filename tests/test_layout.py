"""The layout of docs/architecture.md, enforced: imports point one way, modules stay small.

A newcomer should find each concept in one place and be able to trust the arrows of the map;
these checks fail the build the day an import climbs back up.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.deploy import ROOT

PKG = ROOT / "dispatcher"

# What each top-level unit of dispatcher/ may import from the others (its own modules always).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "models": set(),
    "config": {"errors", "sinch.limits"},
    "campaign": {"errors", "models", "sinch.limits"},
    "sinch": {"config", "errors"},
    "storage": {"config", "errors", "models", "sinch"},
    "sending": {"config", "errors", "models", "sinch", "storage", "observability"},
    "observability": {"config", "errors", "models", "storage"},
    "parallel": {"campaign", "errors", "models"},
    "api": {"callbacks", "campaign", "config", "errors", "models", "parallel", "sinch", "storage"},
    "callbacks": {"config", "errors", "models", "storage"},
    "devtools": {
        "api",
        "callbacks",
        "campaign",
        "config",
        "errors",
        "models",
        "sinch",
        "storage",
        "sinch_simulator",
    },
    "cli": {"*"},
    "__init__": {"api", "config", "errors", "models"},
}


def _unit(path: Path) -> str:
    rel = path.relative_to(PKG).parts
    return rel[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """The dispatcher units (``sinch.limits`` counts as its own leaf) a module imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = (
                [f"dispatcher.{a.name}" for a in node.names]
                if node.module == "dispatcher"
                else [node.module]
            )
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "sinch_simulator":
                found.add("sinch_simulator")
            elif parts[0] == "dispatcher" and len(parts) > 1:
                found.add("sinch.limits" if parts[1:3] == ["sinch", "limits"] else parts[1])
    return found


def test_imports_point_one_way() -> None:
    wrong = []
    for path in sorted(PKG.rglob("*.py")):
        unit = _unit(path)
        allowed = ALLOWED[unit]
        if "*" in allowed:
            continue
        for dep in sorted(_imports(path) - {unit}):
            if dep not in allowed and not (dep == "sinch.limits" and "sinch" in allowed | {unit}):
                wrong.append(f"{path.relative_to(ROOT)} imports {dep}")
    assert wrong == []


def test_every_unit_is_in_the_map() -> None:
    units = {_unit(p) for p in PKG.rglob("*.py")}
    assert units == set(ALLOWED)
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = [u for u in units - {"__init__"} if f"`{u}/`" not in doc and f"`{u}.py`" not in doc]
    assert missing == []


def test_modules_are_small_and_the_top_level_is_short() -> None:
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in (*PKG.rglob("*.py"), *(ROOT / "sinch_simulator").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > 500
    ]
    assert long == []
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= 10, top


def test_workers_is_only_a_shim() -> None:
    files = sorted(p.name for p in (ROOT / "workers").glob("*.py"))
    assert files == ["__init__.py"]
    tree = ast.parse((ROOT / "workers" / "__init__.py").read_text())
    statements = [n for n in tree.body if not isinstance(n, ast.Expr)]  # docstring
    assert len(statements) <= 3, "workers/ builds the app and exports it, nothing more"


def test_importing_workers_reads_no_config_and_changes_nothing(tmp_path: Path) -> None:
    """A web app or a shell may import the Celery app; only the worker's start-up acts."""
    import os
    import subprocess
    import sys

    probe = (
        "import gc, os, sys; before = dict(os.environ); import workers; "
        "assert dict(os.environ) == before, 'os.environ changed'; "
        "assert gc.isenabled(); assert 'prometheus_client' not in sys.modules; "
        "assert workers.app.main == 'dispatcher'; print('ok')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISPATCH_", "PROMETHEUS_"))}
    env["DISPATCH_CONFIG"] = str(tmp_path / "does-not-exist.toml")
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
