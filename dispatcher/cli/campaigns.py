"""Commands about campaigns: ``enqueue``, ``status`` and the offline ``preview``."""

from __future__ import annotations

import csv
from typing import Any

import click

from dispatcher.cli.base import (
    cli,
    config_option,
    handle_errors,
    json_option,
    open_dispatcher,
    print_json,
)
from dispatcher.errors import CampaignError
from dispatcher.models import Campaign


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
    d = open_dispatcher(config)
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
        print_json(result.to_json())
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
    """Show a campaign's progress: scheduled, queued, sending, paused, done or canceled.

    pending = recipients - sent - dead_lettered - canceled - expired - suppressed; done means
    nothing is pending (dead letters included: see `dispatcher dlq list`).
    """
    d = open_dispatcher(config)
    st = d.status(campaign_id)
    if watch and not as_json:
        st = _watch(d, campaign_id)
    if as_json:
        print_json(st.to_json())
        return
    click.echo(status_line(st))


def status_line(st: Any) -> str:
    """One campaign on one line, naming only the counts that are not zero."""
    state = f"{st.state} ({st.paused_by})" if st.paused_by else st.state
    parts = [f"{st.campaign_id}  plan={st.plan}  state={state}  recipients={st.recipients}"]
    parts.append(f"sent={st.sent}  dead_lettered={st.dead_lettered}")
    for name in ("canceled", "expired", "suppressed"):
        if getattr(st, name):
            parts.append(f"{name}={getattr(st, name)}")
    parts.append(f"pending={st.pending}")
    if st.eta_s is not None and st.state not in ("done", "canceled"):
        parts.append(f"eta={_duration(st.eta_s)}")
    return "  ".join(parts)


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


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
            progress.update(task, completed=st.recipients - st.pending, state=st.state)
            if st.state in ("done", "canceled"):
                return st
            time.sleep(0.5)
            st = d.status(campaign_id)


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
        print_json(data)
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
