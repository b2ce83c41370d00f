"""Parameter values per recipient, and what each rendered message costs.

Everything the provider would reject per recipient (a missing parameter, a rendered body over
the limit or empty) is cheaper to report at enqueue than to learn from a 400 that
dead-letters a whole batch of 1000.  Decisions the seeds leave open (docs/validation.md has
the full list):

* Parameter keys may be written in any accepted number form.  A recipient's value is the
  one under its own spelling, else under its canonical number, else under another spelling
  of its number (the first such key), else the default.  Keys that are not numbers match no
  one; the output keeps only the keys the body uses, and their values only for recipients
  that go out.
* A placeholder with no values at all (no such column and no default) is a campaign error
  (:func:`dispatcher.campaign.prepare.prepare` says so before this module is reached).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from itertools import compress, repeat
from typing import Final, Literal, cast

from dispatcher.campaign.encoding import analyze, body_length
from dispatcher.campaign.msisdn import check_many
from dispatcher.campaign.recipients import Checked
from dispatcher.campaign.result import Prepared, invalid_entry
from dispatcher.campaign.template import Template
from dispatcher.errors import CampaignError
from dispatcher.models import InvalidRecipient
from dispatcher.sinch.limits import MAX_BODY_CHARS

__all__ = ["DEFAULT_KEY", "parameterized"]

DEFAULT_KEY: Final = "default"


class _Rendered:
    """What one set of parameter values makes of the body; shared by all who have them."""

    __slots__ = ("count", "parts", "problem", "ucs2")

    def __init__(self, parts: int, ucs2: bool, problem: str | None) -> None:
        self.parts = parts
        self.ucs2 = ucs2
        self.problem = problem
        self.count = 0


def parameterized(
    template: Template,
    recipients: Sequence[str],
    checked: Checked,
    parameters: Mapping[str, Mapping[str, str]],
) -> Prepared:
    """Deduplicate, find each recipient's values, render once per distinct set of values.

    A recipient's value for a key is the one under its own spelling, else under its canonical
    number, else under any other spelling of its number (the first such key), else the
    default.  Normalizing a million keys would cost as much as checking a million recipients,
    and the keys are almost always spelled like the recipients (a CSV's ``to`` column), so
    only keys that are neither a first occurrence's spelling nor a canonical number are
    normalized: a duplicate's spelling (its number is known already) and keys matching no
    recipient at all (checked).
    """
    keys = template.keys
    first = checked.first
    invalid_at = {i: invalid_entry(recipients[i], exc) for i, exc in checked.invalid.items()}
    duplicates = len(checked.duplicates)
    spelled: dict[str, str] = {}  # a duplicate's other spelling -> its canonical number
    canonical_spelled: set[str] = set()  # numbers a duplicate wrote in canonical form
    for index, msisdn in checked.duplicates:
        raw = recipients[index]
        if raw == recipients[first[msisdn]]:
            continue  # spelled like the first occurrence: its key is that one's
        if raw == msisdn:
            canonical_spelled.add(msisdn)
        else:
            spelled.setdefault(raw, msisdn)
    tables = [parameters[key] for key in keys]
    defaults = [t.get(DEFAULT_KEY) for t in tables]
    outs: list[dict[str, str]] = [{} for _ in keys]

    # Rendering and analysis depend only on the values, and values repeat (first names,
    # defaults), so each distinct set of values is rendered once.
    cache: dict[object, _Rendered] = {}
    dropped: set[str] = set()  # valid numbers that will not go out (a parameter problem)
    if len(keys) == 1:
        total = _single_key(
            template, recipients, checked, tables[0], outs[0], spelled, canonical_spelled,
            cache, invalid_at, dropped,
        )  # fmt: skip
    else:
        first_raws = {recipients[i] for i in first.values()}
        others = [_other_spellings(t, first, first_raws, spelled) for t in tables]
        for msisdn, index in first.items():
            raw = recipients[index]
            resolved = _resolve(raw, msisdn, keys, tables, others, defaults)
            if isinstance(resolved, InvalidRecipient):
                invalid_at[index] = resolved
                dropped.add(msisdn)
                continue
            values, found = resolved
            rendered = cache.get(values)
            if rendered is None:
                rendered = cache[values] = _render(template, values)
            if rendered.problem is not None:
                invalid_at[index] = InvalidRecipient(raw, rendered.problem)
                dropped.add(msisdn)
                continue
            for out, value, explicit in zip(outs, values, found, strict=True):
                if explicit:
                    out[msisdn] = value
            rendered.count += 1
        total = sum(r.parts * r.count for r in cache.values())
    valid = [m for m in first if m not in dropped] if dropped else list(first)

    used = [r for r in cache.values() if r.count]
    parameters_out: dict[str, dict[str, str]] = {}
    for key, out, default in zip(keys, outs, defaults, strict=True):
        if default is not None:
            out[DEFAULT_KEY] = default
        parameters_out[key] = out
    if used:
        encoding: Literal["GSM-7", "UCS-2"] = "UCS-2" if any(r.ucs2 for r in used) else "GSM-7"
        most = max(r.parts for r in used)
        least = min(r.parts for r in used)
    else:
        encoding = analyze(template.body).encoding
        most = least = total = 0
    invalid = [invalid_at[i] for i in sorted(invalid_at)]
    return Prepared(valid, invalid, duplicates, parameters_out, encoding, most, total, least)


def _single_key(
    template: Template,
    recipients: Sequence[str],
    checked: Checked,
    table: Mapping[str, str],
    out: dict[str, str],
    spelled: Mapping[str, str],
    canonical_spelled: set[str],
    cache: dict[object, _Rendered],
    invalid_at: dict[int, InvalidRecipient],
    dropped: set[str],
) -> int:
    """The common case, one placeholder, with the per-recipient loop cut to the lookups.

    At a million recipients every operation in the loop costs a tenth of a second, so the
    loop only finds each recipient's own value; rendering, problems and part counts are
    worked out afterwards per distinct value, and other spellings only for recipients that
    found nothing (see :func:`_late_values`).  Returns the total number of parts; the renders
    used are marked in ``cache`` (``count`` 1).
    """
    first = checked.first
    key = template.keys[0]
    default = table.get(DEFAULT_KEY)
    # Lookups by each first occurrence's own spelling, in C (map, zip, compress): a Python
    # loop costs several times as much per recipient.
    own = list(map(table.get, map(recipients.__getitem__, first.values())))
    found = list(map(operator.is_not, own, repeat(None)))
    # (compress keeps only the pairs whose value is not None.)
    out.update(cast("Iterator[tuple[str, str]]", compress(zip(first, own, strict=True), found)))
    fell: list[str] = []
    if len(out) < len(first):
        table_get = table.get
        for msisdn in compress(first, map(operator.not_, found)):
            value = table_get(msisdn)  # the canonical number as the key
            if value is None:
                fell.append(msisdn)
            else:
                out[msisdn] = value
    on_default: list[str] = []
    if fell:
        later = _late_values(table, len(out), recipients, checked, spelled, canonical_spelled)
        for msisdn in fell:
            value = later.get(msisdn)
            if value is not None:
                out[msisdn] = value
            elif default is not None:
                on_default.append(msisdn)
            else:
                index = first[msisdn]
                invalid_at[index] = _no_value(recipients[index], key)
                dropped.add(msisdn)

    # Each distinct value rendered once; recipients are counted per value only when the
    # values do not all give the same number of parts (usually they do).
    problems: dict[str, str] = {}
    for value in set(out.values()):
        rendered = cache[value] = _render(template, (value,))
        rendered.count = 1  # used; the total is worked out below
        if rendered.problem is not None:
            problems[value] = rendered.problem
            rendered.count = 0
    if problems:
        for msisdn, value in list(out.items()):
            problem = problems.get(value)
            if problem is not None:
                index = first[msisdn]
                invalid_at[index] = InvalidRecipient(recipients[index], problem)
                dropped.add(msisdn)
                del out[msisdn]
    sizes = {cache[value].parts for value in cache if value not in problems}
    if len(sizes) <= 1:
        total = sizes.pop() * len(out) if sizes else 0
    else:
        total = sum(cache[value].parts * n for value, n in Counter(out.values()).items())
    if on_default:
        assert default is not None
        shared = cache.get(default)
        if shared is None:
            shared = cache[default] = _render(template, (default,))
        if shared.problem is None:
            shared.count = 1
            total += shared.parts * len(on_default)
        else:
            for msisdn in on_default:
                index = first[msisdn]
                invalid_at[index] = InvalidRecipient(recipients[index], shared.problem)
                dropped.add(msisdn)
    return total


def _resolve(
    raw: str,
    msisdn: str,
    keys: Sequence[str],
    tables: Sequence[Mapping[str, str]],
    others: Sequence[Mapping[str, str]],
    defaults: Sequence[str | None],
) -> tuple[tuple[str, ...], list[bool]] | InvalidRecipient:
    """One recipient's values for several keys, and which are its own (not the default)."""
    values: list[str] = []
    found: list[bool] = []
    for key, table, other, default in zip(keys, tables, others, defaults, strict=True):
        value = table.get(raw)
        if value is None:
            value = table.get(msisdn)
            if value is None:
                value = other.get(msisdn)
        found.append(value is not None)
        if value is None:
            value = default
            if value is None:
                return _no_value(raw, key)
        values.append(value)
    return tuple(values), found


def _late_values(
    table: Mapping[str, str],
    hits: int,
    recipients: Sequence[str],
    checked: Checked,
    spelled: Mapping[str, str],
    canonical_spelled: set[str],
) -> dict[str, str]:
    """Values under other spellings, for recipients that found none under their own.

    Every key is one of: used by a recipient (``hits``: own spelling or canonical number,
    never the same key twice), the default, an invalid recipient's spelling (no one's
    number), a duplicate's other spelling (its number known), a duplicate's canonical
    spelling of a number that used its own spelling, or unaccounted for.  With nothing
    unaccounted for, the duplicates' other spellings are all there is to look at; otherwise
    every key spelled unlike the recipients is normalized.
    """
    first = checked.first

    def used(key: str, msisdn: str) -> bool:
        """Whether ``key`` (a spelling of ``msisdn``) is the one the recipient found."""
        own = recipients[first[msisdn]]
        if table.get(own) is not None:
            return key == own
        return key == msisdn and table.get(msisdn) is not None

    # The keys known not to belong to a recipient that fell through, other than those used.
    known: set[str] = {DEFAULT_KEY} if DEFAULT_KEY in table else set()
    for index in checked.invalid:
        raw = recipients[index]
        if isinstance(raw, str) and raw in table:
            known.add(raw)
    spelled_keys = [k for k, m in spelled.items() if k in table and not used(k, m)]
    known.update(spelled_keys)
    known.update(m for m in canonical_spelled if m in table and not used(m, m))
    accounted = hits + len(known)
    if accounted == len(table):
        if not spelled_keys:
            return {}
        late = {k: spelled[k] for k in spelled_keys}
        return _first_in_table(table, late, checked.first)
    first_raws = {recipients[i] for i in checked.first.values()}
    return _other_spellings(table, checked.first, first_raws, spelled)


def _other_spellings(
    table: Mapping[str, str],
    first: Mapping[str, int],
    first_raws: set[str],
    spelled: Mapping[str, str],
) -> dict[str, str]:
    """canonical number -> value, from keys spelled unlike any recipient's first occurrence.

    Set differences (in C) find those keys; usually there are none, or a few (keys of
    invalid recipients, of numbers not in the campaign, of a duplicate's other spelling).
    """
    rest = table.keys() - first_raws
    rest -= first.keys()
    rest.discard(DEFAULT_KEY)
    if not rest:
        return {}
    unknown = [k for k in rest if k not in spelled]
    numbers: dict[str, str] = {k: spelled[k] for k in rest if k in spelled}
    for key, result in zip(unknown, check_many(unknown), strict=True):
        if isinstance(result, str):
            numbers[key] = result
    return _first_in_table(table, numbers, first)


def _first_in_table(
    table: Mapping[str, str], numbers: Mapping[str, str], first: Mapping[str, int]
) -> dict[str, str]:
    """canonical number -> value of its first key in ``table``, for keys -> numbers given."""
    spellings: dict[str, list[str]] = {}
    for key, msisdn in numbers.items():
        if msisdn in first:
            spellings.setdefault(msisdn, []).append(key)
    if any(len(keys) > 1 for keys in spellings.values()):
        position = {k: i for i, k in enumerate(table) if k in numbers}
        for keys in spellings.values():
            keys.sort(key=position.__getitem__)
    return {msisdn: table[keys[0]] for msisdn, keys in spellings.items()}


def _no_value(raw: str, key: str) -> InvalidRecipient:
    return InvalidRecipient(raw, f"no value for parameter {key!r} and no default")


def _render(template: Template, values: tuple[str, ...]) -> _Rendered:
    for key, value in zip(template.keys, values, strict=True):
        if not isinstance(value, str):
            raise CampaignError(f"parameter {key!r} has a value that is not text: {value!r:.40}")
    text = template.render(values)
    info = analyze(text)
    length = body_length(text)
    if length > MAX_BODY_CHARS:
        problem: str | None = (
            f"message is {length} characters after substitution; the maximum is {MAX_BODY_CHARS}"
        )
    elif not text or text.isspace():
        problem = "message is empty after substitution"
    else:
        problem = None
    return _Rendered(info.parts, info.encoding == "UCS-2", problem)
