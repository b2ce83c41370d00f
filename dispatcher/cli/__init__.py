"""``dispatcher``: the command line.  Thin: each command parses, calls the library, prints.

One module per group of commands (the rq model); importing them registers them on the group.
"""

from __future__ import annotations

import click

from dispatcher.cli import callbacks, campaigns, control, dlq, plans, servers  # noqa: F401  (registers the commands)
from dispatcher.cli.base import cli, fail

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors are one line too (with where to find help), exit code 2."""
    try:
        cli.main(args=argv, prog_name="dispatcher", standalone_mode=False)
    except click.exceptions.Abort:
        fail("interrupted", 130)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "dispatcher"
        fail(f"{exc.format_message()} (see '{where} --help')", 2)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
