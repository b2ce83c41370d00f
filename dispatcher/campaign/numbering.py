"""phonenumbers' verdict on a number, reached in a fraction of the library's time.

A campaign can carry a million recipients and is validated synchronously at enqueue, where
``phonenumbers.parse`` + ``is_valid_number`` costs 16 µs a number on a fast machine and
several times that on a small one.  This module reaches the same verdict by doing once, per
country calling code and national-number length, what the library redoes on every call:
each region's number-type patterns are folded into one compiled regex (``general_desc`` as
a lookahead, then the alternation of every type whose ``possible_length`` admits that
length), the region choice among regions sharing a calling code into ordered branches, so a
verdict is a dict lookup and one ``fullmatch`` (:func:`fast_valid`).  Numbers the fast test
declines take :func:`verdict`, which follows ``parse`` and ``is_valid_number`` step by step;
only the seven regions whose national prefix has a transform rule call the library's own
stripping function.  The tests compare verdicts and canonical forms with the library on a
large sample of realistic and mutated numbers.

Two of the functions used are private to phonenumbers (``_maybe_strip_national_prefix_carrier
_code``, ``_test_number_length``); pyproject.toml bounds the version to the majors that the
agreement tests have passed with.

The input forms users type are :mod:`dispatcher.campaign.msisdn`'s job; everything here takes
ASCII digits, country code first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberDesc
from phonenumbers.phonenumberutil import (
    COUNTRY_CODE_TO_REGION_CODE,
    ValidationResult,
    _maybe_strip_national_prefix_carrier_code,
    _test_number_length,
)

from dispatcher.sinch.limits import MAX_MSISDN_DIGITS

__all__ = ["FAST", "FAST_SLOTS", "Rejection", "fast_valid", "region_for", "verdict"]


# phonenumbers' own bounds on the national significant number (_MIN/_MAX_LENGTH_FOR_NSN).
_MIN_NSN: Final = 2
_MAX_NSN: Final = 17

# Number-type descriptions that make a number valid, in phonenumbers' order of testing; mobile
# and fixed line first here because bulk SMS targets are mostly those and the alternation is
# tried left to right (the order changes speed, not the verdict).
_TYPES: Final = (
    "mobile",
    "fixed_line",
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)
_STRIP_KEEPS: Final = frozenset(
    {
        ValidationResult.TOO_SHORT,
        ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
        ValidationResult.INVALID_LENGTH,
    }
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why phonenumbers would call the digits invalid, rendered only when asked."""

    kind: str
    region: str | None = None
    country_code: int = 0
    nsn: str = ""
    main: PhoneMetadata | None = None

    def reason(self, digits: str) -> str:
        if self.kind != "pattern":
            return self.kind
        where = (
            f"region {self.region}"
            if self.region and self.region != "001"
            else f"country code +{self.country_code}"
        )
        # As is_possible_number_with_reason: the NSN's length against the main region's.
        possible = (
            _test_number_length(self.nsn, self.main)
            if self.main is not None
            else ValidationResult.IS_POSSIBLE
        )
        detail = _LENGTH_DETAIL.get(possible, "")
        return f"invalid for {where}{detail}"


_LENGTH_DETAIL: Final = {
    ValidationResult.TOO_SHORT: " (too short)",
    ValidationResult.TOO_LONG: " (too long)",
    ValidationResult.INVALID_LENGTH: " (wrong length)",
}
_TOO_SHORT: Final = Rejection("too short")
_TOO_LONG: Final = Rejection("too long")
_UNKNOWN_CC: Final = Rejection("unknown country code")


@dataclass(slots=True)
class _Region:
    """One region's validity test, compiled per national-number length on first use."""

    code: str
    metadata: PhoneMetadata
    leading_digits: re.Pattern[str] | None
    by_length: dict[int, re.Pattern[str] | None] = field(default_factory=dict)

    def valid(self, nsn: str) -> bool:
        length = len(nsn)
        try:
            pattern = self.by_length[length]
        except KeyError:
            pattern = self.by_length[length] = _compile_for_length(self.metadata, length)
        return pattern is not None and pattern.fullmatch(nsn) is not None


@dataclass(slots=True)
class _Country:
    calling_code: int
    main: PhoneMetadata
    national_prefix: re.Pattern[str] | None
    # For _strip_national_prefix: the main region's general pattern and possible lengths;
    # plain_strip unless a national-prefix transform rule (7 regions) needs the library.
    general: re.Pattern[str] | None
    lengths: tuple[int, ...]
    local_lengths: tuple[int, ...]
    plain_strip: bool
    regions: tuple[_Region, ...]


def _admits(desc: PhoneNumberDesc, length: int) -> bool:
    # phonenumbers' _is_number_matching_desc: no lengths listed means "as the general desc".
    return not desc.possible_length or length in desc.possible_length


def _valid_source(metadata: PhoneMetadata, length: int) -> str | None:
    """A regex equal to ``_number_type_helper(nsn, metadata) != UNKNOWN`` for this length.

    An alternation matches up to ``\\Z`` iff some branch matches the whole string, and the
    lookahead demands that the general pattern match the whole string too; the length filters
    phonenumbers applies per description are decided here, at compile time.  None: no number
    of this length is valid.
    """
    general = metadata.general_desc
    if general is None or not general.national_number_pattern or not _admits(general, length):
        return None
    branches = []
    for name in _TYPES:
        desc: PhoneNumberDesc | None = getattr(metadata, name)
        if desc is None or not desc.national_number_pattern or not _admits(desc, length):
            continue
        branches.append(f"(?:{desc.national_number_pattern})")
    if not branches:
        return None
    return f"(?=(?:{general.national_number_pattern})\\Z)(?:{'|'.join(branches)})\\Z"


def _compile_for_length(metadata: PhoneMetadata, length: int) -> re.Pattern[str] | None:
    source = _valid_source(metadata, length)
    return None if source is None else re.compile(source, re.ASCII)


def _load_country(calling_code: int) -> _Country:
    region_codes = COUNTRY_CODE_TO_REGION_CODE[calling_code]
    main_code = phonenumbers.region_code_for_country_code(calling_code)
    main = PhoneMetadata.metadata_for_region_or_calling_code(calling_code, main_code)
    assert main is not None  # the calling code comes from the library's own table
    regions = []
    for code in region_codes:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(calling_code, code)
        if metadata is None:  # pragma: no cover - the library skips these too
            continue
        leading = metadata.leading_digits if len(region_codes) > 1 else None
        regions.append(
            _Region(code, metadata, None if leading is None else re.compile(leading, re.ASCII))
        )
    prefix = main.national_prefix_for_parsing
    national_prefix = re.compile(prefix, re.ASCII) if prefix else None
    general = main.general_desc
    pattern = general.national_number_pattern if general is not None else None
    return _Country(
        calling_code=calling_code,
        main=main,
        national_prefix=national_prefix,
        general=re.compile(pattern, re.ASCII) if pattern else None,
        lengths=tuple(general.possible_length) if general is not None else (),
        local_lengths=tuple(general.possible_length_local_only) if general is not None else (),
        plain_strip=bool(general and general.possible_length)
        and not main.national_prefix_transform_rule,
        regions=tuple(regions),
    )


_COUNTRIES: dict[str, _Country] = {}
_CALLING_CODES: Final = frozenset(str(cc) for cc in COUNTRY_CODE_TO_REGION_CODE)


def _country(prefix: str) -> _Country | None:
    country = _COUNTRIES.get(prefix)
    if country is None and prefix in _CALLING_CODES:
        country = _COUNTRIES[prefix] = _load_country(int(prefix))
    return country


def verdict(digits: str) -> str | Rejection:
    """The canonical MSISDN of ``"+" + digits`` if phonenumbers deems it valid, else why not.

    Mirrors ``parse`` (country code: the first of 1-3 leading digits the library knows; the
    national prefix stripped with the main region's rules when what remains is a possible
    length; NSN length 2-17) and then ``is_valid_number`` (the region among those sharing the
    calling code whose leading digits match, or failing those the first it is valid for; then
    that region's number types).  ``digits`` is ASCII digits only.
    """
    if len(digits) <= _MIN_NSN:
        return _TOO_SHORT
    country = _country(digits[:1]) or _country(digits[:2]) or _country(digits[:3])
    if country is None:
        return _UNKNOWN_CC
    cc_len = len(str(country.calling_code))
    nsn = digits[cc_len:]
    if len(nsn) < _MIN_NSN:
        return _TOO_SHORT
    if country.national_prefix is not None and country.national_prefix.match(nsn):
        nsn = _strip_national_prefix(country, nsn)
        if len(nsn) < _MIN_NSN:  # pragma: no cover - unreachable in the library too
            return _TOO_SHORT
    if len(nsn) > _MAX_NSN:
        return _TOO_LONG
    canonical = digits[:cc_len] + nsn
    if canonical != digits and fast_valid(canonical):
        # After a stripped prefix: the fast test's region choice and patterns are exactly
        # what follows here (its prefix guard only makes it decline more often).
        return canonical
    region = _locate(country, nsn)
    if region is None:
        return Rejection("pattern", None, country.calling_code, nsn, country.main)
    if not region.valid(nsn):
        return Rejection("pattern", region.code, country.calling_code, nsn, country.main)
    return canonical


def _strip_national_prefix(country: _Country, nsn: str) -> str:
    """What ``parse`` keeps of an NSN that starts with the national prefix ("+44 07...").

    The library's _maybe_strip_national_prefix_carrier_code followed by its length test,
    restated for the common case of no transform rule (a plain cut after the prefix match):
    the cut is refused when the original matches the general pattern and the rest does not,
    and undone when the rest is too short, a local-only or an impossible length.
    """
    if not country.plain_strip:
        _, stripped, _ = _maybe_strip_national_prefix_carrier_code(nsn, country.main)
        return nsn if _test_number_length(stripped, country.main) in _STRIP_KEEPS else stripped
    assert country.national_prefix is not None
    match = country.national_prefix.match(nsn)
    if match is None:  # pragma: no cover - the caller has matched it
        return nsn
    stripped = nsn[match.end() :]
    general = country.general
    if general is not None and general.fullmatch(nsn) and not general.fullmatch(stripped):
        return nsn
    length = len(stripped)
    lengths = country.lengths
    if length in country.local_lengths:
        return nsn  # IS_POSSIBLE_LOCAL_ONLY
    if length == lengths[0] or length > lengths[-1] or length in lengths:
        return stripped  # IS_POSSIBLE or TOO_LONG
    return nsn  # TOO_SHORT or INVALID_LENGTH


def _locate(country: _Country, nsn: str) -> _Region | None:
    """phonenumbers' region_code_for_number among the regions sharing a calling code."""
    regions = country.regions
    if len(regions) == 1:
        return regions[0]
    for candidate in regions:
        if candidate.leading_digits is not None:
            if candidate.leading_digits.match(nsn):
                return candidate
        elif candidate.valid(nsn):
            return candidate
    return None


_NEVER: Final = re.compile(r"(?!)")
# First three digits -> compiled fast test per total length (None: not built yet).  Three
# digits always determine the calling code, so the slot says which patterns apply.
FAST: dict[str, list[re.Pattern[str] | None]] = {}
_FAST_BY_CODE: dict[tuple[int, int], re.Pattern[str]] = {}
# Longer is never valid for check(); is_valid asks verdict.
FAST_SLOTS: Final = MAX_MSISDN_DIGITS + 1


def fast_valid(digits: str) -> bool:
    """True only where :func:`verdict` returns ``digits`` itself (valid, already canonical).

    One dict lookup and one ``fullmatch`` of a regex that folds the whole of ``verdict`` for
    numbers without a national prefix: the calling code as a literal, a negative lookahead
    for the prefix (its presence sends the number down the exact slow path), and the region
    choice among regions sharing the code as ordered branches.  False means "ask verdict".
    """
    head = digits[:3]
    slots = FAST.get(head)
    if slots is None:
        slots = FAST[head] = [None] * FAST_SLOTS
    length = len(digits)
    if length >= FAST_SLOTS:
        return False
    pattern = slots[length]
    if pattern is None:
        pattern = slots[length] = _fast_pattern(head, length)
    return pattern.fullmatch(digits) is not None


def _fast_pattern(head: str, length: int) -> re.Pattern[str]:
    if len(head) < 3 or not head.isdigit():
        return _NEVER
    country = _country(head[:1]) or _country(head[:2]) or _country(head[:3])
    if country is None:
        return _NEVER
    code = str(country.calling_code)
    nsn_length = length - len(code)
    if not _MIN_NSN <= nsn_length <= _MAX_NSN:
        return _NEVER
    key = (country.calling_code, nsn_length)
    pattern = _FAST_BY_CODE.get(key)
    if pattern is None:
        pattern = _FAST_BY_CODE[key] = _build_fast(country, nsn_length)
    return pattern


def _build_fast(country: _Country, nsn_length: int) -> re.Pattern[str]:
    # _locate picks the first region whose leading digits match (a prefix test) or, lacking
    # leading digits, that the number is valid for; the number is then valid iff valid there.
    # As a regex: branch i = "no earlier region selected" + "region i selected" + "valid for i".
    branches: list[str] = []
    earlier: list[str] = []
    single = len(country.regions) == 1
    for region in country.regions:
        valid = _valid_source(region.metadata, nsn_length)
        if single or region.leading_digits is None:
            selector = valid
            guard = ""
        else:
            selector = f"(?:{region.leading_digits.pattern})"
            guard = f"(?={selector})"
        if valid is not None:
            branches.append("".join(f"(?!{s})" for s in earlier) + guard + valid)
        if selector is not None:
            earlier.append(selector)
    if not branches:
        return _NEVER
    prefix = country.national_prefix
    no_prefix = "" if prefix is None else f"(?!{prefix.pattern})"
    alternatives = "|".join(f"(?:{b})" for b in branches)
    return re.compile(f"{country.calling_code}{no_prefix}(?:{alternatives})", re.ASCII)


def region_for(canonical: str) -> str | None:
    country = _country(canonical[:1]) or _country(canonical[:2]) or _country(canonical[:3])
    if country is None:
        return None
    region = _locate(country, canonical[len(str(country.calling_code)) :])
    return None if region is None else region.code
