"""dispatcher.campaign stays pure: no Redis, no HTTP, no processes, no garbage-collector switch.

Enqueue-time work runs inside whoever calls ``Dispatcher.enqueue`` (a web server, a Celery
task, a notebook), so it must not reach for the network or change the caller's process; and
the CLI's ``preview`` runs it with no deployment at all.  The scan reads the source (an import
hidden in a function or behind ``importlib`` counts too); the subprocess checks what importing
and running it actually does.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dispatcher" / "campaign"
SOURCES = sorted(PACKAGE.glob("*.py"))

# Whole modules whose use means I/O or a process-level side effect.
FORBIDDEN = {
    "redis", "httpx", "celery", "kombu", "socket", "subprocess", "multiprocessing",
    "concurrent", "threading", "_thread", "signal", "gc", "os", "importlib",
}  # fmt: skip
ALLOWED_DISPATCHER = ("dispatcher.errors", "dispatcher.models", "dispatcher.sinch.limits")


def _allowed_dispatcher(module: str) -> bool:
    return module.startswith("dispatcher.campaign") or module in ALLOWED_DISPATCHER


def offending_imports(source: str, filename: str = "<source>") -> list[str]:
    """Every import (and ``os.fork``-like attribute use) that breaks the rule, by name."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside dispatcher.campaign by construction
                continue
            base = node.module or ""
            # ``from base import name``: name may be a submodule, so either may be the allowed one.
            names = [f"{base}.{alias.name}" for alias in node.names]
            if base.split(".")[0] != "dispatcher":
                modules = [base]
            elif not _allowed_dispatcher(base):
                found += [n for n in names if not _allowed_dispatcher(n)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "__import__":
                found.append("__import__()")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in {"fork", "forkpty", "system", "kill"}
        ):
            found.append(f"os.{node.attr}")
        for module in modules:
            top = module.split(".")[0]
            if top in FORBIDDEN or (
                top == "dispatcher" and module != "dispatcher" and not _allowed_dispatcher(module)
            ):
                found.append(module)
    return sorted(set(found))


@pytest.mark.parametrize(
    "source",
    [
        "import redis",
        "import os",
        "from os import fork",
        "def f():\n    import gc\n    gc.disable()\n",
        "import multiprocessing.pool",
        "from dispatcher import store",
        "from dispatcher.sinch import client",
        "from dispatcher.storage.keys import lane",
        "from dispatcher.sending import sender",
        "import importlib\nimportlib.import_module('redis')",
        "__import__('httpx')",
        "x.os.fork()\nos.fork()",
    ],
)
def test_the_scan_can_fail(source: str) -> None:
    assert offending_imports(source)


def test_the_scan_allows_the_campaign_dependencies() -> None:
    src = (
        "import re\nimport phonenumbers\nfrom dispatcher.errors import CampaignError\n"
        "from dispatcher.models import InvalidRecipient\nfrom dispatcher.sinch.limits import "
        "MAX_EXPIRY\nfrom dispatcher.campaign.msisdn import check\nfrom . import template\n"
    )
    assert offending_imports(src) == []


def test_no_campaign_module_imports_io_or_process_machinery() -> None:
    assert {p.name for p in SOURCES} >= {"prepare.py", "msisdn.py", "recipients.py"}
    offenders = {
        p.name: found
        for p in SOURCES
        if (found := offending_imports(p.read_text(encoding="utf-8"), str(p)))
    }
    assert offenders == {}


def test_no_campaign_module_is_over_500_lines() -> None:
    long = {p.name: n for p in SOURCES if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_the_package_loads_no_io_library() -> None:
    """Every module of the package, in a fresh interpreter."""
    names = [f"dispatcher.campaign.{p.stem}" for p in SOURCES if p.stem != "__init__"]
    loaded = _run(
        f"""
        import importlib, sys
        import dispatcher.campaign
        for name in {names!r}:
            importlib.import_module(name)
        heavy = ("redis", "httpx", "celery", "kombu", "dispatcher.store", "dispatcher.sending.drain",
                 "dispatcher.sinch.client", "dispatcher.parallel", "dispatcher.api")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy))
        """
    )
    assert loaded == "[]"


def test_prepare_of_a_large_list_leaves_the_process_as_it_was() -> None:
    """Above the size at which it used to fork (200,000): no child, no thread, gc still on.

    Forks and spawns are seen by an audit hook (``os.fork``, ``os.posix_spawn``,
    ``subprocess.Popen`` are audited events), and a child that ran and was reaped would show
    in ``os.times()``'s children figures.
    """
    report = _run(
        """
        import gc, os, sys, threading, multiprocessing
        events = []
        sys.addaudithook(lambda name, args: events.append(name) if name in (
            "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system",
            "subprocess.Popen", "_thread.start_new_thread") else None)
        from dispatcher.campaign.prepare import prepare
        recipients = [f"+4670{i:07d}" for i in range(250_000)] + ["n/a"]
        names = {r: "Ann" for r in recipients[::2]}
        names["default"] = "there"
        before = os.times()
        result = prepare("Hi ${name}", recipients, {"name": names})
        after = os.times()
        assert len(result.recipients) == 250_000, len(result.recipients)
        children = (after.children_user - before.children_user
                    + after.children_system - before.children_system)
        print(gc.isenabled(), events, children, threading.active_count(),
              multiprocessing.active_children())
        """
    )
    assert report == "True [] 0.0 1 []"
