"""The strict send loop (``max_in_flight = 1``) with its Redis round trip behind the POST.

Why: between two POSTs of one plan the strict loop waited for one round trip, the commit of
the batch just answered fused with the take of the next: 470-520 us for a batch of 100 on the
bench machine, half as long as the POST itself.  Here the next batch is taken while the POST
before it runs, and each acceptance's commit, fused with the take of the batch after, runs
while the next POST does.  The script call is written to Redis before the POST and its reply
read after it, on this thread (``storage/pending.py``).

Guarantee 2 holds exactly: a POST starts only once the batch before it was accepted, so the
provider sees strict lane order.  A batch taken behind one that was not accepted is given
back unsent (its in-flight mark and its tokens, ``give_back.lua``), and that answer then goes
through the drain's policy like any other.

A take ahead is written only when the bucket can grant it (``Overlap.grantable``): for a
plan its bucket holds back it would answer a wait, one more script call per batch for nothing.

Control: a batch taken ahead was taken before a pause or cancel that lands during the POST
before it.  When that POST took longer than ``RECHECK_AFTER_S`` (5 ms: any real provider),
one short script (``give_back.lua``, "stopped") checks for a pause or cancel and renews the
lease before the batch is posted; a batch it stops is given back, so control stops a campaign
at the batch being posted.  Behind a shorter POST the check would cost as much as the overlap
saves, and is skipped: a pause or cancel landing in those few ms lets the batch taken ahead
go too (it counts as in flight, not canceled).

A crash leaves at most the batch in flight and the one taken behind it marked in flight; each
is looked up by ``client_reference`` before a resend, as after any crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dispatcher.config import PlanConfig
from dispatcher.observability.histograms import REQUEST_DURATION
from dispatcher.sending.policy import Action, decide, log_outcome, status_of
from dispatcher.sinch.client import ProviderResponse
from dispatcher.storage.pending import Pending
from dispatcher.storage.results import Commit, Committed, Go, Lost, Moved, Take

if TYPE_CHECKING:
    from dispatcher.sending.drain import Sender

log = logging.getLogger("dispatcher.sending.drain")  # the drain's outcome lines, as before


# A batch taken ahead longer ago than this is checked again before its POST (still_go: a
# pause or cancel since, the lease).  The check is a round trip the POST waits for, 250 us on
# the bench machine (Redis must be scheduled on a shared core), as much as the overlap saves
# for a batch of 100; behind a POST this short, a cancel lands in the gap between two POSTs
# about as often as the strict loop's own round trip left it (200-500 us).
RECHECK_AFTER_S = 0.005


class _OverlapLost(Exception):
    """The lease passed to another sender (the drain turns it into its own lease-lost stop)."""


@dataclass
class Overlap:
    """One run of the loop, from a head just taken until an answer that is not an acceptance,
    a next batch that cannot be taken at once, or the deadline.

    ``take_later(bid, in_flight)`` writes the take of ``bid`` as the batch after
    ``in_flight``; ``accept_later(bid, go, resp, take_next, in_flight)`` writes an acceptance's
    commit fused with that take; ``record(bid, go, resp, take_next)`` records any answer at
    once through the drain's policy and returns what it returns (the head, and the take of
    ``take_next`` when it was taken); ``give_back(bid, go)`` returns an unsent batch;
    ``still_go(bid, go)`` is true unless a pause or cancel came while the POST before ``bid``
    ran, and then has given it back (the policy's take of it then parks or drops it).
    """

    post: Callable[[bytes], ProviderResponse]
    take_later: Callable[[str, list[str]], Pending[Take]]
    accept_later: Callable[[str, Go, ProviderResponse, str | None, list[str]], Pending[Commit]]
    record: Callable[[str, Go, ProviderResponse, str | None], tuple[str | None, Take | None]]
    give_back: Callable[[str, Go], None]
    still_go: Callable[[str, Go], bool]
    accepted: Callable[[ProviderResponse], bool]
    more: Callable[[], bool]  # may another batch be taken (the slice is not used up)?
    rate: float  # the plan's configured rate: the bucket's refill, at most

    def grantable(self, go: Go, since_s: float) -> bool:
        """Could the bucket grant a batch like ``go`` now, ``since_s`` after ``go``'s take?

        A plan its bucket holds back would only get a wait for a take ahead: one more script
        call per batch for nothing, the commit after the POST takes it anyway.  A runtime rate
        below the configured one only makes this say yes too often (a wait, as before)."""
        return go.tokens_left is None or go.tokens_left + self.rate * since_s >= go.n

    def run(self, head: str, first: Go) -> tuple[str | None, Take | None]:
        bid, go = head, first
        nxt = go.next_id if self.more() else None
        taken_at = time.monotonic()
        pending: Pending[Take] | Pending[Commit] | None = (
            self.take_later(nxt, [bid]) if nxt is not None and self.grantable(go, 0.0) else None
        )
        try:
            while True:
                resp = self.post(go.payload)
                taken, pending = _read(pending), None
                accepted = self.accepted(resp)
                ahead = taken if isinstance(taken, Go) else None
                if ahead is not None and nxt is not None:
                    if not accepted or go.then_suspect:
                        self.give_back(nxt, ahead)  # not posted: its turn comes after bid's
                    elif (age := time.monotonic() - taken_at) <= RECHECK_AFTER_S or (
                        self.still_go(nxt, ahead)
                    ):
                        after = ahead.next_id if self.more() else None
                        fused = after if after is not None and self.grantable(ahead, age) else None
                        pending = self.accept_later(bid, go, resp, fused, [nxt])
                        taken_at = time.monotonic()
                        # Without a take ahead (the bucket is short) the next answer's commit
                        # takes `after`, as the strict loop does.
                        bid, go, nxt = nxt, ahead, after
                        continue
                    # else a pause or cancel came during the POST: still_go gave it back.
                # An isolation probe (then_suspect) is recorded by the policy, which marks its
                # sibling; an acceptance takes the next batch as the head in the same trip.
                return self.record(bid, go, resp, nxt if accepted else None)
        finally:
            if pending is not None:
                pending.close()


def _read(pending: Pending[Take] | Pending[Commit] | None) -> Take | None:
    """The take a pending call carried: its own, or the one fused into a commit."""
    if pending is None:
        return None
    got = pending.result()
    taken = got.taken if isinstance(got, Committed) else got
    if isinstance(taken, Lost):
        raise _OverlapLost
    return None if isinstance(taken, Moved) else taken


def overlap_for(
    sender: Sender,
    plan: PlanConfig,
    token: str,
    deadline: float,
    record: Callable[[str, Go, ProviderResponse, str | None], tuple[str | None, Take | None]],
) -> Overlap:
    """The loop of ``plan`` for a drain holding the lease ``token``."""
    ttl_ms = int(sender.timing.lease_ttl_s * 1000)
    s = sender.scripts
    duration = REQUEST_DURATION.labels(plan.id)

    def post(body: bytes) -> ProviderResponse:
        resp = sender.http.send_batch(plan, body)
        duration.observe(resp.elapsed_s)
        return resp

    def take_later(bid: str, in_flight: list[str]) -> Pending[Take]:
        return s.take_later(
            plan.id, token, bid, rate=plan.rate, burst=plan.burst, ttl_ms=ttl_ms,
            retention_s=sender.retention_s, window=in_flight,
        )  # fmt: skip

    def accept_later(
        bid: str, go: Go, resp: ProviderResponse, take_next: str | None, in_flight: list[str]
    ) -> Pending[Commit]:
        log_outcome(log, plan.id, go.campaign, bid, go.n, resp, Action.ACCEPT, go.fails + 1)
        return s.commit_later(
            plan.id, token, bid, go.campaign, rate=plan.rate, retention_s=sender.retention_s,
            status=status_of(resp), code=resp.code, text=resp.text,
            provider_batch_id=resp.batch_id or "", take_next=take_next, burst=plan.burst,
            ttl_ms=ttl_ms, window=in_flight,
        )  # fmt: skip

    def give_back(bid: str, go: Go) -> None:
        if s.give_back(plan.id, token, bid, go.n, plan.burst) == "lost":
            raise _OverlapLost

    def still_go(bid: str, go: Go) -> bool:
        got = s.give_back(plan.id, token, bid, go.n, plan.burst, keep_for_ms=ttl_ms)
        if got == "lost":
            raise _OverlapLost
        return got == "kept"

    return Overlap(
        post, take_later, accept_later, record, give_back, still_go,
        accepted=lambda resp: decide(resp).action is Action.ACCEPT,
        more=lambda: time.monotonic() < deadline, rate=plan.rate,
    )  # fmt: skip
