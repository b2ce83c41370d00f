"""What a drain reads and writes besides its scripts: the plain commands of the send loop.

They share round trips with script calls where the loop always needs both (the safety-net
schedule and the head at the start of a drain; the lease's release and the next due time at
its end), so the loop's Redis cost stays what it was when it built these pipelines itself.
"""

from __future__ import annotations

import redis

from dispatcher.storage import keys
from dispatcher.storage.base import as_text
from dispatcher.storage.fields import State, Stats
from dispatcher.storage.scripts import ScheduleMode, Scripts, for_client, idle_answer


class Lanes:
    def __init__(self, client: redis.Redis, scripts: Scripts | None = None) -> None:
        self.r = client
        self.scripts = scripts or for_client(client)

    def start(self, plan: str, due_in_ms: int) -> str | None:
        """Just after taking the lease: come due again in ``due_in_ms`` (in case this process
        dies; a live drain moves it), let due scheduled campaigns in and read the head, in one
        round trip."""
        if not self.scripts.pipelines:  # a cluster: scripts cannot share a pipeline
            self.scripts.schedule(plan, due_in_ms, "set")
            return self.scripts.admit(plan)
        pipe = self.r.pipeline(transaction=False)
        self.scripts.schedule(plan, due_in_ms, "set", pipe=pipe)
        self.scripts.admit(plan, pipe=pipe)
        _, head = pipe.execute()
        return as_text(head) if head else None

    def release_and_schedule(
        self, plan: str, token: str, delay_ms: int, mode: ScheduleMode = "set"
    ) -> None:
        pipe = self.r.pipeline(transaction=False)
        self.scripts.release(plan, token, pipe=pipe)
        self.scripts.schedule(plan, delay_ms, mode, pipe=pipe)
        pipe.execute()

    def release_idle(self, plan: str, token: str) -> None:
        """Nothing to send now (the lane is empty, or the plan is paused): leave the schedule,
        unless an enqueue or a resume raced in meanwhile; come due again when the next
        scheduled campaign is."""
        if self.scripts.pipelines:
            pipe = self.r.pipeline(transaction=False)
            self.scripts.release(plan, token, pipe=pipe)
            pipe.zrem(keys.DUE, plan)
            self.scripts.idle(plan, pipe=pipe)
            *_, raw = pipe.execute()
            idle = idle_answer(raw)
        else:  # a cluster: the same steps in the same order, one by one
            self.scripts.release(plan, token)
            self.r.zrem(keys.DUE, plan)
            idle = self.scripts.idle(plan)
        if idle.runnable and not idle.paused:
            self.r.zadd(keys.DUE, {plan: 0}, lt=True)
        elif idle.next_admit_ms is not None:
            self.r.zadd(keys.DUE, {plan: idle.next_admit_ms}, lt=True)

    def queued(self, plan: str) -> int:
        """Entries in the plan's lane (batches, and markers of paused campaigns)."""
        return int(self.r.llen(keys.lane(plan)))

    def probes(self, plan: str) -> int:
        """How many probes the plan's open circuit has made (0 when closed)."""
        return int(self.r.hget(keys.state(plan), State.PROBES) or 0)

    def count_response(self, plan: str, status: str, code: str) -> None:
        """Count an answer whose outcome no script records (an isolation's refused request)."""
        self.r.hincrby(keys.stats(plan), Stats.resp(status, code), 1)

    def count_lookup(self, plan: str, found: bool) -> None:
        self.r.hincrby(keys.stats(plan), Stats.LOOKUPS_FOUND if found else Stats.LOOKUPS_MISSING, 1)
