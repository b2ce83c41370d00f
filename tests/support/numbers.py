"""Recipient numbers for tests."""

from __future__ import annotations

import random


def mobiles(n: int, seed: int) -> list[str]:
    """Distinct valid Swedish mobile numbers, normalized (no '+')."""
    rng = random.Random(seed)
    return [f"4670{x:07d}" for x in rng.sample(range(10_000_000), n)]
