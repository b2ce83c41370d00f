"""Enqueue-time checks: what is wrong with a campaign, found before anything is queued.

Everything the provider would reject per recipient (a bad number, a missing parameter, a
rendered body over the limit) is cheaper to report at enqueue than to learn from a 400 that
dead-letters a whole batch of 1000, and a campaign-level mistake (empty body, bad sender,
impossible schedule) should stop the campaign with one readable line.  Pure functions: no
Redis, no I/O, so the CLI's ``preview`` can run them too.

Decisions the seeds leave open (docs/validation.md has the full list):

* Duplicates are judged after normalization; the first occurrence wins, later ones are only
  counted.  ``len(recipients) + len(invalid) + duplicates == len(input)`` always holds.
* Parameter keys may be written in any accepted number form.  A recipient's value is the
  one under its own spelling, else under its canonical number, else under another spelling
  of its number (the first such key), else the default.  Keys that are not numbers match no
  one; the output keeps only the keys the body uses, and their values only for recipients
  that go out.
* A placeholder with no values at all (no such column and no default) is a campaign error,
  not a million identical per-recipient ones.
* When every recipient is invalid (and not ``strict``) the result simply has no recipients;
  the caller decides whether that is an error.
"""

from __future__ import annotations

import gc
import operator
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import compress, repeat
from typing import Final, Literal, cast

from dispatcher.campaign.encoding import MAX_BODY_CHARS, analyze, body_length
from dispatcher.campaign.msisdn import Checked, check, check_many, check_unique
from dispatcher.campaign.template import Template
from dispatcher.errors import CampaignError, InvalidNumber

__all__ = [
    "MAX_EXPIRY",
    "CampaignError",
    "Invalid",
    "Prepared",
    "prepare",
    "validate_schedule",
    "validate_sender",
]

MAX_EXPIRY: Final = timedelta(days=3)
"""expire_at may be at most this long after send_at (API.md 1.1)."""

DEFAULT_KEY: Final = "default"
_QUOTE_LIMIT: Final = 40


@dataclass(frozen=True, slots=True)
class Invalid:
    """A recipient that will not be sent to; ``to`` exactly as the user gave it."""

    to: str
    reason: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated campaign, ready to be cut into batches.

    The part figures cover the recipients that go out (all 0 when none do); ``encoding`` is
    the body's own when no recipient goes out.
    """

    recipients: list[str]
    invalid: list[Invalid]
    duplicates: int
    parameters: dict[str, dict[str, str]] | None
    encoding: Literal["GSM-7", "UCS-2"]
    max_parts: int
    total_parts: int
    min_parts: int


def prepare(
    body: str,
    recipients: Sequence[str],
    parameters: Mapping[str, Mapping[str, str]] | None = None,
    *,
    strict: bool = False,
) -> Prepared:
    """Validate a campaign; raises :class:`CampaignError` for what invalidates all of it."""
    if not body or body.isspace():
        raise CampaignError("body is empty")
    length = body_length(body)
    if length > MAX_BODY_CHARS:
        raise CampaignError(f"body is {length} characters long; the maximum is {MAX_BODY_CHARS}")
    if not recipients:
        raise CampaignError("no recipients")
    template = Template(body)
    keys = template.keys
    if keys:
        _require_parameters(keys, parameters)

    # A million-recipient campaign allocates millions of small objects and none of them is
    # garbage; the cyclic collector would rescan the growing heap dozens of times (a third of
    # the run time).  Nothing here creates cycles, so it is paused for the duration.
    collecting = gc.isenabled()
    gc.disable()
    try:
        checked = check_unique(recipients)
        if not keys:
            return _plain(template.body, recipients, checked, strict)
        assert parameters is not None  # _require_parameters
        return _finish(_parameterized(template, recipients, checked, parameters), strict)
    finally:
        if collecting:
            gc.enable()


def _require_parameters(
    keys: tuple[str, ...], parameters: Mapping[str, Mapping[str, str]] | None
) -> None:
    for key in keys:
        if parameters is None or key not in parameters:
            raise CampaignError(
                f"the body uses ${{{key}}} but no values are given for {key!r} "
                "(add a parameter column or a default)"
            )
        if not isinstance(parameters[key], Mapping):
            raise CampaignError(
                f"parameter {key!r} must map numbers (and 'default') to values, "
                f"not {type(parameters[key]).__name__}"
            )


def _invalid(raw: object, result: object) -> Invalid:
    reason = result.reason if isinstance(result, InvalidNumber) else str(result)
    return Invalid(raw if isinstance(raw, str) else repr(raw), reason)


@dataclass(slots=True)
class _Outcome:
    valid: list[str]
    invalid: list[Invalid]
    duplicates: int
    parameters: dict[str, dict[str, str]] | None
    encoding: Literal["GSM-7", "UCS-2"]
    most: int
    total: int
    least: int


def _plain(body: str, recipients: Sequence[str], checked: Checked, strict: bool) -> Prepared:
    """No placeholders: one analysis serves every recipient."""
    invalid = [_invalid(recipients[i], exc) for i, exc in checked.invalid.items()]
    info = analyze(body)
    valid = list(checked.first)
    parts = info.parts if valid else 0
    duplicates = len(checked.duplicates)
    outcome = _Outcome(
        valid, invalid, duplicates, None, info.encoding, parts, parts * len(valid), parts
    )
    return _finish(outcome, strict)


class _Rendered:
    """What one set of parameter values makes of the body; shared by all who have them."""

    __slots__ = ("count", "parts", "problem", "ucs2")

    def __init__(self, parts: int, ucs2: bool, problem: str | None) -> None:
        self.parts = parts
        self.ucs2 = ucs2
        self.problem = problem
        self.count = 0


def _parameterized(
    template: Template,
    recipients: Sequence[str],
    checked: Checked,
    parameters: Mapping[str, Mapping[str, str]],
) -> _Outcome:
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
    invalid_at = {i: _invalid(recipients[i], exc) for i, exc in checked.invalid.items()}
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
            if isinstance(resolved, Invalid):
                invalid_at[index] = resolved
                dropped.add(msisdn)
                continue
            values, found = resolved
            rendered = cache.get(values)
            if rendered is None:
                rendered = cache[values] = _render(template, values)
            if rendered.problem is not None:
                invalid_at[index] = Invalid(raw, rendered.problem)
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
    return _Outcome(valid, invalid, duplicates, parameters_out, encoding, most, total, least)


def _single_key(
    template: Template,
    recipients: Sequence[str],
    checked: Checked,
    table: Mapping[str, str],
    out: dict[str, str],
    spelled: Mapping[str, str],
    canonical_spelled: set[str],
    cache: dict[object, _Rendered],
    invalid_at: dict[int, Invalid],
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
                invalid_at[index] = Invalid(recipients[index], problem)
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
                invalid_at[index] = Invalid(recipients[index], shared.problem)
                dropped.add(msisdn)
    return total


def _resolve(
    raw: str,
    msisdn: str,
    keys: Sequence[str],
    tables: Sequence[Mapping[str, str]],
    others: Sequence[Mapping[str, str]],
    defaults: Sequence[str | None],
) -> tuple[tuple[str, ...], list[bool]] | Invalid:
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


def _no_value(raw: str, key: str) -> Invalid:
    return Invalid(raw, f"no value for parameter {key!r} and no default")


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


def _finish(outcome: _Outcome, strict: bool) -> Prepared:
    report = outcome.invalid
    if strict and report:
        first = report[0]
        n = len(report)
        raise CampaignError(
            f"{n} invalid recipient{'s' if n != 1 else ''} "
            f"(first: {_quote(first.to)}: {first.reason})"
        )
    return Prepared(
        recipients=outcome.valid,
        invalid=report,
        duplicates=outcome.duplicates,
        parameters=outcome.parameters,
        encoding=outcome.encoding,
        max_parts=outcome.most,
        total_parts=outcome.total,
        min_parts=outcome.least,
    )


def _quote(text: str) -> str:
    """Quote user input for a one-line message: no newline or control character survives."""
    if len(text) > _QUOTE_LIMIT:
        text = text[: _QUOTE_LIMIT - 1] + "…"
    return repr(text)


# ---------------------------------------------------------------------------- sender
_ALPHA_MAX: Final = 11
_SHORT_CODE: Final = range(3, 9)
# ASCII letters and digits plus punctuation that carriers generally pass through in an
# alphanumeric originator (GSM 03.38 default alphabet, without characters that are commonly
# rewritten or refused such as '@', '$', '_' or the extension table).
_ALPHA_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 &-.'!?,+"
)
_NUMERIC_CHARS: Final = frozenset("0123456789+-.()[] ")


def validate_sender(sender: str) -> str:
    """The ``from`` to send: canonical MSISDN, short code, or alphanumeric name.

    A sender made only of number characters is a phone number if it validates as one (written
    with ``+``/``00`` it must), otherwise a short code of 3-8 digits; anything with a letter is
    an alphanumeric sender of at most 11 characters.
    """
    text = sender.strip() if isinstance(sender, str) else ""
    if not text:
        raise CampaignError("sender is empty")
    if set(text) <= _NUMERIC_CHARS:
        try:
            return check(text)
        except InvalidNumber as exc:
            digits = "".join(c for c in text if c.isdigit())
            international = text.startswith(("+", "00"))
            if not international and len(digits) in _SHORT_CODE and digits == text:
                return digits
            raise CampaignError(
                f"sender {_quote(sender)} is not a valid phone number ({exc.reason}) "
                f"nor a short code (3-8 digits)"
            ) from None
    if len(text) > _ALPHA_MAX:
        raise CampaignError(
            f"sender {_quote(sender)} is {len(text)} characters long; an alphanumeric "
            f"sender has at most {_ALPHA_MAX}"
        )
    bad = sorted(set(text) - _ALPHA_CHARS)
    if bad:
        raise CampaignError(
            f"sender {_quote(sender)} contains {', '.join(repr(c) for c in bad)}; use letters, "
            "digits, space and & - . ' ! ? , +"
        )
    if not any(c.isalpha() for c in text):
        raise CampaignError(f"sender {_quote(sender)} is neither a phone number nor a name")
    return text


# ---------------------------------------------------------------------------- schedule
def validate_schedule(
    send_at: str | None, expire_at: str | None, *, now: datetime | None = None
) -> tuple[str | None, str | None]:
    """Normalized ``(send_at, expire_at)`` in the API's form ``YYYY-MM-DDTHH:MM:SS.mmmZ``.

    A send_at in the past is kept (the API sends at once, API.md 1.1); an expire_at must lie
    in the future, after send_at and at most three days after it (or after now, if there is
    no send_at).  No offset means UTC (seed 003).
    """
    current = _as_utc(now) if now is not None else datetime.now(UTC)
    start = _parse_time("send_at", send_at)
    end = _parse_time("expire_at", expire_at)
    if end is not None:
        if end <= current:
            raise CampaignError(f"expire_at {_format_time(end)} is in the past")
        reference = start if start is not None else current
        if start is not None and end <= start:
            raise CampaignError(
                f"expire_at {_format_time(end)} is not after send_at {_format_time(start)}"
            )
        if end - reference > MAX_EXPIRY:
            what = "send_at" if start is not None else "now"
            raise CampaignError(
                f"expire_at {_format_time(end)} is more than 3 days after {what} "
                f"{_format_time(reference)}"
            )
    return (
        None if start is None else _format_time(start),
        None if end is None else _format_time(end),
    )


def _parse_time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise CampaignError(
            f"{name} {_quote(text)} is not an ISO-8601 timestamp "
            "(e.g. 2025-01-31T09:00:00Z or 2025-01-31T10:00:00+01:00)"
        ) from None
    return _as_utc(parsed)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _format_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
