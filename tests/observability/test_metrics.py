"""Metrics, checked against what the provider saw.

``dispatcher metrics`` (a real subprocess on a real port) must serve, per plan and per status
and code, exactly the counts that the simulator logged, after real Celery workers on two
"hosts" (two worker commands, prefork, concurrency 2) did the work; and each worker host's
own server must add up the latency histograms of all its pool processes, including children
that already exited.  Plus the scrape-time behaviour: an unreachable Redis is
``dispatcher_redis_up 0`` (not a 500), labels stay bounded, and no token is ever served.

The helpers here are shared with test_observability.py.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import generate_latest

from dispatcher import Dispatcher
from dispatcher.config import Settings
from dispatcher.devtools.localredis import free_port
from dispatcher.observability import procmetrics
from dispatcher.observability.exporter import DeploymentCollector, registry_for
from dispatcher.storage import keys
from sinch_simulator import Simulator
from tests.support.deploy import ROOT, Deployment, wait_until
from tests.support.metrics import (
    all_done,
    by,
    enqueue,
    histogram_counts,
    one,
    parse,
    per_file_counts,
    pick,
    scrape,
    start_exporter,
    start_worker_host,
    stop,
    wait_worker_metrics,
)
from tests.support.numbers import mobiles

# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def exporters() -> Iterator[Callable[[dict[str, str], Path], int]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], log_dir: Path) -> int:
        proc, port = start_exporter(env, log_dir)
        started.append(proc)
        return port

    yield start
    for p in started:
        stop(p)


# ---------------------------------------------------------------------------- scrape time
def test_collector_translates_the_stats_hash_with_bounded_labels(r: redis.Redis) -> None:
    """What the Lua scripts wrote becomes the contract's families; odd codes stay bounded."""
    settings = Settings.from_mapping(
        {"plans": {
            "acme": {"base_url": "http://x", "token_env": "ACME_T", "rate": 30},
            "quiet": {"base_url": "http://x", "token_env": "QUIET_T", "rate": 5, "burst": 10},
        }},
        env={"ACME_T": "tok-acme-s3cr3t", "QUIET_T": "tok-quiet-s3cr3t"},
    )  # fmt: skip
    weird = "x" * 200 + '"}\n{evil'
    r.hset(keys.stats("acme"), mapping={
        "sent": 120, "enqueued": 130, "pending": 7, "batches:accepted": 4,
        "batches:dead_lettered": 1, "resp:201:": 4, "resp:429:too_many_requests": 2,
        "resp:503:": 3, "resp:timeout:": 1, "resp::": 1, f"resp:400:{weird}": 1,
        "dlq:illegal_number_type": 1, "dlq_pending": 1, "dead_lettered": 1, "retries": 4,
        "rate_waits": 2, "circuit_opened": 1, "lookups:found": 1, "lookups:missing": 0,
        "replayed": 3, "purged": 2,
    })  # fmt: skip
    r.hset(keys.state("acme"), mapping={"eff_rate": "7.500", "circuit": "open"})
    r.sadd(keys.PLANS, "acme", "gone")  # "gone": queued once, no longer configured
    r.hset(keys.state("gone"), "eff_rate", "2.000")
    registry = registry_for(settings, r)
    text = generate_latest(registry).decode()
    s = parse(text)

    assert one(s, "dispatcher_redis_up") == 1
    assert one(s, "dispatcher_recipients_sent_total", plan="acme") == 120
    assert one(s, "dispatcher_recipients_sent_total", plan="quiet") == 0  # exists from the start
    assert one(s, "dispatcher_recipients_enqueued_total", plan="acme") == 130
    assert by(s, "dispatcher_batches_total", "outcome", plan="acme") == {
        "accepted": 4,
        "dead_lettered": 1,
    }
    resp = {
        (dict(k[1])["status"], dict(k[1])["code"]): v
        for k, v in pick(s, "dispatcher_provider_responses_total", plan="acme").items()
    }
    long_code = ("x" * 200 + "____evil")[:64]
    assert resp == {
        ("201", ""): 4, ("429", "too_many_requests"): 2, ("503", ""): 3, ("timeout", ""): 1,
        ("none", ""): 1, ("400", long_code): 1,
    }  # fmt: skip
    assert by(s, "dispatcher_dead_lettered_recipients_total", "code", plan="acme") == {
        "illegal_number_type": 1
    }
    assert one(s, "dispatcher_retries_total", plan="acme") == 4
    assert one(s, "dispatcher_rate_waits_total", plan="acme") == 2
    assert one(s, "dispatcher_circuit_opened_total", plan="acme") == 1
    assert by(s, "dispatcher_lookups_total", "result", plan="acme") == {
        "found": 1,
        "missing": 0,
        "failed": 0,
    }
    assert one(s, "dispatcher_dead_letter_replayed_recipients_total", plan="acme") == 3
    assert one(s, "dispatcher_dead_letter_purged_recipients_total", plan="acme") == 2
    assert one(s, "dispatcher_queue_recipients", plan="acme") == 7
    assert one(s, "dispatcher_dead_letter_recipients", plan="acme") == 1
    assert one(s, "dispatcher_rate_limit_per_second", plan="acme") == 30
    assert one(s, "dispatcher_rate_limit_burst", plan="quiet") == 10
    assert one(s, "dispatcher_effective_rate_per_second", plan="acme") == 7.5
    assert one(s, "dispatcher_effective_rate_per_second", plan="quiet") == 5
    assert one(s, "dispatcher_circuit_open", plan="acme") == 1
    assert one(s, "dispatcher_circuit_open", plan="quiet") == 0
    # A plan known to Redis but not configured: its counters, no configured limit.
    assert one(s, "dispatcher_recipients_sent_total", plan="gone") == 0
    assert one(s, "dispatcher_effective_rate_per_second", plan="gone") == 2
    assert not pick(s, "dispatcher_rate_limit_per_second", plan="gone")
    # Empty lane: the oldest age is 0, not absent.
    assert one(s, "dispatcher_queue_oldest_age_seconds", plan="quiet") == 0
    # Every sample but redis_up carries `plan`; no label value is long or multi-line.
    for (name, labels), _ in s.items():
        if name != "dispatcher_redis_up":
            assert "plan" in dict(labels), name
        for _, value in labels:
            assert len(value) <= 64 and "\n" not in value and '"' not in value
    assert "s3cr3t" not in text


def test_oldest_age_follows_the_head_batch_in_redis_time(r: redis.Redis) -> None:
    settings = Settings.from_mapping(
        {"plans": {"acme": {"base_url": "http://x", "token_env": "T", "rate": 30}}}, env={"T": "t"}
    )
    sec, _ = r.time()
    r.rpush(keys.lane("acme"), "b1", "b2")
    r.hset(keys.batch("acme", "b1"), mapping={"n": 3, "enq_at": (int(sec) - 90) * 1000})
    r.hset(keys.batch("acme", "b2"), mapping={"n": 3, "enq_at": int(sec) * 1000})
    r.hset(keys.stats("acme"), "pending", 6)
    s = parse(generate_latest(registry_for(settings, r)).decode())
    assert 90 <= one(s, "dispatcher_queue_oldest_age_seconds", plan="acme") < 100
    assert one(s, "dispatcher_queue_recipients", plan="acme") == 6


def _exporter_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    cfg = tmp_path / "dispatch.toml"
    cfg.write_text(
        f'redis_url = "{redis_url}"\n'
        '[plans.acme]\nbase_url = "http://127.0.0.1:9"\ntoken_env = "ACME_T"\nrate = 30\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISPATCH_", "PYTEST_"))}
    env.update(DISPATCH_CONFIG=str(cfg), ACME_T="tok-acme-s3cr3t")
    return env


def test_unreachable_redis_is_redis_up_0_not_an_error(tmp_path: Path) -> None:
    """A real ``dispatcher metrics`` pointed at a port where no Redis listens; it also stops
    cleanly on SIGTERM (what ``docker compose stop`` sends)."""
    env = _exporter_env(tmp_path, f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    proc, port = start_exporter(env, tmp_path)
    try:
        text, s = scrape(port)
        assert one(s, "dispatcher_redis_up") == 0
        assert one(s, "dispatcher_rate_limit_per_second", plan="acme") == 30  # from the config
        # No invented zeros: a counter that drops to 0 would read as a reset.
        assert not pick(s, "dispatcher_recipients_sent_total")
        assert "s3cr3t" not in text and "hunter2" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    logs = "".join(p.read_text() for p in tmp_path.glob("exporter-*.log"))
    assert "hunter2" not in logs and "s3cr3t" not in logs
    assert "cannot read Redis" in logs and "Traceback" not in logs


def test_busy_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env = _exporter_env(tmp_path, "redis://127.0.0.1:1/0")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "dispatcher.cli", "metrics", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"dispatcher: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_collector_never_raises_on_redis_errors() -> None:
    settings = Settings.from_mapping(
        {"plans": {"acme": {"base_url": "http://x", "token_env": "T", "rate": 30}}}, env={"T": "t"}
    )
    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    collector = DeploymentCollector(settings, client)
    names = [m.name for m in collector.collect()]
    assert "dispatcher_redis_up" in names and "dispatcher_recipients_sent" not in names


def test_sweep_removes_only_directories_of_dead_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILLed workers leave their private directory; the next worker removes those whose
    lock nobody holds, and nothing a live or starting process may still use."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old = time.time() - 2 * procmetrics.ORPHAN_AGE_S

    def private(name: str, *, lock: bool = True, age: float = old) -> Path:
        d = tmp_path / f"{procmetrics.PRIVATE_PREFIX}{name}"
        d.mkdir()
        (d / "histogram_1.db").write_bytes(b"x")
        if lock:
            (d / ".owner.lock").touch()
            os.utime(d / ".owner.lock", (age, age))
        return d

    dead, live, starting, unclaimed, mine = (
        private("dead"), private("live"), private("starting", age=time.time()),
        private("unclaimed", lock=False), private("mine"),
    )  # fmt: skip
    other = tmp_path / "someone-elses"
    other.mkdir()
    (other / ".owner.lock").touch()
    os.utime(other / ".owner.lock", (old, old))
    with open(live / ".owner.lock", "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live worker's lock
        assert procmetrics.sweep_orphans(keep=mine) == 1
    assert not dead.exists()
    assert all(d.exists() for d in (live, starting, unclaimed, mine, other))


# ---------------------------------------------------------------------------- real runs
@pytest.mark.slow
def test_exported_counts_equal_what_the_provider_saw(
    deploy: Callable[..., Deployment],
    sim: Simulator,
    r: redis.Redis,
    tmp_path: Path,
    exporters: Callable[[dict[str, str], Path], int],
) -> None:
    """Two worker hosts (prefork, concurrency 2) and faults of every kind: 201, injected 500
    and 503 (retries), forced 429s (rate waits) and 403 illegal_number_type (isolation, dead
    letters).  The exporter's counters equal the simulator's log per plan, status and code;
    the hosts' histograms together count every POST the provider received."""
    plans = {"alpha": (200, 1000, 2), "bravo": (300, 1200, 1)}  # rate, recipients, illegal
    dep = deploy([(p, rate) for p, (rate, _, _) in plans.items()])
    d = Dispatcher(dep.settings, r)
    illegal: dict[str, set[str]] = {}
    ids: list[str] = []
    for i, (plan, (_, n, bad)) in enumerate(plans.items()):
        numbers = mobiles(n, seed=10 + i)
        illegal[plan] = set(numbers[n // 3 : n // 3 + bad])
        half = n // 2
        ids += [enqueue(d, plan, numbers[:half]), enqueue(d, plan, numbers[half:])]
    sim.faults.update(
        error_rate=0.05,
        illegal_numbers=sorted(set().union(*illegal.values())),
        throttle={"alpha": [2, 0], "bravo": [3, 0]},
    )
    ports = [free_port(), free_port()]
    workers = [start_worker_host(dep, concurrency=2, metrics_port=p) for p in ports]
    wait_until(all_done(d, ids), 180, "all campaigns done")
    exporter_port = exporters(dep.env, tmp_path)
    text, s = scrape(exporter_port)

    assert one(s, "dispatcher_redis_up") == 1
    sim_stats = sim.stats()
    for plan, (rate, n, bad) in plans.items():
        arrivals = sim.arrivals(plan)
        expected = Counter((str(a.status), a.code or "") for a in arrivals)
        got = {
            (dict(k[1])["status"], dict(k[1])["code"]): v
            for k, v in pick(s, "dispatcher_provider_responses_total", plan=plan).items()
        }
        assert got == expected, plan
        assert {st for st, _ in expected} >= {"201", "403", "429"}, f"{plan}: faults not exercised"
        accepted = sim.accepted_recipients(plan)
        assert one(s, "dispatcher_recipients_sent_total", plan=plan) == len(accepted)
        assert len(accepted) == sim_stats[plan]["recipients_accepted"] == n - bad
        assert by(s, "dispatcher_batches_total", "outcome", plan=plan) == {
            "accepted": sim_stats[plan]["batches_accepted"],
            "dead_lettered": bad,
        }
        assert by(s, "dispatcher_dead_lettered_recipients_total", "code", plan=plan) == {
            "illegal_number_type": bad
        }
        assert one(s, "dispatcher_dead_letter_recipients", plan=plan) == bad
        assert one(s, "dispatcher_retries_total", plan=plan) == sum(
            1 for a in arrivals if a.status >= 500
        )
        assert (
            one(s, "dispatcher_rate_waits_total", plan=plan)
            == expected[("429", "too_many_requests")]
        )
        assert one(s, "dispatcher_recipients_enqueued_total", plan=plan) == n
        assert one(s, "dispatcher_queue_recipients", plan=plan) == 0
        assert one(s, "dispatcher_queue_oldest_age_seconds", plan=plan) == 0
        assert one(s, "dispatcher_circuit_open", plan=plan) == 0
        assert one(s, "dispatcher_rate_limit_per_second", plan=plan) == rate
        assert 0 < one(s, "dispatcher_effective_rate_per_second", plan=plan) <= rate

    # Each host serves its own pool's histograms; together they saw every POST once.
    host_texts = [scrape(p)[0] for p in ports]
    for plan in plans:
        posts = sum(
            histogram_counts(t, "dispatcher_request_duration_seconds").get(plan, 0)
            for t in host_texts
        )
        assert posts == len(sim.arrivals(plan)), plan
        waits = sum(
            histogram_counts(t, "dispatcher_token_wait_seconds").get(plan, 0) for t in host_texts
        )
        assert waits > 0, f"{plan}: campaigns larger than the burst must wait for tokens"
    for t in [text, *host_texts]:
        for token_env in ("ALPHA_TOKEN", "BRAVO_TOKEN"):
            assert dep.env[token_env] not in t
    assert all(w.poll() is None for w in workers)


@pytest.mark.slow
def test_worker_host_adds_up_every_pool_process(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis, tmp_path: Path
) -> None:
    """One host, prefork, each child replaced after one task: many processes observe, most of
    them exit before the scrape.  The host's server counts each POST once, across all of
    them, and a restart of the host starts from a clean directory."""
    dep = deploy([("gamma", 400), ("delta", 400)])
    d = Dispatcher(dep.settings, r)
    ids = [enqueue(d, "gamma", mobiles(1600, 1)), enqueue(d, "delta", mobiles(1600, 2))]
    mp_dir = tmp_path / "multiproc"
    stale = mp_dir / "histogram_999999.db"
    mp_dir.mkdir()
    stale.write_bytes(b"left by an earlier run")
    port = free_port()
    worker = start_worker_host(
        dep, concurrency=2, metrics_port=port, multiproc_dir=mp_dir,
        extra_args=("--max-tasks-per-child", "1"),
    )  # fmt: skip
    wait_worker_metrics(worker, port, dep)
    assert not stale.exists(), "files of an earlier run must be wiped at worker start"
    wait_until(all_done(d, ids), 180, "all campaigns done")

    looks = iter(range(1_000_000))

    def observers() -> set[str]:
        scratch = tmp_path / f"look{next(looks)}"
        files = per_file_counts(mp_dir, "dispatcher_request_duration_seconds", scratch)
        return {pid for pid, counts in files.items() if sum(counts.values()) > 0}

    # A drain task may keep its slot through a whole short campaign (sending/slot.py), so few
    # tasks run; a child is replaced once its one task has returned.  Wait for that.
    wait_until(
        lambda: any(not _alive(int(pid)) for pid in observers()), 60,
        "an observing child to exit after its one task",
    )  # fmt: skip
    text, _ = scrape(port)
    served = histogram_counts(text, "dispatcher_request_duration_seconds")
    files = per_file_counts(mp_dir, "dispatcher_request_duration_seconds", tmp_path / "scratch")
    contributing = {pid for pid, counts in files.items() if sum(counts.values()) > 0}
    assert len(contributing) >= 2, f"expected several pool processes to observe, got {files}"
    for plan in ("gamma", "delta"):
        assert served[plan] == sum(c.get(plan, 0) for c in files.values()), plan
        assert served[plan] == len(sim.arrivals(plan)), plan
    assert "s3cr3t" not in text

    # The same host restarted on the same directory: the earlier pool's files are gone.
    dep.kill(worker, signal.SIGTERM)
    worker = start_worker_host(dep, concurrency=2, metrics_port=port, multiproc_dir=mp_dir)
    wait_worker_metrics(worker, port, dep)
    text, _ = scrape(port)
    assert histogram_counts(text, "dispatcher_request_duration_seconds") == {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
