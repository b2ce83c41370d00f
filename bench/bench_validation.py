"""Enqueue-time validation at scale: prepare() on 1,000,000 recipients, against plain
phonenumbers, with a verdict-agreement check.

Run: ``.venv/bin/python -m bench.bench_validation`` (``--quick`` for 100,000 recipients).
The recipients are mobiles of eight countries in the spellings people paste (``+46...``,
bare digits, ``0046 70-...``, ``+44 (0)7...``, ``+1 (212) ...``), 1% garbage, a ``name``
column for 90% of them and a default.  prepare() is timed end to end (normalization,
validation, deduplication, parameter lookup, substitution, encoding and parts), cold (first
call in the process: the per-country regexes are compiled then) and warm.  The library
baseline is ``phonenumbers.is_valid_number(phonenumbers.parse("+" + digits))`` on a sample,
extrapolated; it is given the digits already normalized, which only flatters it.
Agreement is checked on the realistic sample plus the library's example numbers for every
region and type and random mutations of them.  Nothing here is asserted as a test.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from dispatcher import parallel
from dispatcher.campaign import recipients as checking
from dispatcher.campaign.msisdn import check, is_valid, normalize
from dispatcher.campaign.prepare import Prepared, prepare
from dispatcher.errors import InvalidNumber
from dispatcher.sinch.limits import MAX_MSISDN_DIGITS as MAX_DIGITS

BODY = "Hi ${name}, your order has shipped and arrives tomorrow. Reply STOP to opt out."
NAMES = [
    "Ann", "Bo", "Åsa", "Erik", "Karin", "Lars", "Maria", "Johan", "Zoë", "Olivia", "Noah",
    "Liam", "Émile", "Ünal", "Søren", "Chloé", "Björn", "Aoife", "Łukasz", "Nuño",
]  # fmt: skip


def _digits(rng: random.Random, k: int) -> str:
    return str(rng.randrange(10**k)).zfill(k)


# Mobiles of eight countries, each in a spelling people paste.
_FORMS: list[Callable[[random.Random], str]] = [
    lambda r: "+467" + r.choice("02369") + _digits(r, 7),
    lambda r: "467" + r.choice("02369") + _digits(r, 7),
    lambda r: "0046 7" + r.choice("02369") + "-" + _digits(r, 3) + " " + _digits(r, 2) + " "
    + _digits(r, 2),
    lambda r: "+447" + r.choice("4579") + _digits(r, 8),
    lambda r: "+44 (0)7" + r.choice("45") + _digits(r, 2) + " " + _digits(r, 6),
    lambda r: "1" + r.choice(["212", "415", "646", "917", "312"]) + r.choice("23456789")
    + _digits(r, 6),
    lambda r: "+1 (" + r.choice(["212", "415", "646"]) + ") " + r.choice("23456789")
    + _digits(r, 2) + "-" + _digits(r, 4),
    lambda r: "+4915" + r.choice("12") + _digits(r, 8),
    lambda r: "+33 6" + r.choice("0124578") + _digits(r, 7),
    lambda r: "+9198" + _digits(r, 8),
    lambda r: "+5511 9" + _digits(r, 8),
    lambda r: "+61 4" + r.choice("01236") + _digits(r, 1) + " " + _digits(r, 3) + " "
    + _digits(r, 3),
]  # fmt: skip
_GARBAGE: list[Callable[[random.Random], str]] = [
    lambda r: "n/a",
    lambda r: "+0" + _digits(r, 9),
    lambda r: "07" + _digits(r, 8),  # national format, no country code
    lambda r: "+46 70 " + _digits(r, 3),  # too short
    lambda r: "+999 " + _digits(r, 8),  # no such country code
]


def campaign(n: int, seed: int = 2024) -> tuple[list[str], dict[str, dict[str, str]]]:
    rng = random.Random(seed)
    recipients: list[str] = []
    names: dict[str, str] = {}
    for i in range(n):
        if i % 100 == 37:
            recipients.append(rng.choice(_GARBAGE)(rng))
            continue
        to = rng.choice(_FORMS)(rng)
        recipients.append(to)
        if rng.random() < 0.9:
            names[to] = rng.choice(NAMES)
    names["default"] = "there"
    return recipients, {"name": names}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process and its children, result).

    The CPU figure shows the work done whatever else the machine is doing; with the second
    process of check_unique it exceeds the wall time.
    """
    gc.collect()
    start, cpu = time.perf_counter(), _cpu()
    result = fn()
    return time.perf_counter() - start, _cpu() - cpu, result


def library_verdict(digits: str) -> bool:
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse("+" + digits)))
    except phonenumbers.NumberParseException:
        return False


def library_canonical(digits: str) -> str | None:
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:]


def _examples() -> list[str]:
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (
            PhoneNumberType.MOBILE,
            PhoneNumberType.FIXED_LINE,
            PhoneNumberType.TOLL_FREE,
            PhoneNumberType.PREMIUM_RATE,
            PhoneNumberType.VOIP,
            PhoneNumberType.UAN,
            PhoneNumberType.PERSONAL_NUMBER,
            PhoneNumberType.SHARED_COST,
        ):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                out.append(phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:])
    return out


def agreement_sample(recipients: Sequence[str], size: int, seed: int = 7) -> list[str]:
    """Half realistic (normalized recipients), half worldwide examples and their mutations."""
    rng = random.Random(seed)
    out: list[str] = []
    for raw in rng.sample(list(recipients), min(size // 2, len(recipients))):
        with contextlib.suppress(InvalidNumber):
            out.append(normalize(raw))
    examples = _examples()
    out += examples
    while len(out) < size:
        d = rng.choice(examples)
        kind = rng.randrange(5)
        if kind == 0:
            i = rng.randrange(len(d))
            d = d[:i] + str(rng.randrange(10)) + d[i + 1 :]
        elif kind == 1:
            d += str(rng.randrange(10))
        elif kind == 2:
            d = d[:-1]
        elif kind == 3:
            k = rng.randrange(1, min(7, len(d)))
            d = d[:-k] + _digits(rng, k)
        else:
            i = rng.randrange(1, 4)
            d = d[:i] + "0" + d[i:]
        out.append(d)
    return out


def machine_line() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"nproc {cpus} ({model}), Python {platform.python_version()}, "
        f"phonenumbers {phonenumbers.__version__}, {dt.date.today().isoformat()}"
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    n = 100_000 if quick else 1_000_000
    library_n = 5_000 if quick else 20_000
    agree_n = 20_000 if quick else 200_000

    recipients, parameters = campaign(n)
    load_before = os.getloadavg()[0]
    # prepare() runs in this process unless the caller opts in to a forked second process
    # for the recipient check (checker=parallel.check_unique); both are timed.
    forked = parallel.check_unique
    cold = _timed(lambda: prepare(BODY, recipients, parameters))
    serial = min(
        (_timed(lambda: prepare(BODY, recipients, parameters)) for _ in range(2)),
        key=lambda t: t[0],
    )
    prepared = serial[2]
    assert isinstance(prepared, Prepared)
    warm = min(
        (_timed(lambda: prepare(BODY, recipients, parameters, checker=forked)) for _ in range(2)),
        key=lambda t: t[0],
    )
    plain_body = BODY.replace("${name}", "there")
    plain = _timed(lambda: prepare(plain_body, recipients))
    numbers_only = _timed(lambda: forked(recipients))
    numbers_serial = _timed(lambda: checking.check_unique(recipients))

    rng = random.Random(1)
    digits_sample = []
    for raw in rng.sample(recipients, library_n):
        with contextlib.suppress(InvalidNumber):
            digits_sample.append(normalize(raw))
    library = _timed(lambda: [library_verdict(d) for d in digits_sample])
    library_per = library[0] / len(digits_sample)
    load_after = os.getloadavg()[0]

    sample = agreement_sample(recipients, agree_n)
    mismatches = 0
    canonical_mismatches = 0
    over_e164 = 0
    valid = 0
    for digits in sample:
        expected = library_canonical(digits)
        if is_valid(digits) != (expected is not None):
            mismatches += 1
        elif expected is not None:
            valid += 1
            try:
                got: str | None = check(digits)
            except InvalidNumber:
                got = None
            if got is None and len(digits) > MAX_DIGITS:
                over_e164 += 1  # check() applies E.164's 15-digit limit; is_valid() does not
            elif got != expected:
                canonical_mismatches += 1

    def row(label: str, t: tuple[float, float, Any]) -> list[str]:
        return [label, f"{t[0]:.2f} s", f"{t[1]:.2f} s", f"{t[0] / n * 1e6:.2f}"]

    rows = [
        row("prepare(), parameterized, first call (compiles the patterns)", cold),
        row("prepare(), parameterized, warm, one process (the default; best of 2)", serial),
        row("prepare(), parameterized, warm, checker=parallel.check_unique (best of 2)", warm),
        row("prepare(), no placeholders, warm, one process", plain),
        row("parallel.check_unique() alone (forks above 200,000)", numbers_only),
        row("recipients.check_unique() alone, one process", numbers_serial),
        [
            f"phonenumbers parse + is_valid_number ({len(digits_sample):,} sampled, extrapolated)",
            f"{library_per * n:.1f} s",
            f"{library[1] / len(digits_sample) * n:.1f} s",
            f"{library_per * 1e6:.2f}",
        ],
    ]
    lines = [
        "## Enqueue-time validation (bench/bench_validation.py)",
        "",
        f"Machine: {machine_line()}; load average {load_before:.1f} before, "
        f"{load_after:.1f} after the timings.",
        f"Command: `.venv/bin/python -m bench.bench_validation{' --quick' if quick else ''}`.",
        "",
        f"{n:,} recipients: mobiles of 8 countries in 12 spellings, 1% garbage, a `name` "
        "parameter for 90% of them and a default.",
        "",
        _table([f"{n:,} recipients", "wall", "CPU", "µs / recipient (wall)"], rows),
        "",
        f"Result: {len(prepared.recipients):,} valid, {len(prepared.invalid):,} invalid, "
        f"{prepared.duplicates:,} duplicates; encoding {prepared.encoding}, parts "
        f"{prepared.min_parts}-{prepared.max_parts}, {prepared.total_parts:,} in total.",
        "",
        f"Warm prepare() end to end, in one process, is {library_per * n / serial[0]:.1f}x "
        f"faster than the library's validation alone ({library_per * n / warm[0]:.1f}x with "
        "the forked checker).",
        "",
        f"Agreement with `phonenumbers.is_valid_number(parse('+' + digits))` on "
        f"{len(sample):,} numbers ({valid:,} valid): {mismatches} verdict mismatches; "
        f"{canonical_mismatches} canonical-form mismatches; {over_e164} valid numbers longer "
        "than E.164's 15 digits, which check() rejects by design.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100,000 recipients")
    args = parser.parse_args(argv)
    print(run(quick=args.quick))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
