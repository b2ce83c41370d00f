"""The dead-letter queue as an operator uses it: `dispatcher dlq list|show|replay|purge`.

Dead letters are made by a real worker from real refusals of the simulator; replays are sent
by that worker again; every command runs as a real CLI process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.errors import NotFound
from sinch_simulator import Simulator
from tests.support.deploy import ROOT, Deployment, wait_until
from tests.support.numbers import mobiles

PLAN = "dlq"
FIELDS = {
    "id", "plan", "campaign_id", "batch_id", "recipients", "status", "code", "text", "reason",
    "attempts", "first_attempt_at", "last_attempt_at",
}  # fmt: skip


def run(dep: Deployment, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *args],
        env=dep.env, cwd=ROOT, capture_output=True, text=True, timeout=120, input=stdin,
    )  # fmt: skip
    for token in (v for k, v in dep.env.items() if k.endswith("_TOKEN")):
        assert token not in out.stdout + out.stderr
    return out


def ok_json(dep: Deployment, *args: str) -> Any:
    out = run(dep, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_dlq_list_show_replay_purge(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    dep = deploy([(PLAN, 1000, {"batch_size": 5})])
    d = Dispatcher(dep.settings, r)
    numbers = mobiles(12, 1)
    sim.faults.plan_errors = {PLAN: (403, "unknown_campaign")}
    cid = d.enqueue(
        Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=["+" + n for n in numbers])
    )
    dep.start_worker()
    wait_until(lambda: d.status(cid).state == "done", 30, "the refused campaign to be done")

    # ---- list: the contract's fields, oldest first, recipients without '+', no token
    entries = ok_json(dep, "dlq", "list")
    assert [set(e) for e in entries] == [FIELDS] * 3
    assert [e["recipients"] for e in entries] == [numbers[0:5], numbers[5:10], numbers[10:12]]
    for e in entries:
        assert (e["plan"], e["campaign_id"], e["status"], e["code"], e["reason"]) == (
            PLAN, cid, 403, "unknown_campaign", "permanent",
        )  # fmt: skip
        assert e["attempts"] == 1 and "forced by the simulator" in e["text"]
        assert e["batch_id"].startswith(cid)
        for at in ("first_attempt_at", "last_attempt_at"):
            datetime.fromisoformat(e[at].replace("Z", "+00:00"))
    assert ok_json(dep, "dlq", "list", "--plan", PLAN) == entries
    assert ok_json(dep, "dlq", "list", "--plan", "no-such-plan") == []
    human = run(dep, "dlq", "list")
    assert human.returncode == 0 and all(e["id"] in human.stdout for e in entries)
    st = ok_json(dep, "status", cid)
    assert (st["state"], st["sent"], st["dead_lettered"], st["pending"]) == ("done", 0, 12, 0)

    # ---- show
    first, second, third = entries
    assert ok_json(dep, "dlq", "show", first["id"]) == first
    shown = run(dep, "dlq", "show", first["id"])
    assert shown.returncode == 0 and " ".join(numbers[0:5]) in shown.stdout
    missing = run(dep, "dlq", "show", "d-no-such-entry")
    assert missing.returncode == 2 and "no dead letter" in missing.stderr

    # ---- replay one entry twice: sent once
    sim.faults.plan_errors = {}
    assert ok_json(dep, "dlq", "replay", first["id"]) == {"replayed": 1, "recipients": 5}
    again = run(dep, "dlq", "replay", first["id"], "--json")
    assert again.returncode == 2 and "no dead letter" in again.stderr
    wait_until(lambda: len(sim.accepted_recipients(PLAN)) >= 5, 30, "the replay to be sent")
    assert [e["id"] for e in ok_json(dep, "dlq", "list")] == [second["id"], third["id"]]

    # ---- replay the rest of the plan
    assert ok_json(dep, "dlq", "replay", "--plan", PLAN) == {"replayed": 2, "recipients": 7}
    wait_until(lambda: d.status(cid).sent == 12, 30, "the plan's replays to be sent")
    assert sim.accepted_recipients(PLAN) == numbers  # once each, in their order
    st = ok_json(dep, "status", cid)
    assert (st["state"], st["sent"], st["dead_lettered"], st["pending"]) == ("done", 12, 0, 0)
    assert ok_json(dep, "dlq", "list") == []
    assert run(dep, "dlq", "replay").returncode == 2  # neither an id nor --plan

    # ---- purge: asks first; 'n' deletes nothing; --yes does not ask
    sim.faults.plan_errors = {PLAN: (400, "syntax_invalid_json")}
    more = mobiles(8, 2)
    cid2 = d.enqueue(
        Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=["+" + n for n in more])
    )
    wait_until(lambda: d.status(cid2).state == "done", 30, "the second refused campaign")
    a, b = ok_json(dep, "dlq", "list")
    refused = run(dep, "dlq", "purge", a["id"], stdin="n\n")
    assert refused.returncode == 1 and "Delete dead letter" in refused.stderr
    assert ok_json(dep, "dlq", "list") == [a, b]
    refused_plan = run(dep, "dlq", "purge", "--plan", PLAN, stdin="n\n")
    assert refused_plan.returncode == 1
    assert ok_json(dep, "dlq", "list") == [a, b]
    assert ok_json(dep, "dlq", "purge", a["id"], "--yes") == {"purged": 1, "recipients": 5}
    assert ok_json(dep, "dlq", "list") == [b]
    confirmed = run(dep, "dlq", "purge", "--plan", PLAN, "--json", stdin="y\n")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "Delete all dead letters of plan dlq?" in confirmed.stderr
    assert json.loads(confirmed.stdout) == {"purged": 1, "recipients": 3}  # stdout: JSON only
    assert ok_json(dep, "dlq", "list") == []
    # Purged recipients are neither sent nor counted as pending: the campaign stays done.
    assert d.status(cid2).state == "done" and not set(more) & set(sim.accepted_recipients(PLAN))
    assert "s3cr3t" not in dep.log_text()


@pytest.mark.slow
def test_python_api_and_concurrent_replays_send_once(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    """Dispatcher.dead_letters/dead_letter/replay/purge; eight racing replays of one entry."""
    dep = deploy([(PLAN, 1000, {"batch_size": 4})])
    d = Dispatcher(dep.settings, r)
    numbers = mobiles(8, 3)
    sim.faults.illegal_numbers = set(numbers)  # every recipient refused: 8 one-recipient entries
    cid = d.enqueue(
        Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=["+" + n for n in numbers])
    )
    dep.start_worker()
    wait_until(lambda: d.status(cid).state == "done", 30, "isolation of 8 refused recipients")
    dead = d.dead_letters()
    assert sorted(x for e in dead for x in e.recipients) == sorted(numbers)
    assert d.dead_letters(PLAN) == dead and d.dead_letter(dead[0].id) == dead[0]
    with pytest.raises(NotFound):
        d.dead_letter("nope")

    sim.faults.illegal_numbers = set()
    results: list[tuple[int, int]] = []

    def replay() -> None:
        try:
            results.append(d.replay(dead[0].id))
        except NotFound:
            results.append((0, 0))

    threads = [threading.Thread(target=replay) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [(0, 0)] * 7 + [(1, 1)]
    assert d.purge(dead[1].id) == (1, 1)
    with pytest.raises(NotFound):
        d.purge(dead[1].id)
    assert d.replay(plan=PLAN) == (6, 6) and d.replay(plan=PLAN) == (0, 0)
    assert d.dead_letters() == [] and d.purge(plan=PLAN) == (0, 0)
    wait_until(lambda: d.status(cid).sent == 7, 30, "seven replays to be sent")
    accepted = sim.accepted_recipients(PLAN)
    assert sorted(accepted) == sorted(set(numbers) - set(dead[1].recipients))
    st = d.status(cid)  # the purged recipient stays counted as dead-lettered
    assert (st.sent, st.dead_lettered, st.pending, st.state) == (7, 1, 0, "done")


@pytest.mark.slow
def test_a_replay_after_the_campaigns_expire_at_is_expired_not_sent(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    """A dead letter keeps its campaign's `expire_at` when replayed: replayed past it, its
    recipients count as expired and nothing reaches the provider."""
    dep = deploy([(PLAN, 1000, {"batch_size": 4})])
    d = Dispatcher(dep.settings, r)
    numbers = mobiles(4, 5)
    sim.faults.plan_errors = {PLAN: (403, "unknown_campaign")}
    expires = int(time.time()) + 3
    expire_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    cid = d.enqueue(
        Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=["+" + n for n in numbers],
                 expire_at=expire_at)
    )  # fmt: skip
    dep.start_worker()
    wait_until(lambda: d.status(cid).dead_lettered == 4, 30, "the refused batch dead-lettered")
    sim.faults.plan_errors = {}
    wait_until(lambda: time.time() > expires + 1, 10, "expire_at to pass")
    assert d.replay(plan=PLAN) == (1, 4)
    wait_until(lambda: d.status(cid).expired == 4, 30, "the replay to be dropped as expired")
    st = d.status(cid)
    assert (st.sent, st.dead_lettered, st.expired, st.pending, st.state) == (0, 0, 4, 0, "done")
    assert sim.accepted_recipients(PLAN) == []
