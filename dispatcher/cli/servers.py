"""Long-running commands: the simulator, the metrics exporter, the worker health probe, the demo."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dispatcher.cli.base import (
    cli,
    config_option,
    handle_errors,
    print_json,
)
from dispatcher.config import Settings


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
    from dispatcher.sending import health as health_mod

    result = health_mod.check(Path(path) if path else health_mod.default_path(), max_age)
    if as_json:
        print_json(
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
    from dispatcher.observability.exporter import serve

    settings = Settings.load(config, require_tokens=False)
    serve(settings, host=host, port=port or settings.metrics_port)


# ---------------------------------------------------------------------------- demo
@cli.command(short_help="Run the whole system locally: Redis, simulator, workers.")
@click.option("--workers", default=2, show_default=True, help="Celery worker processes.")
@click.option("--scale", default=1.0, show_default=True, help="Multiply the demo's campaign sizes.")
@handle_errors
def demo(workers: int, scale: float) -> None:
    """Run everything on this machine: Redis, the simulator, workers, three plans."""
    from dispatcher.devtools.demo import run_demo

    sys.exit(run_demo(workers=workers, scale=scale))
