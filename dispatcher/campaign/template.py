"""``${key}`` placeholders, as the provider substitutes them (seed 003, "Parameterization").

The provider renders the message; we render only to count parts and lengths before enqueue,
so :func:`render` must substitute exactly as the API does: one pass, case-sensitive keys,
values inserted literally (a ``${x}`` inside a value is not expanded again).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__ = ["PLACEHOLDER", "Template", "placeholders", "render"]

PLACEHOLDER: Final = re.compile(r"\$\{([^}]+)\}")


def placeholders(body: str) -> list[str]:
    """Keys in order of first appearance (the order reports name missing ones in)."""
    return list(dict.fromkeys(PLACEHOLDER.findall(body)))


def render(body: str, values: Mapping[str, str]) -> str:
    """``body`` with every placeholder replaced; the caller guarantees every key is present."""
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], body)


class Template:
    """A body split once at its placeholders, for rendering it a million times.

    ``re.sub`` with a callback costs a Python call per placeholder per recipient; joining
    precomputed literal pieces with the values does not.
    """

    __slots__ = ("_literals", "_slots", "body", "keys")

    def __init__(self, body: str) -> None:
        self.body = body
        pieces = PLACEHOLDER.split(body)  # literal, key, literal, key, ..., literal
        self.keys: tuple[str, ...] = tuple(dict.fromkeys(pieces[1::2]))
        index = {key: i for i, key in enumerate(self.keys)}
        self._literals: tuple[str, ...] = tuple(pieces[0::2])
        self._slots: tuple[int, ...] = tuple(index[k] for k in pieces[1::2])

    def render(self, values: tuple[str, ...]) -> str:
        """The body with ``values`` given in the order of :attr:`keys`."""
        literals = self._literals
        out = [literals[0]]
        for i, slot in enumerate(self._slots):
            out.append(values[slot])
            out.append(literals[i + 1])
        return "".join(out)
