"""Drain one plan's lane: the send loop.

One ``drain(plan)`` holds the plan's lease (one sender per plan, so the provider sees the
plan's batches in lane order), and then per batch makes exactly two Redis round trips around
the POST: ``take`` (lease, plan state, token bucket, in-flight mark; returns the stored,
ready-to-send body) and ``commit``/``hold`` (the outcome, fenced by the lease).  No
per-recipient work happens here: enqueue stored the bodies ready to POST.

A drain never sleeps long in a worker slot.  When the plan must wait (tokens, a cool-down, an
open circuit) longer than ``inline_wait_s``, it writes the plan's due time into the schedule
and returns; a ticker starts the next drain when it is due (``scheduler.py``).  A drain also
gives its slot back after ``slice_s`` so that many plans share few workers fairly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from dispatcher.client import ProviderResponse, SinchClient
from dispatcher.config import PlanConfig, Settings
from dispatcher.errors import LookupFailed
from dispatcher.metrics import REQUEST_DURATION, TOKEN_WAIT
from dispatcher.policy import Action, Backoff, decide
from dispatcher.storage import keys
from dispatcher.storage.scripts import for_client
from dispatcher.storage.store import new_id

log = logging.getLogger("dispatcher.sender")


@dataclass(frozen=True)
class Timing:
    lease_ttl_s: float = 15.0  # > HTTP timeout + commit; renewed by every take
    slice_s: float = 2.0  # a drain gives its worker slot back after this long
    inline_wait_s: float = 0.25  # shorter waits are slept in the task ...
    lead_s: float = 0.1  # ... longer ones are scheduled this much early, then slept
    # ... but a drain sleeps at most this long in all, then gives its worker slot back: a plan
    # that only waits must not hold a slot other plans' drains queue for (while it queues,
    # its bucket fills, so it loses nothing).
    sleep_budget_s: float = 0.25


class _Lost(Exception):
    """The lease passed to another sender: stop touching this plan at once."""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Sender:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        http: SinchClient,
        *,
        backoff: Backoff | None = None,
        timing: Timing | None = None,
    ) -> None:
        self.settings = settings
        self.r = client
        self.http = http
        self.scripts = for_client(client)
        self.backoff = backoff or Backoff()
        self.timing = timing or Timing()
        self.retention_s = int(settings.retention_days * 86400)
        # Asked once a drain has slept its budget: are other drains queued for a worker slot?
        # The worker sets it (it knows the broker); without it a drain always gives way.
        self.others_waiting: Callable[[], bool] = lambda: True
        # (plan, fencing token, batch id, take answer) that a fused commit already took.
        self._local = threading.local()

    # ------------------------------------------------------------ schedule
    def _schedule(self, plan: str, delay_s: float, mode: str = "set") -> None:
        self.scripts.schedule(keys=[keys.DUE], args=[plan, int(delay_s * 1000), mode])

    def _release_and_schedule(self, plan: str, token: str, delay_s: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        self.scripts.release(keys=[keys.lease(plan)], args=[token], client=pipe)
        self.scripts.schedule(keys=[keys.DUE], args=[plan, int(delay_s * 1000), "set"], client=pipe)
        pipe.execute()

    def _release_if_empty(self, plan: str, token: str) -> None:
        """Lane empty: leave the schedule, unless an enqueue raced in meanwhile."""
        pipe = self.r.pipeline(transaction=False)
        self.scripts.release(keys=[keys.lease(plan)], args=[token], client=pipe)
        pipe.zrem(keys.DUE, plan)
        pipe.llen(keys.lane(plan))
        *_, remaining = pipe.execute()
        if remaining:
            self.r.zadd(keys.DUE, {plan: 0}, lt=True)

    # ------------------------------------------------------------ drain
    def drain(self, plan_id: str) -> str:
        """Send the plan's head batches until it must wait, is empty, or the slice is used.

        Returns why it stopped (for logs and tests): empty, wait, cooldown, circuit, slice,
        busy, lost, unconfigured.
        """
        plan = self.settings.plans.get(plan_id)
        if plan is None:
            log.error(
                "plan %s has queued batches but is not in this worker's config (%s); "
                "its queue is kept, retrying in 60 s",
                plan_id,
                self.settings.source,
            )
            self._schedule(plan_id, 60.0, "lt")
            return "unconfigured"
        ttl_ms = int(self.timing.lease_ttl_s * 1000)
        token_b, pttl = self.scripts.lease(
            keys=[keys.lease(plan_id), keys.fence(plan_id)], args=[ttl_ms]
        )
        if not token_b:
            # Someone drains it; come back when its lease would run out, in case it died.
            self._schedule(plan_id, max(0, int(pttl)) / 1000 + 0.05, "lt")
            return "busy"
        token = _s(token_b)
        # Safety net: if this process dies, the plan comes due again after the lease expires.
        pipe = self.r.pipeline(transaction=False)
        self.scripts.schedule(keys=[keys.DUE], args=[plan_id, ttl_ms + 1000, "set"], client=pipe)
        pipe.lindex(keys.lane(plan_id), 0)
        _, head_b = pipe.execute()
        head = _s(head_b) if head_b is not None else None
        self._local.prefetched = None
        try:
            return self._loop(plan, token, head)
        except _Lost:
            log.warning("plan %s: lease lost to another sender; stopping this drain", plan_id)
            return "lost"

    def _loop(self, plan: PlanConfig, token: str, head: str | None) -> str:
        deadline = time.monotonic() + self.timing.slice_s
        ttl_ms = int(self.timing.lease_ttl_s * 1000)
        slept = 0.0
        while True:
            if head is None:
                self._release_if_empty(plan.id, token)
                return "empty"
            prefetched, self._local.prefetched = getattr(self._local, "prefetched", None), None
            if prefetched is not None and prefetched[:3] == (plan.id, token, head):
                r = prefetched[3]  # taken by the previous commit, in the same round trip
            else:
                r = self.scripts.take(
                    keys=[
                        keys.lease(plan.id),
                        keys.lane(plan.id),
                        keys.state(plan.id),
                        keys.bucket(plan.id),
                        keys.batch(plan.id, head),
                    ],
                    args=[token, head, plan.rate, plan.burst, ttl_ms, ""],
                )
            kind = _s(r[0])
            if kind == "lost":
                raise _Lost
            if kind == "moved":
                head = _s(r[1]) or None
                continue
            if kind in ("wait", "cooldown", "circuit"):
                wait_s = int(r[1]) / 1000
                if kind == "wait":
                    TOKEN_WAIT.labels(plan.id).observe(wait_s)
                if (
                    wait_s <= self.timing.inline_wait_s
                    and time.monotonic() + wait_s < deadline
                    and (slept + wait_s <= self.timing.sleep_budget_s or not self.others_waiting())
                ):
                    slept += wait_s
                    time.sleep(wait_s)
                    continue
                self._release_and_schedule(plan.id, token, max(0.0, wait_s - self.timing.lead_s))
                return kind
            if kind == "unknown":
                head = self._resolve_unknown(plan, token, head, int(r[1]))
            elif kind == "oversize":
                head = self._split_oversize(plan, token, head)
            elif kind == "go":
                payload, n, campaign = r[1], int(r[2]), _s(r[3])
                fails, waits, suspect = int(r[4]), int(r[5]), _s(r[6])
                first_at_ms, then_suspect, next_id = int(r[7]), _s(r[8]), _s(r[9])
                if suspect:
                    head = self._isolate(plan, token, head, payload, n, campaign, suspect, fails)
                else:
                    resp = self.http.send_batch(plan, payload)
                    REQUEST_DURATION.labels(plan.id).observe(resp.elapsed_s)
                    # Within the slice, the commit takes the next batch in the same round trip.
                    fuse = next_id if time.monotonic() < deadline else ""
                    head = self._apply(
                        plan, token, head, payload, n, campaign, fails, waits, first_at_ms,
                        then_suspect, resp, fuse,
                    )  # fmt: skip
            else:
                raise RuntimeError(f"take.lua answered {kind!r}")
            taken = getattr(self._local, "prefetched", None)
            if taken is not None and _s(taken[3][0]) == "go":
                continue  # its tokens are taken and it is marked in flight: send it first
            if time.monotonic() > deadline and head is not None:
                if self.others_waiting():
                    self._release_and_schedule(plan.id, token, 0)
                    return "slice"
                # Nobody is queued for the slot: a new slice, without a hand-over gap.
                deadline, slept = time.monotonic() + self.timing.slice_s, 0.0

    # ------------------------------------------------------------ outcomes
    def _commit(
        self,
        plan: PlanConfig,
        token: str,
        head: str,
        campaign: str,
        outcome: str,
        resp: ProviderResponse | None,
        *,
        reason: str = "",
        count_response: bool = True,
        sibling: tuple[str, str] | None = None,
        status: str | None = None,
        code: str | None = None,
        text: str | None = None,
        take_next: str = "",
    ) -> str | None:
        """Commit the head's outcome; with ``take_next`` also take that next batch in the same
        round trip (its take answer is kept for the loop in ``self._prefetched``)."""
        status = status if status is not None else _status(resp)
        code = code if code is not None else (resp.code if resp else "")
        text = text if text is not None else (resp.text if resp else "")
        entry_id = new_id("d") if outcome == "dead" else ""
        k = [
            keys.lease(plan.id),
            keys.lane(plan.id),
            keys.batch(plan.id, head),
            keys.campaign(plan.id, campaign),
            keys.stats(plan.id),
            keys.state(plan.id),
            keys.dlq(plan.id),
            keys.dlq_entry(plan.id, entry_id or "-"),
        ]
        a: list[str | int | float] = [
            token, head, outcome, status, code, text[:500],
            (resp.batch_id or "") if resp else "", reason, self.retention_s, entry_id,
            plan.id, plan.rate, "1" if count_response else "0",
        ]  # fmt: skip
        k += [
            keys.batch(plan.id, sibling[0] if sibling else "-"),
            keys.bucket(plan.id),
            keys.batch(plan.id, take_next or "-"),
        ]
        a += [
            sibling[1] if sibling else "", take_next, plan.burst,
            int(self.timing.lease_ttl_s * 1000),
        ]  # fmt: skip
        r = self.scripts.commit(keys=k, args=a)
        if _s(r[0]) == "lost":
            raise _Lost
        if _s(r[0]) == "moved":
            return self._head(plan.id)
        next_head = _s(r[1]) or None
        if next_head is not None and len(r) > 2:
            self._local.prefetched = (plan.id, token, next_head, r[2])
        return next_head

    def _hold(
        self,
        plan: PlanConfig,
        token: str,
        head: str,
        kind: str,
        resp: ProviderResponse | None,
        delay_s: float,
    ) -> str | None:
        r = self.scripts.hold(
            keys=[
                keys.lease(plan.id),
                keys.lane(plan.id),
                keys.batch(plan.id, head),
                keys.stats(plan.id),
                keys.state(plan.id),
            ],
            args=[
                token, head, kind, _status(resp), resp.code if resp else "",
                (resp.text if resp else "")[:500], int(delay_s * 1000),
                "1" if resp is not None and resp.ambiguous else "0", plan.rate,
            ],
        )  # fmt: skip
        if _s(r[0]) == "lost":
            raise _Lost
        return head if _s(r[0]) == "ok" else self._head(plan.id)

    def _head(self, plan_id: str) -> str | None:
        h = self.r.lindex(keys.lane(plan_id), 0)
        return _s(h) if h is not None else None

    def _apply(
        self,
        plan: PlanConfig,
        token: str,
        head: str,
        payload: bytes,
        n: int,
        campaign: str,
        fails: int,
        waits: int,
        now_ms: int,
        then_suspect: str,
        resp: ProviderResponse,
        next_id: str = "",
    ) -> str | None:
        rule = decide(resp)
        action = rule.action
        _log_outcome(plan.id, campaign, head, n, resp, action, fails + 1)
        if action is Action.ACCEPT:
            return self._commit(
                plan, token, head, campaign, "accepted", resp, sibling=_sibling(then_suspect),
                take_next=next_id,
            )  # fmt: skip
        if action is Action.RATE_WAIT:
            age_s = self._age_s(plan.id, head)
            if age_s > self.backoff.max_rate_wait_age_s:
                return self._commit(plan, token, head, campaign, "dead", resp, reason=rule.reason)
            return self._hold(
                plan, token, head, "ratewait", resp, self.backoff.rate_wait_s(resp, waits + 1)
            )
        if action is Action.RETRY:
            failures = fails + 1
            if self.backoff.retries_exhausted(failures, self._age_s(plan.id, head)):
                if resp.ambiguous:
                    found = self._lookup(plan, head)
                    if found:
                        return self._commit(plan, token, head, campaign, "accepted", None,
                                            count_response=False, status="201",
                                            sibling=_sibling(then_suspect))  # fmt: skip
                    if found is None:  # the lookup failed too: keep trying later
                        return self._hold(
                            plan, token, head, "retry", resp, self.backoff.retry_cap_s
                        )
                log.error(
                    "plan %s batch %s: %s after %d attempts; dead-lettered",
                    plan.id, head, resp.label, failures,
                )  # fmt: skip
                return self._commit(plan, token, head, campaign, "dead", resp, reason=rule.reason)
            # A 503 may say when to come back: never sooner than that.
            delay = max(self.backoff.retry_delay_s(failures), resp.retry_after_s or 0.0)
            return self._hold(plan, token, head, "retry", resp, delay)
        if action is Action.CIRCUIT:
            probes = int(self.r.hget(keys.state(plan.id), "probes") or 0)
            delay = self.backoff.circuit_probe_s(probes)
            log.error(
                "plan %s: circuit open after %s: %s%s; sending stops, its queue is kept; "
                "next probe in %.0f s or on `dispatcher plans resume %s`",
                plan.id, resp.status if resp.status is not None else resp.error,
                resp.code or "no error code", f" ({resp.text[:120]})" if resp.text else "",
                delay, plan.id,
            )  # fmt: skip
            return self._hold(plan, token, head, "circuit", resp, delay)
        if action is Action.ISOLATE and n > 1:
            err = json.dumps({"status": resp.status, "code": resp.code, "text": resp.text[:300]})
            return self._isolate(plan, token, head, payload, n, campaign, err, fails, counted=resp)
        return self._commit(plan, token, head, campaign, "dead", resp, reason=rule.reason)

    def _age_s(self, plan_id: str, head: str) -> float:
        first, now = self.r.hget(keys.batch(plan_id, head), "first_at"), time.time() * 1000
        return (now - int(first)) / 1000 if first else 0.0

    # ------------------------------------------------------------ unknown outcomes
    def _lookup(self, plan: PlanConfig, head: str) -> bool | None:
        first = self.r.hget(keys.batch(plan.id, head), "first_at")
        since = datetime.fromtimestamp(int(first or time.time() * 1000) / 1000, UTC)
        try:
            return self.http.find_batch(plan, head, since) is not None
        except LookupFailed as exc:
            log.warning("plan %s batch %s: %s", plan.id, head, exc)
            return None

    def _resolve_unknown(
        self, plan: PlanConfig, token: str, head: str, first_at_ms: int
    ) -> str | None:
        """An earlier attempt may have reached the provider: ask before sending again."""
        found = self._lookup(plan, head)
        campaign_b, fails_b, then_b = self.r.hmget(
            keys.batch(plan.id, head), "campaign", "fails", "then_suspect"
        )
        campaign = _s(campaign_b or b"")
        if found:
            log.info(
                "plan %s batch %s: found at the provider by client_reference; not resent",
                plan.id,
                head,
            )
            self.r.hincrby(keys.stats(plan.id), "lookups:found", 1)
            # A probe of an isolation found this way still marks its sibling as the suspect.
            return self._commit(plan, token, head, campaign, "accepted", None,
                                count_response=False, status="201",
                                sibling=_sibling(_s(then_b or b"")))  # fmt: skip
        if found is None:
            # Back off as for any failure, not a fixed short delay that would hammer a provider
            # whose lookups fail; the in-flight mark stays, so nothing is resent unchecked.
            failed = ProviderResponse(None, error="lookup", text="lookup failed", ambiguous=True)
            delay = self.backoff.retry_delay_s(int(fails_b or 0) + 1)
            return self._hold(plan, token, head, "retry", failed, delay)
        log.info("plan %s batch %s: not at the provider; sending again", plan.id, head)
        self.r.hincrby(keys.stats(plan.id), "lookups:missing", 1)
        return self._hold(plan, token, head, "notfound", None, 0)

    # ------------------------------------------------------------ splitting
    def _split(
        self,
        plan: PlanConfig,
        token: str,
        head: str,
        payload: bytes,
        sizes: Sequence[int],
        *,
        suspect: Sequence[str] | None = None,
        then_suspect: Sequence[str] | None = None,
    ) -> str | None:
        body = json.loads(payload)
        to: list[str] = body["to"]
        params: dict[str, dict[str, str]] | None = body.get("parameters")
        parts: list[tuple[str, int, bytes]] = []
        start = 0
        for i, size in enumerate(sizes, 1):
            chunk = to[start : start + size]
            start += size
            part_id = f"{head}.{i}"
            part = dict(body, to=chunk, client_reference=part_id)
            if params:
                wanted = set(chunk) | {"default"}
                part["parameters"] = {
                    k: {m: v for m, v in vals.items() if m in wanted} for k, vals in params.items()
                }
            parts.append((part_id, len(chunk), json.dumps(part, separators=(",", ":")).encode()))
        k = len(parts)
        sus = list(suspect or [""] * k)
        then = list(then_suspect or [""] * k)
        r = self.scripts.split(
            keys=[keys.lease(plan.id), keys.lane(plan.id), keys.batch(plan.id, head)]
            + [keys.batch(plan.id, pid) for pid, _, _ in parts],
            args=[token, head, k, *[x for p in parts for x in p], *sus, *then],
        )
        if _s(r[0]) == "lost":
            raise _Lost
        return _s(r[1]) if _s(r[0]) == "ok" else self._head(plan.id)

    def _split_oversize(self, plan: PlanConfig, token: str, head: str) -> str | None:
        payload = self.r.hget(keys.batch(plan.id, head), "payload")
        if not isinstance(payload, bytes):
            return self._head(plan.id)
        n = len(json.loads(payload)["to"])
        size = max(1, min(plan.batch_size, int(plan.burst)))
        sizes = [min(size, n - i) for i in range(0, n, size)]
        log.info(
            "plan %s batch %s: %d recipients exceed burst %g; re-batched into %d batches of <= %d",
            plan.id, head, n, plan.burst, len(sizes), size,
        )  # fmt: skip
        return self._split(plan, token, head, payload, sizes)

    def _isolate(
        self,
        plan: PlanConfig,
        token: str,
        head: str,
        payload: bytes,
        n: int,
        campaign: str,
        err: str,
        fails: int,
        counted: ProviderResponse | None = None,
    ) -> str | None:
        """Find the recipients the provider refuses one by one (halving, see docs/policy.md).

        The batch splits into halves; the left half is sent; if it is accepted, the right half
        surely holds a refused recipient and is split without a request of its own.  A single
        suspect recipient is dead-lettered with the provider's code.  Each refused recipient
        costs at most about 2 * log2(n) requests.
        """
        if n == 1:
            e = json.loads(err)
            return self._commit(
                plan, token, head, campaign, "dead", counted, reason="permanent",
                count_response=counted is not None, status=str(e.get("status") or ""),
                code=str(e.get("code") or ""), text=str(e.get("text") or ""),
            )  # fmt: skip
        if counted is not None:
            # The refused request itself is counted once, as a response, here.
            self.r.hincrby(keys.stats(plan.id), f"resp:{_status(counted)}:{counted.code}", 1)
        left = n // 2
        right_id = f"{head}.2"
        mark = json.dumps({"id": right_id, "err": json.loads(err)})
        return self._split(plan, token, head, payload, [left, n - left], then_suspect=[mark, ""])


def _sibling(then_suspect: str) -> tuple[str, str] | None:
    """(sibling batch id, refusal JSON) from an isolation probe's ``then_suspect`` mark."""
    if not then_suspect:
        return None
    mark = json.loads(then_suspect)
    return str(mark["id"]), json.dumps(mark["err"])


def _status(resp: ProviderResponse | None) -> str:
    return (
        str(resp.status)
        if resp is not None and resp.status is not None
        else ((resp.error or "") if resp is not None else "")
    )


def _log_outcome(
    plan: str,
    campaign: str,
    batch: str,
    n: int,
    resp: ProviderResponse,
    action: Action,
    attempt: int,
) -> None:
    level = logging.INFO if action is Action.ACCEPT else logging.WARNING
    if log.isEnabledFor(level):
        log.log(
            level,
            "batch outcome plan=%s campaign=%s batch=%s recipients=%d status=%s code=%s "
            "action=%s attempt=%d ms=%.0f provider_batch=%s",
            plan, campaign, batch, n, resp.status if resp.status is not None else resp.error,
            resp.code or "-", action.value, attempt, resp.elapsed_s * 1000, resp.batch_id or "-",
        )  # fmt: skip
