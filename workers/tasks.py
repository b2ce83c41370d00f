"""Thin tasks: each calls the library and returns."""

from __future__ import annotations

from workers.app import app, runtime


@app.task(name="dispatcher.drain", ignore_result=True)
def drain(plan: str) -> str:
    """Send the plan's head batches until it must wait, is empty, or its time slice is used."""
    return runtime.sender.drain(plan)
