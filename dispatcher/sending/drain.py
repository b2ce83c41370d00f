"""Drain one plan's lane: the send loop.

One ``drain(plan)`` holds the plan's lease (one sender per plan, so the provider sees the
plan's batches in lane order) and per batch makes one Redis round trip beside the POST under a
backlog: the commit of a batch's outcome, fenced by the lease, also takes the next (lease, plan
state, token bucket, in-flight mark; the stored, ready-to-send body).  No per-recipient work
happens here (enqueue stored the bodies ready to POST), and no Redis layout (``storage``).
By default each round trip runs behind the POST before it (``overlap.py``); ``max_in_flight``
> 1 posts several batches at once (``window.py``).

A drain never sleeps long in a worker slot.  When the plan must wait longer than
``inline_wait_s``, it writes its due time into the schedule and returns (the ticker,
``scheduler.py``, starts the next drain), unless ``slot.py`` keeps the plan and serves other
due plans in the wait.  A drain gives its slot back after ``slice_s``, so plans share workers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NamedTuple

import redis

from dispatcher.config import MAX_IN_FLIGHT, PlanConfig, Settings, WorkerConfig
from dispatcher.errors import LookupFailed
from dispatcher.observability.histograms import REQUEST_DURATION, TOKEN_WAIT
from dispatcher.sending import policy
from dispatcher.sending.overlap import _OverlapLost, overlap_for
from dispatcher.sending.policy import Action, Backoff, age_s, decide, sibling_of, status_of
from dispatcher.sending.window import _WindowLost, window_for
from dispatcher.sinch import payload as batch_body
from dispatcher.sinch.client import ProviderResponse, SinchClient
from dispatcher.storage.lanes import Lanes
from dispatcher.storage.reports import Reports
from dispatcher.storage.results import (
    Busy,
    Circuit,
    Cooldown,
    Dropped,
    Go,
    Later,
    Lost,
    Moved,
    Oversize,
    Part,
    Paused,
    Take,
    Unknown,
    Wait,
)
from dispatcher.storage.scripts import HoldKind, ScheduleMode, for_client

log = logging.getLogger("dispatcher.sending.drain")


@dataclass(frozen=True)
class Timing:
    """The drain's clock; the values and what each means live in config.WorkerConfig.

    A drain sleeps at most ``sleep_budget_s`` in all, then gives its worker slot back: a plan
    that only waits must not hold a slot other plans' drains queue for (while it queues, its
    bucket fills, so it loses nothing).
    """

    lease_ttl_s: float = WorkerConfig.lease_ttl_s
    slice_s: float = WorkerConfig.slice_s
    inline_wait_s: float = WorkerConfig.inline_wait_s
    lead_s: float = WorkerConfig.lead_s
    sleep_budget_s: float = WorkerConfig.sleep_budget_s

    @classmethod
    def from_config(cls, w: WorkerConfig) -> Timing:
        return cls(w.lease_ttl_s, w.slice_s, w.inline_wait_s, w.lead_s, w.sleep_budget_s)


class _Lost(Exception):
    """The lease passed to another sender: stop touching this plan at once."""


class _Next(NamedTuple):
    """Where the loop goes on: the head, and that head's take when the commit that made it
    the head already took it in the same round trip."""

    head: str | None
    taken: Take | None = None


_WAITS: dict[type, str] = {Wait: "wait", Cooldown: "cooldown", Circuit: "circuit"}


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
        self.lanes = Lanes(client, self.scripts)
        self.backoff = backoff or Backoff()
        self.timing = timing or Timing()
        self.retention_s = int(settings.retention_days * 86400)
        self.reports = Reports(client, retention_s=self.retention_s)
        # Asked once a drain has slept its budget: are other drains queued for a worker slot?
        # The worker sets it (it knows the broker); without it a drain always gives way.
        self.others_waiting: Callable[[], bool] = lambda: True
        # The threads a window's POSTs run on (max_in_flight > 1), made when first needed.
        self._posts: ThreadPoolExecutor | None = None
        # Asked before a token wait gives the slot back: keep it instead? (slot.py)
        self.keeps: Callable[[PlanConfig, str, str, float], bool] = lambda *_: False

    # ------------------------------------------------------------ schedule
    def _schedule(self, plan: str, delay_s: float, mode: ScheduleMode = "set") -> None:
        self.scripts.schedule(plan, int(delay_s * 1000), mode)

    def _release_and_schedule(self, plan: str, token: str, delay_s: float) -> None:
        self.lanes.release_and_schedule(plan, token, int(delay_s * 1000))

    # ------------------------------------------------------------ drain
    def drain(self, plan_id: str, until: float | None = None) -> str:
        """Send the plan's head batches until it must wait, is empty, or the slice is used.

        Returns why it stopped (for logs and tests): empty, wait, cooldown, circuit, slice,
        busy, lost, unconfigured, paused, kept.  ``until`` (monotonic) ends the slice then.
        """
        plan = self.settings.plans.get(plan_id)
        if plan is None:
            log.error("plan %s has queued batches but is not in this worker's config (%s); its "
                      "queue is kept, retrying in 60 s", plan_id, self.settings.source)  # fmt: skip
            self._schedule(plan_id, 60.0, "lt")
            return "unconfigured"
        ttl_ms = int(self.timing.lease_ttl_s * 1000)
        lease = self.scripts.lease(plan_id, ttl_ms)
        if isinstance(lease, Busy):
            # Someone drains it; come back when its lease would run out, in case it died.
            self._schedule(plan_id, max(0, lease.pttl_ms) / 1000 + 0.05, "lt")
            return "busy"
        # Safety net: if this process dies, the plan comes due again after the lease expires.
        return self.resume(plan, lease.token, self.lanes.start(plan_id, ttl_ms + 1000), until)

    def resume(self, plan: PlanConfig, token: str, head: str | None, until: float | None) -> str:
        """Send under the lease ``token`` from ``head`` on (also a plan kept through a wait)."""
        try:
            return self._loop(plan, token, head, until)
        except _Lost:
            log.warning("plan %s: lease lost to another sender; stopping this drain", plan.id)
            return "lost"

    def _loop(self, plan: PlanConfig, token: str, head: str | None, until: float | None) -> str:
        deadline = time.monotonic() + self.timing.slice_s if until is None else until
        ttl_ms = int(self.timing.lease_ttl_s * 1000)
        slept = 0.0
        taken: Take | None = None
        while True:
            if head is None:
                self.lanes.release_idle(plan.id, token)
                return "empty"
            r, taken = taken, None
            if r is None:
                r = self.scripts.take(
                    plan.id, token, head, rate=plan.rate, burst=plan.burst, ttl_ms=ttl_ms,
                    retention_s=self.retention_s,
                )  # fmt: skip
            if isinstance(r, Lost):
                raise _Lost
            if isinstance(r, Paused):
                self.lanes.release_idle(plan.id, token)
                return "paused"
            if isinstance(r, Moved):
                head = r.head
                continue
            if isinstance(r, Later):
                continue  # a window's fused take declined: take it as the head
            if isinstance(r, Wait | Cooldown | Circuit):
                wait_s = r.ms / 1000
                if isinstance(r, Wait):
                    TOKEN_WAIT.labels(plan.id).observe(wait_s)
                if (
                    wait_s <= self.timing.inline_wait_s
                    and time.monotonic() + wait_s < deadline
                    and (slept + wait_s <= self.timing.sleep_budget_s or not self.others_waiting())
                ):
                    slept += wait_s
                    time.sleep(wait_s)
                    continue
                if isinstance(r, Wait) and self.keeps(plan, token, head, wait_s):
                    return "kept"
                self._release_and_schedule(plan.id, token, max(0.0, wait_s - self.timing.lead_s))
                return _WAITS[type(r)]
            if isinstance(r, Unknown):
                head, taken = self._resolve_unknown(plan, token, head, r)
            elif isinstance(r, Oversize):
                head, taken = self._split_oversize(plan, token, head, r)
            elif r.suspect:
                head, taken = self._isolate(
                    plan, token, head, r.payload, r.n, r.campaign, r.suspect
                )
            else:
                if r.recheck:
                    checked = self._recheck(plan, token, head, r)
                    if isinstance(checked, _Next):
                        head, taken = checked
                        continue
                    r = checked
                if plan.max_in_flight > 1 or plan.prefetch_take:
                    head, taken = self._window(plan, token, head, r, deadline)
                else:
                    resp = self.http.send_batch(plan, r.payload)
                    REQUEST_DURATION.labels(plan.id).observe(resp.elapsed_s)
                    # Within the slice, the commit takes the next batch in the same round trip.
                    fuse = r.next_id if time.monotonic() < deadline else None
                    head, taken = self._apply(plan, token, head, r, resp, fuse)
            if isinstance(taken, Go):
                continue  # its tokens are taken and it is marked in flight: send it first
            if time.monotonic() > deadline and head is not None:
                if until is not None or self.others_waiting():
                    self._release_and_schedule(plan.id, token, 0)
                    return "slice"
                # Nobody is queued for the slot: a new slice, without a hand-over gap.
                deadline, slept = time.monotonic() + self.timing.slice_s, 0.0

    # ------------------------------------------------------------ the window
    def _window(self, plan: PlanConfig, token: str, head: str, first: Go, deadline: float) -> _Next:
        """Send ``first`` and the batches after it, each next one taken while a POST runs:
        strictly one POST at a time (``overlap.py``), or up to ``max_in_flight`` at once
        (``window.py``); every answer goes through ``_apply`` in its place."""
        try:
            if plan.max_in_flight == 1:
                one = functools.partial(self._apply, plan, token)
                return _Next(*overlap_for(self, plan, token, deadline, one).run(head, first))
            if self._posts is None:
                self._posts = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="dispatch-post")
            many = functools.partial(self._apply, plan, token, anywhere=True)
            return _Next(
                window_for(self, plan, token, deadline, self._posts, many).run(head, first)
            )
        except (_WindowLost, _OverlapLost):
            raise _Lost from None

    # ------------------------------------------------------------ outcomes
    def _commit(
        self,
        plan: PlanConfig,
        token: str,
        head: str,
        campaign: str,
        outcome: Literal["accepted", "dead"],
        resp: ProviderResponse | None,
        *,
        reason: str = "",
        count_response: bool = True,
        sibling: tuple[str, str] | None = None,
        status: str | None = None,
        code: str | None = None,
        text: str | None = None,
        take_next: str | None = None,
        anywhere: bool = False,
        window: list[str] | None = None,
    ) -> _Next:
        """Commit the head's outcome; with ``take_next`` also take that next batch in the same
        round trip (its take comes back in the result, for the loop to use)."""
        c = self.scripts.commit(
            plan.id, token, head, campaign, outcome, rate=plan.rate, retention_s=self.retention_s,
            status=status if status is not None else status_of(resp),
            code=code if code is not None else (resp.code if resp else ""),
            text=text if text is not None else (resp.text if resp else ""),
            provider_batch_id=(resp.batch_id or "") if resp else "", reason=reason,
            count_response=count_response, sibling=sibling, take_next=take_next,
            burst=plan.burst, ttl_ms=int(self.timing.lease_ttl_s * 1000), anywhere=anywhere,
            window=window,
        )  # fmt: skip
        if isinstance(c, Lost):
            raise _Lost
        if isinstance(c, Moved):
            return _Next(c.head)
        return _Next(c.head, c.taken)

    def _hold(
        self,
        plan: PlanConfig,
        token: str,
        head: str,
        kind: HoldKind,
        resp: ProviderResponse | None,
        delay_s: float,
        *,
        anywhere: bool = False,
        suspect: str = "",
    ) -> _Next:
        h = self.scripts.hold(
            plan.id, token, head, kind, rate=plan.rate, delay_ms=int(delay_s * 1000),
            status=status_of(resp), code=resp.code if resp else "", text=resp.text if resp else "",
            ambiguous=resp is not None and resp.ambiguous, anywhere=anywhere, suspect=suspect,
        )  # fmt: skip
        if isinstance(h, Lost):
            raise _Lost
        return _Next(h.head) if isinstance(h, Moved) else _Next(head)

    def _apply(
        self,
        plan: PlanConfig,
        token: str,
        head: str,
        go: Go,
        resp: ProviderResponse,
        next_id: str | None = None,
        *,
        anywhere: bool = False,
        window: list[str] | None = None,
    ) -> _Next:
        """Record the answer to ``go``'s POST.  ``anywhere``: a window's batch (max_in_flight
        > 1), committed or held in its place; ``window`` its other batches in flight, for the
        take of ``next_id`` fused into the commit."""
        rule = decide(resp)
        action = rule.action
        campaign, fails = go.campaign, go.fails
        sibling = sibling_of(go.then_suspect)
        policy.log_outcome(log, plan.id, campaign, head, go.n, resp, action, fails + 1)
        # A window's batch (anywhere) is committed or held in its place.
        commit = functools.partial(self._commit, anywhere=anywhere)
        hold = functools.partial(self._hold, anywhere=anywhere)
        if action is Action.ACCEPT:
            return commit(
                plan, token, head, campaign, "accepted", resp, sibling=sibling, take_next=next_id,
                window=window,
            )  # fmt: skip
        if action is Action.RATE_WAIT:
            if age_s(go.first_at_ms) > self.backoff.max_rate_wait_age_s:
                return commit(plan, token, head, campaign, "dead", resp, reason=rule.reason)
            return hold(
                plan, token, head, "ratewait", resp, self.backoff.rate_wait_s(resp, go.waits + 1)
            )
        if action is Action.RETRY:
            failures = fails + 1
            if self.backoff.retries_exhausted(failures, age_s(go.first_at_ms)):
                if resp.ambiguous:
                    found = self._lookup(plan, head, go.first_at_ms)
                    if found:
                        return commit(plan, token, head, campaign, "accepted", None,
                                      count_response=False, status="201",
                                      sibling=sibling)  # fmt: skip
                    if found is None:  # the lookup failed too: keep trying later
                        return hold(plan, token, head, "retry", resp, self.backoff.retry_cap_s)
                log.error(
                    "plan %s batch %s: %s after %d attempts; dead-lettered",
                    plan.id, head, resp.label, failures,
                )  # fmt: skip
                return commit(plan, token, head, campaign, "dead", resp, reason=rule.reason)
            # A 503 may say when to come back: never sooner than that.
            delay = max(self.backoff.retry_delay_s(failures), resp.retry_after_s or 0.0)
            return hold(plan, token, head, "retry", resp, delay)
        if action is Action.CIRCUIT:
            delay = self.backoff.circuit_probe_s(self.lanes.probes(plan.id))
            log.error(
                "plan %s: circuit open after %s: %s%s; sending stops, its queue is kept; "
                "next probe in %.0f s or on `dispatcher plans resume %s`",
                plan.id, resp.status if resp.status is not None else resp.error,
                resp.code or "no error code", f" ({resp.text[:120]})" if resp.text else "",
                delay, plan.id,
            )  # fmt: skip
            return hold(plan, token, head, "circuit", resp, delay)
        if action is Action.ISOLATE and go.n > 1:
            err = json.dumps({"status": resp.status, "code": resp.code, "text": resp.text[:300]})
            if anywhere:
                # Split only at the head: marked suspect, it is isolated once it is there.
                return hold(plan, token, head, "suspect", resp, 0, suspect=err)
            return self._isolate(plan, token, head, go.payload, go.n, campaign, err, counted=resp)
        return commit(plan, token, head, campaign, "dead", resp, reason=rule.reason)

    # ------------------------------------------------------------ opt-outs since enqueue
    def _recheck(self, plan: PlanConfig, token: str, head: str, go: Go) -> Go | _Next:
        """Someone opted out since this batch was checked (the version moved): drop them
        before the POST.  One lookup of the lists; per recipient only in that case."""
        nums = batch_body.recipients(go.payload)
        out, version = self.reports.suppressed_among(plan.id, nums)
        if not out:
            return go
        body, left = batch_body.without(go.payload, out)
        removed = go.n - left
        log.info("plan %s batch %s: %d recipients opted out since enqueue; not sent to them",
                 plan.id, head, removed)  # fmt: skip
        res = self.scripts.resuppress(
            plan.id, token, head, body, removed, version, self.retention_s
        )
        if isinstance(res, Lost):
            raise _Lost
        if isinstance(res, Moved | Dropped):
            return _Next(res.head)
        return dataclasses.replace(go, payload=body, n=left)

    # ------------------------------------------------------------ unknown outcomes
    def _lookup(self, plan: PlanConfig, head: str, first_at_ms: int | None) -> bool | None:
        since = datetime.fromtimestamp(int(first_at_ms or time.time() * 1000) / 1000, UTC)
        try:
            return self.http.find_batch(plan, head, since) is not None
        except LookupFailed as exc:
            log.warning("plan %s batch %s: %s", plan.id, head, exc)
            return None

    def _resolve_unknown(self, plan: PlanConfig, token: str, head: str, u: Unknown) -> _Next:
        """An earlier attempt may have reached the provider: ask before sending again."""
        found = self._lookup(plan, head, u.first_at_ms)
        if found:
            log.info(
                "plan %s batch %s: found at the provider by client_reference; not resent",
                plan.id,
                head,
            )
            self.lanes.count_lookup(plan.id, found=True)
            # A probe of an isolation found this way still marks its sibling as the suspect.
            return self._commit(plan, token, head, u.campaign, "accepted", None,
                                count_response=False, status="201",
                                sibling=sibling_of(u.then_suspect))  # fmt: skip
        if found is None:
            # Back off as for any failure, not a fixed short delay that would hammer a provider
            # whose lookups fail; the in-flight mark stays, so nothing is resent unchecked.
            failed = ProviderResponse(None, error="lookup", text="lookup failed", ambiguous=True)
            delay = self.backoff.retry_delay_s(u.fails + 1)
            return self._hold(plan, token, head, "retry", failed, delay)
        log.info("plan %s batch %s: not at the provider; sending again", plan.id, head)
        self.lanes.count_lookup(plan.id, found=False)
        return self._hold(plan, token, head, "notfound", None, 0)

    # ------------------------------------------------------------ splitting
    def _split(
        self, plan: PlanConfig, token: str, head: str, payload: bytes, sizes: Sequence[int],
        *, then_suspect: Sequence[str] | None = None,
    ) -> _Next:  # fmt: skip
        marks = list(then_suspect or [])
        parts = [
            Part(ref, n, body, then_suspect=marks[i] if marks else "")
            for i, (ref, n, body) in enumerate(batch_body.split(payload, sizes, head))
        ]
        s = self.scripts.split(plan.id, token, head, parts)
        if isinstance(s, Lost):
            raise _Lost
        return _Next(s.head) if isinstance(s, Moved) else _Next(s.first)

    def _split_oversize(self, plan: PlanConfig, token: str, head: str, o: Oversize) -> _Next:
        """Re-batch to the limits in force: a runtime ``plans set`` wins over the file."""
        n = len(batch_body.recipients(o.payload))
        burst = o.burst or plan.burst
        size = max(1, min(o.batch_size or plan.batch_size, int(burst)))
        sizes = [min(size, n - i) for i in range(0, n, size)]
        log.info(
            "plan %s batch %s: %d recipients exceed burst %g; re-batched into %d batches of <= %d",
            plan.id, head, n, burst, len(sizes), size,
        )  # fmt: skip
        return self._split(plan, token, head, o.payload, sizes)

    def _isolate(
        self,
        plan: PlanConfig,
        token: str,
        head: str,
        payload: bytes,
        n: int,
        campaign: str,
        err: str,
        counted: ProviderResponse | None = None,
    ) -> _Next:
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
            self.lanes.count_response(plan.id, status_of(counted), counted.code)
        left = n // 2
        right_id = f"{head}.2"
        mark = json.dumps({"id": right_id, "err": json.loads(err)})
        return self._split(plan, token, head, payload, [left, n - left], then_suspect=[mark, ""])
