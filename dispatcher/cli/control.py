"""Operators' commands for running work: ``campaigns`` (list, pause, resume, cancel) and
``audit``.  The plan-level controls live with the other plan commands in ``plans.py``.

Every action is recorded in the audit log with the OS user as its actor.
"""

from __future__ import annotations

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
from dispatcher.cli.campaigns import status_line
from dispatcher.models import CAMPAIGN_STATES


def _config(ctx: click.Context, config: str | None) -> str | None:
    return config or (ctx.obj or {}).get("config")


def _print_status(st: Any, as_json: bool) -> None:
    if as_json:
        print_json(st.to_json())
    else:
        click.echo(status_line(st))


@cli.group(
    invoke_without_command=True,
    short_help="List campaigns (progress, ETA); pause, resume or cancel one.",
    epilog="""\b
Examples:
  dispatcher campaigns --state sending          what is going out now
  dispatcher campaigns pause c1abc...           hold it; later campaigns go ahead
  dispatcher campaigns resume c1abc...          its batches are next again, in order
  dispatcher campaigns cancel c1abc...          drop every unsent batch at once
  dispatcher campaigns cancel c1abc... --at-provider
                                                also DELETE the batches Sinch accepted

Pause and cancel apply within one batch on every worker: a batch already being posted
finishes (and counts as sent).  Every action goes to `dispatcher audit`.""",
)
@click.option("--plan", "plan_id", metavar="ID", help="Only this plan's campaigns.")
@click.option("--state", type=click.Choice(CAMPAIGN_STATES), help="Only campaigns in this state.")
@config_option
@json_option
@click.pass_context
@handle_errors
def campaigns(
    ctx: click.Context, plan_id: str | None, state: str | None, config: str | None, as_json: bool
) -> None:
    """List campaigns, newest first, with progress and ETA."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"config": config}
        return
    rows = open_dispatcher(config).campaigns(plan=plan_id, state=state)
    if as_json:
        print_json([c.to_json() for c in rows])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    # The id is what an operator copies into the next command: never cut it.
    table.add_column("campaign", no_wrap=True, min_width=19)
    table.add_column("plan")
    table.add_column("state", no_wrap=True)
    for name in ("rcpts", "sent", "done%", "dlvd%", "eta"):
        table.add_column(name, justify="right")
    for c in rows:
        finished = c.recipients - c.pending
        pct = f"{100 * finished / c.recipients:.0f}" if c.recipients else "-"
        delivered = c.delivery.get("delivered", 0)
        dpct = f"{100 * delivered / c.sent:.0f}" if c.sent and any(c.delivery.values()) else "-"
        state_text = f"{c.state} ({c.paused_by})" if c.paused_by else c.state
        eta = "-" if c.eta_s is None or c.state in ("done", "canceled") else f"{c.eta_s:.0f}s"
        table.add_row(
            c.campaign_id, c.plan, state_text, str(c.recipients), str(c.sent), pct, dpct, eta
        )
    Console().print(table)
    if rows:
        Console().print("done% = sent, dead-lettered, canceled, expired or suppressed; dlvd% = "
                        "delivered of sent, from delivery reports")  # fmt: skip


@campaigns.command()
@click.argument("campaign_id")
@config_option
@json_option
@click.pass_context
@handle_errors
def pause(ctx: click.Context, campaign_id: str, config: str | None, as_json: bool) -> None:
    """Hold a campaign: it keeps its place in its plan's lane, later campaigns go ahead."""
    _print_status(open_dispatcher(_config(ctx, config)).pause(campaign_id), as_json)


@campaigns.command()
@click.argument("campaign_id")
@config_option
@json_option
@click.pass_context
@handle_errors
def resume(ctx: click.Context, campaign_id: str, config: str | None, as_json: bool) -> None:
    """Resume a paused campaign: its remaining batches are next again, in their order."""
    _print_status(open_dispatcher(_config(ctx, config)).resume(campaign_id), as_json)


@campaigns.command()
@click.argument("campaign_id")
@click.option(
    "--at-provider",
    is_flag=True,
    help="Also DELETE the batches the provider already accepted (needs the plan's token).",
)
@config_option
@json_option
@click.pass_context
@handle_errors
def cancel(
    ctx: click.Context, campaign_id: str, at_provider: bool, config: str | None, as_json: bool
) -> None:
    """Cancel a campaign: its unsent batches are removed at once (counted as canceled).

    A batch already being posted completes and counts as sent.  Cancelling twice is harmless.
    """
    d = open_dispatcher(_config(ctx, config))
    st = d.cancel(campaign_id)
    answers = d.cancel_at_provider(campaign_id) if at_provider else None
    if as_json:
        data = st.to_json()
        if answers is not None:
            data["at_provider"] = [
                {"batch_id": b, "status": code, "error": text} for b, code, text in answers
            ]
        print_json(data)
        return
    click.echo(status_line(st))
    for b, code, text in answers or []:
        click.echo(f"  provider batch {b}: {code if code is not None else 'no answer'} {text}")
    if answers is not None and not answers:
        click.echo("  the provider had accepted no batch of it")


@cli.command(short_help="Control actions: who paused, resumed, canceled or changed what.")
@click.option("--limit", default=100, show_default=True, help="How many, newest first.")
@config_option
@json_option
@handle_errors
def audit(limit: int, config: str | None, as_json: bool) -> None:
    """Control actions, newest first: time, action, target and actor (the OS user for the
    CLI, the ``actor=`` argument for the Python API)."""
    rows = open_dispatcher(config).audit(limit)
    if as_json:
        print_json([a.to_json() for a in rows])
        return
    for a in rows:
        detail = " ".join(f"{k}={v}" for k, v in sorted(a.detail.items()))
        click.echo(f"{a.at}  {a.actor:<12} {a.action:<28} {a.target}  {detail}")
