"""The deployment as managed Redis runs it: TLS only, ACL users with the minimal rules of
docs/operations.md, ``user default off``; the passwords reach no output, log, metric or text.

The rules are read from the documentation, so the page and the test cannot drift apart: a
command the dispatcher or kombu needs and the page forgot shows up as a refusal in ``ACL LOG``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.config import Settings
from dispatcher.errors import DispatcherError
from sinch_simulator import Simulator
from tests.support.acl import documented_acl
from tests.support.checks import assert_fifo, assert_no_secrets, metrics_text
from tests.support.deploy import ROOT, Deployment, wait_until
from tests.support.numbers import mobiles
from tests.support.tlsredis import TlsRedis, tls_support

pytestmark = pytest.mark.slow


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[TlsRedis, dict[str, str]]]:
    why = tls_support()
    if why:
        pytest.skip(why)
    rules = documented_acl()
    # Characters that need quoting in a URL, so the test also proves they are quoted right.
    passwords = {u: f"pw-{u}-{secrets.token_hex(6)}+/%" for u in rules}
    passwords["admin"] = "pw-admin-" + secrets.token_hex(6)
    users = [rule.replace(">PASSWORD", ">" + passwords[u]) for u, rule in rules.items()]
    users.append(f"admin on >{passwords['admin']} ~* &* +@all")  # the test's own inspection
    server = TlsRedis(tmp_path / "tls-redis", users)
    try:
        server.wait("admin", passwords["admin"])
        yield server, passwords
    finally:
        server.stop()


def test_tls_and_minimal_acl_users_run_the_whole_path_and_hide_the_passwords(
    deploy: Callable[..., Deployment],
    sim: Simulator,
    tls_redis: tuple[TlsRedis, dict[str, str]],
) -> None:
    server, pw = tls_redis
    state_url = server.url("dispatcher", pw["dispatcher"])
    broker_url = server.url("celery", pw["celery"])
    admin = redis.Redis.from_url(server.url("admin", pw["admin"]))
    # The default user is off: an anonymous client over TLS gets nowhere.
    anonymous = redis.Redis(port=server.port, ssl=True, ssl_ca_certs=str(server.ca))
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        anonymous.ping()
    anonymous.close()

    dep = deploy([("tls-a", 100, {"batch_size": 10})], redis_url=state_url)
    dep.env["DISPATCH_BROKER_URL"] = broker_url
    settings = Settings.load(dep.config, env=dep.env)
    assert settings.redis_url == state_url and settings.broker_url == broker_url
    d = Dispatcher(settings)  # builds its client from the rediss:// URL, as a user's code does
    numbers = mobiles(300, seed=14)
    cid = d.enqueue(
        Campaign(plan="tls-a", sender="Acme", body="Hi", recipients=["+" + n for n in numbers])
    )
    admin.acl_log_reset()
    dep.start_worker(concurrency=2, as_users_run_it=True)
    try:
        wait_until(lambda: d.status(cid).state == "done", 90, "the campaign to finish over TLS")
    except AssertionError as exc:
        refusals = [(e.get("username"), e.get("object"), e.get("reason")) for e in admin.acl_log()]
        raise AssertionError(f"{exc}; ACL refusals: {refusals}; {dep.log_text()[-1500:]}") from None
    assert_fifo(sim, "tls-a", numbers)

    out = dep.cli("status", cid, "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert (st["state"], st["sent"], st["pending"]) == ("done", 300, 0)
    scrape = metrics_text(dep)
    assert 'dispatcher_recipients_sent_total{plan="tls-a"} 300.0' in scrape
    assert "dispatcher_redis_up 1.0" in scrape

    refused = admin.acl_log()
    assert refused == [], f"the documented ACL rules refused: {refused}"

    # A wrong password, from the API and the CLI: one line, and no password in it.
    texts: list[str] = [repr(settings), str(settings)]
    bad_url = server.url("dispatcher", pw["dispatcher"] + "-wrong")
    wrong_env = {**dep.env, "DISPATCH_REDIS_URL": bad_url}
    with pytest.raises(DispatcherError) as refused_pw:
        Dispatcher(Settings.load(dep.config, env=wrong_env)).plans()
    texts += [str(refused_pw.value), repr(refused_pw.value)]
    bad = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "status", cid],
        env=wrong_env, cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    texts.append(bad.stdout + bad.stderr)

    dep.stop_all()
    # The scan finds the URLs' passwords itself (tokens_of); the admin's is added here.
    seen = assert_no_secrets(dep, admin, texts, also=[pw["admin"]])
    assert all(seen.values()), seen
    admin.close()
    d.close()
