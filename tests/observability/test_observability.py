"""The observability artefacts work as shipped: Prometheus config and alert rules (promtool),
the Grafana dashboard (every panel's query run by a real Prometheus that scraped a real run),
and the compose stack (Compose specification schema, and its wiring: ports, targets, plans,
tokens).

promtool and prometheus come from Debian's ``prometheus`` package (``.ci/run`` installs it);
without them those tests skip and say so.  Docker cannot run here, so compose.yaml is checked
against the Compose specification's JSON schema (vendored in check-jsonschema) and for
consistency with the files it mounts, not started.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher import Dispatcher
from dispatcher.config import Settings
from dispatcher.devtools.localredis import free_port
from sinch_simulator import Simulator, parse_plan
from tests.support.deploy import ROOT, Deployment, wait_until
from tests.support.metrics import (
    all_done,
    enqueue,
    get,
    start_exporter,
    start_worker_host,
    stop,
    wait_worker_metrics,
)
from tests.support.numbers import mobiles

PROM_DIR = ROOT / "config" / "prometheus"
DASHBOARD = ROOT / "config" / "grafana" / "dashboards" / "dispatcher.json"
DATASOURCE = ROOT / "config" / "grafana" / "provisioning" / "datasources" / "datasource.yml"
COMPOSE = ROOT / "compose.yaml"


def yaml_load(path: Path) -> Any:
    yaml = pytest.importorskip(
        "ruamel.yaml", reason="ruamel.yaml comes with check-jsonschema (dev extra)"
    )
    return yaml.YAML(typ="safe").load(path.read_text())


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not on PATH (Debian: apt-get install prometheus; .ci/run does)")
    return path


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------------- Prometheus
def test_prometheus_config_and_rules_pass_promtool() -> None:
    tool = promtool()
    out = run(tool, "check", "config", str(PROM_DIR / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    out = run(tool, "check", "rules", str(PROM_DIR / "alerts.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_alert_rule_unit_tests_pass() -> None:
    out = run(promtool(), "test", "rules", str(PROM_DIR / "alerts_test.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    rules = yaml_load(PROM_DIR / "alerts.yml")
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml_load(PROM_DIR / "alerts_test.yml")
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for t in case.get("alert_rule_test", []):
            (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    assert alerts >= {
        "DispatcherPlanBelowRate", "DispatcherQueueOldestTooOld", "DispatcherCircuitOpen",
        "DispatcherDeadLetterQueueGrowing", "DispatcherProvider5xxRatioHigh",
    }  # fmt: skip
    assert alerts - firing == set(), "alerts without a firing test"
    assert alerts - quiet == set(), "alerts without a not-firing test"


# ---------------------------------------------------------------------------- Grafana
def datasource_uid() -> str:
    ds = yaml_load(DATASOURCE)["datasources"]
    assert len(ds) == 1 and ds[0]["type"] == "prometheus"
    return str(ds[0]["uid"])


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])  # collapsed rows


def panel_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in panels(dash) for t in p.get("targets", [])]


def test_dashboard_uses_the_provisioned_datasource_and_the_plan_variable() -> None:
    uid = datasource_uid()
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["plan"]["datasource"]["uid"] == uid
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in panels(dash))
    for topic in ("recipients/s", "backlog", "oldest", "responses", "retries", "dead letters",
                  "token wait", "latency", "circuit"):  # fmt: skip
        assert topic in titles, topic
    for p in panels(dash):
        if p.get("type") == "row":
            continue
        assert p["datasource"]["uid"] == uid, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid, p["title"]
            if "redis_up" not in t["expr"]:
                assert 'plan=~"$plan"' in t["expr"], (p["title"], t["expr"])
    provider = yaml_load(ROOT / "config/grafana/provisioning/dashboards/dashboards.yml")
    mounted = provider["providers"][0]["options"]["path"]
    compose = yaml_load(COMPOSE)
    assert f"./config/grafana/dashboards:{mounted}:ro" in compose["services"]["grafana"]["volumes"]


def concrete(expr: str, plan: str) -> str:
    """What Grafana sends for one selected plan."""
    return expr.replace("$plan", re.escape(plan)).replace("$__rate_interval", "1m")


class PrometheusServer:
    def __init__(self, binary: str, directory: Path, targets: dict[str, list[int]]) -> None:
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROM_DIR / "alerts.yml", directory / "alerts.yml")
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: "
            f"{json.dumps([f'127.0.0.1:{p}' for p in ports])}\n"
            for job, ports in targets.items()
        )
        (directory / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files:\n  - alerts.yml\nscrape_configs:\n" + jobs
        )
        self.log = directory / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    binary, f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
                ],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log.read_text()}")
            try:
                return get(f"http://127.0.0.1:{self.port}/-/ready", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(ready, 60, "prometheus to be ready")

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = get(url)
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", body
        return data["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def exporter(
    deploy: Callable[..., Deployment], tmp_path: Path
) -> Iterator[Callable[[Deployment], int]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(dep: Deployment) -> int:
        proc, port = start_exporter(dep.env, tmp_path)
        started.append(proc)
        return port

    yield start
    for p in started:
        stop(p)


@pytest.fixture
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("prometheus not on PATH (Debian: apt-get install prometheus; .ci/run does)")
    return path


@pytest.mark.slow
def test_every_dashboard_query_returns_series_from_a_real_run(
    deploy: Callable[..., Deployment],
    sim: Simulator,
    r: redis.Redis,
    tmp_path: Path,
    prometheus_binary: str,
    exporter: Callable[[Deployment], int],
) -> None:
    """Prometheus scrapes ``dispatcher metrics`` and a worker host every second during a run
    with retries and dead letters; then each panel's PromQL, as Grafana would send it for
    one plan, returns series, the plan variable lists the plans, and every alert rule
    evaluates without error against the real series."""
    plans = {"alpha": 300, "bravo": 200}
    dep = deploy(list(plans.items()))
    d = Dispatcher(dep.settings, r)
    exporter_port = exporter(dep)
    worker_port = free_port()
    worker = start_worker_host(dep, concurrency=2, metrics_port=worker_port)
    wait_worker_metrics(worker, worker_port, dep)
    prom = PrometheusServer(
        prometheus_binary,
        tmp_path / "prometheus",
        {"dispatcher": [exporter_port], "dispatcher-workers": [worker_port]},
    )
    try:
        # Prometheus starts scraping new targets a few seconds after it is ready; a rate needs
        # samples from before the run ends.
        wait_until(lambda: len(prom.query("up == 1")) == 2, 60, "prometheus to scrape both targets")
        numbers = {p: mobiles(900, seed=20 + i) for i, p in enumerate(plans)}
        sim.faults.update(error_rate=0.05, illegal_numbers=[numbers[p][100] for p in plans])
        ids = [enqueue(d, p, numbers[p]) for p in plans]
        wait_until(all_done(d, ids), 180, "all campaigns done")
        sent = {p: len(sim.accepted_recipients(p)) for p in plans}

        def scraped_final_counts() -> bool:
            got = {
                s["metric"]["plan"]: float(s["value"][1])
                for s in prom.query("dispatcher_recipients_sent_total")
            }
            return all(got.get(p) == sent[p] for p in plans)

        wait_until(scraped_final_counts, 60, "prometheus to scrape the final counts")
        wait_until(
            lambda: bool(prom.query("dispatcher_request_duration_seconds_count")),
            60, "prometheus to scrape the worker host",
        )  # fmt: skip

        empty = []
        for title, expr in panel_queries():
            for plan in plans:
                q = concrete(expr, plan)
                if not prom.query(q):
                    empty.append(f"{title} [{plan}]: {q}")
        assert not empty, "panel queries without series:\n" + "\n".join(empty)

        values = prom.api("label/plan/values", **{"match[]": "dispatcher_queue_recipients"})
        assert set(plans) <= set(values)

        def rules_evaluated() -> bool:
            groups = prom.api("rules")["groups"]
            rules = [rule for g in groups for rule in g["rules"]]
            return bool(rules) and all(
                not rule.get("lastEvaluation", "0001").startswith("0001") for rule in rules
            )

        wait_until(rules_evaluated, 30, "the alert rules to be evaluated")
        for g in prom.api("rules")["groups"]:
            for rule in g["rules"]:
                assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        targets = prom.api("targets")["activeTargets"]
        assert {t["health"] for t in targets} == {"up"}, targets
    finally:
        prom.stop()


# ---------------------------------------------------------------------------- compose
def test_compose_file_follows_the_compose_specification() -> None:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is in the dev extra")
    out = run(
        sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
        str(COMPOSE),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the defaults."""
    return _VAR.sub(lambda m: m.group(2) or "", value)


def test_compose_stack_is_wired_consistently() -> None:
    """Ports, targets, mounts, plans and tokens agree across compose.yaml, the Prometheus
    config, the Grafana provisioning and config/dispatch.compose.toml."""
    compose = yaml_load(COMPOSE)
    services = compose["services"]
    assert {
        "redis",
        "simulator",
        "worker-1",
        "worker-2",
        "metrics",
        "prometheus",
        "grafana",
    } <= set(services)

    redis_svc = services["redis"]
    assert redis_svc["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert any(v.endswith(":/data") and not v.startswith(".") for v in redis_svc["volumes"])
    assert redis_svc["volumes"][0].split(":")[0] in compose["volumes"]

    workers = [s for name, s in services.items() if name.startswith("worker-")]
    assert len(workers) == 2
    for w in workers:
        assert w["command"][:4] == ["celery", "-A", "workers", "worker"]
        assert w["build"]["context"] == "."
    assert (ROOT / "Dockerfile").exists()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    # The image installs as tests/test_install.py does: the wheel alone, into a fresh venv.
    assert "pip wheel --no-deps" in dockerfile
    assert "python -m venv /opt/venv && /opt/venv/bin/pip install /dist/*.whl" in dockerfile
    assert "pip install ." not in dockerfile and ".whl[" not in dockerfile

    # Prometheus scrapes exactly the exporter and the worker hosts, on their ports.
    prom = yaml_load(PROM_DIR / "prometheus.yml")
    targets = {
        job["job_name"]: sorted(t for sc in job["static_configs"] for t in sc["targets"])
        for job in prom["scrape_configs"]
    }
    metrics_cmd = services["metrics"]["command"]
    assert metrics_cmd[:2] == ["dispatcher", "metrics"]
    metrics_port = metrics_cmd[metrics_cmd.index("--port") + 1]
    assert targets["dispatcher"] == [f"metrics:{metrics_port}"]
    worker_targets = sorted(
        f"{name}:{s['environment'].get('DISPATCH_WORKER_METRICS_PORT', '9809')}"
        for name, s in services.items()
        if name.startswith("worker-")
    )
    assert targets["dispatcher-workers"] == worker_targets
    assert "./config/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]

    # Every bind mount exists in the repository.
    for name, s in services.items():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert (ROOT / src).exists(), f"{name}: {src}"
    ds = yaml_load(DATASOURCE)["datasources"][0]
    assert ds["url"] == "http://prometheus:9090"

    # The app config: plans on the simulator, tokens from compose's environment.
    env = {k: interpolate(str(v)) for k, v in workers[0]["environment"].items()}
    cfg_path = env["DISPATCH_CONFIG"].replace("/app/", "")
    assert (ROOT / cfg_path).exists()
    raw = tomllib.loads((ROOT / cfg_path).read_text())
    settings = Settings.load(ROOT / cfg_path, env=env)  # fails if a token variable is unset
    assert settings.redis_url == "redis://redis:6379/0"
    sim_cmd = [interpolate(str(a)) for a in services["simulator"]["command"]]
    assert sim_cmd[:2] == ["dispatcher", "simulator"]
    assert sim_cmd[sim_cmd.index("--host") + 1] == "0.0.0.0"
    sim_port = sim_cmd[sim_cmd.index("--port") + 1]
    specs = {
        s.plan_id: s
        for s in (parse_plan(sim_cmd[i + 1]) for i, a in enumerate(sim_cmd) if a == "--plan")
    }
    assert set(specs) == set(settings.plans) == set(raw["plans"])
    for pid, plan in settings.plans.items():
        assert plan.base_url == f"http://simulator:{sim_port}"
        assert plan.token is not None and plan.token.reveal() == specs[pid].token
        assert plan.rate == specs[pid].rate
        assert set(raw["plans"][pid]) & {"token", "api_token"} == set()  # only token_env
