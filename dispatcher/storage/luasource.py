"""The text of the Lua scripts in ``lua/``.

A script pulls in shared fragments with ``--@include lib/<name>.lua`` (the fencing check, the
clock, the bucket's arithmetic, the take step), so each exists once and the standalone limiter,
the take step and the commit that takes the next batch cannot drift apart.  A fragment is
included once per script, before the first line that needs it, even when two fragments both
include it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_INCLUDE = re.compile(r"^--@include (lib/\w+\.lua)\s*$", re.M)


@cache
def raw(path: str) -> str:
    """A file of ``lua/`` as stored, includes not expanded."""
    return resources.files("dispatcher.storage").joinpath("lua", path).read_text("utf-8")


@cache
def source(name: str) -> str:
    """A script's text with its includes expanded, each fragment once."""
    seen: set[str] = set()

    def expand(path: str) -> str:
        def include(m: re.Match[str]) -> str:
            lib = m.group(1)
            if lib in seen:
                return ""
            seen.add(lib)
            try:
                return expand(lib)
            except FileNotFoundError:
                raise LookupError(f"lua/{path} includes unknown file {lib}") from None

        return _INCLUDE.sub(include, raw(path))

    return expand(f"{name}.lua")
