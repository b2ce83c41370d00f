"""Scraping and parsing /metrics, and starting exporters and worker hosts that serve it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from dispatcher import Campaign, Dispatcher
from dispatcher.devtools.localredis import free_port
from tests.support.deploy import ROOT, Deployment, wait_until

Sample = tuple[str, frozenset[tuple[str, str]]]


def parse(text: str) -> dict[Sample, float]:
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def pick(samples: dict[Sample, float], name: str, **labels: str) -> dict[Sample, float]:
    want = set(labels.items())
    return {k: v for k, v in samples.items() if k[0] == name and want <= k[1]}


def total(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return sum(pick(samples, name, **labels).values())


def one(samples: dict[Sample, float], name: str, **labels: str) -> float:
    found = pick(samples, name, **labels)
    assert len(found) == 1, f"expected one {name}{labels}, found {sorted(found)}"
    return next(iter(found.values()))


def by(samples: dict[Sample, float], name: str, label: str, **labels: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (_, lbls), v in pick(samples, name, **labels).items():
        key = dict(lbls).get(label, "")
        out[key] = out.get(key, 0.0) + v
    return out


def get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def scrape(port: int) -> tuple[str, dict[Sample, float]]:
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    return text, parse(text)


def start_exporter(env: dict[str, str], log_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``dispatcher metrics`` as an operator starts it, on a free port, ready to scrape."""
    port = free_port()
    log = log_dir / f"exporter-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dispatcher.cli", "metrics", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"dispatcher metrics exited: {log.read_text(errors='replace')}")
        try:
            return get(f"http://127.0.0.1:{port}/metrics", timeout=2)[0] == 200
        except OSError:
            return False

    wait_until(ready, 30, "dispatcher metrics to serve")
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_worker_host(
    dep: Deployment,
    *,
    concurrency: int,
    metrics_port: int,
    multiproc_dir: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """``celery -A workers worker`` like conftest's, plus its metrics port (and pool options).

    Registered with the deployment, so its teardown stops it.
    """
    env = {**dep.env, "DISPATCH_WORKER_METRICS_PORT": str(metrics_port)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if multiproc_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    log = dep.config.parent / f"worker-{len(dep.logs)}.log"
    dep.logs.append(log)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "workers", "worker",
                "--concurrency", str(concurrency), "--pool", "prefork", "--loglevel", "INFO",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--hostname", f"w{len(dep.logs)}@%h", *extra_args,
            ],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    dep.procs.append(proc)
    return proc


def wait_worker_metrics(proc: subprocess.Popen[bytes], port: int, dep: Deployment) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited:\n{dep.log_text()[-4000:]}")
        try:
            return get(f"http://127.0.0.1:{port}/metrics", timeout=2)[0] == 200
        except OSError:
            return False

    wait_until(ready, 60, f"the worker host's metrics server on port {port}")


def enqueue(d: Dispatcher, plan: str, numbers: list[str]) -> str:
    return str(
        d.enqueue(
            Campaign(plan=plan, sender="Acme", body="Hello", recipients=["+" + x for x in numbers])
        )
    )


def all_done(d: Dispatcher, ids: list[str]) -> Callable[[], bool]:
    return lambda: all(d.status(c).state == "done" for c in ids)


def histogram_counts(text: str, metric: str) -> dict[str, float]:
    """Observations per plan in a histogram, from a scrape."""
    return by(parse(text), f"{metric}_count", "plan")


def per_file_counts(directory: Path, metric: str, scratch: Path) -> dict[str, dict[str, float]]:
    """Observations per plan in each pool process's own file (pid -> plan -> count)."""
    out: dict[str, dict[str, float]] = {}
    for f in sorted(directory.glob("histogram_*.db")):
        one_dir = scratch / f.stem
        one_dir.mkdir(parents=True)
        shutil.copy(f, one_dir / f.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(one_dir))  # type: ignore[no-untyped-call]
        out[f.stem.rsplit("_", 1)[1]] = histogram_counts(generate_latest(registry).decode(), metric)
    return out
