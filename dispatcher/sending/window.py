"""A window of batches in flight for one plan (``max_in_flight`` > 1): up to k POSTs at once,
taken in lane order under the drain's lease, recorded as their answers come.

The drain (``drain.py``) owns the lease, the scripts and the outcome policy; this module only
orders the work: when the next batch may be taken, when a POST starts, and in which order
answers are recorded.  Redis calls stay on the drain's thread; only POSTs run on the pool.
The semantics (order at the provider, failures inside the window) are in docs/architecture.md,
"A window of batches in flight".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from dispatcher.config import PlanConfig
from dispatcher.observability.histograms import REQUEST_DURATION, TOKEN_WAIT
from dispatcher.sending.policy import Action, decide
from dispatcher.sinch.client import ProviderResponse
from dispatcher.storage.results import Go, Lost, Take, Wait

if TYPE_CHECKING:
    from dispatcher.sending.drain import Sender


class _WindowLost(Exception):
    """The lease passed to another sender during the window (the drain turns it into its own
    lease-lost stop; private, as every exception outside errors.py is)."""


class Recorded(Protocol):
    """What recording one answer gave: the lane's head after it (the batch itself when it was
    held in its place), and the take of the batch the commit was asked to take with it."""

    @property
    def head(self) -> str | None: ...
    @property
    def taken(self) -> Take | None: ...


@dataclass
class _Flight:
    """A batch of the window: taken (tokens spent, marked in flight), its POST running."""

    bid: str
    go: Go
    future: Future[ProviderResponse]


@dataclass
class Window:
    """One run of a window, from the head just taken until no batch is in flight.

    ``take(bid, in_flight)`` takes ``bid`` as the next of the window (take.lua with a window);
    ``record(bid, go, resp, take_next, in_flight)`` records an answer (``take_next`` is only
    given for an acceptance: the commit also takes it); ``accepted(resp)`` is the policy's
    reading of an answer.  ``on_wait`` sees each token wait (the histogram).
    """

    k: int
    posts: Executor
    post: Callable[[bytes], ProviderResponse]
    take: Callable[[str, list[str]], Take]
    record: Callable[[str, Go, ProviderResponse, str | None, list[str]], Recorded]
    accepted: Callable[[ProviderResponse], bool]
    inline_wait_s: float
    deadline: float
    on_wait: Callable[[float], None] = lambda s: None

    def run(self, head: str, first: Go) -> str | None:
        """Send ``first`` and the batches after it; return a batch to go on from (a guess the
        next head take corrects with Moved: a batch still in the lane, or None when empty)."""
        flights: list[_Flight] = []
        self._flights = flights
        self._start(head, first)
        self._next, self._grow = first.next_id, True
        self._pause: float | None = None  # tokens short: wait for them or for an answer
        lane_head: str | None = head
        held: str | None = None  # a batch of the window held in its place
        while flights:
            while self._grow and self._pause is None and self._next is not None:
                if len(flights) >= self.k:
                    break
                if time.monotonic() >= self.deadline:
                    self._grow = False
                    break
                bid = self._next
                self._taken(self.take(bid, [f.bid for f in flights]), bid)
            wait_for(
                [f.future for f in flights],
                timeout=self._pause if self._grow else None,
                return_when=FIRST_COMPLETED,
            )
            self._pause = None
            for f in [f for f in flights if f.future.done()]:
                flights.remove(f)
                resp = f.future.result()
                others = [o.bid for o in flights]
                accept = self.accepted(resp)
                fuse = None
                room = len(flights) < self.k and time.monotonic() < self.deadline
                if accept and self._grow and self._next is not None and others and room:
                    fuse = self._next
                if not accept:
                    self._grow = False
                rec = self.record(f.bid, f.go, resp, fuse, others)
                if rec.head == f.bid:
                    held = held or f.bid
                else:
                    lane_head = rec.head
                if fuse is not None:
                    self._taken(rec.taken, fuse)
        return held or lane_head

    def _start(self, bid: str, go: Go) -> None:
        self._flights.append(_Flight(bid, go, self.posts.submit(self.post, go.payload)))

    def _taken(self, t: Take | None, bid: str) -> None:
        """Follow a take of ``bid`` as the window's next (alone or fused in a commit)."""
        if t is None:
            return
        if isinstance(t, Lost):
            raise _WindowLost
        if isinstance(t, Go):
            self._start(bid, t)
            self._next = t.next_id
        elif isinstance(t, Wait) and t.ms / 1000 <= self.inline_wait_s:
            self.on_wait(t.ms / 1000)
            self._pause = t.ms / 1000
        else:
            # A cool-down, an open circuit, a pause, a long wait, or a batch that must be the
            # head first (Later): the window only empties now.
            self._grow = False


def window_for(
    sender: Sender,
    plan: PlanConfig,
    token: str,
    deadline: float,
    posts: Executor,
    apply: Callable[..., Recorded],
) -> Window:
    """The window of ``plan`` for a drain holding the lease ``token``; ``apply(bid, go, resp,
    take_next, window=in_flight)`` records an answer through the drain's policy."""
    ttl_ms = int(sender.timing.lease_ttl_s * 1000)
    duration = REQUEST_DURATION.labels(plan.id)

    def post(body: bytes) -> ProviderResponse:
        resp = sender.http.send_batch(plan, body)
        duration.observe(resp.elapsed_s)
        return resp

    def record(
        bid: str, go: Go, resp: ProviderResponse, take_next: str | None, in_flight: list[str]
    ) -> Recorded:
        return apply(bid, go, resp, take_next, window=in_flight)

    def take(bid: str, in_flight: list[str]) -> Take:
        return sender.scripts.take(
            plan.id, token, bid, rate=plan.rate, burst=plan.burst, ttl_ms=ttl_ms,
            retention_s=sender.retention_s, window=in_flight,
        )  # fmt: skip

    return Window(
        plan.max_in_flight, posts, post, take, record,
        accepted=lambda resp: decide(resp).action is Action.ACCEPT,
        inline_wait_s=sender.timing.inline_wait_s, deadline=deadline,
        on_wait=TOKEN_WAIT.labels(plan.id).observe,
    )  # fmt: skip
