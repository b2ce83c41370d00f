"""``python -m bench`` (``make bench``): run every benchmark module in turn, print each
section as it finishes, and write them all to docs/benchmarks.md.

    python -m bench                 # all of them, full size (several minutes)
    python -m bench --quick         # smaller runs, for a smoke test
    python -m bench --only limiter  # one module (repeatable); --no-write keeps the docs as is
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from datetime import UTC, datetime

from bench import ROOT, machine

# In the order they run; bench_validation is written apart and may be absent.
MODULES = (
    "bench_limiter",
    "bench_dispatch",
    "bench_window",
    "bench_hotplan",
    "bench_celery_baseline",
    "bench_enqueue",
    "bench_callbacks",
    "bench_plans",
    "bench_validation",
)
OPTIONAL = {"bench_validation"}


NOTES_MARKER = "<!-- notes below are kept by `make bench` -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="e.g. limiter, dispatch"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    wanted = [m for m in MODULES if not args.only or any(o in m for o in args.only)]
    started = datetime.now(UTC)
    sections: list[str] = []
    failed = 0
    for name in wanted:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if name in OPTIONAL and exc.name == f"bench.{name}":
                print(f"bench: {name} is not there yet; skipped", file=sys.stderr)
                continue
            raise
        print(f"bench: running {name} ...", file=sys.stderr, flush=True)
        t = time.monotonic()
        try:
            section = module.run(quick=args.quick)
        except Exception:
            failed += 1
            section = f"## {name}\n\nFailed in this run:\n\n```\n{traceback.format_exc()}```\n"
        print(f"bench: {name} took {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
        print(section, flush=True)
        sections.append(section.strip() + "\n")

    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    header = "\n".join(
        [
            "# Benchmarks",
            "",
            f"Written by `{command}` (`make bench` runs `.venv/bin/python -m bench`) on "
            f"{started:%Y-%m-%d %H:%M} UTC, on: {machine()}.",
            "",
            "Every figure comes from one run on that machine, against a private redis-server and "
            "the project's simulator (its own process), with real `celery -A workers worker` "
            "processes where workers are involved. The machine's cores are shared, so compare "
            "figures as ratios measured in the same run, not as absolute numbers. Nothing here "
            "is asserted by a test; the tests check properties (envelope, order, exactly-once), "
            "never timings.",
            "",
        ]
    )
    text = header + "\n" + "\n".join(sections)
    out = ROOT / "docs" / "benchmarks.md"
    # The reading of the figures is written by people, below this marker, and kept.
    if out.exists() and NOTES_MARKER in out.read_text():
        text += "\n" + NOTES_MARKER + out.read_text().split(NOTES_MARKER, 1)[1]
    if not args.no_write:
        if args.only and out.exists():
            print("bench: --only: docs/benchmarks.md left as is", file=sys.stderr)
        else:
            out.write_text(text)
            print(f"bench: wrote {out.relative_to(ROOT)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
