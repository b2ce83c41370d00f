"""User input quoted for a one-line error message.

A campaign error is one line on a terminal or in a log; a recipient or sender as typed may
hold a newline, a control character or a whole pasted paragraph, so it is shown as a
truncated ``repr``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["quote"]

_QUOTE_LIMIT: Final = 40


def quote(text: str) -> str:
    """Quote user input for a one-line message: no newline or control character survives."""
    if len(text) > _QUOTE_LIMIT:
        text = text[: _QUOTE_LIMIT - 1] + "…"
    return repr(text)
