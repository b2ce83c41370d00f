"""``prepare()``: what is wrong with a campaign, found before anything is queued.

Everything the provider would reject per recipient (a bad number, a missing parameter, a
rendered body over the limit) is cheaper to report at enqueue than to learn from a 400 that
dead-letters a whole batch of 1000, and a campaign-level mistake (empty body, a placeholder
with no values) should stop the campaign with one readable line.  Originator and schedule
have their own modules; the caller (``Dispatcher.enqueue``) runs all three.

Decisions the seeds leave open (docs/validation.md has the full list):

* Duplicates are judged after normalization; the first occurrence wins, later ones are only
  counted.  ``len(recipients) + len(invalid) + duplicates == len(input)`` always holds.
* A placeholder with no values at all (no such column and no default) is a campaign error,
  not a million identical per-recipient ones.
* When every recipient is invalid (and not ``strict``) the result simply has no recipients;
  the caller decides whether that is an error.

The work is single-process and leaves the caller's process as it was: a caller that owns its
process and wants a second core passes ``checker=dispatcher.parallel.check_unique``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from dispatcher.campaign.encoding import analyze, body_length
from dispatcher.campaign.parameters import parameterized
from dispatcher.campaign.quoting import quote
from dispatcher.campaign.recipients import Checked, check_unique
from dispatcher.campaign.result import Prepared, invalid_entry
from dispatcher.campaign.template import Template
from dispatcher.errors import CampaignError
from dispatcher.sinch.limits import MAX_BODY_CHARS

__all__ = ["Checker", "Prepared", "prepare"]

Checker = Callable[[Sequence[str]], Checked]
"""Checks and deduplicates a recipient list; :func:`recipients.check_unique` or a stand-in
with the same result (a parallel one)."""


def prepare(
    body: str,
    recipients: Sequence[str],
    parameters: Mapping[str, Mapping[str, str]] | None = None,
    *,
    strict: bool = False,
    checker: Checker = check_unique,
) -> Prepared:
    """Validate a campaign; raises :class:`CampaignError` for what invalidates all of it.

    ``checker`` is the one step worth spreading over processes, so the caller may choose how
    it runs; the default runs it here, in this process.
    """
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
    checked = checker(recipients)
    if not keys:
        return _finish(_plain(template.body, recipients, checked), strict)
    assert parameters is not None  # _require_parameters
    return _finish(parameterized(template, recipients, checked, parameters), strict)


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


def _plain(body: str, recipients: Sequence[str], checked: Checked) -> Prepared:
    """No placeholders: one analysis serves every recipient."""
    invalid = [invalid_entry(recipients[i], exc) for i, exc in checked.invalid.items()]
    info = analyze(body)
    valid = list(checked.first)
    parts = info.parts if valid else 0
    duplicates = len(checked.duplicates)
    return Prepared(
        valid, invalid, duplicates, None, info.encoding, parts, parts * len(valid), parts
    )


def _finish(prepared: Prepared, strict: bool) -> Prepared:
    report = prepared.invalid
    if strict and report:
        first = report[0]
        n = len(report)
        raise CampaignError(
            f"{n} invalid recipient{'s' if n != 1 else ''} "
            f"(first: {quote(first.to)}: {first.reason})"
        )
    return prepared
