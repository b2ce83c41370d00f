"""The ``dlq`` group: list, show, replay and purge dead letters."""

from __future__ import annotations

from typing import Any

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
from dispatcher.errors import CampaignError


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
    entries = open_dispatcher(config).dead_letters(plan)
    if as_json:
        print_json([e.to_json() for e in entries])
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
    e = open_dispatcher(config).dead_letter(entry_id)
    if as_json:
        print_json(e.to_json())
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
    entries, recipients = open_dispatcher(config).replay(entry_id, plan=plan)
    if as_json:
        print_json({"replayed": entries, "recipients": recipients})
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
    d = open_dispatcher(config)
    what = f"dead letter {entry_id}" if entry_id else f"all dead letters of plan {plan}"
    # The question goes to stderr, so that stdout stays the --json answer alone.
    if not yes and not click.confirm(
        f"Delete {what}? This cannot be undone", default=False, err=True
    ):
        fail("purge canceled", 1)
    entries, recipients = d.purge(entry_id, plan=plan)
    if as_json:
        print_json({"purged": entries, "recipients": recipients})
    else:
        click.echo(f"purged {entries} dead letter(s), {recipients} recipient(s)")
