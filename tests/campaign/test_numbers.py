"""Recipient numbers: the input forms of seed 003, and agreement with phonenumbers.

The fast validator must give ``phonenumbers.is_valid_number(phonenumbers.parse("+" + d))``
for every digit string ``d``; it is compared on every example number the library ships (all
regions, all types, non-geographic codes) and on random mutations of them, which land on
both sides of every pattern edge: changed digits, one digit more or less, random tails,
a trunk '0' after the country code, pure noise.
"""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from dispatcher import parallel
from dispatcher.campaign.msisdn import (
    check,
    check_many,
    is_valid,
    normalize,
    region_of,
)
from dispatcher.campaign.numbering import fast_valid, verdict
from dispatcher.campaign.recipients import check_unique
from dispatcher.errors import InvalidNumber


def reference_valid(digits: str) -> bool:
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse("+" + digits)))
    except phonenumbers.NumberParseException:
        return False


def reference_e164(digits: str) -> str:
    number = phonenumbers.parse("+" + digits)
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:]


# ------------------------------------------------------------------ normalize: seed 003 forms
@pytest.mark.parametrize(
    "raw",
    [
        "+46701234567",
        "46701234567",
        "0046701234567",
        "+46 70 123 45 67",
        "+46-70-123-45-67",
        "+46 (70) 123-45-67",
        "(+46) 701234567",
        "+46 [70] 1234567",
        "00 46 70 123 45 67",
        "+46.70.123.45.67",
        " +46701234567\n",
        "+46\u00a070\u00a01234567",
        "\t46701234567 ",
    ],
)
def test_normalize_accepts_seed_forms(raw: str) -> None:
    assert normalize(raw) == "46701234567"
    assert check(raw) == "46701234567"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-() .", "empty"),
        ("+", "no digits"),
        ("00", "no digits"),
        ("abc", "not a number: contains letters"),
        ("+46 70 ABC 45", "not a number: contains letters"),
        ("1-800-FLOWERS", "not a number: contains letters"),
        ("++46701234567", "not a number: '+' only allowed at the start"),
        ("46+701234567", "not a number: '+' only allowed at the start"),
        ("4670#1234567", "not a number: contains '#'"),
        ("+46/70/1234567", "not a number: contains '/'"),
        ("٤٦٧٠١٢٣٤٥٦٧", "not a number: contains '٤'"),
        ("４６７０１２３４５６７", "not a number: contains '４'"),
        ("+0123456789", "country code cannot start with 0"),
        ("000123456789", "country code cannot start with 0"),
        ("0701234567", "no country code (national format? write it as +<country code>...)"),
        ("+1234567890123456", "too long (16 digits, at most 15)"),
        ("12345678901234567890", "too long (20 digits, at most 15)"),
        ("+12", "too short"),
        ("4", "too short"),
    ],
)
def test_normalize_rejects_garbage(raw: str, reason: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalize(raw)
    assert caught.value.reason == reason
    assert str(caught.value) == reason
    with pytest.raises(InvalidNumber):
        check(raw)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("+44 7400 123456", "447400123456"),
        ("+44 (0)7400 123456", "447400123456"),  # the trunk 0 written after +44
        ("0044 07400 123456", "447400123456"),
        ("+1 (212) 555-2368", "12125552368"),
        ("+7 912 345-67-89", "79123456789"),  # RU
        ("+7 701 234 5678", "77012345678"),  # KZ shares +7
        ("+44 7781 123456", "447781123456"),  # GG shares +44
        ("+39 06 698 12345", "390669812345"),  # Vatican: leading digits inside +39
        ("+39 333 123 4567", "393331234567"),  # IT mobile
        ("+800 1234 5678", "80012345678"),  # non-geographic
        ("+49 1512 3456789", "4915123456789"),
    ],
)
def test_check_canonical(raw: str, canonical: str) -> None:
    assert check(raw) == canonical
    assert reference_e164(normalize(raw)) == canonical
    assert check(canonical) == canonical


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("+46 70 123", "invalid for region SE (too short)"),
        ("+46 70 123 45 67 89 01", "invalid for region SE (too long)"),
        ("+46 99 123 45 67", "invalid for region SE"),
        ("+1 212 055 2368", "invalid for country code +1"),
        ("+44 7700 900123", "invalid for country code +44"),
        ("+28 1234567", "unknown country code"),
        ("+999 1234567", "unknown country code"),
        ("+800 12", "invalid for country code +800 (too short)"),
    ],
)
def test_check_reasons(raw: str, reason: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        check(raw)
    assert caught.value.reason == reason
    assert not reference_valid(normalize(raw))


def test_region_of() -> None:
    assert region_of("46701234567") == "SE"
    assert region_of("447781123456") == "GG"
    assert region_of("12684641234") == "AG"
    assert region_of("80012345678") == "001"
    assert region_of("2812345678") is None


def test_check_many_matches_check() -> None:
    raws = ["+46 70-123 45 67", "x", "0046701234568", "+0123", "447400123456", "+44 (0)7400 123456"]
    results = check_many(raws)
    for raw, result in zip(raws, results, strict=True):
        try:
            expected: str | None = check(raw)
        except InvalidNumber as exc:
            assert isinstance(result, InvalidNumber)
            assert result.reason == exc.reason
            continue
        assert result == expected
    bad = check_many([None, 46701234567])  # type: ignore[list-item]
    assert all(isinstance(r, InvalidNumber) for r in bad)


def expected_unique(raws: list[str]) -> tuple[dict[str, int], dict[int, str], list[int]]:
    first: dict[str, int] = {}
    invalid: dict[int, str] = {}
    duplicates: list[int] = []
    for i, raw in enumerate(raws):
        try:
            msisdn = check(raw)
        except InvalidNumber as exc:
            invalid[i] = exc.reason
            continue
        if msisdn in first:
            duplicates.append(i)
        else:
            first[msisdn] = i
    return first, invalid, duplicates


def assert_unique_matches(raws: list[str]) -> None:
    checked = check_unique(raws)
    first, invalid, duplicates = expected_unique(raws)
    assert checked.first == first
    assert list(checked.first) == list(first)  # input order
    assert {i: e.reason for i, e in checked.invalid.items()} == invalid
    assert [i for i, _ in checked.duplicates] == duplicates
    assert all(checked.first[m] < i for i, m in checked.duplicates)


def test_check_unique_matches_check() -> None:
    raws = [
        "+46 70-123 45 67",
        "46701234567",
        "+44 (0)7400 123456",
        "447400123456",
        "0044 7400 123456",
        "x",
        "",
        "+0123",
        "٤٦٧٠١٢٣٤٥٦٧",
        "+1 (212) 555-2368",
        "12125552368",
        "+4407400123456",
        "+7 912 345-67-89",
        "+7 701 234 5678",
    ]
    assert_unique_matches(raws)
    checked = check_unique([None, 46701234567, b"+46701234567"])  # type: ignore[list-item]
    assert sorted(checked.invalid) == [0, 1, 2]


def test_check_unique_in_two_processes_matches_one() -> None:
    raws = [*EXAMPLES_FOR_FORK, "x", "+0123", EXAMPLES_FOR_FORK[0], "+" + EXAMPLES_FOR_FORK[1]]
    raws = raws * 3
    serial = check_unique(raws)
    forked = parallel.check_unique(raws, parallel=True)
    assert forked.first == serial.first
    assert list(forked.first) == list(serial.first)
    assert forked.duplicates == serial.duplicates
    assert list(forked.invalid) == list(serial.invalid)
    assert [e.reason for e in forked.invalid.values()] == [
        e.reason for e in serial.invalid.values()
    ]


EXAMPLES_FOR_FORK = ["46701234567", "447400123456", "12125552368", "4915123456789", "33612345678"]


def test_is_valid_on_unnormalized_input_defers_to_library() -> None:
    assert is_valid("46 70 123 45 67")
    assert not is_valid("46 70 ABC")
    assert not is_valid("")


# ------------------------------------------------------------------ agreement with phonenumbers
_TYPES = [
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER,
    PhoneNumberType.UAN,
    PhoneNumberType.VOICEMAIL,
]


def example_numbers() -> list[str]:
    out: list[str] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in _TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                out.append(phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:])
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            out.append(phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:])
    return out


EXAMPLES = example_numbers()


def mutate(rng: random.Random, digits: str) -> str:
    kind = rng.randrange(7)
    if kind == 0:  # one digit changed
        i = rng.randrange(len(digits))
        return digits[:i] + str(rng.randrange(10)) + digits[i + 1 :]
    if kind == 1:
        return digits + str(rng.randrange(10))
    if kind == 2:
        return digits[:-1]
    if kind in (3, 4):  # a random tail: a realistic number of the same series, or not
        n = rng.randrange(1, min(8, len(digits)))
        return digits[:-n] + "".join(str(rng.randrange(10)) for _ in range(n))
    if kind == 5:  # a trunk prefix after the country code
        i = rng.randrange(1, 4)
        return digits[:i] + rng.choice(["0", "1", "8", "9", "15"]) + digits[i:]
    return "".join(str(rng.randrange(10)) for _ in range(rng.randrange(3, 19)))


def sample(size: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = list(EXAMPLES)
    while len(out) < size:
        digits = rng.choice(EXAMPLES)
        for _ in range(rng.randrange(1, 3)):
            digits = mutate(rng, digits)
        if digits:
            out.append(digits)
    return out


def test_examples_are_valid() -> None:
    assert len(EXAMPLES) > 1000
    for digits in EXAMPLES:
        assert is_valid(digits), digits
        assert check(digits) == digits


def reference_canonical(digits: str) -> str | None:
    """The library's E.164 digits for a valid number, None for an invalid one (one parse)."""
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:]


SAMPLE_SIZE = 20_000


def test_agrees_with_phonenumbers_on_large_sample() -> None:
    digits_list = sample(SAMPLE_SIZE, seed=20240611)
    valid = 0
    for digits in digits_list:
        expected = reference_canonical(digits)
        assert is_valid(digits) == (expected is not None), digits
        if expected is None:
            continue
        valid += 1
        canonical = verdict(digits)
        assert canonical == expected, digits
        assert verdict(expected) == expected  # idempotent: check(check(x)) == check(x)
        # The fast path may decline (then verdict decides) but never accepts wrongly.
        if fast_valid(digits):
            assert canonical == digits
    assert valid > SAMPLE_SIZE // 5  # the sample is not all noise


def test_region_of_agrees_with_phonenumbers() -> None:
    for digits in sample(3_000, seed=7):
        if reference_valid(digits):
            expected = phonenumbers.region_code_for_number(phonenumbers.parse("+" + digits))
            assert region_of(str(verdict(digits))) == expected, digits


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=0, max_size=20))
def test_random_digit_strings_agree(digits: str) -> None:
    assert is_valid(digits) == reference_valid(digits)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(EXAMPLES),
    st.text(alphabet="0123456789", min_size=1, max_size=6),
    st.integers(min_value=0, max_value=6),
)
def test_example_with_random_tail_agrees(example: str, tail: str, cut: int) -> None:
    digits = example[: max(1, len(example) - cut)] + tail
    assert is_valid(digits) == reference_valid(digits)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(EXAMPLES),
    st.lists(st.sampled_from([" ", "-", ".", "(", ")"]), max_size=4),
    st.sampled_from(["+", "00", ""]),
)
def test_formatting_does_not_change_the_verdict(
    example: str, separators: list[str], prefix: str
) -> None:
    formatted = example
    for i, sep in enumerate(separators):
        at = min(len(formatted), 2 + 3 * i)
        formatted = formatted[:at] + sep + formatted[at:]
    raw = prefix + formatted
    assert check(raw) == example
    assert check_many([raw]) == [example]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(EXAMPLES),
            st.builds(lambda e: "+" + e, st.sampled_from(EXAMPLES)),
            st.builds(lambda e: "00" + e[:3] + " 0" + e[3:], st.sampled_from(EXAMPLES)),
            st.builds(
                lambda e: "+" + e[:2] + " (" + e[2:5] + ") " + e[5:], st.sampled_from(EXAMPLES)
            ),
            st.text(alphabet="+0123456789 -()", max_size=18),
        ),
        max_size=30,
    )
)
def test_check_unique_matches_check_on_random_lists(raws: list[str]) -> None:
    assert_unique_matches(raws)
