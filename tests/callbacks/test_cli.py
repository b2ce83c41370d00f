"""`dispatcher callbacks --print-urls` and `dispatcher suppress`, run as a user runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import redis

from dispatcher.callbacks.tokens import plan_token
from dispatcher.devtools.localredis import LocalRedis
from tests.support.deploy import ROOT

SECRET = "cli-cb-s3cr3t"


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_print_urls_and_suppress_round_trip(
    tmp_path: Path, redis_server: LocalRedis, r: redis.Redis
) -> None:
    cfg = tmp_path / "dispatch.toml"
    cfg.write_text(
        f'redis_url = "{redis_server.url}"\ncallback_base_url = "https://hooks.example.com/"\n'
        '[plans.acme]\nbase_url = "http://127.0.0.1:1"\ntoken_env = "ACME_T"\nrate = 10\n'
        '[plans.globex]\nbase_url = "http://127.0.0.1:1"\ntoken_env = "GLOBEX_T"\nrate = 10\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env |= {"DISPATCH_CONFIG": str(cfg), "ACME_T": "a", "GLOBEX_T": "g"}
    missing = _run(env, "callbacks", "--print-urls")
    assert missing.returncode == 2 and "DISPATCH_CALLBACK_SECRET" in missing.stderr
    env["DISPATCH_CALLBACK_SECRET"] = SECRET
    out = _run(env, "callbacks", "--print-urls", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [
        {"plan": p, "url": f"https://hooks.example.com/callbacks/{p}/{plan_token(SECRET, p)}"}
        for p in ("acme", "globex")
    ]
    assert SECRET not in out.stdout + out.stderr

    assert _run(env, "suppress", "add", "+46 70-123 45 67", "--plan", "acme").returncode == 0
    stops = tmp_path / "stops.csv"
    stops.write_text("to,name\n+46701234568,Bob\n0046701234569,Cy\n")
    imported = _run(env, "suppress", "import", str(stops), "--plan", "acme", "--json")
    assert json.loads(imported.stdout) == {"added": 2, "given": 2}
    listed = _run(env, "suppress", "list", "--plan", "acme", "--json")
    assert json.loads(listed.stdout) == ["46701234567", "46701234568", "46701234569"]
    assert json.loads(_run(env, "suppress", "list", "--json").stdout) == []  # global: apart
    exported = _run(env, "suppress", "export", "--plan", "acme")
    assert exported.stdout.splitlines() == ["to", "+46701234567", "+46701234568", "+46701234569"]
    removed = _run(env, "suppress", "remove", "46701234568", "--plan", "acme", "--json")
    assert json.loads(removed.stdout) == {"removed": 1, "given": 1}
    bad = _run(env, "suppress", "add", "not-a-number", "--plan", "acme")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    nope = _run(env, "suppress", "add", "+46701234567", "--plan", "nope")
    assert nope.returncode == 2 and "no plan 'nope'" in nope.stderr
    enq = _run(
        env, "enqueue", "--plan", "acme", "--from", "Acme", "--body", "Hi",
        "--to", "+46701234567", "--to", "+46701234570", "--json",
    )  # fmt: skip
    assert enq.returncode == 0, enq.stderr
    assert (json.loads(enq.stdout)["recipients"], json.loads(enq.stdout)["suppressed"]) == (1, 1)


def test_the_receiver_refuses_a_bad_listen_address_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "dispatch.toml"
    cfg.write_text(
        'redis_url = "redis://127.0.0.1:1/0"\ncallback_base_url = "https://hooks.example.com"\n'
        '[plans.acme]\nbase_url = "http://127.0.0.1:1"\ntoken_env = "ACME_T"\nrate = 10\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env |= {"DISPATCH_CONFIG": str(cfg), "ACME_T": "a", "DISPATCH_CALLBACK_SECRET": SECRET}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args, code in [
            (["--port", "99999"], 2),
            (["--port", "8086", "--host", "no-such-host.invalid"], 2),
            (["--port", port, "--host", "127.0.0.1"], 1),
        ]:
            out = _run(env, "callbacks", *args)
            assert out.returncode == code, (args, out.stderr)
            assert len(out.stderr.strip().splitlines()) == 1, out.stderr
            assert "Traceback" not in out.stderr and SECRET not in out.stderr
