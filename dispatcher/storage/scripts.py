"""The Lua scripts in ``lua/``, registered once per Redis client and called by SHA.

A script may pull in a function another script defines (``--@include bucket_take`` pulls the
block between ``--@function`` and ``--@end`` of bucket.lua), so the bucket's arithmetic exists
once and the standalone limiter and the sender's take step cannot drift apart.
"""

from __future__ import annotations

import re
import threading
import weakref
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

_NAMES = (
    "bucket", "take", "commit", "hold", "split", "lease", "release", "schedule", "claim",
    "replay", "purge",
)  # fmt: skip
_INCLUDE = re.compile(r"^--@include (\w+)\s*$", re.M)
_FUNCTION = re.compile(r"--@function\n(.*?)--@end", re.S)


@cache
def _raw(name: str) -> str:
    return (
        resources.files("dispatcher").joinpath("storage", "lua", f"{name}.lua").read_text("utf-8")
    )


@cache
def source(name: str) -> str:
    """A script's text with its includes expanded (a function's dependencies are included
    before it by the script that uses it)."""
    text = _raw(name)

    def include(m: re.Match[str]) -> str:
        fn = m.group(1)
        for other in _NAMES:
            for block in _FUNCTION.finditer(_raw(other)):
                if f"local function {fn}(" in block.group(1):
                    return block.group(1)
        raise LookupError(f"lua/{name}.lua includes unknown function {fn}")

    return _INCLUDE.sub(include, text)


class Scripts:
    """Registered scripts for one client: ``scripts.take(keys=[...], args=[...])``."""

    bucket: Script
    take: Script
    commit: Script
    hold: Script
    split: Script
    lease: Script
    release: Script
    schedule: Script
    claim: Script
    replay: Script
    purge: Script

    def __init__(self, client: redis.Redis) -> None:
        for name in _NAMES:
            setattr(self, name, client.register_script(source(name)))


_lock = threading.Lock()
_registry: weakref.WeakKeyDictionary[Any, Scripts] = weakref.WeakKeyDictionary()


def for_client(client: redis.Redis) -> Scripts:
    with _lock:
        scripts = _registry.get(client)
        if scripts is None:
            scripts = _registry[client] = Scripts(client)
        return scripts
