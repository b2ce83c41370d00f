"""bucket.lua against a reference model, with property tests (hypothesis) on a real Redis.

The clock is stepped by passing ``now_us`` (ARGV[4]), so every sequence of costs and clock
steps is deterministic: the script must agree with the model on every answer, and the grants
must fit ``burst + rate * T`` in every window, whatever the sequence.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
import redis
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from dispatcher.storage import keys, luasource
from dispatcher.storage.fields import Batch
from dispatcher.storage.results import Go, Wait
from dispatcher.storage.scripts import for_client

_counter = itertools.count()
_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
T0 = 1_700_000_000_000_000  # a plausible Redis TIME in microseconds


@dataclass
class Model:
    """The token bucket as CONTRACT.md states it, written independently of the Lua.

    Starts full; refills ``rate`` tokens per second up to ``burst``; grants ``cost`` when
    ``cost`` tokens are there; a clock that goes back counts as no time passing; a cost above
    ``burst`` is never granted and answers wait -1.  Stored state is what Redis keeps: the
    tokens as the exact double (written with 17 significant digits), the time of the last grant
    in whole microseconds.
    """

    rate: float
    burst: float
    tokens: float | None = None
    ts: int = 0

    def call(self, cost: float, now: int) -> tuple[int, int, int]:
        tokens = self.burst
        if self.tokens is not None:
            tokens = self.tokens
            if now > self.ts:
                tokens = min(self.burst, tokens + (now - self.ts) * self.rate / 1000000)
            else:
                now = self.ts
        if cost > self.burst:
            return 0, -1, math.floor(tokens * 1000)
        if tokens >= cost:
            tokens -= cost
            self.tokens = tokens
            self.ts = now
            return 1, 0, math.floor(tokens * 1000)
        return 0, math.ceil((cost - tokens) * 1000 / self.rate), math.floor(tokens * 1000)


def call(
    r: redis.Redis, plan: str, rate: float, burst: float, cost: float, now_us: int | None
) -> tuple[int, int, int]:
    g = for_client(r).bucket(plan, rate, burst, cost, now_us)
    return g.granted, g.wait_ms, g.tokens_x1000


def fresh_key() -> str:
    """A plan of its own for each case, so no case sees another's bucket."""
    return f"lim{next(_counter)}"


rates = st.one_of(
    st.sampled_from([1.0, 20.0, 30.0, 50.0, 200.0, 1000.0, 5000.0]),
    st.floats(min_value=0.5, max_value=20000.0, allow_nan=False, allow_infinity=False).map(
        lambda x: round(x, 3)
    ),
)
bursts = st.integers(min_value=1, max_value=2000).map(float)
# A step: (cost as a fraction of burst, clock step in microseconds; negative = clock skew).
steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=1.3, allow_nan=False),
        st.one_of(
            st.integers(min_value=0, max_value=2_000),
            st.integers(min_value=0, max_value=3_000_000),
            st.integers(min_value=-500_000, max_value=0),
        ),
    ),
    min_size=1,
    max_size=60,
)


def envelope_excess(grants: list[tuple[int, float]], rate: float, burst: float) -> float:
    """Largest (granted in [t_i, t_j]) - (burst + rate * (t_j - t_i)) over all grant pairs.

    Exact and O(n): for each j, the worst i maximizes rate * t_i - (sum before i).
    """
    worst = -math.inf
    best_start = -math.inf
    total = 0.0
    for t, cost in grants:
        best_start = max(best_start, rate * t / 1e6 - total)
        total += cost
        worst = max(worst, total - rate * t / 1e6 + best_start - burst)
    return worst


@_SETTINGS
@given(rate=rates, burst=bursts, seq=steps)
@example(rate=5000.0, burst=1.0, seq=[(0.0, -1), (0.0, 200)])  # first grant with a clock step back
def test_script_agrees_with_model_and_grants_fit_the_envelope(
    r: redis.Redis, rate: float, burst: float, seq: list[tuple[float, int]]
) -> None:
    key = fresh_key()
    model = Model(rate, burst)
    now = T0
    grants: list[tuple[int, float]] = []
    for frac, step in seq:
        now += step
        # The bucket's own clock never goes back behind its last grant.
        bucket_clock = max(now, grants[-1][0]) if grants else now
        cost = max(1, round(frac * burst))
        got = call(r, key, rate, burst, cost, now)
        want = model.call(cost, now)
        assert got == want, f"cost={cost} now={now - T0}: script {got} != model {want}"
        if got[0]:
            grants.append((bucket_clock, cost))
        elif cost > burst:
            assert got[1] == -1
        else:
            assert got[1] > 0
    # Tokens are stored exactly; the bound leaves room for float rounding alone.
    assert envelope_excess(grants, rate, burst) <= 1e-6 * (len(grants) + 1)


@_SETTINGS
@given(rate=rates, burst=bursts, seq=steps)
def test_a_wait_answer_is_truthful(
    r: redis.Redis, rate: float, burst: float, seq: list[tuple[float, int]]
) -> None:
    """After waiting the answered wait_ms (and nothing else taken), the same cost is granted."""
    key = fresh_key()
    now = T0
    for frac, step in seq:
        now += max(0, step)
        cost = max(1, min(burst, round(frac * burst)))
        granted, wait_ms, _ = call(r, key, rate, burst, cost, now)
        if not granted:
            assert wait_ms > 0
            assert wait_ms <= math.ceil(cost * 1000 / rate)
            later = now + wait_ms * 1000
            assert call(r, key, rate, burst, cost, later)[0] == 1, (
                f"not granted {wait_ms} ms later, as promised"
            )
            now = later


@_SETTINGS
@given(
    rate=rates,
    burst=bursts,
    over=st.floats(min_value=0.001, max_value=10.0),
    before=st.integers(min_value=0, max_value=5),
)
def test_cost_above_burst_answers_minus_one_and_changes_nothing(
    r: redis.Redis, rate: float, burst: float, over: float, before: int
) -> None:
    key = fresh_key()
    model = Model(rate, burst)
    now = T0
    for _ in range(before):
        assert call(r, key, rate, burst, 1, now) == model.call(1, now)
        now += 1000
    state = r.hgetall(keys.bucket(key))
    cost = burst * (1 + over)
    assume(cost > burst)
    for _ in range(3):  # asking again, or later, never helps and never blocks
        assert call(r, key, rate, burst, cost, now)[:2] == (0, -1)
        now += 10_000_000
    assert r.hgetall(keys.bucket(key)) == state
    # The bucket is still usable at once for a batch that fits.
    assert call(r, key, rate, burst, burst, now) == model.call(burst, now)


def test_bucket_starts_full_then_refills_at_rate(r: redis.Redis) -> None:
    key = fresh_key()
    assert call(r, key, 10, 10, 10, T0)[:2] == (1, 0)
    assert call(r, key, 10, 10, 1, T0) == (0, 100, 0)  # 1 token at 10/s: 100 ms
    assert call(r, key, 10, 10, 1, T0 + 99_999)[0] == 0
    assert call(r, key, 10, 10, 1, T0 + 100_000)[:2] == (1, 0)
    # A long idle period refills to burst, never beyond it.
    assert call(r, key, 10, 10, 11, T0 + 3_600_000_000)[:2] == (0, -1)
    assert call(r, key, 10, 10, 10, T0 + 3_600_000_000)[:2] == (1, 0)
    assert call(r, key, 10, 10, 1, T0 + 3_600_000_000)[0] == 0


def test_clock_going_back_grants_nothing_extra(r: redis.Redis) -> None:
    key = fresh_key()
    assert call(r, key, 100, 100, 100, T0)[0] == 1
    # A worker with a clock 10 s behind must not be able to take tokens "before" the grant.
    assert call(r, key, 100, 100, 1, T0 - 10_000_000) == (0, 10, 0)
    assert call(r, key, 100, 100, 1, T0 + 10_000)[:2] == (1, 0)


def test_sub_millisecond_refill_at_high_rates(r: redis.Redis) -> None:
    """At 100,000/s a token arrives every 10 µs: refill is not rounded to milliseconds."""
    key = fresh_key()
    assert call(r, key, 100_000, 1000, 1000, T0)[0] == 1
    assert call(r, key, 100_000, 1000, 50, T0 + 500)[:2] == (1, 0)
    assert call(r, key, 100_000, 1000, 1, T0 + 500)[0] == 0


def test_redis_time_is_used_when_no_clock_is_passed(r: redis.Redis) -> None:
    key = fresh_key()
    assert call(r, key, 1, 5, 5, None)[:2] == (1, 0)
    granted, wait_ms, _ = call(r, key, 1, 5, 5, None)
    assert granted == 0 and 4000 < wait_ms <= 5000
    # Idle state expires once the bucket would be full again; nothing is kept for idle plans.
    ttl = r.pttl(keys.bucket(key))
    assert 0 < ttl <= 6000


def test_take_uses_the_same_bucket_code() -> None:
    """bucket.lua, take.lua and commit.lua (the fused take) include one bucket, so the
    limiter tested here is the one the send path uses."""
    block = luasource.raw("lib/bucket.lua")
    for name in ("bucket", "take", "commit"):
        assert luasource.source(name).count(block) == 1, name


@pytest.mark.parametrize("rate,burst", [(20.0, 20.0), (7.5, 3.0), (3000.0, 1000.0)])
def test_take_script_grants_within_the_envelope(r: redis.Redis, rate: float, burst: float) -> None:
    """The fenced take step (lease + head + bucket) obeys the same envelope, batch by batch."""
    s = for_client(r)
    plan = f"lim{next(_counter)}"
    lane = keys.lane(plan)
    r.set(keys.lease(plan), "7")
    n = max(1, int(burst * 0.4))
    now = T0
    grants: list[tuple[int, float]] = []
    for i in range(200):
        bid = f"b{i}"
        r.rpush(lane, bid)
        r.hset(
            keys.batch(plan, bid),
            mapping={Batch.N: n, Batch.PAYLOAD: "{}", Batch.CAMPAIGN: "c"},
        )
    for _ in range(2000):
        head = r.lindex(lane, 0)
        if head is None:
            break
        bid = head.decode()
        out = s.take(plan, "7", bid, rate=rate, burst=burst, ttl_ms=60000, now_us=now)
        if isinstance(out, Go):
            grants.append((now, n))
            r.lpop(lane)  # what commit does
        else:
            assert isinstance(out, Wait), out
            now += out.ms * 1000
        now += 137
    assert len(grants) == 200
    assert envelope_excess(grants, rate, burst) <= 1e-6 * (len(grants) + 1)
    # Under a backlog the bucket is never left idle: the mean rate is the limit.
    span_s = (grants[-1][0] - grants[0][0]) / 1e6
    assert (200 * n - burst) / span_s >= 0.97 * rate


def test_scripts_survive_a_flushed_script_cache(r: redis.Redis) -> None:
    """Scripts are called by SHA; after SCRIPT FLUSH (or a restarted server) they load again."""
    key = fresh_key()
    assert call(r, key, 10, 10, 1, T0)[0] == 1
    r.script_flush()
    assert call(r, key, 10, 10, 1, T0) == (1, 0, 8000)
