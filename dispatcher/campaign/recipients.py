"""A recipient list checked and deduplicated: the million-recipient loop of enqueue.

One pass over the list, every entry normalized and validated as :func:`msisdn.check` would,
and every later spelling of a number already seen counted as a duplicate, first occurrence
winning.  Pure and single-process; :mod:`dispatcher.parallel` runs the same loop on two halves
in two processes (an opt-in for the CLI and benchmarks) and joins them with :func:`merge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dispatcher.campaign.msisdn import ASCII_SEPARATORS, NOT_TEXT, check, clean
from dispatcher.campaign.numbering import FAST, FAST_SLOTS, fast_valid, verdict
from dispatcher.errors import InvalidNumber

__all__ = ["Checked", "check_unique", "merge"]


@dataclass(slots=True)
class Checked:
    """:func:`check` over a recipient list, deduplicated: what enqueue needs to know."""

    first: dict[str, int]
    """Canonical MSISDN -> index of its first occurrence, in input order."""
    invalid: dict[int, InvalidNumber]
    """Index -> why that entry is not a number we send to, in input order."""
    duplicates: list[tuple[int, str]]
    """(index, canonical MSISDN) of each later occurrence of a number."""


def check_unique(raws: Sequence[str], offset: int = 0) -> Checked:
    """:func:`msisdn.check` every entry and deduplicate (indices reported from ``offset``).

    The loop inlines the fast test (optional ``+``, then one ``fullmatch``; failing that, the
    separators out and a ``+``/``00`` off, then the same) because at a couple of microseconds
    per number the calls themselves would be a third of the cost.  Whatever the fast test
    does not accept goes through :func:`check` and gets the exact verdict and reason.
    """
    fast = FAST
    limit = FAST_SLOTS
    separators = ASCII_SEPARATORS
    first: dict[str, int] = {}
    invalid: dict[int, InvalidNumber] = {}
    duplicates: list[tuple[int, str]] = []
    for index, raw in enumerate(raws, offset):
        try:
            msisdn = raw[1:] if raw[:1] == "+" else raw
            slots = fast.get(msisdn[:3])
            pattern = slots[len(msisdn)] if slots is not None and len(msisdn) < limit else None
            if pattern is None or pattern.fullmatch(msisdn) is None:
                pattern = None
                if raw.isascii():
                    # Formatted input ("+46 70-123 45 67") read as normalize() reads it.
                    msisdn = raw.encode("ascii").translate(None, separators).decode("ascii")
                    if msisdn[:1] == "+":
                        msisdn = msisdn[1:]
                    elif msisdn[:2] == "00":
                        msisdn = msisdn[2:]
                    slots = fast.get(msisdn[:3])
                    if slots is not None and len(msisdn) < limit:
                        pattern = slots[len(msisdn)]
                # Clean digits the fast test declined (a trunk prefix after the country code,
                # another region sharing it, a head not seen yet: fast_valid builds its
                # test) get the exact verdict; anything else check()'s, with its reason.
                if (pattern is None or pattern.fullmatch(msisdn) is None) and not (
                    clean(msisdn) and fast_valid(msisdn)
                ):
                    exact = verdict(msisdn) if clean(msisdn) else None
                    msisdn = exact if isinstance(exact, str) else check(raw)
        except InvalidNumber as exc:
            invalid[index] = exc
            continue
        except (AttributeError, TypeError):  # not a string at all
            invalid[index] = InvalidNumber(NOT_TEXT)
            continue
        if msisdn in first:
            duplicates.append((index, msisdn))
        else:
            first[msisdn] = index
    return Checked(first, invalid, duplicates)


def merge(mine: Checked, theirs: Checked) -> Checked:
    """``mine`` extended by ``theirs``, the check of the entries that follow mine.

    As if the whole list had been checked in one pass: a number first seen in ``theirs`` but
    present in ``mine`` becomes a duplicate.  Dict and set operations in C; only numbers in
    both halves are looked at, and no set of half a million is built.  ``mine`` is reused.
    """
    first, later, duplicates = mine.first, theirs.first, mine.duplicates
    across = list(filter(first.__contains__, later))
    for msisdn in across:
        duplicates.append((later.pop(msisdn), msisdn))
    first.update(later)
    if across or theirs.duplicates:
        duplicates.extend(theirs.duplicates)
        duplicates.sort()
    mine.invalid.update(theirs.invalid)
    return mine
