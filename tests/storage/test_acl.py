"""Every command a Lua script calls is granted to the documented dispatcher user.

Scripts run under the caller's ACL user, so a command added to a script and not to
docs/operations.md fails only on a deployment with minimal rules.  The TLS system test finds
that too, but after a whole deployment and a 90 s timeout; this finds it in milliseconds and
names the command and the script.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.acl import documented_acl, granted

LUA = Path(__file__).resolve().parents[2] / "dispatcher" / "storage" / "lua"
CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'")


def test_the_documented_dispatcher_user_may_run_every_command_a_script_calls() -> None:
    allowed = granted(documented_acl()["dispatcher"])
    called = {
        (match.group(1).lower(), path.relative_to(LUA).as_posix())
        for path in sorted(LUA.rglob("*.lua"))
        for match in CALL.finditer(path.read_text())
    }
    assert called, f"no redis.call found under {LUA}"
    missing = sorted((cmd, script) for cmd, script in called if cmd not in allowed)
    assert not missing, f"docs/operations.md's dispatcher user lacks: {missing}"
