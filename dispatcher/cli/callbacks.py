"""``dispatcher callbacks`` (the receiver for Sinch's delivery reports and inbound messages)
and ``dispatcher suppress`` (the opt-out lists)."""

from __future__ import annotations

import csv
import socket
import sys

import click

from dispatcher.cli.base import (
    cli,
    config_option,
    fail,
    handle_errors,
    json_option,
    open_dispatcher,
    print_json,
)


@cli.command(
    short_help="Receive Sinch callbacks: delivery reports and inbound STOP.",
    epilog="""\b
Each plan has one URL: <callback_base_url>/callbacks/<plan>/<token>. Every batch carries it
as its callback_url; set it as the plan's default callback in the Sinch dashboard too, so
inbound messages (STOP, START) arrive.  In your own web stack mount instead:
  WSGI  dispatcher.callbacks:wsgi_app      (gunicorn 'dispatcher.callbacks:wsgi_app')
  ASGI  dispatcher.callbacks:asgi_app      (uvicorn 'dispatcher.callbacks:asgi_app')""",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8086, show_default=True)
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--print-urls", is_flag=True, help="Print each plan's URL and exit.")
@config_option
@json_option
@handle_errors
def callbacks(port: int, host: str, print_urls: bool, config: str | None, as_json: bool) -> None:
    """Serve the callback receiver: 2xx once a report is in Redis, 503 while Redis is down
    (Sinch retries), 401 for a wrong token."""
    d = open_dispatcher(config)
    if d.settings.callback_base_url is None:
        fail(f"callback_base_url is not set in {d.settings.source}", 2)
    if print_urls:
        rows = [{"plan": p, "url": d.callback_url(p)} for p in sorted(d.settings.plans)]
        if as_json:
            print_json(rows)
        else:
            for row in rows:
                click.echo(f"{row['plan']}  {row['url']}")
        return
    from dispatcher.callbacks import make_wsgi_app
    from dispatcher.callbacks.server import make_server

    try:
        server = make_server(host, port, make_wsgi_app(d.settings, d.redis))
    except socket.gaierror:
        fail(f"--host {host!r}: not an address or a name this machine can resolve", 2)
    except OSError as exc:  # in use, or a privileged port
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1)
    click.echo(f"dispatcher callbacks: listening on http://{host}:{server.server_port}", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.group(
    short_help="Opt-outs: numbers that are never sent to (STOP adds, START lifts).",
    epilog="""\b
Examples:
  dispatcher suppress add +46701234567 --plan acme     this plan only
  dispatcher suppress add +46701234567                 every plan
  dispatcher suppress import stops.csv --plan acme     a CSV with a `to` column, or one per line
  dispatcher suppress export --plan acme > stops.csv
Enqueue drops suppressed numbers and counts them as `suppressed`.""",
)
def suppress() -> None:
    """Manage the suppression lists (per plan, or global without --plan)."""


_plan = click.option("--plan", "plan_id", metavar="ID", help="The plan's list (default: global).")


@suppress.command()
@click.argument("numbers", nargs=-1, required=True)
@_plan
@config_option
@json_option
@handle_errors
def add(numbers: tuple[str, ...], plan_id: str | None, config: str | None, as_json: bool) -> None:
    """Suppress numbers."""
    n = open_dispatcher(config).suppress(list(numbers), plan_id)
    _report("added", n, len(numbers), as_json)


@suppress.command()
@click.argument("numbers", nargs=-1, required=True)
@_plan
@config_option
@json_option
@handle_errors
def remove(
    numbers: tuple[str, ...], plan_id: str | None, config: str | None, as_json: bool
) -> None:
    """Lift the suppression of numbers."""
    n = open_dispatcher(config).unsuppress(list(numbers), plan_id)
    _report("removed", n, len(numbers), as_json)


@suppress.command(name="list")
@_plan
@config_option
@json_option
@handle_errors
def list_(plan_id: str | None, config: str | None, as_json: bool) -> None:
    """The suppressed numbers."""
    rows = open_dispatcher(config).suppressed(plan_id)
    if as_json:
        print_json(rows)
    else:
        for n in rows:
            click.echo(f"+{n}")


@suppress.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_plan
@config_option
@json_option
@handle_errors
def import_(file: str, plan_id: str | None, config: str | None, as_json: bool) -> None:
    """Suppress every number of FILE (CSV with a `to` column, or one number per line)."""
    with open(file, newline="", encoding="utf-8-sig") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    if lines and "to" in [c.strip() for c in next(csv.reader([lines[0]]))]:
        numbers = [row["to"] for row in csv.DictReader(lines) if row.get("to")]
    else:
        numbers = [line.strip() for line in lines]
    n = open_dispatcher(config).suppress(numbers, plan_id)
    _report("added", n, len(numbers), as_json)


@suppress.command()
@_plan
@config_option
@json_option
@handle_errors
def export(plan_id: str | None, config: str | None, as_json: bool) -> None:
    """Print the list as CSV (`to` column), for `suppress import` elsewhere."""
    rows = open_dispatcher(config).suppressed(plan_id)
    if as_json:
        print_json(rows)
        return
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["to"])
    for n in rows:
        w.writerow([f"+{n}"])


def _report(verb: str, changed: int, given: int, as_json: bool) -> None:
    if as_json:
        print_json({verb: changed, "given": given})
    else:
        click.echo(f"{verb} {changed} of {given} numbers")
