"""Bad input: one line on stderr, exit code 2, and nothing written to Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.support.deploy import Deployment


def _redis_is_empty(r: redis.Redis) -> bool:
    return r.dbsize() == 0


@pytest.fixture
def dep(deploy: Callable[..., Deployment]) -> Deployment:
    return deploy([("acme", 100)])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--plan", "nope", "--from", "Acme", "--body", "Hi", "--to", "+46701234567"], "unknown plan 'nope'"),
        (["--plan", "acme", "--from", "Acme", "--body", "Hi"], "no recipients"),
        (["--plan", "acme", "--from", "Acme", "--to", "+46701234567"], "--body"),
        (["--plan", "acme", "--from", "Acme", "--body", "   ", "--to", "+46701234567"], "body"),
        (["--plan", "acme", "--from", "Acme", "--body", "Hi", "--recipients", "/nonexistent/x.csv"], "cannot read recipients file"),
        (["--plan", "acme", "--from", "Acme", "--body", "x" * 2001, "--to", "+46701234567"], "2001"),
        (["--plan", "acme", "--from", "ThisSenderIsTooLong", "--body", "Hi", "--to", "+46701234567"], "sender"),
        (["--plan", "acme", "--from", "Acme", "--body", "Hi", "--to", "garbage", "--strict"], "invalid"),
    ],
)  # fmt: skip
def test_bad_enqueue_is_one_line_exit_2_and_writes_nothing(
    dep: Deployment, r: redis.Redis, args: list[str], needle: str
) -> None:
    out = dep.cli("enqueue", *args)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert needle.lower() in lines[0].lower()
    assert "Traceback" not in out.stderr
    assert _redis_is_empty(r)


def test_recipients_file_without_to_column(dep: Deployment, r: redis.Redis, tmp_path: Path) -> None:
    f = tmp_path / "people.csv"
    f.write_text("phone,name\n+46701234567,Ann\n")
    out = dep.cli(
        "enqueue", "--plan", "acme", "--from", "Acme", "--body", "Hi", "--recipients", str(f)
    )
    assert out.returncode == 2
    assert "no 'to' column" in out.stderr
    assert _redis_is_empty(r)


def test_csv_enqueue_reports_invalid_and_duplicates(
    dep: Deployment, r: redis.Redis, tmp_path: Path
) -> None:
    f = tmp_path / "people.csv"
    f.write_text(
        "to,name\n+46 70-123 45 67,Ann\n0046701234568,Bob\n+46701234567,Ann again\nnot-a-number,X\n"
    )
    out = dep.cli(
        "enqueue", "--plan", "acme", "--from", "Acme", "--body", "Hi ${name}",
        "--recipients", str(f), "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert set(res) >= {"campaign_id", "recipients", "batches", "duplicates", "invalid"}
    assert res["recipients"] == 2 and res["duplicates"] == 1 and res["batches"] == 1
    assert [i["to"] for i in res["invalid"]] == ["not-a-number"]
    st = json.loads(dep.cli("status", res["campaign_id"], "--json").stdout)
    assert {k: st[k] for k in ("campaign_id", "plan", "state", "recipients", "sent")} == {
        "campaign_id": res["campaign_id"], "plan": "acme", "state": "queued", "recipients": 2,
        "sent": 0,
    }  # fmt: skip
    assert (st["dead_lettered"], st["canceled"], st["expired"], st["suppressed"]) == (0, 0, 0, 0)
    assert st["pending"] == 2 and st["send_at"] is None and st["paused_by"] is None
    assert st["created_at"].endswith("Z") and st["eta_s"] is not None
    assert set(st["delivery"]) == {
        "delivered", "failed", "expired", "rejected", "deleted", "aborted", "cancelled", "unknown",
    }  # fmt: skip


def test_status_of_unknown_campaign(dep: Deployment) -> None:
    out = dep.cli("status", "c-nope")
    assert out.returncode == 2
    assert "no campaign" in out.stderr


def test_unreachable_redis_is_a_runtime_failure(dep: Deployment, tmp_path: Path) -> None:
    env_url = "redis://127.0.0.1:1/0"
    dep.env["DISPATCH_REDIS_URL"] = env_url
    out = dep.cli("status", "c-x")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("dispatcher: cannot reach Redis at redis://127.0.0.1:1/0")


def test_bad_config_file_names_file_and_key(dep: Deployment, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[plans.a]\nregion = "mars"\ntoken_env = "A_TOKEN"\nrate = 0\n'
        '[plans.b]\nbase_url = "http://x"\ntoken_env = "B_TOKEN"\nrate = 10\nbatch_size = 20\n'
    )
    out = dep.cli("--help")
    assert out.returncode == 0
    out = dep.cli("status", "c-x", "--config", str(cfg))
    assert out.returncode == 2
    text = out.stderr
    assert f"{cfg}: plans.a.region: unknown region 'mars'" in text
    assert f"{cfg}: plans.b.batch_size: 20 is more than burst 10" in text
    assert "Traceback" not in text


def test_preview_needs_no_config_and_no_redis(dep: Deployment) -> None:
    dep.env.pop("DISPATCH_CONFIG")
    dep.env["DISPATCH_REDIS_URL"] = "redis://127.0.0.1:1/0"
    out = dep.cli("preview", "--body", "Hello {world}", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"encoding": "GSM-7", "characters": 15, "parts": 1}
