"""The simulator is the oracle the dispatcher is checked against, so it must not share its code.

``sinch_simulator`` re-derives the provider's rules from the provider documents
(``sinch_simulator/rules.py``); if it imported them from ``dispatcher``, a wrong rule would be
wrong on both sides and every test would still pass.  Two checks: no source file of the
package names ``dispatcher`` in an import, and importing the package (every module of it) in a
fresh interpreter loads no ``dispatcher`` module.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.support.deploy import ROOT

PACKAGE = ROOT / "sinch_simulator"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _is_dispatcher(module: str) -> bool:
    return module == "dispatcher" or module.startswith("dispatcher.")


def dispatcher_imports(source: str, filename: str = "<string>") -> list[str]:
    """Every import of dispatcher in the source: ``import``, ``from ... import`` and the
    dynamic forms (``importlib.import_module("dispatcher...")``, ``__import__``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if _is_dispatcher(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and _is_dispatcher(node.module):
                found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if (
                name in ("import_module", "__import__")
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and _is_dispatcher(arg.value)
            ):
                found.append(f"{name}({arg.value!r})")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "import dispatcher",
        "import os, dispatcher.campaign.msisdn as n",
        "from dispatcher.campaign import encoding",
        "from dispatcher.campaign.msisdn import normalize",
        "def f():\n    from dispatcher.campaign.encoding import analyze\n",
        "import importlib\nimportlib.import_module('dispatcher.campaign.template')",
        "__import__('dispatcher')",
    ],
)
def test_the_scan_finds_an_import_of_dispatcher(source: str) -> None:
    """The scan below must be able to fail: each of these forms is caught."""
    assert dispatcher_imports(source)


def test_the_scan_ignores_what_is_not_an_import_of_dispatcher() -> None:
    src = "import dispatcherx\nfrom . import rules\nx = 'dispatcher'\n# import dispatcher\n"
    assert dispatcher_imports(src) == []


def test_no_simulator_module_imports_dispatcher() -> None:
    assert {p.name for p in SOURCES} >= {"__init__.py", "cli.py", "rules.py", "server.py"}
    offenders = {
        str(p.relative_to(ROOT)): found
        for p in SOURCES
        if (found := dispatcher_imports(p.read_text(encoding="utf-8"), str(p)))
    }
    assert offenders == {}


def test_importing_the_simulator_loads_no_dispatcher_module() -> None:
    """In a fresh interpreter: the package, its CLI and every other module of it."""
    probe = (
        "import sinch_simulator, sinch_simulator.cli, sys; "
        "assert not any(m == 'dispatcher' or m.startswith('dispatcher.') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.split('.')[0] == 'dispatcher')\n"
        "import importlib, pkgutil\n"
        "mods = [m.name for m in pkgutil.walk_packages(sinch_simulator.__path__, 'sinch_simulator.')"
        " if m.name != 'sinch_simulator.__main__']\n"
        "for m in mods: importlib.import_module(m)\n"
        "assert not any(m == 'dispatcher' or m.startswith('dispatcher.') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.split('.')[0] == 'dispatcher')\n"
        "assert sinch_simulator.__file__.startswith(sys.argv[1]), sinch_simulator.__file__\n"
        "print(len(mods))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(PACKAGE)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(SOURCES) - 2  # all but __init__ and __main__
