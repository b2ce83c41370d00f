"""``dispatcher/storage`` is the only code that knows the Redis layout: these checks keep it so.

Each script is called by one typed method (so its KEYS/ARGV order is spelled in one place),
nothing else registers or evaluates scripts, every script documents its KEYS, ARGV and reply
at its top, and every hash field a script spells is a constant Python reads it by.
"""

from __future__ import annotations

import ast
import re

import pytest

from dispatcher.storage import fields, keys, luasource, scripts
from dispatcher.storage.campaigns import delivery_key
from tests.support.deploy import ROOT

LUA = ROOT / "dispatcher" / "storage" / "lua"
SCRIPTS = sorted(p.stem for p in LUA.glob("*.lua"))
LIBS = sorted(p.relative_to(LUA).as_posix() for p in (LUA / "lib").glob("*.lua"))
SOURCES = [
    p
    for d in ("dispatcher", "workers", "bench", "tests", "sinch_simulator")
    for p in sorted((ROOT / d).rglob("*.py"))
]


def _script_calls() -> dict[str, list[str]]:
    """script name -> the ``Scripts`` methods that run it (``self._run("name", ...)``)."""
    tree = ast.parse((ROOT / "dispatcher" / "storage" / "scripts.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Scripts")
    calls: dict[str, list[str]] = {}
    for fn in cls.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "_run"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                calls.setdefault(str(node.args[0].value), []).append(fn.name)
    return calls


def test_every_script_is_run_by_exactly_one_wrapper_method_of_its_name() -> None:
    assert sorted(scripts._NAMES) == SCRIPTS
    assert _script_calls() == {name: [name] for name in SCRIPTS}


def test_only_the_storage_package_registers_or_evaluates_scripts() -> None:
    forbidden = {"register_script", "evalsha", "evalsha_ro", "eval", "eval_ro", "script_load"}
    found: list[str] = []
    for path in SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("dispatcher/storage/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in forbidden:
                found.append(f"{rel}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "redis.commands"
            ):
                found.append(f"{rel}:{node.lineno} from {node.module}")
            if isinstance(node, ast.Import) and any(
                a.name.startswith("redis.commands") for a in node.names
            ):
                found.append(f"{rel}:{node.lineno} import redis.commands")
    assert found == []


def test_the_send_loop_knows_no_key_or_field_names() -> None:
    src = (ROOT / "dispatcher" / "sending" / "drain.py").read_text()
    assert "storage.keys" not in src and "storage import keys" not in src
    assert "storage.fields" not in src


@pytest.mark.parametrize("path", [f"{s}.lua" for s in SCRIPTS] + LIBS)
def test_every_lua_file_documents_its_keys_argv_and_answer(path: str) -> None:
    header = []
    for line in (LUA / path).read_text().splitlines():
        if not line.startswith("--") or line.startswith("--@"):
            break
        header.append(line)
    text = "\n".join(header)
    assert re.search(r"^-- KEYS", text, re.M), f"{path}: no KEYS in its header"
    assert re.search(r"^-- ARGV|ARGV\[1\]", text, re.M), f"{path}: no ARGV in its header"
    assert re.search(r"^-- (Returns|Defines)", text, re.M), f"{path}: no reply in its header"


@pytest.mark.parametrize("name", SCRIPTS)
def test_includes_resolve_once_each(name: str) -> None:
    src = luasource.source(name)
    assert "--@include" not in src
    for lib in LIBS:
        assert src.count(luasource.raw(lib)) <= 1, lib


# Quoted words in the scripts that are not field names: Redis arguments, reply tags and the
# values ARGV may carry, and string formats.
_NOT_FIELDS = {
    "LT", "LIMIT", "PX", "-inf", "%.6f", "%.3f", "%d", "%d.%s%06d", "",
    "ok", "lost", "moved", "go", "wait", "cooldown", "circuit", "unknown", "oversize", "later",
    "accepted", "dead", "retry", "ratewait", "notfound", "lookup", "set", "lt", "head", "1", "0",
    "ticker", "stopped", "batch ", " is in the lane but has no record", ":",
    "already", "notpaused", "missing", "done", "#", ".", "^[^.]+", "orphaned", "|", "dropped",
    ":ok", ":orphaned",  # suffixes of the cb:<type>:<result> counters
}  # fmt: skip

# Key names the scripts build from the plan's prefix (KEYS: "dsp:{plan}:"), each checked
# against keys.py below, so a renamed key cannot leave a script writing the old name.
_KEY_PARTS = {
    "q:": keys.held("p", "x"), "b:": keys.batch("p", "x"), "c:": keys.campaign("p", "x"),
    "stats": keys.stats("p"), "paused": keys.paused("p"), "sched": keys.scheduled("p"),
    "active": keys.active("p"), "pb:": keys.provider_batch("p", "x"),
    ":pb": keys.provider_batches("p", "x"), ":ctl": keys.campaign("p", "x") + ":ctl",
    ":dr": delivery_key("p", "x"), ":rs": keys.campaign("p", "x") + ":rs",
    ":bs": keys.campaign("p", "x") + ":bs", "supv": keys.suppression_version("p"),
}  # fmt: skip


def test_key_names_built_in_lua_are_the_ones_keys_py_builds() -> None:
    pre = keys.prefix("p")
    for part, name in _KEY_PARTS.items():
        if part.startswith(":"):
            assert name == keys.campaign("p", "x") + part
        elif part.endswith(":"):
            assert name == pre + part + "x"
        else:
            assert name == pre + part


def _field_values() -> set[str]:
    out: set[str] = set()
    for cls in vars(fields).values():
        if isinstance(cls, type):
            for v in vars(cls).values():
                if isinstance(v, str):
                    out.add(v)
                elif isinstance(v, tuple):
                    out.update(x for x in v if isinstance(x, str))
    return out


def test_every_field_a_script_spells_is_a_python_constant() -> None:
    known = _field_values()
    spelled: set[str] = set()
    for path in LUA.rglob("*.lua"):
        code = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
        spelled.update(re.findall(r"'([^']*)'", code))
    unknown = {
        w for w in spelled - _NOT_FIELDS - known - set(_KEY_PARTS) if not w.isupper()
    }  # upper case: Redis commands
    assert unknown == set()
    # ... and the check has teeth: the scripts do spell the fields Python reads.
    assert {"cooldown_until", "probe_at", "eff_rate", "first_at", "resp:", "dlq:"} <= spelled
