"""The ``plans`` group: limits, effective rates, backlogs and circuits; pause and resume a plan,
and change its limits at runtime."""

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
Examples:
  dispatcher plans pause acme                  stop sending acme's batches now
  dispatcher plans resume acme                 send again (also closes an open circuit)
  dispatcher plans set acme --rate 10          slow down, on every worker within 2 s
  dispatcher plans reset acme                  back to the config file's limits

A plan's circuit opens when the provider says the fault is the plan's (401, 403
blocked_account, 404 ...): sending stops, the queue is kept, and a probe is sent
after a backoff.  After fixing the cause:  dispatcher plans resume PLAN_ID""",
)
@config_option
@json_option
@click.pass_context
@handle_errors
def plans(ctx: click.Context, config: str | None, as_json: bool) -> None:
    """List plans: rate in force, effective rate, backlog, circuit, paused."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"config": config}
        return
    rows = open_dispatcher(config).plans()
    if as_json:
        print_json([p.to_json() for p in rows])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("plan", "rate/s", "effective/s", "burst", "batch", "pending", "circuit", "DLQ")
    for p in rows:
        circuit = "closed" if p.circuit == "closed" else f"[red]open[/] {p.circuit_code or ''}"
        if p.paused:
            circuit += " [yellow]paused[/]"
        rt = {k for k, v in p.sources.items() if v == "runtime"}
        table.add_row(
            p.plan, _val(p.rate, "rate" in rt), f"{p.effective_rate:g}",
            _val(p.burst, "burst" in rt), _val(p.batch_size, "batch_size" in rt),
            str(p.pending), circuit, str(p.dead_letters),
        )  # fmt: skip
    Console().print(table)
    if any(p.source == "runtime" for p in rows):
        Console().print("* a runtime value (`plans set`), in force until `plans reset`")


def _val(v: float, runtime: bool) -> str:
    return f"{v:g}*" if runtime else f"{v:g}"


def _plan_config(ctx: click.Context) -> str | None:
    return (ctx.obj or {}).get("config")


@plans.command()
@click.argument("plan_id")
@click.pass_context
@handle_errors
def resume(ctx: click.Context, plan_id: str) -> None:
    """Unpause a plan, or close its circuit after fixing the cause; it sends again at once."""
    d = open_dispatcher(_plan_config(ctx))
    before = next((p for p in d.plans() if p.plan == plan_id), None)
    d.resume_plan(plan_id)
    lifted = [
        *(["unpaused"] if before and before.paused else []),
        *(["circuit closed"] if before and before.circuit == "open" else []),
    ]
    click.echo(f"plan {plan_id}: {', '.join([*lifted, 'sending resumes'])}")


@plans.command(name="pause")
@click.argument("plan_id")
@click.pass_context
@handle_errors
def pause_plan(ctx: click.Context, plan_id: str) -> None:
    """Stop sending a plan's batches, on every worker, within one batch.  Queues are kept;
    enqueue still works.  `plans resume` sends again."""
    changed = open_dispatcher(_plan_config(ctx)).pause_plan(plan_id)
    click.echo(f"plan {plan_id}: {'paused' if changed else 'already paused'}")


@plans.command(name="set")
@click.argument("plan_id")
@click.option("--rate", type=float, help="Messages (recipients) per second, > 0.")
@click.option("--burst", type=float, help="Bucket capacity, >= 1 (default: follows --rate).")
@click.option("--batch-size", type=int, help="Recipients per batch for new campaigns, 1-1000.")
@json_option
@click.pass_context
@handle_errors
def set_plan(
    ctx: click.Context,
    plan_id: str,
    rate: float | None,
    burst: float | None,
    batch_size: int | None,
    as_json: bool,
) -> None:
    """Change a plan's limits at runtime: they win over the config file on every worker
    within 2 s, survive restarts, and stay until `plans reset`.  A burst below the queued
    batches' size re-batches them."""
    p = open_dispatcher(_plan_config(ctx)).set_plan(plan_id, rate, burst, batch_size)
    if as_json:
        print_json(p.to_json())
        return
    click.echo(f"plan {plan_id}: rate {p.rate:g}/s, burst {p.burst:g}, batch size {p.batch_size}")


@plans.command(name="reset")
@click.argument("plan_id")
@json_option
@click.pass_context
@handle_errors
def reset_plan(ctx: click.Context, plan_id: str, as_json: bool) -> None:
    """Drop a plan's runtime limits: back to the config file's."""
    p = open_dispatcher(_plan_config(ctx)).reset_plan(plan_id)
    if as_json:
        print_json(p.to_json())
        return
    click.echo(f"plan {plan_id}: rate {p.rate:g}/s, burst {p.burst:g}, batch size {p.batch_size}")
