"""Batch reports (`delivery_report_sms`, summary and full) against a real redis-server: however
Sinch's snapshots of a batch are repeated, reordered or lost, the campaign's counts are those of
the newest snapshot that arrived, each recipient once."""

from __future__ import annotations

import json
import tomllib
from collections import Counter

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import Campaign, Dispatcher, Settings
from dispatcher.callbacks.app import Receiver
from dispatcher.callbacks.tokens import plan_token
from dispatcher.devtools.localredis import LocalRedis
from tests.support.numbers import mobiles

PLAN = "acme"
SECRET = "prop-s3cr3t"
N = 8
FINAL = ["Delivered", "Failed", "Expired", "Rejected"]


def _settings(redis_url: str) -> Settings:
    return Settings.from_mapping(
        tomllib.loads(
            f'redis_url = "{redis_url}"\ncallback_base_url = "https://hooks.example.com"\n'
            f'[plans.{PLAN}]\nbase_url = "http://127.0.0.1:1"\ntoken_env = "T"\nrate = 10\n'
        ),
        env={"T": "tok", "DISPATCH_CALLBACK_SECRET": SECRET},
    )


# Each recipient: its final status and the snapshot (0-3) from which Sinch reports it; before
# that it is Queued or Dispatched, which a summary lists and which must count for nothing.
recipients = st.lists(st.tuples(st.sampled_from(FINAL), st.integers(0, 3)), min_size=N, max_size=N)
# Which snapshots arrive, in what order, how often (a retry repeats one; some never arrive).
arrivals = st.lists(st.integers(0, 3), max_size=12)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(people=recipients, order=arrivals, full=st.booleans(), case=st.sampled_from([0, 1, 2]))
def test_counts_are_the_newest_snapshot_that_arrived(
    redis_server: LocalRedis,
    people: list[tuple[str, int]],
    order: list[int],
    full: bool,
    case: int,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    cfg = _settings(redis_server.url)
    d = Dispatcher(cfg, client)
    nums = mobiles(N, seed=41)
    cid = d.enqueue(Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=nums))
    rec = Receiver(cfg, client)
    path = f"/callbacks/{PLAN}/{plan_token(SECRET, PLAN)}"
    spell = [str.title, str.upper, str.lower][case]

    def snapshot(t: int) -> dict[str, object]:
        by: dict[str, list[str]] = {}
        for num, (status, since) in zip(nums, people, strict=True):
            by.setdefault(status if since <= t else "Dispatched", []).append("+" + num)
        statuses = [
            {
                "code": 0,
                "status": spell(s),
                "count": len(ns),
                **({"recipients": ns} if full else {}),
            }
            for s, ns in by.items()
        ]
        return {
            "type": "delivery_report_sms", "batch_id": "PB7", "client_reference": f"{cid}.0",
            "total_message_count": N if t % 2 else str(N), "statuses": statuses,
        }  # fmt: skip

    for t in order:
        doc = snapshot(t)
        assert rec.handle("POST", path, lambda doc=doc: json.dumps(doc).encode())[0] == "200 OK"

    newest = max(order, default=-1)
    want = Counter(s.lower() for s, since in people if since <= newest)
    got = {k: v for k, v in d.status(cid).delivery.items() if v}
    assert got == dict(want)
    client.close()


def test_a_status_sinch_does_not_document_leaves_the_recipient_open_for_its_final_one(
    redis_server: LocalRedis,
) -> None:
    """An unrecognised status is not taken as the recipient's final one: the later Delivered
    counts."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    cfg = _settings(redis_server.url)
    d = Dispatcher(cfg, client)
    num = mobiles(1, seed=43)[0]
    cid = d.enqueue(Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=[num]))
    rec = Receiver(cfg, client)
    path = f"/callbacks/{PLAN}/{plan_token(SECRET, PLAN)}"
    for status in ("Enroute", "Delivered"):
        doc = {
            "type": "recipient_delivery_report_sms", "batch_id": "PB9",
            "client_reference": f"{cid}.0", "recipient": "+" + num, "status": status,
        }  # fmt: skip
        assert rec.handle("POST", path, lambda doc=doc: json.dumps(doc).encode())[0] == "200 OK"
    got = {k: v for k, v in d.status(cid).delivery.items() if v}
    assert got == {"delivered": 1}
    client.close()
