"""The per-plan rate limiter of the simulated provider (seed 003: each recipient counts)."""

from __future__ import annotations

from sinch_simulator.model import PlanSpec


class Bucket:
    """Recipient-weighted token bucket; starts full.

    Capacity is burst plus ``tolerance * rate``: the envelope the project promises is checked
    at the provider with 250 ms of network and scheduling jitter allowed, so the simulator must
    not turn that jitter into 429s.
    """

    __slots__ = ("capacity", "last", "rate", "tokens")

    def __init__(self, spec: PlanSpec, tolerance_s: float, now: float) -> None:
        self.rate = spec.rate
        self.capacity = spec.effective_burst + max(tolerance_s, 0.0) * max(spec.rate, 0.0)
        self.tokens = self.capacity
        self.last = now

    def take(self, n: int, now: float) -> float | None:
        """None when the n recipients fit (and are taken), else seconds until they would.

        A batch larger than the capacity never fits; the wait returned is then the time to a
        full bucket, so a client that honours Retry-After backs off instead of hammering.
        """
        if self.rate <= 0:
            return None
        if now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if n <= self.tokens + 1e-9:
            self.tokens -= n
            return None
        need = min(float(n), self.capacity) - self.tokens
        return max(need, 0.0) / self.rate
