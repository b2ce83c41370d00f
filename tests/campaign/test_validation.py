"""prepare(), validate_originator() and validate_schedule(): the enqueue-time report.

prepare() is compared, on hypothesis-generated campaigns, with a reference written here the
obvious way (check each number, look each parameter up by trying every key, render with
str.replace, analyze each message): the optimized single pass, its parameter-key shortcuts
and the redo with normalized keys must all give the same result.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.campaign.encoding import analyze
from dispatcher.campaign.msisdn import check
from dispatcher.campaign.originator import validate_originator
from dispatcher.campaign.prepare import Prepared, prepare
from dispatcher.campaign.schedule import validate_schedule
from dispatcher.campaign.template import Template, placeholders, render
from dispatcher.errors import CampaignError, InvalidNumber
from dispatcher.models import InvalidRecipient

SE1, SE2, SE3 = "46701234567", "46701234568", "46701234569"


# ------------------------------------------------------------------ reference
def _safe_check(raw: str) -> str | None:
    try:
        return check(raw)
    except InvalidNumber:
        return None


def reference_prepare(
    body: str, recipients: Sequence[str], parameters: Mapping[str, Mapping[str, str]] | None
) -> dict[str, Any]:
    keys = list(dict.fromkeys(re.findall(r"\$\{([^}]+)\}", body)))
    valid: list[str] = []
    invalid: list[InvalidRecipient] = []
    duplicates = 0
    seen: set[str] = set()
    used: dict[str, dict[str, str]] = {k: {} for k in keys}
    parts: list[int] = []
    ucs2 = False
    # Every key's canonical number, keys in their order: "any spelling, first key first".
    normalized_keys: dict[str, dict[str | None, list[str]]] = {}
    for key in keys:
        spellings: dict[str | None, list[str]] = {}
        for k in (parameters or {}).get(key, {}):
            if k != "default":
                spellings.setdefault(_safe_check(k), []).append(k)
        normalized_keys[key] = spellings
    for raw in recipients:
        try:
            msisdn = check(raw)
        except InvalidNumber as exc:
            invalid.append(InvalidRecipient(raw, exc.reason))
            continue
        if msisdn in seen:
            duplicates += 1
            continue
        seen.add(msisdn)
        text = body
        explicit: dict[str, str] = {}
        problem = None
        for key in keys:
            assert parameters is not None
            table = parameters[key]
            candidates = [raw, msisdn, *normalized_keys[key].get(msisdn, [])]
            value = next((table[k] for k in candidates if k in table and k != "default"), None)
            if value is not None:
                explicit[key] = value
            else:
                value = table.get("default")
            if value is None:
                problem = f"no value for parameter {key!r} and no default"
                break
            text = text.replace("${" + key + "}", value)
        if problem is None:
            length = len(text.encode("utf-16-le")) // 2
            if length > 2000:
                problem = f"message is {length} characters after substitution; the maximum is 2000"
            elif not text.strip():
                problem = "message is empty after substitution"
        if problem is not None:
            invalid.append(InvalidRecipient(raw, problem))
            continue
        valid.append(msisdn)
        for key, value in explicit.items():
            used[key][msisdn] = value
        info = analyze(text)
        parts.append(info.parts)
        ucs2 = ucs2 or info.encoding == "UCS-2"
    out: dict[str, dict[str, str]] | None = None
    if keys:
        assert parameters is not None
        out = {}
        for key in keys:
            out[key] = used[key]
            if "default" in parameters[key]:
                out[key]["default"] = parameters[key]["default"]
    return {
        "recipients": valid,
        "invalid": invalid,
        "duplicates": duplicates,
        "parameters": out,
        "encoding": "UCS-2" if ucs2 else ("GSM-7" if parts else analyze(body).encoding),
        "max_parts": max(parts, default=0),
        "min_parts": min(parts, default=0),
        "total_parts": sum(parts),
    }


def as_dict(p: Prepared) -> dict[str, Any]:
    return {
        "recipients": p.recipients,
        "invalid": p.invalid,
        "duplicates": p.duplicates,
        "parameters": p.parameters,
        "encoding": p.encoding,
        "max_parts": p.max_parts,
        "min_parts": p.min_parts,
        "total_parts": p.total_parts,
    }


# ------------------------------------------------------------------ template
def test_placeholders_and_render() -> None:
    body = "Hi ${name}, ${Name} ${name}! Code ${code}. $name {x} ${}"
    assert placeholders(body) == ["name", "Name", "code"]
    text = render(body, {"name": "Ann", "Name": "ANN", "code": "${name}"})
    assert text == "Hi Ann, ANN Ann! Code ${name}. $name {x} ${}"  # one pass, no re-expansion
    template = Template(body)
    assert template.keys == ("name", "Name", "code")
    assert template.render(("Ann", "ANN", "${name}")) == text
    assert Template("no placeholders").render(()) == "no placeholders"


# ------------------------------------------------------------------ prepare: campaign errors
@pytest.mark.parametrize(
    ("body", "recipients", "parameters", "message"),
    [
        ("", [SE1], None, "body is empty"),
        (" \n\t", [SE1], None, "body is empty"),
        ("a" * 2001, [SE1], None, "body is 2001 characters long; the maximum is 2000"),
        ("😀" * 1001, [SE1], None, "body is 2002 characters long; the maximum is 2000"),
        ("Hi", [], None, "no recipients"),
        (
            "Hi ${name}",
            [SE1],
            None,
            "the body uses ${name} but no values are given for 'name' "
            "(add a parameter column or a default)",
        ),
        (
            "Hi ${name}",
            [SE1],
            {"Name": {SE1: "Ann"}},
            "the body uses ${name} but no values are given for 'name' "
            "(add a parameter column or a default)",
        ),
    ],
)
def test_campaign_errors(
    body: str,
    recipients: list[str],
    parameters: dict[str, dict[str, str]] | None,
    message: str,
) -> None:
    with pytest.raises(CampaignError) as caught:
        prepare(body, recipients, parameters)
    assert str(caught.value) == message


def test_parameter_values_must_be_text() -> None:
    with pytest.raises(CampaignError) as caught:
        prepare("Hi ${n}", [SE1], {"n": {SE1: 5}})  # type: ignore[dict-item]
    assert str(caught.value) == "parameter 'n' has a value that is not text: 5"
    with pytest.raises(CampaignError) as caught:
        prepare("Hi ${n}", [SE1], {"n": "Ann"})  # type: ignore[dict-item]
    assert str(caught.value) == "parameter 'n' must map numbers (and 'default') to values, not str"


@pytest.mark.parametrize(("length", "parts"), [(1989, 13), (1990, 14), (2000, 14)])
def test_body_up_to_the_limit_is_accepted(length: int, parts: int) -> None:
    prepared = prepare("a" * length, [SE1])
    assert prepared.recipients == [SE1]
    assert prepared.max_parts == parts  # 13 x 153 = 1989


def test_strict_names_count_and_first() -> None:
    with pytest.raises(CampaignError) as caught:
        prepare("Hi", [SE1, "x\ny", "+0123", SE2], strict=True)
    message = str(caught.value)
    assert message == "2 invalid recipients (first: 'x\\ny': not a number: contains letters)"
    assert "\n" not in message
    with pytest.raises(CampaignError, match=r"^1 invalid recipient \(first: '\+0123': "):
        prepare("Hi", [SE1, "+0123"], strict=True)
    assert prepare("Hi", [SE1, "+46 70 123 45 67"], strict=True).duplicates == 1


def test_strict_missing_parameter() -> None:
    with pytest.raises(CampaignError) as caught:
        prepare("Hi ${name}", [SE1, SE2], {"name": {SE1: "Ann"}}, strict=True)
    assert str(caught.value) == (
        f"1 invalid recipient (first: '{SE2}': no value for parameter 'name' and no default)"
    )


# ------------------------------------------------------------------ prepare: recipients
def test_duplicates_after_normalization_first_wins() -> None:
    raws = ["+46 70-123 45 67", "0046701234567", SE2, "46701234567", "nope", "+46 (70) 1234568"]
    prepared = prepare("Hello", raws)
    assert prepared.recipients == [SE1, SE2]
    assert prepared.duplicates == 3
    assert prepared.invalid == [InvalidRecipient("nope", "not a number: contains letters")]
    assert prepared.parameters is None
    assert (prepared.encoding, prepared.min_parts, prepared.max_parts) == ("GSM-7", 1, 1)
    assert prepared.total_parts == 2
    assert len(prepared.recipients) + len(prepared.invalid) + prepared.duplicates == len(raws)


def test_every_recipient_invalid_is_not_an_error() -> None:
    prepared = prepare("Cześć", ["x", "+0", ""])
    assert prepared.recipients == []
    assert [i.to for i in prepared.invalid] == ["x", "+0", ""]
    assert (prepared.max_parts, prepared.min_parts, prepared.total_parts) == (0, 0, 0)
    assert prepared.encoding == "UCS-2"


def test_invalid_keeps_input_order_across_kinds() -> None:
    prepared = prepare(
        "Hi ${name}",
        [SE1, "bad", SE2, "+0", SE3],
        {"name": {SE1: "Ann", SE3: "Cy"}},
    )
    assert prepared.recipients == [SE1, SE3]
    assert [i.to for i in prepared.invalid] == ["bad", SE2, "+0"]
    assert prepared.invalid[1].reason == "no value for parameter 'name' and no default"


# ------------------------------------------------------------------ prepare: parameters
def test_parameters_with_default_keyed_by_normalized_number() -> None:
    prepared = prepare(
        "Hi ${name}",
        ["+46 70-123 45 67", "0046701234568", "+46701234569"],
        {"name": {"46701234567": "Ann", "+46 70 123 45 68": "Bo", "default": "there"}},
    )
    assert prepared.recipients == [SE1, SE2, SE3]
    assert prepared.parameters == {"name": {SE1: "Ann", SE2: "Bo", "default": "there"}}
    assert prepared.invalid == []


def test_parameters_only_for_recipients_that_go_out_and_keys_in_the_body() -> None:
    prepared = prepare(
        "Hi ${name}",
        [SE1, "bad", SE2],
        {
            "name": {SE1: "Ann", "bad": "Zed", "44": "nobody", "default": "you"},
            "email": {SE1: "ann@example.com"},
        },
    )
    assert prepared.parameters == {"name": {SE1: "Ann", "default": "you"}}


def test_missing_parameter_invalidates_only_that_recipient() -> None:
    prepared = prepare(
        "Hi ${first} ${last}", [SE1, SE2], {"first": {SE1: "A", SE2: "B"}, "last": {SE1: "C"}}
    )
    assert prepared.recipients == [SE1]
    assert prepared.invalid == [
        InvalidRecipient(SE2, "no value for parameter 'last' and no default")
    ]
    assert prepared.parameters == {"first": {SE1: "A"}, "last": {SE1: "C"}}


def test_key_spelled_like_a_dropped_duplicate() -> None:
    # The only value for 46701234567 sits under the spelling of its (dropped) duplicate.
    prepared = prepare(
        "Hi ${name}", ["+46701234567", "0046701234567"], {"name": {"0046701234567": "Ann"}}
    )
    assert prepared.recipients == [SE1]
    assert prepared.duplicates == 1
    assert prepared.parameters == {"name": {SE1: "Ann"}}


def test_duplicate_in_canonical_form_does_not_hide_another_spelling() -> None:
    recipients = ["+46701234567", "46701234567", "+46701234568", "+46701234568"]
    names = {"+46701234567": "A", "46701234567": "B", "default": "D"}
    prepared = prepare("Hi ${name}", recipients, {"name": names})
    assert prepared.parameters == {"name": {SE1: "A", "default": "D"}}
    names["0046 70 123 45 68"] = "C"  # SE2's only value, spelled like no recipient
    prepared = prepare("Hi ${name}", recipients, {"name": names})
    assert prepared.parameters == {"name": {SE1: "A", SE2: "C", "default": "D"}}
    assert prepared.duplicates == 2


def test_own_spelling_beats_other_spellings() -> None:
    params = {"name": {"0046701234567": "Other", "+46701234567": "Own", SE1: "Canonical"}}
    assert prepare("Hi ${name}", ["+46701234567"], params).parameters == {"name": {SE1: "Own"}}
    params = {"name": {"0046701234567": "Other", SE1: "Canonical"}}
    assert prepare("Hi ${name}", ["+46701234567"], params).parameters == {
        "name": {SE1: "Canonical"}
    }
    params = {"name": {"0046701234567": "First", "+46 70 1234567": "Second"}}
    assert prepare("Hi ${name}", ["+46701234567"], params).parameters == {"name": {SE1: "First"}}


def test_parts_and_encoding_per_recipient() -> None:
    prepared = prepare(
        "Hi ${name}! " + "x" * 140,
        [SE1, SE2, SE3],
        {"name": {SE1: "Ann", SE2: "Zoë" * 3, SE3: "Ørjan"}},
    )
    # SE1: 145 septets, 1 part; SE2: UCS-2 ë, 154 units, 3 parts; SE3: Ø is GSM-7, 147: 1 part.
    assert prepared.encoding == "UCS-2"
    assert (prepared.min_parts, prepared.max_parts, prepared.total_parts) == (1, 3, 5)


def test_rendered_message_too_long_or_empty() -> None:
    prepared = prepare(
        "${note}",
        [SE1, SE2, SE3],
        {"note": {SE1: "a" * 2000, SE2: "a" * 2001, SE3: "  "}},
    )
    assert prepared.recipients == [SE1]
    assert prepared.invalid == [
        InvalidRecipient(SE2, "message is 2001 characters after substitution; the maximum is 2000"),
        InvalidRecipient(SE3, "message is empty after substitution"),
    ]
    assert prepared.max_parts == 14


# ------------------------------------------------------------------ prepare: 100,000 recipients
def generate_campaign(n: int, seed: int) -> tuple[list[str], dict[str, dict[str, str]], int]:
    """Swedish, UK and US mobiles in several spellings, 1% garbage, a name column."""
    rng = random.Random(seed)
    names = ["Ann", "Bo", "Åsa", "Zoë", "Liam", "Nora", "Ola", "Siv", "Ivy", "Max"]

    def digits(k: int) -> str:
        return str(rng.randrange(10**k)).zfill(k)

    recipients: list[str] = []
    names_by_to: dict[str, str] = {}
    garbage = 0
    for i in range(n):
        if i % 100 == 42:
            recipients.append(rng.choice(["n/a", "+0" + digits(9), "07" + digits(8), "+46 70"]))
            garbage += 1
            continue
        kind = rng.randrange(4)
        if kind == 0:
            to = "+467" + rng.choice("02369") + digits(7)
        elif kind == 1:
            to = "+44 7" + rng.choice("45") + digits(2) + " " + digits(6)
        elif kind == 2:
            to = "1" + rng.choice(["212", "415", "646"]) + rng.choice("23456789") + digits(6)
        else:
            to = "0046 7" + rng.choice("02369") + "-" + digits(3) + " " + digits(4)
        recipients.append(to)
        if rng.random() < 0.9:  # the rest get the default
            names_by_to[to] = rng.choice(names)
    return recipients, {"name": {**names_by_to, "default": "there"}}, garbage


def test_hundred_thousand_recipients() -> None:
    recipients, parameters, garbage = generate_campaign(100_000, seed=6)
    prepared = prepare("Hi ${name}, your parcel is on its way.", recipients, parameters)
    assert len(prepared.invalid) >= garbage
    assert len(prepared.invalid) < garbage * 1.5  # a few random tails are not valid numbers
    assert all(i.reason for i in prepared.invalid)
    assert len(prepared.recipients) + len(prepared.invalid) + prepared.duplicates == 100_000
    assert len(set(prepared.recipients)) == len(prepared.recipients)
    assert prepared.encoding == "UCS-2"  # Åsa is GSM-7, Zoë is not
    assert prepared.max_parts == 1
    assert prepared.total_parts == len(prepared.recipients)
    assert prepared.parameters is not None
    names = prepared.parameters["name"]
    assert names["default"] == "there"
    assert set(names) - {"default"} <= set(prepared.recipients)
    assert len(names) > 0.85 * len(prepared.recipients)
    # Spot-check against the reference on a slice (the reference is slow).
    head = recipients[:3000]
    wanted = set(head)
    head_params = {"name": {k: v for k, v in parameters["name"].items() if k in wanted}}
    head_params["name"]["default"] = "there"
    body = "Hi ${name}, your parcel is on its way."
    assert as_dict(prepare(body, head, head_params)) == reference_prepare(body, head, head_params)


# ------------------------------------------------------------------ prepare vs reference
NUMBERS = [SE1, SE2, "447400123456", "12125552368"]
SPELLINGS = {
    SE1: ["+46701234567", SE1, "0046701234567", "+46 70-123 45 67"],
    SE2: ["+46701234568", SE2, "0046 70 123 45 68"],
    "447400123456": ["+44 7400 123456", "447400123456", "+44 (0)7400 123456"],
    "12125552368": ["+1 (212) 555-2368", "12125552368"],
}
ALL_SPELLINGS = [s for spellings in SPELLINGS.values() for s in spellings]
GARBAGE = ["", "abc", "+0123", "0701234567", "+46 70 12", "+999 1234"]
VALUES = ["Ann", "Zoë", "", " ", "€uro", "a" * 150, "b" * 1995, "😀", "${name}"]

raw_recipient = st.sampled_from(ALL_SPELLINGS + GARBAGE)
value = st.sampled_from(VALUES)
key_table = st.dictionaries(st.sampled_from([*ALL_SPELLINGS, "abc", "default"]), value, max_size=6)
bodies = st.sampled_from(
    [
        "Hello",
        "${name}",
        "Hi ${name}",
        "Hi ${name}, ${name}! " + "x" * 140,
        "${name}${code} € {x}",
        "Grüße ${code}",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    bodies,
    st.lists(raw_recipient, min_size=1, max_size=12),
    key_table,
    key_table,
)
def test_prepare_matches_reference(
    body: str, recipients: list[str], names: dict[str, str], codes: dict[str, str]
) -> None:
    parameters = {"name": names, "code": codes}
    expected = reference_prepare(body, recipients, parameters)
    assert as_dict(prepare(body, recipients, parameters)) == expected
    if expected["invalid"]:
        with pytest.raises(CampaignError) as caught:
            prepare(body, recipients, parameters, strict=True)
        assert "\n" not in str(caught.value)


# ------------------------------------------------------------------ sender
@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("Acme", "Acme"),
        ("  Acme Ltd ", "Acme Ltd"),
        ("ACME-2024.", "ACME-2024."),
        ("Tom & Jerry", "Tom & Jerry"),
        ("abcdefghijk", "abcdefghijk"),
        ("+46 70-123 45 67", SE1),
        ("0046701234567", SE1),
        ("46701234567", SE1),
        ("12345", "12345"),  # US-style short code
        ("123", "123"),
        ("12345678", "12345678"),
    ],
)
def test_valid_senders(sender: str, expected: str) -> None:
    assert validate_originator(sender) == expected


@pytest.mark.parametrize(
    ("sender", "message"),
    [
        ("", "sender is empty"),
        ("   ", "sender is empty"),
        (
            "Acme Corporation",
            "sender 'Acme Corporation' is 16 characters long; an alphanumeric sender has at most 11",
        ),
        ("Ac$me", "sender 'Ac$me' contains '$'; use letters, digits, space and & - . ' ! ? , +"),
        (
            "Åkesson",
            "sender 'Åkesson' contains 'Å'; use letters, digits, space and & - . ' ! ? , +",
        ),
        (
            "+12345",
            "sender '+12345' is not a valid phone number (invalid for country code +1 "
            "(too short)) nor a short code (3-8 digits)",
        ),
        (
            "12",
            "sender '12' is not a valid phone number (too short) nor a short code (3-8 digits)",
        ),
        (
            "123456789",
            "sender '123456789' is not a valid phone number (invalid for country code +1 "
            "(too short)) nor a short code (3-8 digits)",
        ),
        ("!!!", "sender '!!!' is neither a phone number nor a name"),
    ],
)
def test_invalid_senders(sender: str, message: str) -> None:
    with pytest.raises(CampaignError) as caught:
        validate_originator(sender)
    assert str(caught.value) == message


# ------------------------------------------------------------------ schedule
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("send_at", "expire_at", "expected"),
    [
        (None, None, (None, None)),
        ("", None, (None, None)),
        ("2025-03-02T10:00:00", None, ("2025-03-02T10:00:00.000Z", None)),  # no offset: UTC
        ("2025-03-02T10:00:00Z", None, ("2025-03-02T10:00:00.000Z", None)),
        ("2025-03-02T11:00:00+01:00", None, ("2025-03-02T10:00:00.000Z", None)),
        ("2025-03-02T10:00:00.123456-02:00", None, ("2025-03-02T12:00:00.123Z", None)),
        ("2025-02-01T00:00:00Z", None, ("2025-02-01T00:00:00.000Z", None)),  # past: send now
        (
            "2025-03-02T10:00:00Z",
            "2025-03-05T10:00:00Z",  # exactly 3 days
            ("2025-03-02T10:00:00.000Z", "2025-03-05T10:00:00.000Z"),
        ),
        (None, "2025-03-04T12:00:00Z", (None, "2025-03-04T12:00:00.000Z")),
        ("2025-03-02", None, ("2025-03-02T00:00:00.000Z", None)),
    ],
)
def test_valid_schedules(
    send_at: str | None, expire_at: str | None, expected: tuple[str | None, str | None]
) -> None:
    assert validate_schedule(send_at, expire_at, now=NOW) == expected


@pytest.mark.parametrize(
    ("send_at", "expire_at", "message"),
    [
        (
            "tomorrow",
            None,
            "send_at 'tomorrow' is not an ISO-8601 timestamp "
            "(e.g. 2025-01-31T09:00:00Z or 2025-01-31T10:00:00+01:00)",
        ),
        (
            None,
            "2025-13-01T00:00:00Z",
            "expire_at '2025-13-01T00:00:00Z' is not an ISO-8601 timestamp (e.g. 2025-01-31T09:00:00Z or 2025-01-31T10:00:00+01:00)",
        ),
        (None, "2025-03-01T11:00:00Z", "expire_at 2025-03-01T11:00:00.000Z is in the past"),
        (
            "2025-03-03T00:00:00Z",
            "2025-03-02T00:00:00Z",
            "expire_at 2025-03-02T00:00:00.000Z is not after send_at 2025-03-03T00:00:00.000Z",
        ),
        (
            "2025-03-02T10:00:00Z",
            "2025-03-05T10:00:00.001Z",
            "expire_at 2025-03-05T10:00:00.001Z is more than 3 days after send_at "
            "2025-03-02T10:00:00.000Z",
        ),
        (
            None,
            "2025-03-04T12:00:01Z",
            "expire_at 2025-03-04T12:00:01.000Z is more than 3 days after now "
            "2025-03-01T12:00:00.000Z",
        ),
    ],
)
def test_invalid_schedules(send_at: str | None, expire_at: str | None, message: str) -> None:
    with pytest.raises(CampaignError) as caught:
        validate_schedule(send_at, expire_at, now=NOW)
    assert str(caught.value) == message


def test_schedule_default_now_is_the_clock() -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    send_at, expire_at = validate_schedule(None, later.isoformat())
    assert send_at is None and expire_at is not None and expire_at.endswith("Z")
