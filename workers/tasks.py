"""Thin tasks: each calls the library and returns."""

from __future__ import annotations

from workers.app import app, runtime


@app.task(name="dispatcher.drain", ignore_result=True)
def drain(plan: str) -> str:
    """Send the plan's head batches until it must wait, is empty, or its time slice is used."""
    sender = runtime.sender
    sender.others_waiting = _drains_queued
    return sender.drain(plan)


def _drains_queued() -> bool:
    """True when drain tasks wait in the broker for a worker slot (all slots are busy)."""
    try:
        with app.pool.acquire(block=True, timeout=1) as conn:
            channel = conn.default_channel  # type: ignore[attr-defined]
            ok = channel.queue_declare(queue=app.conf.task_default_queue, passive=True)
            return bool(ok.message_count)
    except Exception:
        return True  # when in doubt, give the slot back
