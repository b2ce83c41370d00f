"""``dispatcher``: the command line.  Thin: parse, call the library, print.

Errors are one line on stderr: exit 2 for bad input (unknown plan, bad file, bad number, no such
campaign), 1 for a failure at run time (Redis unreachable).  ``--json`` prints data for scripts.
"""

from __future__ import annotations

import csv
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import click
import redis

from dispatcher.config import Settings
from dispatcher.errors import CampaignError, ConfigError, DispatcherError, NotFound, StorageError
from dispatcher.models import Campaign

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"dispatcher: {message}", err=True)
    sys.exit(code)


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def handle_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            for line in exc.problems[:-1]:
                click.echo(f"dispatcher: {line}", err=True)
            _fail(exc.problems[-1] if exc.problems else str(exc), 2)
        except (CampaignError, NotFound) as exc:
            _fail(str(exc), 2)
        except (StorageError, redis.RedisError) as exc:
            ctx = click.get_current_context(silent=True)
            url = ctx.obj.get("redis_url", "") if ctx and isinstance(ctx.obj, dict) else ""
            cause = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ else exc
            _fail(f"cannot reach Redis at {_safe_url(url)} ({cause.__class__.__name__})", 1)
        except DispatcherError as exc:
            _fail(str(exc), 1)

    return wrapper  # type: ignore[return-value]


def _dispatcher(config: str | None) -> Any:
    from dispatcher.api import Dispatcher

    d = Dispatcher.from_env(config)
    ctx = click.get_current_context()
    ctx.obj = {"redis_url": d.settings.redis_url}
    return d


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="DISPATCH_CONFIG",
    help="TOML config file [env DISPATCH_CONFIG; default config/dispatch.toml].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sms-dispatcher")
def cli() -> None:
    """Rate-limited bulk SMS through the Sinch SMS REST API.

    \b
    Try it with nothing installed:   dispatcher demo
    Queue a campaign:                dispatcher enqueue --plan acme --from Acme \\
                                         --body 'Hi ${name}' --recipients people.csv
    Watch it:                        dispatcher status CAMPAIGN_ID
    Run the senders:                 celery -A workers worker
    See plans, limits, circuits:     dispatcher plans
    Inspect and replay failures:     dispatcher dlq list

    Configuration: a TOML file (DISPATCH_CONFIG) plus the environment; see README.md.
    """


# ---------------------------------------------------------------------------- enqueue
def _read_recipients(path: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """CSV with a ``to`` column; every other column is a parameter of that recipient."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            if "to" not in fields:
                raise CampaignError(
                    f"recipients file {path}: no 'to' column "
                    f"(header: {', '.join(fields) or 'empty'})"
                )
            keys = [f for f in fields if f != "to"]
            to: list[str] = []
            params: dict[str, dict[str, str]] = {k: {} for k in keys}
            for row in reader:
                number = (row.get("to") or "").strip()
                to.append(number)
                for k in keys:
                    value = row.get(k)
                    if value not in (None, ""):
                        params[k][number] = value
            return to, params
    except OSError as exc:
        raise CampaignError(f"cannot read recipients file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CampaignError(f"cannot read recipients file {path}: {exc}") from None


@cli.command(
    short_help="Validate a campaign and queue it.",
    epilog="""\b
Examples:
  dispatcher enqueue --plan acme --from Acme --body 'Server down' --to +46701234567
  dispatcher enqueue --plan acme --from Acme --body 'Hi ${name}!' --recipients people.csv \\
      --default name=there --json
\b
people.csv:
  to,name
  +46 70-123 45 67,Ann
  0046701234568,Bob""",
)
@click.option("--plan", required=True, help="Service plan id (a [plans.ID] table in the config).")
@click.option(
    "--from", "sender", required=True, help="Sender: MSISDN, short code or alphanumeric (<= 11)."
)
@click.option(
    "--body", required=True, help="Message text; ${key} placeholders take per-recipient values."
)
@click.option("--to", "to", multiple=True, help="A recipient MSISDN (repeatable).")
@click.option(
    "--recipients", type=str, help="CSV file with a 'to' column; other columns are parameters."
)
@click.option(
    "--default", "defaults", multiple=True, metavar="KEY=VALUE", help="Default for a parameter."
)
@click.option("--send-at", help="Schedule (ISO-8601; no offset means UTC).")
@click.option("--expire-at", help="Stop trying after this time (ISO-8601, <= send_at + 3 days).")
@click.option(
    "--strict", is_flag=True, help="Reject the whole campaign if any recipient is invalid."
)
@config_option
@json_option
@handle_errors
def enqueue(
    plan: str,
    sender: str,
    body: str,
    to: tuple[str, ...],
    recipients: str | None,
    defaults: tuple[str, ...],
    send_at: str | None,
    expire_at: str | None,
    strict: bool,
    config: str | None,
    as_json: bool,
) -> None:
    """Validate a campaign and queue it; prints the campaign id.

    Invalid recipients are reported (and not sent); duplicates are dropped.  Nothing is
    written when the campaign is rejected.
    """
    numbers = list(to)
    params: dict[str, dict[str, str]] = {}
    if recipients:
        more, params = _read_recipients(recipients)
        numbers += more
    if not numbers:
        raise CampaignError("no recipients: give --to MSISDN or --recipients FILE")
    for item in defaults:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CampaignError(f"--default {item!r}: expected KEY=VALUE")
        params.setdefault(key, {})["default"] = value
    d = _dispatcher(config)
    # This process is the CLI's own and ends after the call: a second core for the check of
    # a large list is safe here (Dispatcher.enqueue never forks unless asked).
    result = d.enqueue(
        Campaign(
            plan=plan,
            sender=sender,
            body=body,
            recipients=numbers,
            parameters=params or None,
            send_at=send_at,
            expire_at=expire_at,
            strict=strict,
        ),
        parallel=True,
    )
    if as_json:
        _print_json(result.to_json())
        return
    click.echo(result.campaign_id)
    click.echo(
        f"queued {result.recipients} recipients in {result.batches} batches on plan {plan} "
        f"({result.encoding}, up to {result.max_parts} part(s) each); "
        f"{result.duplicates} duplicates dropped, {len(result.invalid)} invalid",
        err=True,
    )
    for inv in result.invalid[:20]:
        click.echo(f"  invalid {inv.to!r}: {inv.reason}", err=True)
    if len(result.invalid) > 20:
        click.echo(f"  ... and {len(result.invalid) - 20} more (use --json)", err=True)


# ---------------------------------------------------------------------------- status
@cli.command(short_help="Show a campaign's progress.")
@click.argument("campaign_id")
@click.option("--watch", is_flag=True, help="Show a live progress bar until the campaign is done.")
@config_option
@json_option
@handle_errors
def status(campaign_id: str, watch: bool, config: str | None, as_json: bool) -> None:
    """Show a campaign's progress: queued, sending, paused, done or canceled.

    pending = recipients - sent - dead_lettered; done means nothing is pending (dead letters
    included: see `dispatcher dlq list`).
    """
    d = _dispatcher(config)
    st = d.status(campaign_id)
    if watch and not as_json:
        st = _watch(d, campaign_id)
    if as_json:
        _print_json(st.to_json())
        return
    click.echo(
        f"{st.campaign_id}  plan={st.plan}  state={st.state}  recipients={st.recipients}  "
        f"sent={st.sent}  dead_lettered={st.dead_lettered}  pending={st.pending}"
    )


def _watch(d: Any, campaign_id: str) -> Any:
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    st = d.status(campaign_id)
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
    )  # fmt: skip
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(campaign_id, total=st.recipients, state=st.state)
        while True:
            progress.update(task, completed=st.sent + st.dead_lettered, state=st.state)
            if st.state in ("done", "canceled"):
                return st
            time.sleep(0.5)
            st = d.status(campaign_id)


# ---------------------------------------------------------------------------- plans
@cli.group(
    invoke_without_command=True,
    short_help="List plans: limits, effective rate, backlog, circuit.",
    epilog="""\b
A plan's circuit opens when the provider says the fault is the plan's (401, 403
blocked_account, 404 ...): sending stops, the queue is kept, and a probe is sent
after a backoff.  After fixing the cause:  dispatcher plans resume PLAN_ID""",
)
@config_option
@json_option
@click.pass_context
@handle_errors
def plans(ctx: click.Context, config: str | None, as_json: bool) -> None:
    """List plans: configured rate, effective rate, backlog, circuit.  Subcommand: resume."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"config": config}
        return
    rows = _dispatcher(config).plans()
    if as_json:
        _print_json([p.to_json() for p in rows])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("plan", "rate/s", "effective/s", "burst", "pending", "circuit", "DLQ")
    for p in rows:
        circuit = "closed" if p.circuit == "closed" else f"[red]open[/] {p.circuit_code or ''}"
        table.add_row(
            p.plan, f"{p.rate:g}", f"{p.effective_rate:g}", f"{p.burst:g}", str(p.pending),
            circuit, str(p.dead_letters),
        )  # fmt: skip
    Console().print(table)


@plans.command()
@click.argument("plan_id")
@click.pass_context
@handle_errors
def resume(ctx: click.Context, plan_id: str) -> None:
    """Close a plan's circuit after fixing its cause, and send again at once."""
    config = (ctx.obj or {}).get("config")
    was_open = _dispatcher(config).resume(plan_id)
    click.echo(f"plan {plan_id}: {'circuit closed, ' if was_open else ''}sending resumes")


# ---------------------------------------------------------------------------- dlq
@cli.group(
    short_help="Inspect, replay and purge dead letters.",
    epilog="""\b
Examples:
  dispatcher dlq list --plan acme --json
  dispatcher dlq show d0m4x3k2a1b2c3d4e5
  dispatcher dlq replay d0m4x3k2a1b2c3d4e5      # back at the tail of its lane, sent once
  dispatcher dlq replay --plan acme
  dispatcher dlq purge --plan acme --yes""",
)
def dlq() -> None:
    """Dead letters: batches the provider refused for good, kept with its code and text."""


def _dl_line(e: Any) -> str:
    return (
        f"{e.id}  plan={e.plan}  campaign={e.campaign_id}  recipients={len(e.recipients)}  "
        f"{e.status or '-'} {e.code or '-'}  reason={e.reason}  attempts={e.attempts}  "
        f"last={e.last_attempt_at or '-'}"
    )


@dlq.command("list")
@click.option("--plan", help="Only this plan.")
@config_option
@json_option
@handle_errors
def dlq_list(plan: str | None, config: str | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    entries = _dispatcher(config).dead_letters(plan)
    if as_json:
        _print_json([e.to_json() for e in entries])
        return
    for e in entries:
        click.echo(_dl_line(e))
    if not entries:
        click.echo("no dead letters", err=True)


@dlq.command("show")
@click.argument("entry_id")
@config_option
@json_option
@handle_errors
def dlq_show(entry_id: str, config: str | None, as_json: bool) -> None:
    """Show one dead letter with its recipients and the provider's answer."""
    e = _dispatcher(config).dead_letter(entry_id)
    if as_json:
        _print_json(e.to_json())
        return
    click.echo(_dl_line(e))
    click.echo(f"text: {e.text}")
    click.echo(f"recipients: {' '.join(e.recipients)}")


def _one_of(entry_id: str | None, plan: str | None) -> None:
    if bool(entry_id) == bool(plan):
        raise CampaignError("give exactly one of ENTRY_ID or --plan ID")


@dlq.command("replay")
@click.argument("entry_id", required=False)
@click.option("--plan", help="Replay every dead letter of this plan.")
@config_option
@json_option
@handle_errors
def dlq_replay(entry_id: str | None, plan: str | None, config: str | None, as_json: bool) -> None:
    """Send dead letters again: back at the tail of their plan's lane, each once."""
    _one_of(entry_id, plan)
    entries, recipients = _dispatcher(config).replay(entry_id, plan=plan)
    if as_json:
        _print_json({"replayed": entries, "recipients": recipients})
    else:
        click.echo(f"replayed {entries} dead letter(s), {recipients} recipient(s)")


@dlq.command("purge")
@click.argument("entry_id", required=False)
@click.option("--plan", help="Purge every dead letter of this plan.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@config_option
@json_option
@handle_errors
def dlq_purge(
    entry_id: str | None, plan: str | None, yes: bool, config: str | None, as_json: bool
) -> None:
    """Delete dead letters for good (asks first unless --yes)."""
    _one_of(entry_id, plan)
    d = _dispatcher(config)
    what = f"dead letter {entry_id}" if entry_id else f"all dead letters of plan {plan}"
    # The question goes to stderr, so that stdout stays the --json answer alone.
    if not yes and not click.confirm(
        f"Delete {what}? This cannot be undone", default=False, err=True
    ):
        _fail("purge canceled", 1)
    entries, recipients = d.purge(entry_id, plan=plan)
    if as_json:
        _print_json({"purged": entries, "recipients": recipients})
    else:
        click.echo(f"purged {entries} dead letter(s), {recipients} recipient(s)")


# ---------------------------------------------------------------------------- preview
@cli.command(short_help="Encoding, characters and parts of a body (offline).")
@click.option("--body", required=True, help="Message text, with optional ${key} placeholders.")
@click.option("--recipients", help="CSV with a 'to' column and parameter columns.")
@click.option("--default", "defaults", multiple=True, metavar="KEY=VALUE")
@json_option
@handle_errors
def preview(body: str, recipients: str | None, defaults: tuple[str, ...], as_json: bool) -> None:
    """How a body will be encoded and into how many parts (no config, no Redis needed)."""
    from dispatcher.campaign.encoding import analyze

    info = analyze(body)
    data: dict[str, Any] = {
        "encoding": info.encoding,
        "characters": info.characters,
        "parts": info.parts,
    }
    if recipients:
        from dispatcher.campaign.prepare import prepare

        numbers, params = _read_recipients(recipients)
        for item in defaults:
            key, _, value = item.partition("=")
            params.setdefault(key, {})["default"] = value
        prep = prepare(body, numbers, params or None)
        data["recipients"] = {
            "valid": len(prep.recipients),
            "invalid": len(prep.invalid),
            "duplicates": prep.duplicates,
            "encoding": prep.encoding,
            "min_parts": prep.min_parts,
            "max_parts": prep.max_parts,
            "total_parts": prep.total_parts,
        }
    if as_json:
        _print_json(data)
        return
    unit = "septets" if info.encoding == "GSM-7" else "UTF-16 units"
    click.echo(f"{info.encoding}, {info.characters} {unit}, {info.parts} part(s)")
    if "recipients" in data:
        r = data["recipients"]
        click.echo(
            f"recipients: {r['valid']} valid, {r['invalid']} invalid, "
            f"{r['duplicates']} duplicates; "
            f"parts per recipient {r['min_parts']}..{r['max_parts']}, {r['total_parts']} in total "
            f"({r['encoding']})"
        )


# ---------------------------------------------------------------------------- simulator
@cli.command(
    short_help="Run a local Sinch-like SMS API.",
    add_help_option=False,
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def simulator(args: tuple[str, ...]) -> None:
    """A local Sinch-like SMS API: try the dispatcher without a Sinch account.

    Every argument goes to the simulator's own command line (``python -m sinch_simulator``),
    so both take the same options and ``dispatcher simulator --help`` shows them.
    """
    from sinch_simulator.cli import main as simulator_main

    sys.exit(simulator_main(list(args), prog="dispatcher simulator"))


# ---------------------------------------------------------------------------- health
@cli.command(short_help="Check that this host's worker is alive (for probes).")
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False),
    help="The worker's heartbeat file [env DISPATCH_HEALTH_FILE; default in the temp folder].",
)
@click.option(
    "--max-age",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds since the ticker's last beat after which the worker counts as dead.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def health(path: str | None, max_age: float, as_json: bool) -> None:
    """Exit 0 when this host's worker is alive, 1 when it is not: for a Kubernetes liveness
    probe or a systemd watchdog script.

    \b
    Alive means: the worker's ticker thread rewrote its heartbeat file within --max-age
    seconds, and the process that wrote it still runs.  It needs neither Redis nor the broker:
    during a Redis outage a worker is alive and waiting, and restarting it would not help.

    \b
    Example (Kubernetes):
      livenessProbe: {exec: {command: [dispatcher, health]}, periodSeconds: 15}
    """
    from dispatcher import health as health_mod

    result = health_mod.check(Path(path) if path else health_mod.default_path(), max_age)
    if as_json:
        _print_json(
            {"ok": result.ok, "reason": result.reason, "age_s": result.age_s, **result.detail}
        )
    else:
        click.echo(("ok: " if result.ok else "unhealthy: ") + result.reason, err=not result.ok)
    sys.exit(0 if result.ok else 1)


# ---------------------------------------------------------------------------- metrics
@cli.command(short_help="Serve deployment-wide Prometheus metrics.")
@click.option("--port", type=int, help="Port to serve /metrics on [default: metrics_port, 9808].")
@click.option("--host", default="0.0.0.0", show_default=True)
@config_option
@handle_errors
def metrics(port: int | None, host: str, config: str | None) -> None:
    """Serve the deployment-wide Prometheus metrics (counts and gauges read from Redis)."""
    from dispatcher.exporter import serve

    settings = Settings.load(config, require_tokens=False)
    serve(settings, host=host, port=port or settings.metrics_port)


# ---------------------------------------------------------------------------- demo
@cli.command(short_help="Run the whole system locally: Redis, simulator, workers.")
@click.option("--workers", default=2, show_default=True, help="Celery worker processes.")
@click.option("--scale", default=1.0, show_default=True, help="Multiply the demo's campaign sizes.")
@handle_errors
def demo(workers: int, scale: float) -> None:
    """Run everything on this machine: Redis, the simulator, workers, three plans."""
    from dispatcher.demo import run_demo

    sys.exit(run_demo(workers=workers, scale=scale))


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors are one line too (with where to find help), exit code 2."""
    try:
        cli.main(args=argv, prog_name="dispatcher", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("interrupted", 130)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "dispatcher"
        _fail(f"{exc.format_message()} (see '{where} --help')", 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)


if __name__ == "__main__":
    main()
