"""Opt-out keywords in an inbound message (CONTRACT.md; US carrier rules require them)."""

from __future__ import annotations

from typing import Literal

STOP = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
START = frozenset({"START", "UNSTOP"})


def opt_action(body: str) -> Literal["stop", "start"] | None:
    """What the first word asks for, any case, punctuation ignored ("Stop." and "stop please"
    opt out; "Stopping by later" does not)."""
    words = body.split()
    if not words:
        return None
    word = "".join(ch for ch in words[0] if ch.isalnum()).upper()
    if word in STOP:
        return "stop"
    if word in START:
        return "start"
    return None
