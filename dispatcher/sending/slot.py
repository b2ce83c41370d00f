"""One drain task's use of its worker slot: its own plan first, other due plans in its gaps.

Why: a plan under backlog waits about one batch's worth of tokens between batches (a 400/s plan
with batches of 400: a second).  Giving the slot back for that wait sent the plan's next drain
to the back of the broker queue, behind every drain other plans had queued meanwhile: beside
1,000 new small plans it waited 4 s there, and its bucket (full after one batch) lost all of it
(issue 14: 74-85% of its rate).  So the task keeps its plan's lease through such a wait and,
meanwhile, serves other plans that are due, claimed from the schedule in due order (and, when
none is due, plans whose drain task waits in the broker behind kept slots), each until its own
plan's tokens are there.  The slot is never idle while other plans are due, and the
plan resumes on time, whatever the length of the queue.

The task ends after ``keep_s`` (a worker's warm shutdown waits for it, and other hosts' slots
get the plan too); the plan is then put first in the schedule, not last, so passing the turn
on costs it one claim, not a queue.  Plans served in the gaps are never kept themselves: they
give their slot back as any drain does, at the latest when the task's own plan is due.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from dispatcher.config import PlanConfig
from dispatcher.sending.drain import Sender

MARGIN_S = 0.005
"""Plans are served in a gap only if it is longer than this."""


class Kept(NamedTuple):
    """The task's plan, waiting for its tokens under the lease it kept."""

    plan: PlanConfig
    token: str
    head: str
    at: float  # time.monotonic() when its tokens are there


def run(sender: Sender, plan: str, *, keep_s: float, claim_ms: int, poll_s: float) -> str:
    """Drain ``plan``, keeping it through short token waits for up to ``keep_s``; returns the
    drain's last outcome ("handed" when the plan was passed on at the end of ``keep_s``).

    Kept: a wait shorter than a slice, of a plan in a run: more batches follow the waiting
    one, or it was kept before (so its last batch does not queue alone behind everyone)."""
    kept: list[Kept] = []
    resumed = False

    def keeps(p: PlanConfig, token: str, head: str, wait_s: float) -> bool:
        if p.id != plan or wait_s >= sender.timing.slice_s:
            return False
        if not resumed and sender.lanes.queued(plan) <= 1:
            return False
        # Safety net, as at a drain's start: due again after the lease, should we die.
        sender.scripts.schedule(plan, int((sender.timing.lease_ttl_s + 1) * 1000))
        kept.append(Kept(p, token, head, time.monotonic() + wait_s))
        return True

    ends = time.monotonic() + keep_s
    sender.keeps = keeps
    try:
        outcome = sender.drain(plan)
        while outcome == "kept" and kept:
            k = kept.pop()
            if time.monotonic() >= ends:
                hand_back(sender, k)
                return "handed"
            serve_until(sender, k.at, claim_ms=claim_ms, poll_s=poll_s)
            resumed = True
            outcome = sender.resume(k.plan, k.token, k.head, None)
        return outcome
    finally:
        sender.keeps = lambda *_: False


def hand_back(sender: Sender, k: Kept) -> None:
    """Give a kept plan's lease back, first in the schedule for when its tokens are there."""
    delay_s = max(0.0, k.at - time.monotonic() - sender.timing.lead_s)
    sender.lanes.release_and_schedule(k.plan.id, k.token, int(delay_s * 1000), "head")


def serve_until(sender: Sender, at: float, *, claim_ms: int, poll_s: float) -> int:
    """Drain other due plans, one at a time in due order, until ``at`` (monotonic); sleep when
    none is due.  With none due, a plan whose drain task waits in the broker is served too:
    when every slot keeps a plan, nothing else would run it.  Returns how many drains ran."""
    served = 0
    while (left := at - time.monotonic()) > MARGIN_S:
        due = sender.scripts.claim(1, claim_ms, "slot")
        if not due:
            time.sleep(min(left, poll_s))
            continue
        sender.drain(due[0], until=at)
        served += 1
    left = at - time.monotonic()
    if left > 0:
        time.sleep(left)
    return served
