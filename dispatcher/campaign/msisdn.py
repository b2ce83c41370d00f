"""Recipient numbers: the forms users type, and phonenumbers' verdict on them, fast.

A campaign can carry a million recipients and is validated synchronously at enqueue, where
``phonenumbers.parse`` + ``is_valid_number`` costs 16 µs a number on a fast machine and
several times that on a small one.  This module reaches the same verdict in a fraction of that
by doing once, per country calling code and national-number length, what the library redoes
on every call: each region's number-type patterns are folded into one compiled regex
(``general_desc`` as a lookahead, then the alternation of every type whose
``possible_length`` admits that length), the region choice among regions sharing a calling
code into ordered branches, so a verdict is a dict lookup and one ``fullmatch``
(:func:`_fast_valid`).  Numbers the fast test declines take :func:`_verdict`, which follows
``parse`` and ``is_valid_number`` step by step; only the seven regions whose national prefix
has a transform rule call the library's own stripping function.  The tests compare verdicts
and canonical forms with the library on a large sample of realistic and mutated numbers.

Input forms (seed 003): international format with a leading ``+``, ``00`` or nothing; spaces,
dashes, dots and brackets are ignored.  The result is the E.164 digits without ``+``, in the
canonical form ``phonenumbers`` derives: a national trunk prefix written after the country code
("+44 (0)7400 123456") is removed, so two spellings of one number deduplicate and match their
parameters.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import signal
import sys
import threading
from array import array
from collections.abc import Iterable, Sequence
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

from dispatcher.errors import InvalidNumber

__all__ = [
    "MAX_DIGITS",
    "PARALLEL_MIN",
    "Checked",
    "InvalidNumber",
    "check",
    "check_many",
    "check_unique",
    "is_valid",
    "normalize",
    "region_of",
]

MAX_DIGITS: Final = 15
"""E.164's maximum, country code included."""

# phonenumbers' own bounds on the national significant number (_MIN/_MAX_LENGTH_FOR_NSN).
_MIN_NSN: Final = 2
_MAX_NSN: Final = 17

# Ignored in input, as the API ignores them (seed 003), plus dots and no-break spaces, which
# spreadsheets and copy-paste bring along.
_SEPARATORS: Final = str.maketrans("", "", " \t\n\r\v\f\u00a0-.()[]")
_ASCII_SEPARATORS: Final = b" \t\n\r\v\f-.()[]"
_NOT_TEXT: Final = "not a number: not text"

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


def normalize(raw: str) -> str:
    """The digits of ``raw`` in international format, without ``+`` or ``00``.

    Only syntax is checked here (what the API itself would refuse to read); whether the digits
    form a real number is :func:`is_valid`'s question.
    """
    if raw.isascii():
        if raw.isdigit() or (raw[:1] == "+" and raw[1:].isdigit()):
            text = raw
        else:
            # bytes.translate: the separators go in one C pass (str.translate is 4x slower).
            text = raw.encode("ascii").translate(None, _ASCII_SEPARATORS).decode("ascii")
    else:
        text = raw.strip().translate(_SEPARATORS)
    if not text:
        raise InvalidNumber("empty")
    prefixed = True
    if text[0] == "+":
        digits = text[1:]
    elif text[0] == "0" and text[:2] == "00":
        digits = text[2:]
    else:
        prefixed = False
        digits = text
    if not (digits.isdigit() and digits.isascii()):
        raise InvalidNumber(_syntax_reason(digits))
    if digits[0] == "0":
        if prefixed:
            raise InvalidNumber("country code cannot start with 0")
        raise InvalidNumber("no country code (national format? write it as +<country code>...)")
    if len(digits) > MAX_DIGITS:
        raise InvalidNumber(f"too long ({len(digits)} digits, at most {MAX_DIGITS})")
    if len(digits) < 3:
        raise InvalidNumber("too short")
    return digits


def is_valid(msisdn: str) -> bool:
    """``phonenumbers.is_valid_number(phonenumbers.parse("+" + msisdn))``, parse errors False."""
    if not (msisdn.isdigit() and msisdn.isascii()):
        # Not our normalized form: let the library judge the odd input itself.
        try:
            return bool(phonenumbers.is_valid_number(phonenumbers.parse("+" + msisdn)))
        except phonenumbers.NumberParseException:
            return False
    if _fast_valid(msisdn):
        return True
    return isinstance(_verdict(msisdn), str)


def check(raw: str) -> str:
    """Normalize and validate ``raw``; the canonical MSISDN, or :class:`InvalidNumber`."""
    digits = normalize(raw)
    if _fast_valid(digits):
        return digits
    result = _verdict(digits)
    if isinstance(result, _Rejection):
        raise InvalidNumber(result.reason(digits))
    return result


def check_many(raws: Iterable[str]) -> list[str | InvalidNumber]:
    """:func:`check` of each, with failures as values instead of exceptions."""
    out: list[str | InvalidNumber] = []
    for raw in raws:
        try:
            out.append(check(raw))
        except InvalidNumber as exc:
            out.append(exc)
        except (AttributeError, TypeError):  # not a string at all
            out.append(InvalidNumber(_NOT_TEXT))
    return out


@dataclass(slots=True)
class Checked:
    """:func:`check` over a recipient list, deduplicated: what enqueue needs to know."""

    first: dict[str, int]
    """Canonical MSISDN -> index of its first occurrence, in input order."""
    invalid: dict[int, InvalidNumber]
    """Index -> why that entry is not a number we send to, in input order."""
    duplicates: list[tuple[int, str]]
    """(index, canonical MSISDN) of each later occurrence of a number."""


PARALLEL_MIN: Final = 200_000
"""From this many recipients check_unique uses a second process when it safely can."""


def check_unique(raws: Sequence[str], *, parallel: bool | None = None) -> Checked:
    """:func:`check` every entry and deduplicate: the million-recipient path.

    On a multi-core Linux machine, for a large list, in a process with a single thread
    (forking a threaded process can deadlock the child on a lock held by another thread),
    the second half is checked in a forked child while this process checks the first; the
    child sends its compact result back through a pipe.  ``parallel`` forces the choice;
    any trouble with the child falls back to checking its half here.
    """
    if parallel is None:
        parallel = len(raws) >= PARALLEL_MIN and _can_fork()
    if not parallel or len(raws) < 2:
        return _check_serial(raws)
    # The child also pickles its result and the parent merges it: a slightly smaller share
    # for the child has both finish at about the same time.
    half = len(raws) * 53 // 100
    child = _fork_check(raws, half)
    try:
        mine = _check_serial(raws[:half] if isinstance(raws, list) else list(raws[:half]))
    except BaseException:  # interrupted: leave no child or descriptor behind
        if child is not None:
            os.kill(child[0], signal.SIGKILL)
            _collect(child)
        raise
    theirs = _collect(child) if child is not None else None
    if theirs is None:
        theirs = _check_serial(raws[half:], half)
    # Merged with dict and set operations in C; only numbers in both halves are looked at.
    first, later, duplicates = mine.first, theirs.first, mine.duplicates
    across = list(filter(first.__contains__, later))  # (no set of half a million built)
    for msisdn in across:
        duplicates.append((later.pop(msisdn), msisdn))
    first.update(later)
    if across or theirs.duplicates:
        duplicates.extend(theirs.duplicates)
        duplicates.sort()
    mine.invalid.update(theirs.invalid)
    return mine


def _can_fork() -> bool:
    if sys.platform != "linux" or threading.active_count() != 1:
        return False
    try:
        return len(os.sched_getaffinity(0)) > 1
    except (AttributeError, OSError):  # pragma: no cover - not Linux after all
        return False


def _fork_check(raws: Sequence[str], start: int) -> tuple[int, int] | None:
    """Fork a child that checks ``raws[start:]`` and pickles the result into a pipe."""
    try:
        read_end, write_end = os.pipe()
    except OSError:  # pragma: no cover - out of descriptors
        return None
    try:
        pid = os.fork()
    except OSError:  # pragma: no cover - out of processes or memory
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # pragma: no cover - the child; coverage does not follow forks
        status = 1
        try:
            os.close(read_end)
            data = pickle.dumps(_pack(_check_serial(raws[start:], start)), pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(data)
            status = 0
        finally:
            os._exit(status)  # no atexit handlers, no flushing the parent's buffers twice
    os.close(write_end)
    return pid, read_end


def _collect(child: tuple[int, int]) -> Checked | None:
    pid, read_end = child
    status = 0
    try:
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
    finally:
        # A SIGCHLD handler may have reaped it already: then the data, if complete,
        # unpickles, and if not, the half is checked here.
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(pid, 0)
    if status != 0 or not data:  # pragma: no cover - the child failed: check here instead
        return None
    try:
        return _unpack(pickle.loads(data))
    except Exception:  # pragma: no cover - a truncated write: check here instead
        return None


_Packed = tuple[str, bytes, dict[int, InvalidNumber], list[tuple[int, str]]]


def _pack(checked: Checked) -> _Packed:
    """The first occurrences as one string and one array: a dict of half a million entries
    pickles and unpickles several times slower than that."""
    numbers = "\n".join(checked.first)
    indices = array("q", checked.first.values()).tobytes()
    return numbers, indices, checked.invalid, checked.duplicates


def _unpack(packed: _Packed) -> Checked:
    numbers, raw_indices, invalid, duplicates = packed
    indices = array("q")
    indices.frombytes(raw_indices)
    first = dict(zip(numbers.split("\n"), indices, strict=True)) if numbers else {}
    return Checked(first, invalid, duplicates)


def _check_serial(raws: Sequence[str], offset: int = 0) -> Checked:
    """check_unique's loop, for ``raws`` (indices reported from ``offset``).

    The loop inlines the fast test (optional ``+``, then one ``fullmatch``; failing that, the
    separators out and a ``+``/``00`` off, then the same) because at a couple of microseconds
    per number the calls themselves would be a third of the cost.  Whatever the fast test
    does not accept goes through :func:`check` and gets the exact verdict and reason.
    """
    fast = _FAST
    limit = _FAST_SLOTS
    separators = _ASCII_SEPARATORS
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
                # another region sharing it, a head not seen yet: _fast_valid builds its
                # test) get the exact verdict; anything else check()'s, with its reason.
                if (pattern is None or pattern.fullmatch(msisdn) is None) and not (
                    _clean(msisdn) and _fast_valid(msisdn)
                ):
                    verdict = _verdict(msisdn) if _clean(msisdn) else None
                    msisdn = verdict if isinstance(verdict, str) else check(raw)
        except InvalidNumber as exc:
            invalid[index] = exc
            continue
        except (AttributeError, TypeError):  # not a string at all
            invalid[index] = InvalidNumber(_NOT_TEXT)
            continue
        if msisdn in first:
            duplicates.append((index, msisdn))
        else:
            first[msisdn] = index
    return Checked(first, invalid, duplicates)


def _clean(digits: str) -> bool:
    """What normalize() would return unchanged."""
    return (
        digits.isdigit() and digits.isascii() and 2 < len(digits) <= MAX_DIGITS and digits[0] != "0"
    )


def region_of(msisdn: str) -> str | None:
    """The region phonenumbers assigns a valid canonical MSISDN (``"001"``: non-geographic)."""
    result = _verdict(msisdn)
    if isinstance(result, _Rejection):
        return result.region
    return _region_for(result)


def _syntax_reason(digits: str) -> str:
    if not digits:
        return "no digits"
    if any(c.isalpha() for c in digits):
        return "not a number: contains letters"
    if "+" in digits:
        return "not a number: '+' only allowed at the start"
    bad = next(c for c in digits if not (c.isdigit() and c.isascii()))
    return f"not a number: contains {bad!r}"


@dataclass(frozen=True, slots=True)
class _Rejection:
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
_TOO_SHORT: Final = _Rejection("too short")
_TOO_LONG: Final = _Rejection("too long")
_UNKNOWN_CC: Final = _Rejection("unknown country code")


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


def _verdict(digits: str) -> str | _Rejection:
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
    if canonical != digits and _fast_valid(canonical):
        # After a stripped prefix: the fast test's region choice and patterns are exactly
        # what follows here (its prefix guard only makes it decline more often).
        return canonical
    region = _locate(country, nsn)
    if region is None:
        return _Rejection("pattern", None, country.calling_code, nsn, country.main)
    if not region.valid(nsn):
        return _Rejection("pattern", region.code, country.calling_code, nsn, country.main)
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
_FAST: dict[str, list[re.Pattern[str] | None]] = {}
_FAST_BY_CODE: dict[tuple[int, int], re.Pattern[str]] = {}
_FAST_SLOTS: Final = MAX_DIGITS + 1  # longer is never valid for check(); is_valid asks _verdict


def _fast_valid(digits: str) -> bool:
    """True only where :func:`_verdict` returns ``digits`` itself (valid, already canonical).

    One dict lookup and one ``fullmatch`` of a regex that folds the whole of ``_verdict`` for
    numbers without a national prefix: the calling code as a literal, a negative lookahead
    for the prefix (its presence sends the number down the exact slow path), and the region
    choice among regions sharing the code as ordered branches.  False means "ask _verdict".
    """
    head = digits[:3]
    slots = _FAST.get(head)
    if slots is None:
        slots = _FAST[head] = [None] * _FAST_SLOTS
    length = len(digits)
    if length >= _FAST_SLOTS:
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


def _region_for(canonical: str) -> str | None:
    country = _country(canonical[:1]) or _country(canonical[:2]) or _country(canonical[:3])
    if country is None:
        return None
    region = _locate(country, canonical[len(str(country.calling_code)) :])
    return None if region is None else region.code
