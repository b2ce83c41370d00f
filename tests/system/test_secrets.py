"""Guarantee 6: API tokens appear in no log line, metric, DLQ entry, CLI output or exception text.

``assert_no_secrets`` is the check; the storm (test_storm.py) and the wrong-token run
(test_circuit.py) end with it, and the test here drives every path that handles a token
(a wrong token and its circuit, refusals into the DLQ, 5xx, dropped connections and lookups,
an unreachable provider, bad configuration, an unreachable Redis) and then looks everywhere.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.config import Settings
from dispatcher.devtools.localredis import free_port
from dispatcher.errors import ConfigError, LookupFailed
from dispatcher.sinch.client import SinchClient
from sinch_simulator import Simulator
from tests.support.checks import assert_no_secrets
from tests.support.deploy import ROOT, Deployment, wait_until
from tests.support.numbers import mobiles


@pytest.mark.slow
def test_no_token_anywhere(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy(
        [("sec-ok", 500, {"batch_size": 20}), ("sec-wrong", 500, {"batch_size": 20})],
        callbacks=True,
    )
    right = dep.env["SEC_WRONG_TOKEN"]
    wrong = "tok-wrong-b3arer-9f8e7d6c"
    dep.env["SEC_WRONG_TOKEN"] = wrong
    d = Dispatcher(dep.settings, r)
    ok_numbers = mobiles(200, 1)
    sim.faults.update(
        error_rate=0.2, drop_rate=0.1, illegal_numbers=[ok_numbers[5], ok_numbers[150]]
    )
    ok = d.enqueue(
        Campaign(plan="sec-ok", sender="Acme", body="Hi", recipients=["+" + n for n in ok_numbers])
    )
    bad = d.enqueue(
        Campaign(
            plan="sec-wrong", sender="Acme", body="Hi", recipients=["+" + n for n in mobiles(50, 2)]
        )
    )
    dep.start_worker(concurrency=2)
    wait_until(lambda: d.status(ok).state == "done", 60, "the healthy plan to finish")
    wait_until(lambda: d.status(bad).state == "paused", 30, "the wrong token's circuit to open")
    assert len(d.dead_letters("sec-ok")) == 2

    # Exception texts and reprs of everything that holds a token.
    texts: list[str] = []
    settings = dep.settings
    texts += [repr(settings), str(settings.plans), repr(settings.plans["sec-ok"])]
    client = SinchClient(timeout_s=2)
    try:
        resp = client.send_batch(settings.plans["sec-wrong"], b'{"to":["+46700000000"],"body":"x"}')
        texts.append(repr(resp))
        with pytest.raises(LookupFailed) as lookup:
            client.find_batch(settings.plans["sec-wrong"], "ref", datetime.now(UTC))
        texts += [str(lookup.value), repr(lookup.value)]
        unreachable = dataclasses.replace(
            settings.plans["sec-ok"], base_url=f"http://127.0.0.1:{free_port()}"
        )
        texts.append(repr(client.send_batch(unreachable, b"{}")))
        with pytest.raises(LookupFailed) as lookup:
            client.find_batch(unreachable, "ref", datetime.now(UTC))
        texts.append(str(lookup.value))
    finally:
        client.close()
    with pytest.raises(ConfigError) as config:  # a missing token names the variable only
        Settings.load(dep.config, env={k: v for k, v in dep.env.items() if k != "SEC_OK_TOKEN"})
    texts.append(str(config.value))
    assert "SEC_OK_TOKEN" in str(config.value)
    # A worker that cannot start: one line, no traceback, no token.
    broken = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "--concurrency", "1"],
        env={**dep.env, "SEC_OK_TOKEN": ""}, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert broken.returncode == 2, broken.stderr
    assert "Traceback" not in broken.stderr
    (line,) = broken.stderr.strip().splitlines()
    assert line.startswith(f"{dep.config}: ") and "SEC_OK_TOKEN" in line, line
    texts.append(broken.stdout + broken.stderr)
    # The CLI with an unreachable Redis whose URL carries a password.
    no_redis = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "plans"],
        env={**dep.env, "DISPATCH_REDIS_URL": f"redis://:{right}@127.0.0.1:{free_port()}/0"},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert no_redis.returncode == 1 and "cannot reach Redis" in no_redis.stderr
    texts.append(no_redis.stdout + no_redis.stderr)

    seen = assert_no_secrets(dep, r, texts, also=[right, wrong])
    assert all(seen.values()), seen
    assert "circuit open after 401" in dep.log_text()
