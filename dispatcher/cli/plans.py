"""The ``plans`` group: limits, effective rates, backlogs and circuits, and ``plans resume``."""

from __future__ import annotations

import click

from dispatcher.cli.base import (
    cli,
    config_option,
    handle_errors,
    json_option,
    open_dispatcher,
    print_json,
)


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
    rows = open_dispatcher(config).plans()
    if as_json:
        print_json([p.to_json() for p in rows])
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
    was_open = open_dispatcher(config).resume(plan_id)
    click.echo(f"plan {plan_id}: {'circuit closed, ' if was_open else ''}sending resumes")
