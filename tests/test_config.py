"""Configuration: TOML + environment, every problem found at load, tokens never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.config import REGIONS, Secret, Settings, WorkerConfig
from dispatcher.errors import ConfigError


def load(text: str, tmp_path: Path, env: dict[str, str] | None = None, **kw: bool) -> Settings:
    f = tmp_path / "d.toml"
    f.write_text(text)
    return Settings.load(f, env=env or {}, **kw)


def test_defaults_and_region(tmp_path: Path) -> None:
    s = load('[plans.p1]\nregion = "eu"\ntoken_env = "T"\nrate = 30\n', tmp_path, {"T": "tok"})
    p = s.plan("p1")
    assert p.base_url == REGIONS["eu"] == "https://eu.sms.api.sinch.com"
    assert p.batches_url == "https://eu.sms.api.sinch.com/xms/v1/p1/batches"
    assert (p.rate, p.burst, p.batch_size) == (30.0, 30.0, 30)
    assert p.max_in_flight == 1
    assert s.redis_url == s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.metrics_port == 9808


def test_environment_wins(tmp_path: Path) -> None:
    s = load(
        'redis_url = "redis://a:1/0"\n[plans.p]\nbase_url = "http://x"\ntoken_env = "T"\nrate = 5\n',
        tmp_path,
        {"T": "t", "DISPATCH_REDIS_URL": "redis://b:2/0", "DISPATCH_BROKER_URL": "redis://c:3/0"},
    )
    assert s.redis_url == "redis://b:2/0" and s.broker_url == "redis://c:3/0"


def test_small_rate_gets_burst_one_and_batch_size_capped(tmp_path: Path) -> None:
    s = load(
        '[plans.p]\nbase_url = "http://x"\ntoken_env = "T"\nrate = 0.5\n', tmp_path, {"T": "t"}
    )
    assert s.plan("p").burst == 1.0 and s.plan("p").batch_size == 1
    s = load(
        '[plans.p]\nbase_url = "http://x"\ntoken_env = "T"\nrate = 5000\n', tmp_path, {"T": "t"}
    )
    assert s.plan("p").batch_size == 1000


def test_max_in_flight_is_read(tmp_path: Path) -> None:
    s = load(
        '[plans.p]\nbase_url = "http://x"\ntoken_env = "T"\nrate = 5\nmax_in_flight = 4\n',
        tmp_path,
        {"T": "t"},
    )
    assert s.plan("p").max_in_flight == 4
    assert s.plan("p").prefetch_take is True  # the overlapped strict loop is the default


def test_prefetch_take_can_be_turned_off(tmp_path: Path) -> None:
    s = load(
        '[plans.p]\nbase_url = "http://x"\ntoken_env = "T"\nrate = 5\nprefetch_take = false\n',
        tmp_path,
        {"T": "t"},
    )
    assert s.plan("p").prefetch_take is False


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('region = "mars"\ntoken_env = "T"\nrate = 1', "plans.p.region: unknown region 'mars'"),
        ('region = "us"\ntoken_env = "T"\nrate = 0', "plans.p.rate: must be a number"),
        ('region = "us"\ntoken_env = "T"\nrate = 10\nbatch_size = 11', "plans.p.batch_size: 11 is more than burst 10"),
        ('region = "us"\ntoken_env = "T"\nrate = 2000\nbatch_size = 1001', "more than the API's 1000"),
        ('region = "us"\ntoken_env = "MISSING"\nrate = 1', "environment variable MISSING is not set"),
        ('region = "us"\nrate = 1', "plans.p.token_env: required"),
        ('token_env = "T"\nrate = 1', "needs region"),
        ('region = "us"\ntoken_env = "T"\nrate = 1\ntoken = "abc"', "plans.p.token: unknown key"),
        ('region = "us"\ntoken_env = "T"\nrate = 1\nmax_in_flight = 0', "plans.p.max_in_flight: must be a whole number from 1 to 16"),
        ('region = "us"\ntoken_env = "T"\nrate = 1\nmax_in_flight = 17', "plans.p.max_in_flight: must be"),
        ('region = "us"\ntoken_env = "T"\nrate = 1\nmax_in_flight = 2.5', "plans.p.max_in_flight: must be"),
        ('region = "us"\ntoken_env = "T"\nrate = 1\nprefetch_take = 1', "plans.p.prefetch_take: must be true or false"),
    ],
)  # fmt: skip
def test_each_problem_is_one_line_naming_file_and_key(
    tmp_path: Path, body: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(f"[plans.p]\n{body}\n", tmp_path, {"T": "tok"})
    assert any(
        expected in line and str(tmp_path / "d.toml") in line for line in err.value.problems
    ), err.value.problems


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(
            'metrics_port = 0\n[plans.a]\nregion = "x"\ntoken_env = "T"\nrate = 1\n[plans.b]\nregion = "us"\ntoken_env = "T"\nrate = -1\n',
            tmp_path,
            {"T": "t"},
        )
    assert len(err.value.problems) == 3


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        Settings.load(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load("this is = = not toml", tmp_path)


def test_tokens_optional_for_enqueue_side(tmp_path: Path) -> None:
    s = load(
        '[plans.p]\nregion = "us"\ntoken_env = "MISSING"\nrate = 1\n',
        tmp_path,
        require_tokens=False,
    )
    assert s.plan("p").token is None


def test_token_never_printed(tmp_path: Path) -> None:
    s = load(
        '[plans.p]\nregion = "us"\ntoken_env = "T"\nrate = 1\n', tmp_path, {"T": "sup3rs3cret"}
    )
    assert "sup3rs3cret" not in repr(s) and "sup3rs3cret" not in str(s.plan("p"))
    assert Secret("x").reveal() == "x"
    with pytest.raises(ConfigError) as err:
        s.plan("other")
    assert "unknown plan 'other'" in str(err.value) and "sup3rs3cret" not in str(err.value)


PLAN = '[plans.p]\nbase_url = "http://x"\ntoken_env = "T"\nrate = 5\n'


def test_worker_table_sets_the_knobs_and_the_runtime_uses_them(tmp_path: Path) -> None:
    from dispatcher.sending.runtime import Runtime

    s = load(
        "[worker]\nlease_ttl_s = 20\nhttp_timeout_s = 12\nclaim_s = 30\nmax_attempts = 3\n" + PLAN,
        tmp_path,
        {"T": "t"},
    )
    assert (s.worker.lease_ttl_s, s.worker.http_timeout_s, s.worker.claim_s) == (20, 12, 30)
    rt = Runtime(s)
    assert rt.sender.timing.lease_ttl_s == 20
    assert rt.sender.backoff.max_attempts == 3
    assert rt.sender.http.timeout_s == 12
    assert load(PLAN, tmp_path, {"T": "t"}).worker == WorkerConfig()


@pytest.mark.parametrize(
    ("table", "key", "what"),
    [
        ("lease_ttl_s = 11", "worker.lease_ttl_s", "must be >= http_timeout_s + 2 s"),
        ("http_timeout_s = 14", "worker.lease_ttl_s", "14 + 2"),
        ("slice_s = 15", "worker.slice_s", "must be < lease_ttl_s"),
        ("sleep_budget_s = 3", "worker.sleep_budget_s", "must be <= slice_s"),
        ("lead_s = 0.3", "worker.lead_s", "must be < inline_wait_s"),
        ("keep_s = 58", "worker.keep_s", "keep_s + slice_s must be < 60 s"),
        ("queue_max = 0.5", "worker.queue_max", "whole number"),
        (
            "http_connect_timeout_s = 11",
            "worker.http_connect_timeout_s",
            "must be <= http_timeout_s",
        ),
        ("redis_socket_timeout_s = 15", "worker.redis_socket_timeout_s", "must be < lease_ttl_s"),
        ("retry_base_s = 31", "worker.retry_base_s", "must be <= retry_cap_s"),
        ("max_attempts = 2.5", "worker.max_attempts", "whole number"),
        ("claim_s = 0", "worker.claim_s", "must be a number > 0"),
        ('tick_s = "fast"', "worker.tick_s", "must be a number > 0"),
        ("lease_ttl = 20", "worker.lease_ttl", "unknown key"),
    ],
)
def test_worker_invariants_are_checked_at_load(
    tmp_path: Path, table: str, key: str, what: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(f"[worker]\n{table}\n" + PLAN, tmp_path, {"T": "t"})
    lines = str(err.value).splitlines()
    assert len(lines) == 1, lines
    assert f"d.toml: {key}: " in lines[0] and what in lines[0], lines[0]
