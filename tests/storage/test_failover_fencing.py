"""A failover to a replica that missed acknowledged writes must not hand out a live token again.

Redis replication is asynchronous: a promoted replica may lack the last ``INCR`` of a plan's
fence counter and the lease ``SET`` that went with it, while the sender that got that token is
still running.  Simulated here on one server by putting the counter back and dropping the lease.
"""

from __future__ import annotations

import redis

from dispatcher.storage import keys
from dispatcher.storage.results import Leased, Lost
from dispatcher.storage.scripts import for_client

PLAN = "fo-plan"


def test_a_regressed_fence_counter_still_issues_a_token_no_live_sender_holds(
    r: redis.Redis,
) -> None:
    s = for_client(r)
    first = s.lease(PLAN, 15_000)
    assert isinstance(first, Leased)
    counter = int(r.get(keys.fence(PLAN)) or 0)
    # The failover: the new primary never saw that INCR nor the lease.
    r.set(keys.fence(PLAN), counter - 1)
    r.delete(keys.lease(PLAN))
    second = s.lease(PLAN, 15_000)
    assert isinstance(second, Leased)
    assert int(r.get(keys.fence(PLAN)) or 0) == counter  # the same counter value again ...
    assert second.token != first.token  # ... but not the same token
    # So the old sender, still running, is refused on its next write.
    assert s.release(PLAN, first.token) is False
    head = "b-none"
    got = s.take(PLAN, first.token, head, rate=10, burst=10, ttl_ms=15_000)
    assert got == Lost()
