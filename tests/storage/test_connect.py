"""One place turns a URL into a client; a cluster state needs its own broker (celery #2852)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from dispatcher.config import Settings, redacted_url
from dispatcher.errors import ConfigError, DispatcherError, RedisUnavailable
from dispatcher.storage.connect import connect, is_cluster, seeds
from tests.support.deploy import ROOT

PLAN = '[plans.p]\nbase_url = "http://127.0.0.1:1"\ntoken_env = "T"\nrate = 5\n'


def test_cluster_url_forms_parse_into_seed_nodes() -> None:
    assert seeds("redis+cluster://10.0.0.1:7000,10.0.0.2:7001") == [
        ("10.0.0.1", 7000),
        ("10.0.0.2", 7001),
    ]
    assert seeds("rediss+cluster://u:p%40ss@h:6380/0?ssl_ca_certs=/ca.pem") == [("h", 6380)]
    with pytest.raises(ConfigError) as bad:
        seeds("redis+cluster://u:s3cr3t-pass@h1:7000,h2")
    assert "h2" in str(bad.value) and "s3cr3t" not in str(bad.value)


def test_redacted_url_drops_credentials_of_every_form() -> None:
    assert redacted_url("rediss+cluster://u:s3cr3t@h1:7000,h2:7001/0?ssl_ca_certs=/x") == (
        "rediss+cluster://h1:7000,h2:7001/0"
    )
    assert redacted_url("rediss://u:s3cr3t@h:6380/1?ssl_ca_certs=/x") == "rediss://h:6380/1"


def test_plain_urls_give_a_plain_client(redis_server: object) -> None:
    client = connect("redis://127.0.0.1:1/0")
    assert isinstance(client, redis.Redis) and not is_cluster(client)
    client.close()


def test_an_unreachable_cluster_is_a_dispatcher_error_without_the_password(
    tmp_path: Path,
) -> None:
    from dispatcher.devtools.localredis import free_port

    port = free_port()
    url = f"redis+cluster://u:s3cr3t-pass@127.0.0.1:{port}"
    with pytest.raises(RedisUnavailable) as exc:
        connect(url, socket_connect_timeout=1)
    assert isinstance(exc.value, DispatcherError) and isinstance(exc.value, redis.ConnectionError)
    assert "s3cr3t" not in str(exc.value) + repr(exc.value)
    cfg = tmp_path / "d.toml"
    cfg.write_text(f'redis_url = "{url}"\nbroker_url = "redis://127.0.0.1:{port}/0"\n' + PLAN)
    out = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "plans"],
        env={"DISPATCH_CONFIG": str(cfg), "PATH": "/usr/bin:/bin"},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert f"cannot reach Redis at redis+cluster://127.0.0.1:{port}" in line, line
    assert "s3cr3t" not in out.stdout + out.stderr


def test_a_cluster_state_without_an_explicit_broker_is_one_config_line(tmp_path: Path) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text('redis_url = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"\n' + PLAN)
    with pytest.raises(ConfigError) as exc:
        Settings.load(cfg, env={"T": "t"})
    (line,) = exc.value.problems
    assert line.startswith(f"{cfg}: broker_url: required when redis_url is a Redis Cluster")
    ok = Settings.load(cfg, env={"T": "t", "DISPATCH_BROKER_URL": "redis://127.0.0.1:6390/0"})
    assert ok.broker_url == "redis://127.0.0.1:6390/0"
    env = {"DISPATCH_CONFIG": str(cfg), "T": "t", "PATH": "/usr/bin:/bin"}
    for argv in (["-m", "dispatcher.cli", "plans"], ["-m", "celery", "-A", "workers", "worker"]):
        out = subprocess.run(
            [sys.executable, *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 2, (argv, out.stderr)
        (err,) = out.stderr.strip().splitlines()
        assert "broker_url: required when redis_url is a Redis Cluster" in err, err
