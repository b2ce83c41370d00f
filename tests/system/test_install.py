"""Install the way users do: a wheel, a fresh venv, no extras, nothing from this checkout.

Every earlier green run had ``packaging`` only because pytest brought it along, so a plain
``pip install .`` gave a worker that died at start (kombu's Redis transport imports it) and no
test could see it.  These tests build the wheel, install it alone into a new virtualenv, and run
the installed ``celery`` and ``dispatcher`` commands from a folder outside the checkout, against
a real redis-server and the installed simulator over real HTTP.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatcher.devtools.localredis import LocalRedis, free_port
from tests.support.deploy import ROOT, wait_until

pytestmark = pytest.mark.slow

RABBITMQ = ("127.0.0.1", 5672)


@dataclass(frozen=True)
class Installed:
    """A virtualenv holding only the wheel and its runtime dependencies."""

    venv: Path
    wheel: Path
    home: Path  # a folder outside the checkout to run everything from

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self, **extra: str) -> dict[str, str]:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DISPATCH_", "PYTEST_", "PYTHON", "VIRTUAL_ENV", "PROMETHEUS_"))
        }
        base["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{base.get('PATH', '')}"
        return {**base, **extra}

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.bin(args[0]), *args[1:]], env=env or self.env(), cwd=self.home,
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip


def _check(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    dist = base / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)]
    _check(subprocess.run(build, capture_output=True, text=True, timeout=300))
    (wheel,) = dist.glob("sms_dispatcher-*.whl")
    venv = base / "venv"
    _check(
        subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    )
    install = [
        str(venv / "bin" / "pip"),
        "install",
        "-q",
        "--disable-pip-version-check",
        str(wheel),
    ]
    _check(subprocess.run(install, capture_output=True, text=True, timeout=600))
    home = base / "home"
    home.mkdir()
    return Installed(venv, wheel, home)


def test_the_venv_holds_no_dev_tools_and_imports_nothing_from_the_checkout(
    installed: Installed,
) -> None:
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps({'dispatcher': u.find_spec('dispatcher').origin, "
        "'workers': u.find_spec('workers').origin, "
        "'sinch_simulator': u.find_spec('sinch_simulator').origin, "
        "'dev': [m for m in ('pytest', 'hypothesis', 'mypy', 'limits') if u.find_spec(m)]}))"
    )
    found = json.loads(_check(installed.run("python", "-c", probe)))
    assert found["dev"] == [], "the plain install must not depend on dev or bench extras"
    for mod in ("dispatcher", "workers", "sinch_simulator"):
        assert str(installed.venv) in found[mod], f"{mod} imported from {found[mod]}"
        assert str(ROOT) not in found[mod]


def test_the_wheel_carries_every_file_the_code_loads(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    needed = [p.relative_to(ROOT).as_posix() for p in (ROOT / "dispatcher").rglob("*.lua")]
    assert needed, "the package's Lua scripts were not found"
    assert [n for n in needed if n not in names] == []
    assert "dispatcher/py.typed" in names
    # The simulator is a top-level package of its own in the same wheel, every module of it.
    simulator = [p.relative_to(ROOT).as_posix() for p in (ROOT / "sinch_simulator").rglob("*.py")]
    assert {"sinch_simulator/__init__.py", "sinch_simulator/__main__.py"} <= set(simulator)
    assert [n for n in [*simulator, "sinch_simulator/py.typed"] if n not in names] == []
    assert not [n for n in names if n.startswith("dispatcher/simulator")]


def test_the_installed_simulator_has_one_command_line(installed: Installed) -> None:
    """``python -m sinch_simulator`` and ``dispatcher simulator`` are the same parser."""
    by_module = _check(installed.run("python", "-m", "sinch_simulator", "--help"))
    by_cli = _check(installed.run("dispatcher", "simulator", "--help"))
    assert by_module.startswith("usage: python -m sinch_simulator ")
    assert by_cli.startswith("usage: dispatcher simulator ")
    assert by_cli.split("\noptions:", 1)[1] == by_module.split("\noptions:", 1)[1]
    bad = installed.run("dispatcher", "simulator", "--plan", "a:s3cr3t:fast")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad
    assert "s3cr3t" not in bad.stderr


@contextmanager
def _serve_simulator(installed: Installed, plan: str, token: str, rate: int) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [installed.bin("dispatcher"), "simulator", "--port", str(port), "--plan", f"{plan}:{token}:{rate}"],
        env=installed.env(), cwd=installed.home, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers("127.0.0.1", port) or proc.poll() is not None, 30, "simulator")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def private_redis() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_installed_worker_sends_a_campaign_exactly_once_in_order(
    installed: Installed, private_redis: LocalRedis, broker: str, tmp_path: Path
) -> None:
    """The README's install, config and ``celery -A workers worker``, with either broker."""
    extra: dict[str, str] = {}
    if broker == "amqp":
        if not _answers(*RABBITMQ):
            pytest.skip("no RabbitMQ answers on 127.0.0.1:5672")
        extra["DISPATCH_BROKER_URL"] = "amqp://guest:guest@127.0.0.1:5672//"
    # A plan name of its own, so drains left on a shared broker by other runs are not ours.
    plan = f"inst-{broker}-{os.getpid()}-{free_port()}"
    token = "tok-install-s3cr3t"
    numbers = [f"4670{i:07d}" for i in range(1_000_003, 1_000_003 + 7 * 350, 7)]
    people = tmp_path / "people.csv"
    with people.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["to", "name"])
        w.writerows(("+" + n, f"n{i}") for i, n in enumerate(numbers))
    with _serve_simulator(installed, plan, token, 400) as sim:
        cfg = tmp_path / "dispatch.toml"
        cfg.write_text(
            f'redis_url = "{private_redis.url}"\n\n[plans.{plan}]\nbase_url = "{sim}"\n'
            f'token_env = "PLAN_TOKEN"\nrate = 200\nbatch_size = 50\n'
        )
        env = installed.env(
            DISPATCH_CONFIG=str(cfg), PLAN_TOKEN=token, DISPATCH_WORKER_METRICS_PORT="0", **extra
        )
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [
                    installed.bin("celery"), "-A", "workers", "worker", "--concurrency", "2",
                    "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", "--hostname", f"install-{broker}@%h",
                ],
                env=env, cwd=installed.home, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        try:
            wait_until(
                lambda: "ready" in log.read_text(errors="replace") or worker.poll() is not None,
                60,
                "the installed worker to start",
            )
            assert worker.poll() is None, log.read_text(errors="replace")
            enqueue = [
                "dispatcher", "enqueue", "--plan", plan, "--from", "Acme",
                "--body", "Hi ${name}", "--recipients", str(people), "--json",
            ]  # fmt: skip
            out_json = json.loads(_check(installed.run(*enqueue, env=env)))
            assert out_json["recipients"] == len(numbers) and out_json["invalid"] == []
            cid = out_json["campaign_id"]

            def done() -> bool:
                st = json.loads(
                    _check(installed.run("dispatcher", "status", cid, "--json", env=env))
                )
                return bool(st["state"] == "done")

            wait_until(done, 90, "the campaign to be done")
            accepted = _get_json(f"{sim}/_sim/accepted?plan={plan}")
            assert accepted == numbers, "each recipient exactly once, in enqueue order"
            assert worker.poll() is None, "the worker must still be running"
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text
        assert token not in text


def test_installed_preview_metrics_and_demo_run(
    installed: Installed, private_redis: LocalRedis, tmp_path: Path
) -> None:
    preview = json.loads(
        _check(installed.run("dispatcher", "preview", "--body", "Grüße 👋", "--json"))
    )
    assert preview == {"encoding": "UCS-2", "characters": 8, "parts": 1}

    cfg = tmp_path / "dispatch.toml"
    cfg.write_text(
        f'redis_url = "{private_redis.url}"\n\n[plans.m1]\nbase_url = "http://127.0.0.1:9"\n'
        'token_env = "M1_TOKEN"\nrate = 10\n'
    )
    port = free_port()
    exporter = subprocess.Popen(
        [installed.bin("dispatcher"), "metrics", "--port", str(port), "--host", "127.0.0.1", "--config", str(cfg)],
        env=installed.env(), cwd=installed.home, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(
            lambda: _answers("127.0.0.1", port) or exporter.poll() is not None, 30, "metrics"
        )
        assert exporter.poll() is None, exporter.stderr.read().decode() if exporter.stderr else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
        assert "dispatcher_redis_up 1.0" in body
        assert 'dispatcher_rate_limit_per_second{plan="m1"} 10.0' in body
    finally:
        exporter.terminate()
        exporter.wait(10)

    demo = installed.run("dispatcher", "demo", "--scale", "0.1", timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "nothing left behind" in demo.stdout
