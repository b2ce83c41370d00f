"""Enqueue-time checks: what is wrong with a campaign, found before anything is queued.

Everything the provider would reject per recipient (a bad number, a missing parameter, a
rendered body over the limit) is cheaper to report at enqueue than to learn from a 400 that
dead-letters a whole batch of 1000, and a campaign-level mistake (empty body, bad sender,
impossible schedule) should stop the campaign with one readable line.  Pure functions: no
Redis, no I/O, so the CLI's ``preview`` can run them too.

Decisions the seeds leave open (docs/validation.md has the full list):

* Duplicates are judged after normalization; the first occurrence wins, later ones are only
  counted.  ``len(recipients) + len(invalid) + duplicates == len(input)`` always holds.
* Parameter keys may be written in any accepted number form; two spellings of one number
  that both carry a value: the first wins, as for recipients.  Keys that are not numbers at
  all are ignored (they cannot match a recipient); placeholders' absent keys are dropped
  from the output, the others' values only kept for recipients that go out.
* A placeholder with no values at all (no such column and no default) is a campaign error,
  not a million identical per-recipient ones.
* When every recipient is invalid (and not ``strict``) the result simply has no recipients;
  the caller decides whether that is an error.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from dispatcher.encoding import MAX_BODY_CHARS, analyze, body_length
from dispatcher.numbers import InvalidNumber, check, check_many
from dispatcher.template import Template

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


class CampaignError(ValueError):
    """One-line, user-facing message naming what is wrong with a campaign."""


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
        results = check_many(recipients)
        if not keys:
            return _plain(template.body, recipients, results, strict)
        assert parameters is not None  # _require_parameters
        columns = [_Column(key, parameters[key]) for key in keys]
        outcome = _parameterized(template, recipients, results, columns)
        if outcome is None:
            # Someone lacked a value under their own spelling while some key matched nobody:
            # that key may be another spelling of their number.  Normalize every key, redo.
            for column in columns:
                column.normalize()
            outcome = _parameterized(template, recipients, results, columns)
            assert outcome is not None
        return _finish(outcome, strict)
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


def _plain(
    body: str, recipients: Sequence[str], results: list[str | InvalidNumber], strict: bool
) -> Prepared:
    """No placeholders: one analysis serves every recipient."""
    invalid: list[Invalid] = []
    unique: dict[str, None] = {}
    duplicates = 0
    for index, result in enumerate(results):
        if isinstance(result, str):
            if result in unique:
                duplicates += 1
            else:
                unique[result] = None
        else:
            invalid.append(_invalid(recipients[index], result))
    info = analyze(body)
    valid = list(unique)
    parts = info.parts if valid else 0
    outcome = _Outcome(
        valid, invalid, duplicates, None, info.encoding, parts, parts * len(valid), parts
    )
    return _finish(outcome, strict)


class _Column:
    """One placeholder's values, looked up per recipient without normalizing every key.

    A recipient's value is the one under its own spelling, else under its canonical number,
    else (only after :meth:`normalize`) under any other spelling, first key first; else the
    default.  Normalizing a million keys costs as much as checking a million recipients, and
    the keys are almost always written like the recipients (a CSV's ``to`` column), so the
    first pass accounts for the keys instead: used under a recipient's own spelling (counted),
    under a canonical number, or spelled like an invalid recipient (no one's number) or like a
    dropped duplicate (whose number it is known to be).  Only when a recipient fell through to
    the default while some key is unaccounted for, or a duplicate's spelling belongs to such a
    recipient, is the pass redone with every key normalized.
    """

    __slots__ = (
        "accounted",
        "by_norm",
        "default",
        "fell",
        "key",
        "normalized",
        "out",
        "size",
        "spelled",
        "values",
    )

    def __init__(self, key: str, values: Mapping[str, str]) -> None:
        self.key = key
        self.values = values
        self.default = values.get(DEFAULT_KEY)
        self.size = len(values) - (DEFAULT_KEY in values)
        self.by_norm: dict[str, str] = {}
        self.normalized = False
        self.accounted: set[str] = set()  # keys known not to belong to a number that fell
        self.spelled: set[str] = set()  # numbers with a key spelled like their duplicate
        self.fell: set[str] = set()  # numbers that found no key of their own
        self.out: dict[str, str] = {}

    def normalize(self) -> None:
        keys = [k for k in self.values if k != DEFAULT_KEY]
        for raw, result in zip(keys, check_many(keys), strict=True):
            if isinstance(result, str) and result not in self.by_norm:
                self.by_norm[result] = self.values[raw]
        self.normalized = True

    def reset(self) -> None:
        self.accounted = set()
        self.spelled = set()
        self.fell = set()
        self.out = {}

    def needs_normalized_keys(self, hits: int) -> bool:
        if self.normalized or not self.fell:
            return False
        return hits + len(self.accounted) != self.size or not self.fell.isdisjoint(self.spelled)


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
    results: list[str | InvalidNumber],
    columns: list[_Column],
) -> _Outcome | None:
    """One pass over the recipients; None when the pass must be redone with normalized keys."""
    for column in columns:
        column.reset()
    single = columns[0] if len(columns) == 1 else None
    first: dict[str, int] = {}  # canonical MSISDN -> index of its first occurrence
    valid: list[str] = []
    invalid: list[Invalid] = []
    duplicates = 0
    hits = [0] * len(columns)  # keys used under the recipient's own spelling
    # Rendering and analysis depend only on the values, and values repeat (first names,
    # defaults), so each distinct set of values is rendered once.
    cache: dict[object, _Rendered] = {}
    for index, result in enumerate(results):
        raw = recipients[index]
        if not isinstance(result, str):
            invalid.append(_invalid(raw, result))
            if isinstance(raw, str):  # its key, if any, cannot be anyone else's number
                for column in columns:
                    if raw in column.values:
                        column.accounted.add(raw)
            continue
        if result in first:
            duplicates += 1
            if raw != recipients[first[result]]:
                # A differently spelled duplicate's key may be the only value its number has.
                for column in columns:
                    if raw in column.values:
                        column.accounted.add(raw)
                        column.spelled.add(result)
            continue
        first[result] = index
        if single is not None:
            # The common case, spelled out: at a million recipients each call and loop counts.
            explicit = True
            value = single.values.get(raw)
            if value is not None:
                hits[0] += 1
            else:
                value = single.values.get(result)
                if value is not None:
                    single.accounted.add(result)
                else:
                    value = single.by_norm.get(result)
                    if value is None:
                        single.fell.add(result)
                        explicit = False
                        value = single.default
                        if value is None:
                            invalid.append(_no_value(raw, single.key))
                            continue
            signature: object = value
            rendered = cache.get(signature)
            if rendered is None:
                rendered = cache[signature] = _render(template, (value,))
            if rendered.problem is not None:
                invalid.append(Invalid(raw, rendered.problem))
                continue
            if explicit:
                single.out[result] = value
        else:
            values: list[str] = []
            explicit_in: list[bool] = []
            for i, column in enumerate(columns):
                value = column.values.get(raw)
                found = value is not None
                if value is not None:
                    hits[i] += 1
                else:
                    value = column.values.get(result)
                    found = value is not None
                    if value is not None:
                        column.accounted.add(result)
                    else:
                        value = column.by_norm.get(result)
                        found = value is not None
                        if value is None:
                            column.fell.add(result)
                            value = column.default
                if value is None:
                    invalid.append(_no_value(raw, column.key))
                    break
                values.append(value)
                explicit_in.append(found)
            if len(values) < len(columns):
                continue
            signature = tuple(values)
            rendered = cache.get(signature)
            if rendered is None:
                rendered = cache[signature] = _render(template, tuple(values))
            if rendered.problem is not None:
                invalid.append(Invalid(raw, rendered.problem))
                continue
            for column, value, explicit in zip(columns, values, explicit_in, strict=True):
                if explicit:
                    column.out[result] = value
        rendered.count += 1
        valid.append(result)

    for column, used in zip(columns, hits, strict=True):
        if column.needs_normalized_keys(used):
            return None

    used_renders = [r for r in cache.values() if r.count]
    parameters: dict[str, dict[str, str]] = {}
    for column in columns:
        out = column.out
        if column.default is not None:
            out[DEFAULT_KEY] = column.default
        parameters[column.key] = out
    if used_renders:
        ucs2 = any(r.ucs2 for r in used_renders)
        encoding: Literal["GSM-7", "UCS-2"] = "UCS-2" if ucs2 else "GSM-7"
        most = max(r.parts for r in used_renders)
        least = min(r.parts for r in used_renders)
        total = sum(r.parts * r.count for r in used_renders)
    else:
        encoding = analyze(template.body).encoding
        most = least = total = 0
    return _Outcome(valid, invalid, duplicates, parameters, encoding, most, total, least)


def _no_value(raw: str, key: str) -> Invalid:
    return Invalid(raw, f"no value for parameter {key!r} and no default")


def _render(template: Template, values: tuple[str, ...]) -> _Rendered:
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
