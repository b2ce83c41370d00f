"""The simulator's one command line: ``python -m sinch_simulator`` and ``dispatcher simulator``.

Both run :func:`main`; ``dispatcher simulator`` passes its arguments through untouched, so the
options, their checks and ``--help`` are the same whichever way it is started.  Bad input is
one line on stderr and exit 2; a port it cannot bind is exit 1; a token is never printed, not
even in an error message.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from sinch_simulator.faults import Faults, http_status
from sinch_simulator.model import PlanSpec, parse_plan
from sinch_simulator.rules import normalize_msisdn
from sinch_simulator.simulator import Simulator

PROG = "python -m sinch_simulator"


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (the rest of the project's CLI does the same), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _plan_arg(value: str) -> PlanSpec:
    try:
        return parse_plan(value)
    except ValueError as exc:
        # ArgumentTypeError's message replaces argparse's default, which would echo the value
        # and with it the token.
        raise argparse.ArgumentTypeError(str(exc)) from None


def _plan_error_arg(value: str) -> tuple[str, tuple[int, str | None]]:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise argparse.ArgumentTypeError("--plan-error must be ID:STATUS[:CODE]")
    try:
        status = http_status(int(parts[1]), "STATUS")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--plan-error {parts[0]}: {exc}") from None
    return parts[0], (status, parts[2] if len(parts) == 3 and parts[2] else None)


def _throttle_arg(value: str) -> tuple[str, tuple[int, float]]:
    parts = value.split(":")
    if len(parts) != 3 or not parts[0]:
        raise argparse.ArgumentTypeError("--throttle must be ID:N:RETRY_AFTER_SECONDS")
    try:
        n, after = int(parts[1]), float(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError("--throttle must be ID:N:RETRY_AFTER_SECONDS") from None
    if n < 0 or not after >= 0:
        raise argparse.ArgumentTypeError("--throttle: N and RETRY_AFTER_SECONDS must be >= 0")
    return parts[0], (n, after)


def _fraction_arg(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1")
    return f


def _statuses_arg(value: str) -> tuple[int, ...]:
    try:
        return tuple(http_status(int(v), "status") for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--error-statuses: {exc}") from None


def _msisdn_arg(value: str) -> str:
    norm = normalize_msisdn(value)
    if norm is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not an MSISDN")
    return norm


def build_arg_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog=prog,
        description="A local Sinch-like SMS REST API (batches endpoints) for demos and tests.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8085, help="port (default 8085; 0 = any free)")
    p.add_argument(
        "--plan",
        action="append",
        type=_plan_arg,
        required=True,
        metavar="ID:TOKEN:RATE[:BURST]",
        help="a service plan; RATE is recipients/s (<= 0: no 429s); repeatable",
    )
    p.add_argument(
        "--rate-tolerance",
        type=float,
        default=0.25,
        metavar="SECONDS",
        help="extra bucket credit, in seconds of rate (default 0.25)",
    )
    p.add_argument(
        "--error-rate",
        type=_fraction_arg,
        default=0.0,
        metavar="P",
        help="fraction of sends answered with a 5xx (batch not created)",
    )
    p.add_argument(
        "--error-statuses",
        type=_statuses_arg,
        default=(500, 503),
        metavar="S,S",
        help="statuses --error-rate picks from (default 500,503)",
    )
    p.add_argument(
        "--drop-rate",
        type=_fraction_arg,
        default=0.0,
        metavar="P",
        help="fraction of sends created but answered by closing the connection",
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="mean added latency per send (uniform 0.5x-1.5x)",
    )
    p.add_argument(
        "--illegal",
        type=_msisdn_arg,
        nargs="+",
        action="extend",
        default=[],
        metavar="MSISDN",
        help="numbers answered 403 illegal_number_type (repeatable)",
    )
    p.add_argument(
        "--plan-error",
        type=_plan_error_arg,
        action="append",
        default=[],
        metavar="ID:STATUS[:CODE]",
        help="force STATUS on every request of a plan",
    )
    p.add_argument(
        "--throttle",
        type=_throttle_arg,
        action="append",
        default=[],
        metavar="ID:N:SECONDS",
        help="answer the next N sends of a plan with 429",
    )
    p.add_argument(
        "--retry-after-date",
        action="store_true",
        help="send Retry-After as an HTTP date instead of seconds",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for the fault dice")
    return p


def main(argv: list[str] | None = None, *, prog: str = PROG) -> int:
    """Run the simulator in the foreground; 2 on bad arguments, 1 when it cannot listen.

    ``prog`` is the name usage lines and errors give: ``dispatcher simulator`` passes its own.
    """
    parser = build_arg_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    plans: list[PlanSpec] = args.plan
    faults = Faults(
        error_rate=args.error_rate,
        error_statuses=args.error_statuses,
        drop_rate=args.drop_rate,
        latency_ms=max(args.latency_ms, 0.0),
        illegal_numbers=set(args.illegal),
        plan_errors=dict(args.plan_error),
        throttle=dict(args.throttle),
        retry_after_http_date=args.retry_after_date,
    )
    try:
        sim = Simulator(
            plans,
            host=args.host,
            port=args.port,
            faults=faults,
            rate_tolerance_s=args.rate_tolerance,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        sim.serve_forever(on_ready=lambda s: print(s.describe(), flush=True))
    except OSError as exc:
        print(
            f"{prog}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0
