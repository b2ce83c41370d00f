"""Every answer of the SMS API leads to a deliberate action (dispatcher/sending/policy.py, docs/policy.md).

- decide() and Backoff as units;
- docs/policy.md parsed and compared with RULES and Backoff, so the two cannot drift;
- one test per row of RULES, driven through the simulator's fault switches over real HTTP,
  with real Redis and the real send loop (in process, stepped one batch at a time);
- poison-recipient isolation: 1,000 recipients with 3 refused ones through a real worker, and
  the request bound 2·k·⌈log2 n⌉ + 1.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from dispatcher import Campaign, Dispatcher
from dispatcher.config import Settings
from dispatcher.sending.drain import Sender, Timing
from dispatcher.sending.policy import RULES, Action, Backoff, Rule, decide
from dispatcher.sinch.client import ProviderResponse, SinchClient
from dispatcher.sinch.payload import Body
from dispatcher.storage import keys
from dispatcher.storage.fields import Batch, State
from dispatcher.storage.keys import new_id
from dispatcher.storage.store import Store
from sinch_simulator import Simulator
from tests.support.deploy import ROOT, Deployment, wait_until
from tests.support.numbers import mobiles


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


PLAN = "pol"
BATCH = 10
# Small waits so that a test sees many retries, rate waits and probes in a few seconds.
FAST = Backoff(
    max_attempts=3,
    max_failure_age_s=60.0,
    retry_base_s=0.01,
    retry_cap_s=0.05,
    rate_wait_base_s=0.01,
    rate_wait_cap_s=0.05,
    circuit_base_s=0.3,
    circuit_cap_s=0.6,
)


def isolation_bound(n: int, k: int) -> int:
    return 2 * k * math.ceil(math.log2(n)) + 1


# ============================================================================ units
def resp(status: int | None, code: str = "", **kw: Any) -> ProviderResponse:
    return ProviderResponse(status, code=code, **kw)


@pytest.mark.parametrize(
    ("status", "code", "action", "reason"),
    [
        (200, "", Action.ACCEPT, ""),
        (201, "", Action.ACCEPT, ""),
        (429, "", Action.RATE_WAIT, "rate_wait_expired"),
        (429, "too_many_requests", Action.RATE_WAIT, "rate_wait_expired"),
        (400, "syntax_invalid_parameter_format", Action.ISOLATE, "permanent"),
        (403, "illegal_number_type", Action.ISOLATE, "permanent"),
        (400, "syntax_invalid_json", Action.DEAD, "permanent"),
        (400, "syntax_constraint_violation", Action.DEAD, "permanent"),
        (400, "INVALID_ARGUMENT", Action.DEAD, "permanent"),
        (400, "", Action.DEAD, "permanent"),
        (401, "", Action.CIRCUIT, ""),
        (403, "blocked_account", Action.CIRCUIT, ""),
        (403, "missing_callback_url", Action.CIRCUIT, ""),
        (403, "unknown_group", Action.CIRCUIT, ""),
        (403, "PERMISSION_DENIED", Action.CIRCUIT, ""),
        (403, "unknown_campaign", Action.DEAD, "permanent"),
        (403, "something_new", Action.DEAD, "permanent"),
        (403, "", Action.DEAD, "permanent"),
        (404, "", Action.CIRCUIT, ""),
        (415, "", Action.DEAD, "permanent"),
        (500, "", Action.RETRY, "retries_exhausted"),
        (502, "", Action.RETRY, "retries_exhausted"),
        (503, "", Action.RETRY, "retries_exhausted"),
        (None, "", Action.RETRY, "retries_exhausted"),
        (405, "", Action.DEAD, "permanent"),
        (409, "", Action.DEAD, "permanent"),
        (418, "teapot", Action.DEAD, "permanent"),
        (302, "", Action.DEAD, "permanent"),
    ],
)
def test_decide(status: int | None, code: str, action: Action, reason: str) -> None:
    rule = decide(resp(status, code, error=None if status else "timeout"))
    assert (rule.action, rule.reason) == (action, reason)


def example(rule: Rule) -> ProviderResponse:
    """A response that the rule matches: the first status of its class, its code or a new one."""
    status: int | None
    if rule.status == "none":
        status = None
    elif rule.status == "*":
        status = 405
    elif rule.status.endswith("xx"):
        status = int(rule.status[0]) * 100 + (1 if rule.status[0] == "2" else 0)
    else:
        status = int(rule.status)
    return resp(status, "a_code_nobody_uses" if rule.code == "*" else rule.code)


def test_every_rule_is_reachable_and_the_last_matches_everything() -> None:
    for rule in RULES:
        assert decide(example(rule)) is rule, f"{rule} is shadowed by an earlier rule"
    assert (RULES[-1].status, RULES[-1].code) == ("*", "*")
    for rule in RULES:  # every action that can end in the DLQ names its reason
        if rule.action in (Action.DEAD, Action.ISOLATE, Action.RETRY, Action.RATE_WAIT):
            assert rule.reason, rule
        else:
            assert rule.reason == "", rule


def test_backoff_arithmetic() -> None:
    b = Backoff()
    for failures in range(1, 12):
        delay = b.retry_delay_s(failures)
        assert 0 <= delay <= min(b.retry_cap_s, b.retry_base_s * 2 ** (failures - 1))
    assert not b.retries_exhausted(b.max_attempts - 1, 0)
    assert b.retries_exhausted(b.max_attempts, 0)
    assert not b.retries_exhausted(1, b.max_failure_age_s - 1)
    assert b.retries_exhausted(1, b.max_failure_age_s)
    # Retry-After wins (plus at most 50 ms of jitter); without it, capped exponential backoff.
    for after in (0.0, 1.0, 30.0):
        wait = b.rate_wait_s(resp(429, retry_after_s=after), 1)
        assert after <= wait <= after + 0.05
    for waits in range(1, 12):
        assert 0 <= b.rate_wait_s(resp(429), waits) <= min(b.rate_wait_cap_s, 2 ** (waits - 1))
    probes = [b.circuit_probe_s(p) for p in range(8)]
    assert probes[0] == b.circuit_base_s and probes == sorted(probes)
    assert probes[-1] == b.circuit_cap_s


# ============================================================================ docs/policy.md
DOC = ROOT / "docs" / "policy.md"


def _table_after(text: str, heading: str) -> list[list[str]]:
    """The rows of the first Markdown table after a heading, cells stripped of ` and spaces."""
    start = text.index(heading)
    rows: list[list[str]] = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            cells = [c.strip().strip("`").strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the header


def test_docs_policy_table_matches_rules() -> None:
    rows = _table_after(DOC.read_text("utf-8"), "## The policy table")
    doc = [(r[0], r[1], r[2], "" if r[3] in ("—", "-") else r[3], r[4]) for r in rows]
    code = [(r.status, r.code, r.action.value, r.reason, r.why) for r in RULES]
    assert doc == code


def test_docs_backoff_parameters_match_defaults() -> None:
    rows = _table_after(DOC.read_text("utf-8"), "## Backoff parameters")
    documented = {r[0]: float(r[1]) for r in rows}
    defaults = {f.name: float(getattr(Backoff(), f.name)) for f in dataclasses.fields(Backoff)}
    assert documented == defaults


# ============================================================================ the send loop
class Harness:
    """One plan on the simulator, driven by the real Sender in this process, one step per call."""

    def __init__(
        self,
        dep: Deployment,
        sim: Simulator,
        r: redis.Redis,
        *,
        backoff: Backoff = FAST,
        timeout_s: float = 5.0,
        settings: Settings | None = None,
    ) -> None:
        self.dep, self.sim, self.r = dep, sim, r
        self.settings = settings or dep.settings
        self.http = SinchClient(timeout_s=timeout_s, connect_timeout_s=1.0)
        # slice 0: every drain() does one step (take + send + commit/hold) and returns.
        self.sender = Sender(
            self.settings, r, self.http, backoff=backoff, timing=Timing(slice_s=0.0)
        )
        self.d = Dispatcher(self.settings, r)
        self.enqueued: list[str] = []

    def enqueue(self, numbers: list[str]) -> str:
        self.enqueued += numbers
        return self.d.enqueue(
            Campaign(plan=PLAN, sender="Acme", body="Hello", recipients=["+" + n for n in numbers])
        )

    def enqueue_raw(self, to: list[str]) -> str:
        """A batch written as is, e.g. with a number our own validation would refuse."""
        cid = new_id("c")
        bid = f"{cid}.0"
        doc = {"from": "Acme", "body": "Hello", "delivery_report": "none", "client_reference": bid}
        payload = json.dumps({**doc, "to": to}).encode()
        Store(self.r).write_campaign(
            PLAN, cid, {"recipients": len(to), "batches": 1}, [Body(bid, len(to), payload)]
        )
        self.enqueued += [t.lstrip("+") for t in to]
        return cid

    def step(self) -> str:
        return self.sender.drain(PLAN)

    def run_until(self, pred: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            if self.step() in ("wait", "cooldown", "circuit", "empty"):
                time.sleep(0.01)

    def lane_empty(self) -> bool:
        return self.r.llen(keys.lane(PLAN)) == 0

    def drain_all(self, timeout: float = 30.0) -> None:
        self.run_until(self.lane_empty, "the lane to empty", timeout)

    def circuit_open(self) -> bool:
        return self.r.hget(keys.state(PLAN), State.CIRCUIT) == State.CIRCUIT_OPEN.encode()

    def stats(self) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in self.r.hgetall(keys.stats(PLAN)).items()}

    def dead(self) -> list[Any]:
        return self.d.dead_letters(PLAN)

    def dead_recipients(self) -> list[str]:
        return [x for e in self.dead() for x in e.recipients]

    def accepted(self) -> list[str]:
        return self.sim.accepted_recipients(PLAN)

    def refs(self) -> list[str | None]:
        return [a.client_reference for a in self.sim.arrivals(PLAN)]

    def check_ledger(self) -> None:
        """Nothing lost, nothing twice, FIFO for what was accepted."""
        accepted, dead = self.accepted(), self.dead_recipients()
        assert len(accepted) == len(set(accepted)), "a recipient was accepted twice"
        assert sorted(accepted + dead) == sorted(self.enqueued), "lost or extra recipients"
        gone = set(dead)
        assert accepted == [n for n in self.enqueued if n not in gone], "FIFO broken"


@pytest.fixture
def h(deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis) -> Iterator[Harness]:
    dep = deploy([(PLAN, 1000, {"batch_size": BATCH})])
    harness = Harness(dep, sim, r)
    yield harness
    harness.http.close()


# ---------------------------------------------------------------------------- one per row
def row_2xx(h: Harness) -> None:
    h.enqueue(mobiles(15, 1))
    h.enqueue(mobiles(12, 2))
    h.drain_all()
    h.check_ledger()
    assert [a.status for a in h.sim.arrivals(PLAN)] == [201] * 4
    assert h.stats()["resp:201:"] == "4" and not h.dead()


def row_429(h: Harness) -> None:
    # Three 429s with Retry-After: 1, then the plan is let through.  Attempts are limited to
    # 3 (FAST), so counting the 429s as failures would dead-letter the head: it must not.
    h.sim.faults.throttle = {PLAN: (3, 1.0)}
    h.enqueue(mobiles(20, 3))
    h.enqueue(mobiles(20, 4))
    h.drain_all()
    h.check_ledger()
    arrivals = h.sim.arrivals(PLAN)
    assert [a.status for a in arrivals] == [429, 429, 429] + [201] * 4
    # The whole plan waited and its head went first, again and again: FIFO kept.
    head = arrivals[0].client_reference
    assert [a.client_reference for a in arrivals[:4]] == [head] * 4
    for before, after in itertools.pairwise(arrivals[:4]):
        assert after.t - before.t >= 1.0 - 0.02, "Retry-After not honoured"
    st = h.stats()
    assert st["rate_waits"] == "3" and "retries" not in st and not h.dead()
    # AIMD: three halvings (1000 -> 125), then +5% of the rate per accepted batch (x4).
    (plan,) = h.d.plans()
    assert plan.effective_rate == pytest.approx(125 + 4 * 50)
    out = h.dep.cli("plans", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["effective_rate"] == pytest.approx(325)


def _isolated(h: Harness, status: int, code: str) -> None:
    dead = h.dead()
    assert all(len(e.recipients) == 1 for e in dead)  # one refused recipient per entry
    for e in dead:
        assert (e.status, e.code, e.reason) == (status, code, "permanent")
        assert e.text and e.first_attempt_at and e.last_attempt_at


def row_400_param_format(h: Harness) -> None:
    good = mobiles(7, 5)
    h.enqueue_raw(["+" + n for n in good[:4]] + ["+4670abc1234"] + ["+" + n for n in good[4:]])
    h.drain_all()
    h.check_ledger()
    assert h.dead_recipients() == ["4670abc1234"]
    _isolated(h, 400, "syntax_invalid_parameter_format")
    assert "4670abc1234" in h.dead()[0].text
    assert len(h.sim.arrivals(PLAN)) <= isolation_bound(8, 1)


def row_403_illegal(h: Harness) -> None:
    numbers = mobiles(10, 6)
    h.sim.faults.illegal_numbers = {numbers[3], numbers[7]}
    h.enqueue(numbers)
    h.drain_all()
    h.check_ledger()
    assert sorted(h.dead_recipients()) == sorted([numbers[3], numbers[7]])
    _isolated(h, 403, "illegal_number_type")
    for e in h.dead():
        assert e.recipients[0] in e.text
    assert len(h.sim.arrivals(PLAN)) <= isolation_bound(10, 2)


def _dead_once(h: Harness, forced: tuple[int, str | None], status: int, code: str) -> None:
    """Each batch is dead-lettered after one request, whole, with the provider's answer."""
    h.sim.faults.plan_errors = {PLAN: forced}
    h.enqueue(mobiles(15, 7))
    h.drain_all()
    assert not h.accepted()
    h.check_ledger()
    arrivals = h.sim.arrivals(PLAN)
    assert len(arrivals) == 2 and len(set(h.refs())) == 2  # no retry, no split
    dead = h.dead()
    assert [len(e.recipients) for e in dead] == [10, 5]
    for e in dead:
        assert (e.status, e.code, e.reason, e.attempts) == (status, code, "permanent", 1)
        assert e.first_attempt_at and e.last_attempt_at
    assert h.d.status(dead[0].campaign_id).state == "done"  # dead letters count as done


def row_400_any(h: Harness) -> None:
    _dead_once(h, (400, "syntax_invalid_json"), 400, "syntax_invalid_json")
    assert "forced by the simulator" in h.dead()[0].text


def row_403_unknown_campaign(h: Harness) -> None:
    _dead_once(h, (403, "unknown_campaign"), 403, "unknown_campaign")


def row_403_any(h: Harness) -> None:
    _dead_once(h, (403, "some_future_code"), 403, "some_future_code")


def row_415(h: Harness) -> None:
    _dead_once(h, (415, None), 415, "")


def row_any(h: Harness) -> None:
    _dead_once(h, (405, None), 405, "")
    assert h.dead()[0].text == ""  # the simulator's 405 has no body: kept as it came


def _circuit(
    h: Harness, break_it: Callable[[], None], fix_it: Callable[[], None], label: str
) -> None:
    numbers = mobiles(25, 8)
    cid = h.enqueue(numbers)
    break_it()
    h.run_until(h.circuit_open, "the circuit to open")
    # Stopped, queue intact, nothing dead-lettered, visible to operators.
    assert not h.dead() and not h.accepted()
    (plan,) = h.d.plans()
    assert (plan.circuit, plan.circuit_code, plan.pending) == ("open", label, 25)
    assert h.d.status(cid).state == "paused"
    # Probes come after a backoff, each refused the same way: still nothing lost or dead.
    h.run_until(lambda: len(h.sim.arrivals(PLAN)) >= 3, "two more probes")
    assert h.circuit_open() and not h.dead()
    assert {a.client_reference for a in h.sim.arrivals(PLAN)} == {f"{cid}.0"}
    fix_it()
    h.drain_all()  # the next probe succeeds and closes the circuit
    h.check_ledger()
    assert not h.circuit_open() and h.d.status(cid).state == "done"


def _plan_error(h: Harness, status: int, code: str | None) -> None:
    _circuit(
        h,
        lambda: setattr(h.sim.faults, "plan_errors", {PLAN: (status, code)}),
        lambda: setattr(h.sim.faults, "plan_errors", {}),
        f"{status} {code or ''}".strip(),
    )


def row_401(h: Harness) -> None:
    token = h.dep.env["POL_TOKEN"]
    _circuit(
        h,
        lambda: h.sim.set_token(PLAN, "rotated-elsewhere"),
        lambda: h.sim.set_token(PLAN, token),
        "401",
    )


def row_403_blocked(h: Harness) -> None:
    _plan_error(h, 403, "blocked_account")


def row_403_callback(h: Harness) -> None:
    _plan_error(h, 403, "missing_callback_url")


def row_403_group(h: Harness) -> None:
    _plan_error(h, 403, "unknown_group")


def row_403_permission(h: Harness) -> None:
    _plan_error(h, 403, "PERMISSION_DENIED")


def row_404(h: Harness) -> None:
    _plan_error(h, 404, None)


def row_5xx(h: Harness) -> None:
    # Transient: two 503s, then the head goes through; the lane waited behind it.
    first = h.enqueue(mobiles(20, 9))
    h.sim.faults.plan_errors = {PLAN: (503, None)}
    h.run_until(lambda: len(h.sim.arrivals(PLAN)) >= 2, "two 503s")
    h.sim.faults.plan_errors = {}
    h.drain_all()
    assert h.refs()[:3] == [f"{first}.0"] * 3
    assert [a.status for a in h.sim.arrivals(PLAN)] == [503, 503, 201, 201]
    assert not h.dead()
    # Persistent: dead-lettered after max_attempts (3) failures; then the lane moves on.
    second = h.enqueue(mobiles(20, 10))
    h.sim.faults.update(error_rate=1.0)
    h.run_until(lambda: bool(h.dead()), "a dead letter")
    h.sim.faults.update(error_rate=0.0)
    h.drain_all()
    h.check_ledger()
    (e,) = h.dead()
    assert (e.batch_id, e.reason, e.attempts) == (f"{second}.0", "retries_exhausted", 3)
    assert e.status in (500, 503)
    assert h.refs()[4:] == [f"{second}.0"] * 3 + [f"{second}.1"]
    assert h.stats()["retries"] == "4"


def test_503_retry_after_is_honoured(h: Harness) -> None:
    """A 503 that says when to come back holds the plan at least that long (not less)."""
    h.enqueue(mobiles(5, 11))
    h.sim.faults.update(plan_errors={PLAN: [503, None]}, unavailable_retry_after_s=40)
    h.run_until(lambda: len(h.sim.arrivals(PLAN)) >= 1, "one 503")
    sec, usec = h.r.time()
    now_ms = sec * 1000 + usec // 1000
    cooldown = int(h.r.hget(keys.state(PLAN), State.COOLDOWN_UNTIL) or 0)
    assert cooldown - now_ms > 35_000, "the plan must wait out Retry-After, not its own backoff"
    assert [a.status for a in h.sim.arrivals(PLAN)] == [503]


def row_none(h: Harness) -> None:
    # A dropped connection after the provider created the batch: found by client_reference,
    # never sent twice.
    cid = h.enqueue(mobiles(20, 11))
    h.sim.faults.drop_rate = 1.0
    h.run_until(lambda: len(h.sim.arrivals(PLAN)) >= 1, "one dropped request")
    h.sim.faults.drop_rate = 0.0
    h.drain_all()
    assert h.refs() == [f"{cid}.0", f"{cid}.1"]
    assert h.sim.arrivals(PLAN)[0].dropped
    # A timeout: the same, through a read timeout of the client.
    slow = Harness(h.dep, h.sim, h.r, timeout_s=0.3)
    cid2 = slow.enqueue(mobiles(10, 12))
    h.sim.faults.latency_ms = 1500
    slow.run_until(lambda: len(h.sim.arrivals(PLAN)) >= 3, "one timed-out request")
    h.sim.faults.latency_ms = 0
    slow.drain_all()
    slow.http.close()
    h.enqueued += slow.enqueued
    h.check_ledger()
    assert h.refs()[2:] == [f"{cid2}.0"]
    st = h.stats()
    assert st["lookups:found"] == "2" and "lookups:missing" not in st and not h.dead()


def row_none_unreachable(h: Harness) -> None:
    """No answer at all (connection refused): retried, then dead-lettered, lane moves on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = {
        "redis_url": "redis://unused",
        "plans": {
            PLAN: {
                "base_url": f"http://127.0.0.1:{port}",
                "token_env": "T",
                "rate": 1000,
                "batch_size": BATCH,
            }
        },
    }
    dead_end = Harness(
        h.dep, h.sim, h.r, settings=Settings.from_mapping(data, env={"T": "tok-unreachable"})
    )
    dead_end.enqueue(mobiles(15, 13))
    dead_end.drain_all()
    dead_end.http.close()
    dead = dead_end.dead()
    assert [len(e.recipients) for e in dead] == [10, 5]
    for e in dead:
        assert (e.status, e.reason, e.attempts) == (None, "retries_exhausted", 3)
        assert "Connect" in e.text
    assert "tok-unreachable" not in json.dumps([e.to_json() for e in dead])


ROWS: dict[tuple[str, str], list[Callable[[Harness], None]]] = {
    ("2xx", "*"): [row_2xx],
    ("429", "*"): [row_429],
    ("400", "syntax_invalid_parameter_format"): [row_400_param_format],
    ("403", "illegal_number_type"): [row_403_illegal],
    ("400", "*"): [row_400_any],
    ("401", "*"): [row_401],
    ("403", "blocked_account"): [row_403_blocked],
    ("403", "missing_callback_url"): [row_403_callback],
    ("403", "unknown_group"): [row_403_group],
    ("403", "unknown_campaign"): [row_403_unknown_campaign],
    ("403", "PERMISSION_DENIED"): [row_403_permission],
    ("403", "*"): [row_403_any],
    ("404", "*"): [row_404],
    ("415", "*"): [row_415],
    ("5xx", "*"): [row_5xx],
    ("none", "*"): [row_none, row_none_unreachable],
    ("*", "*"): [row_any],
}


def test_every_rule_has_a_scenario() -> None:
    assert list(ROWS) == [(r.status, r.code) for r in RULES]


@pytest.mark.parametrize(
    ("rule", "scenario"),
    [(rule, fn) for rule in RULES for fn in ROWS[(rule.status, rule.code)]],
    ids=lambda x: x.__name__ if callable(x) else f"{x.status}:{x.code}",
)
def test_policy_row(
    rule: Rule,
    scenario: Callable[[Harness], None],
    h: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dispatcher")
    scenario(h)
    # Every answer the provider gave was counted under its status and code, and each one is
    # what this row of the table matches.
    answers = {k for k in h.stats() if k.startswith("resp:")}
    assert answers, "no answer was recorded"
    text = caplog.text
    assert h.dep.env["POL_TOKEN"] not in text
    if rule.action is Action.CIRCUIT:  # a log line names the plan and the answer
        assert re.search(rf"plan {PLAN}: circuit open after \d{{3}}:", text), text[-2000:]
    if scenario is row_2xx:  # the provider's batch id is recorded with each accepted batch
        for a in h.sim.arrivals(PLAN):
            assert f"provider_batch={a.batch_id}" in text


def test_isolation_probe_found_by_lookup_still_marks_its_sibling(h: Harness) -> None:
    """An isolation probe whose answer is lost (connection dropped after the provider created
    it) is found by client_reference, and its sibling is then known to hold the refusal, as
    if the probe's 201 had arrived: no request is spent on the whole sibling."""
    numbers = mobiles(4, 15)
    h.sim.faults.illegal_numbers = {numbers[3]}
    cid = h.enqueue(numbers)
    # The refusal splits the batch into [0:2] and [2:4] in the same step.
    h.run_until(lambda: len(h.sim.arrivals(PLAN)) == 1, "the refused batch")
    h.sim.faults.drop_rate = 1.0
    h.run_until(lambda: len(h.sim.arrivals(PLAN)) == 2, "the dropped probe")
    h.sim.faults.drop_rate = 0.0
    h.drain_all()
    h.check_ledger()
    # the batch, the dropped probe [0:2], then [2:3] (the suspect [2:4] split without a
    # request); [3:4] is dead-lettered without a request of its own.
    assert [a.to for a in h.sim.arrivals(PLAN)] == [
        tuple(numbers),
        tuple(numbers[0:2]),
        (numbers[2],),
    ]
    assert h.dead_recipients() == [numbers[3]]
    assert h.stats()["lookups:found"] == "1"
    assert h.d.status(cid).state == "done"


def test_failing_lookups_never_resend_unchecked(h: Harness) -> None:
    """After an ambiguous failure nothing is resent until a lookup answers, however long the
    provider's list endpoint fails (here: it refuses the token); then it is found, not resent."""
    numbers = mobiles(10, 16)
    cid = h.enqueue(numbers)
    h.sim.faults.drop_rate = 1.0
    h.run_until(lambda: len(h.sim.arrivals(PLAN)) == 1, "the dropped request")
    h.sim.faults.drop_rate = 0.0
    token = h.dep.env["POL_TOKEN"]
    h.sim.set_token(PLAN, "rotated-while-unknown")

    def fails() -> int:
        return int(h.r.hget(keys.batch(PLAN, f"{cid}.0"), Batch.FAILS) or 0)

    h.run_until(lambda: fails() >= 4, "four failed lookups")
    assert len(h.sim.arrivals(PLAN)) == 1  # never resent while its fate is unknown
    assert h.sim.stats()[PLAN]["lookups"] == 0  # refused before the lookup itself (401)
    h.sim.set_token(PLAN, token)
    h.drain_all()
    h.check_ledger()
    assert h.refs() == [f"{cid}.0"] and h.stats()["lookups:found"] == "1" and not h.dead()


def test_isolation_bound_holds_for_random_poison(h: Harness) -> None:
    """Property: the k refused recipients, and only they, are dead-lettered within the bound."""
    rng = random.Random(20260301)
    for n, k in ((10, 1), (10, 3), (10, 10), (7, 2), (2, 1)):
        h.sim.reset()
        h.r.flushall()
        h.enqueued = []
        numbers = mobiles(n, rng.randrange(1 << 30))
        bad = set(rng.sample(numbers, k))
        h.sim.faults.illegal_numbers = bad
        h.enqueue(numbers)
        h.drain_all()
        h.check_ledger()
        assert set(h.dead_recipients()) == bad
        assert len(h.sim.arrivals(PLAN)) <= isolation_bound(n, k), (n, k)


# ============================================================================ poison, real worker
@pytest.mark.slow
def test_poison_1000_with_three_bad_recipients(
    deploy: Callable[..., Deployment], sim: Simulator, r: redis.Redis
) -> None:
    plan = "poison"
    dep = deploy([(plan, 5000, {"batch_size": 1000})])
    numbers = mobiles(1000, 14)
    bad = [numbers[13], numbers[500], numbers[987]]
    sim.faults.illegal_numbers = set(bad)
    d = Dispatcher(dep.settings, r)
    cid = d.enqueue(
        Campaign(plan=plan, sender="Acme", body="Hi", recipients=["+" + n for n in numbers])
    )
    assert cid.batches == 1
    dep.start_worker()
    wait_until(lambda: d.status(cid).state == "done", 60, "the poisoned campaign to finish")
    requests = len(sim.arrivals(plan))
    print(
        f"\npoison test: 1000 recipients, 3 refused, {requests} requests (bound {isolation_bound(1000, 3)})"
    )
    assert isolation_bound(1000, 3) == 61
    assert requests <= 61
    dead = d.dead_letters(plan)
    assert sorted(x for e in dead for x in e.recipients) == sorted(bad)
    for e in dead:
        assert (e.status, e.code, e.reason) == (403, "illegal_number_type", "permanent")
        assert e.recipients[0] in e.text  # the provider's own text
    accepted = sim.accepted_recipients(plan)
    assert accepted == [n for n in numbers if n not in bad]  # 997, once each, in order
    st = d.status(cid)
    assert (st.sent, st.dead_lettered, st.pending) == (997, 3, 0)
    assert "s3cr3t" not in dep.log_text()
