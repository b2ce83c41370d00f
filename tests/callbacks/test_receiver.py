"""The callback receiver over real HTTP against a real redis-server: the three shapes, each
recipient's final status counted once, 401 on a wrong token, 503 while Redis is down, orphans
answered 2xx, and STOP/START maintaining the suppression list that enqueue applies."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import Campaign, Dispatcher, Settings
from dispatcher.callbacks import make_wsgi_app
from dispatcher.callbacks.app import Receiver
from dispatcher.callbacks.keywords import START, STOP, opt_action
from dispatcher.callbacks.server import make_server, serve_in_thread
from dispatcher.callbacks.tokens import plan_token
from dispatcher.devtools.localredis import LocalRedis, free_port
from dispatcher.storage import keys
from tests.support.numbers import mobiles

PLAN = "acme"
SECRET = "cb-s3cr3t-value"


def _settings(redis_url: str, **plan: object) -> Settings:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in plan.items())
    return Settings.from_mapping(
        __import__("tomllib").loads(
            f'redis_url = "{redis_url}"\ncallback_base_url = "https://hooks.example.com"\n'
            f'[plans.{PLAN}]\nbase_url = "http://127.0.0.1:1"\ntoken_env = "T"\nrate = 10\n{extra}'
        ),
        env={"T": "tok", "DISPATCH_CALLBACK_SECRET": SECRET},
    )


@pytest.fixture
def receiver(redis_server: LocalRedis, r: redis.Redis) -> Iterator[tuple[str, Dispatcher]]:
    cfg = _settings(redis_server.url, halt_failure_ratio=0.5, halt_min_reports=4)
    # The server `dispatcher callbacks` runs.
    server = make_server("127.0.0.1", 0, make_wsgi_app(cfg, r))
    serve_in_thread(server)
    yield f"http://127.0.0.1:{server.server_port}", Dispatcher(cfg, r)
    server.shutdown()
    server.server_close()


def _post(base: str, doc: object, token: str | None = None) -> httpx.Response:
    url = f"{base}/callbacks/{PLAN}/{token or plan_token(SECRET, PLAN)}"
    headers = {"Content-Type": "application/json"}
    return httpx.post(url, content=json.dumps(doc).encode(), headers=headers, timeout=5)


def _campaign(d: Dispatcher, n: int = 6, seed: int = 0) -> tuple[str, list[str]]:
    numbers = mobiles(n, seed=seed)
    cid = d.enqueue(
        Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=["+" + x for x in numbers])
    )
    return cid, numbers


def test_every_shape_counts_each_recipient_once(
    receiver: tuple[str, Dispatcher], r: redis.Redis
) -> None:
    base, d = receiver
    cid, nums = _campaign(d)
    body = json.loads(r.hget(keys.batch(PLAN, f"{cid}.0"), "payload"))
    assert body["delivery_report"] == "full"
    assert body["callback_url"] == d.callback_url(PLAN)
    assert SECRET not in body["callback_url"]
    full = {
        "type": "delivery_report_sms", "batch_id": "01PB", "client_reference": f"{cid}.0",
        "total_message_count": "6",
        "statuses": [
            {"code": 0, "status": "Delivered", "count": 2, "recipients": ["+" + nums[0], nums[1]]},
            {"code": 401, "status": "Dispatched", "count": 1, "recipients": [nums[2]]},
        ],
    }  # fmt: skip
    for _ in range(3):  # Sinch's retries repeat a callback: it counts once
        assert _post(base, full).status_code == 200
    per = {
        "type": "recipient_delivery_report_sms", "batch_id": "01PB",
        "client_reference": f"{cid}.0", "recipient": "+" + nums[2], "code": 0, "status": "DELIVERED",
        "at": "2026-12-02T10:00:00.000Z",
    }  # fmt: skip
    assert _post(base, per).status_code == 200
    late = {**per, "status": "Failed", "code": 60}  # a later, different final status: ignored
    assert _post(base, late).status_code == 200
    summary = {
        "type": "delivery_report_sms", "batch_id": "01PB", "client_reference": f"{cid}.0",
        "total_message_count": 6, "statuses": [{"code": 0, "status": "expired", "count": 1}],
    }  # fmt: skip
    assert _post(base, summary).status_code == 200
    assert _post(base, summary).status_code == 200
    delivery = d.status(cid).delivery
    assert (delivery["delivered"], delivery["expired"], delivery["failed"]) == (3, 1, 0)
    orphan = {**per, "client_reference": "cnope.0", "batch_id": "nope"}
    assert _post(base, orphan).status_code == 200
    stats = {k.decode(): int(v) for k, v in r.hgetall(keys.stats(PLAN)).items()}
    assert stats["cb:recipient_delivery_report_sms:orphaned"] == 1
    assert stats["dr:delivered"] == 3


def test_wrong_token_is_401_counted_and_changes_nothing(
    receiver: tuple[str, Dispatcher], r: redis.Redis
) -> None:
    base, d = receiver
    _, nums = _campaign(d)
    stop = {"type": "mo_text", "from": "+" + nums[0], "to": "12345", "body": "STOP"}
    wrong = ["0" * 32, "", plan_token("other-secret", PLAN), plan_token(SECRET, "other")]
    for path in [f"/callbacks/{PLAN}/{t}" for t in wrong] + [f"/callbacks/{PLAN}"]:
        resp = httpx.post(f"{base}{path}", content=json.dumps(stop).encode(), timeout=5)
        assert resp.status_code == 401, path
    assert d.suppressed(PLAN) == []
    assert int(r.hget(keys.stats(PLAN), "cb:unknown:unauthorized") or 0) == 5
    assert _post(base, b"not json".decode()).status_code == 400  # type: ignore[arg-type]


def test_redis_down_is_503_then_the_retry_counts_once(
    receiver: tuple[str, Dispatcher], r: redis.Redis, redis_server: LocalRedis
) -> None:
    base, d = receiver
    cid, nums = _campaign(d)
    dead = Receiver(_settings(f"redis://127.0.0.1:{free_port()}/0"))
    per = {
        "type": "recipient_delivery_report_sms", "batch_id": "01PB",
        "client_reference": f"{cid}.0", "recipient": nums[0], "code": 0, "status": "Delivered",
    }  # fmt: skip
    status, _ = dead.handle(
        "POST", f"/callbacks/{PLAN}/{plan_token(SECRET, PLAN)}", lambda: json.dumps(per).encode()
    )
    assert status.startswith("503")
    for _ in range(2):
        assert _post(base, per).status_code == 200
    assert d.status(cid).delivery["delivered"] == 1


def test_stop_suppresses_start_lifts_and_enqueue_drops_them(
    receiver: tuple[str, Dispatcher],
) -> None:
    base, d = receiver
    nums = mobiles(4, seed=5)
    for n, text in ((nums[0], "Stop."), (nums[1], "stop please"), (nums[2], "Stopping by later")):
        assert _post(base, {"type": "mo_text", "from": "+" + n, "body": text}).status_code == 200
    assert d.suppressed(PLAN) == sorted(nums[:2])
    assert _post(base, {"type": "mo_text", "from": nums[1], "body": "UNSTOP"}).status_code == 200
    assert d.suppressed(PLAN) == [nums[0]]
    res = d.enqueue(
        Campaign(plan=PLAN, sender="Acme", body="Hi", recipients=["+" + x for x in nums])
    )
    assert (res.recipients, res.suppressed, res.to_json()["suppressed"]) == (3, 1, 1)
    s = d.status(res)
    assert (s.recipients, s.suppressed, s.pending) == (4, 1, 3)


def test_a_failing_campaign_halts_itself(receiver: tuple[str, Dispatcher]) -> None:
    base, d = receiver
    cid, nums = _campaign(d, 6)
    failed = {
        "type": "delivery_report_sms", "client_reference": f"{cid}.0",
        "statuses": [{"code": 0, "status": "Failed", "count": 3, "recipients": nums[:3]},
                     {"code": 0, "status": "Delivered", "count": 1, "recipients": nums[3:4]}],
    }  # fmt: skip
    assert _post(base, failed).status_code == 200
    s = d.status(cid)
    assert (s.state, s.paused_by) == ("paused", "failures")
    assert d.audit()[0].action == "campaign.pause" and d.audit()[0].actor == "halt"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(["Delivered", "FAILED", "expired", "Queued"])),
        max_size=30,
    )
)
def test_any_order_of_repeats_counts_each_recipient_once_with_its_first_final_status(
    redis_server: LocalRedis, events: list[tuple[int, str]]
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    cfg = _settings(redis_server.url)
    d = Dispatcher(cfg, client)
    cid, nums = _campaign(d, 6, seed=7)
    rec = Receiver(cfg, client)
    path = f"/callbacks/{PLAN}/{plan_token(SECRET, PLAN)}"
    first: dict[str, str] = {}
    for i, status in events:
        doc = {
            "type": "recipient_delivery_report_sms", "client_reference": f"{cid}.0",
            "recipient": nums[i], "code": 0, "status": status,
        }  # fmt: skip
        assert rec.handle("POST", path, lambda doc=doc: json.dumps(doc).encode())[0] == "200 OK"
        if status != "Queued":
            first.setdefault(nums[i], status.lower())
    want = {s: list(first.values()).count(s) for s in ("delivered", "failed", "expired")}
    got = d.status(cid).delivery
    assert {s: got[s] for s in want} == want
    client.close()


@given(
    word=st.sampled_from(sorted(STOP | START)),
    case=st.sampled_from([str.lower, str.upper, str.title]),
    punct=st.sampled_from(["", ".", "!", "!!", ","]),
    rest=st.sampled_from(["", " please", " now thanks"]),
)
def test_stop_words_any_case_punctuation_ignored(
    word: str, case: object, punct: str, rest: str
) -> None:
    text = case(word) + punct + rest  # type: ignore[operator]
    assert opt_action(text) == ("stop" if word in STOP else "start")
    assert opt_action(case(word) + "ping") is None  # type: ignore[operator]


def test_bad_bodies_get_a_4xx_sinch_does_not_retry_and_change_nothing(
    receiver: tuple[str, Dispatcher], r: redis.Redis
) -> None:
    base, d = receiver
    cid, nums = _campaign(d)
    url = f"{base}/callbacks/{PLAN}/{plan_token(SECRET, PLAN)}"
    before = r.hgetall(keys.campaign(PLAN, cid))
    good = json.dumps({"type": "mo_text", "from": nums[0], "body": "STOP"}).encode()
    for content, ctype in [
        (b"{not json", "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (json.dumps({"type": "mt_binary"}).encode(), "application/json"),
        (json.dumps({"type": "recipient_delivery_report_sms"}).encode(), "application/json"),
        (b" " * (2 * 1024 * 1024), "application/json"),
        (good, "text/plain"),
    ]:
        resp = httpx.post(url, content=content, headers={"Content-Type": ctype}, timeout=10)
        assert 400 <= resp.status_code < 500, (content[:30], resp.status_code)
    assert d.suppressed(PLAN) == []
    assert r.hgetall(keys.campaign(PLAN, cid)) == before
    assert int(r.hget(keys.stats(PLAN), "cb:unknown:invalid") or 0) == 6


def test_the_receiver_mounts_as_asgi(redis_server: LocalRedis, r: redis.Redis) -> None:
    import asyncio

    from dispatcher.callbacks import app as module

    cfg = _settings(redis_server.url)
    module._default = Receiver(cfg, r)
    sent: list[dict[str, object]] = []
    body = json.dumps({"type": "mo_text", "from": "46701234567", "body": "stop"}).encode()

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict[str, object]) -> None:
        sent.append(msg)

    scope = {
        "type": "http", "method": "POST", "path": f"/callbacks/{PLAN}/{plan_token(SECRET, PLAN)}",
        "headers": [(b"content-type", b"application/json")],
    }  # fmt: skip
    try:
        asyncio.run(module.asgi_app(scope, receive, send))
    finally:
        module._default = None
    assert sent[0]["status"] == 200
    assert r.sismember(f"dsp:{{{PLAN}}}:suppressed", "46701234567")


def test_the_simulator_posts_an_inbound_stop_to_the_receiver(
    receiver: tuple[str, Dispatcher], sim: object
) -> None:
    from sinch_simulator import Simulator

    assert isinstance(sim, Simulator)
    base, d = receiver
    url = f"{base}/callbacks/{PLAN}/{plan_token(SECRET, PLAN)}"
    resp = httpx.post(
        f"{sim.url}/_sim/inbound", json={"url": url, "from": "+46701234599", "body": "STOP!"}
    )
    assert resp.status_code == 200, resp.text
    assert httpx.post(f"{sim.url}/_sim/inbound", json={"url": "x"}).status_code == 400
    import time

    deadline = time.monotonic() + 5
    while "46701234599" not in d.suppressed(PLAN) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert d.suppressed(PLAN) == ["46701234599"]


def test_a_report_for_another_plans_batch_changes_nothing_there(
    redis_server: LocalRedis, r: redis.Redis
) -> None:
    """A holder of plan beta's URL cannot touch plan acme's counts by naming acme's batch: the
    lookup stays inside the plan of the URL, so it is an orphan there."""
    cfg = Settings.from_mapping(
        __import__("tomllib").loads(
            f'redis_url = "{redis_server.url}"\ncallback_base_url = "https://hooks.example.com"\n'
            f'[plans.{PLAN}]\nbase_url = "http://127.0.0.1:1"\ntoken_env = "T"\nrate = 10\n'
            '[plans.beta]\nbase_url = "http://127.0.0.1:1"\ntoken_env = "T"\nrate = 10\n'
        ),
        env={"T": "tok", "DISPATCH_CALLBACK_SECRET": SECRET},
    )
    d = Dispatcher(cfg, r)
    cid, nums = _campaign(d, 2, seed=31)
    rec = Receiver(cfg, r)
    forged = {
        "type": "recipient_delivery_report_sms", "batch_id": "PBX", "client_reference": f"{cid}.0",
        "recipient": nums[0], "code": 60, "status": "Failed",
    }  # fmt: skip
    status, _ = rec.handle(
        "POST", f"/callbacks/beta/{plan_token(SECRET, 'beta')}", lambda: json.dumps(forged).encode()
    )
    assert status == "200 OK"  # answered, so nobody retries it for a day
    assert sum(d.status(cid).delivery.values()) == 0
    assert int(r.hget(keys.stats("beta"), "cb:recipient_delivery_report_sms:orphaned") or 0) == 1
    assert r.hget(keys.stats(PLAN), "dr:failed") is None


def test_an_inbound_binary_message_is_answered_and_counted_as_ignored(
    receiver: tuple[str, Dispatcher], r: redis.Redis
) -> None:
    """Sinch posts every inbound message to the plan's URL; a binary one is no garbage (a 4xx
    would count it as invalid) and no STOP either."""
    base, d = receiver
    doc = {"type": "mo_binary", "from": "46701234567", "to": "12345", "body": "U1RPUA==", "udh": ""}
    assert _post(base, doc).status_code == 200
    assert d.suppressed(PLAN) == []
    stats = {k.decode(): int(v) for k, v in r.hgetall(keys.stats(PLAN)).items()}
    assert stats.get("cb:mo_binary:ignored") == 1 and "cb:unknown:invalid" not in stats


def test_the_asgi_receiver_refuses_a_10_mb_body_without_keeping_it(
    redis_server: LocalRedis, r: redis.Redis
) -> None:
    import asyncio

    from dispatcher.callbacks import app as module

    module._default = Receiver(_settings(redis_server.url), r)
    sent: list[dict[str, object]] = []
    parts = [b" " * (1024 * 1024)] * 10

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": parts.pop(), "more_body": bool(parts)}

    async def send(msg: dict[str, object]) -> None:
        sent.append(msg)

    scope = {
        "type": "http", "method": "POST", "path": f"/callbacks/{PLAN}/{plan_token(SECRET, PLAN)}",
        "headers": [(b"content-type", b"application/json")],
    }  # fmt: skip
    try:
        asyncio.run(module.asgi_app(scope, receive, send))
    finally:
        module._default = None
    assert sent[0]["status"] == 400 and not parts  # all of it read, none of it kept
    assert int(r.hget(keys.stats(PLAN), "cb:unknown:invalid") or 0) == 1


def test_report_data_expires_with_the_campaign_and_a_later_report_is_an_orphan(
    receiver: tuple[str, Dispatcher], r: redis.Redis
) -> None:
    base, d = receiver
    cid, nums = _campaign(d, 4, seed=61)
    per = {
        "type": "recipient_delivery_report_sms", "batch_id": "PB9", "client_reference": f"{cid}.0",
        "recipient": nums[0], "code": 0, "status": "Delivered",
    }  # fmt: skip
    summary = {
        "type": "delivery_report_sms", "batch_id": "PB9", "client_reference": f"{cid}.0",
        "statuses": [{"code": 0, "status": "Delivered", "count": 1}],
    }  # fmt: skip
    assert _post(base, per).status_code == _post(base, summary).status_code == 200
    retention = int(d.settings.retention_days * 86400)
    for suffix in ("dr", "rs", "bs"):  # counts, per-recipient statuses, per-batch summaries
        ttl = r.ttl(f"{keys.campaign(PLAN, cid)}:{suffix}")
        assert 0 < ttl <= retention, suffix
    r.delete(keys.campaign(PLAN, cid))  # what its expiry does
    late = {**per, "recipient": nums[1]}  # a report that comes after (Sinch retries ~23 h)
    assert _post(base, late).status_code == 200
    assert int(r.hget(keys.stats(PLAN), "cb:recipient_delivery_report_sms:orphaned") or 0) == 1
    assert r.hget(f"{keys.campaign(PLAN, cid)}:rs", nums[1]) is None
