"""What every command shares: the ``dispatcher`` group, one-line errors, ``--config``/``--json``.

Errors are one line on stderr: exit 2 for bad input (unknown plan, bad file, bad number, no such
campaign), 1 for a failure at run time (Redis unreachable).  ``--json`` prints data for scripts.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
import redis

from dispatcher.config import redacted_url
from dispatcher.errors import (
    CampaignError,
    ConfigError,
    ControlError,
    DispatcherError,
    NotFound,
    StorageError,
)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"dispatcher: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            for line in exc.problems[:-1]:
                click.echo(f"dispatcher: {line}", err=True)
            fail(exc.problems[-1] if exc.problems else str(exc), 2)
        except (CampaignError, ControlError, NotFound) as exc:
            fail(str(exc), 2)
        except (StorageError, redis.RedisError) as exc:
            ctx = click.get_current_context(silent=True)
            url = ctx.obj.get("redis_url", "") if ctx and isinstance(ctx.obj, dict) else ""
            cause = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ else exc
            fail(f"cannot reach Redis at {redacted_url(url)} ({cause.__class__.__name__})", 1)
        except DispatcherError as exc:
            fail(str(exc), 1)

    return wrapper  # type: ignore[return-value]


def open_dispatcher(config: str | None) -> Any:
    from dispatcher.api import Dispatcher
    from dispatcher.config import Settings

    # The URL is known before the client is built: a cluster client connects while it is
    # built, and its error line must still name the (redacted) URL.
    settings = Settings.load(config, require_tokens=False)
    ctx = click.get_current_context()
    ctx.obj = {"redis_url": settings.redis_url}
    return Dispatcher(settings)


def print_json(data: Any) -> None:
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
    List campaigns, with ETAs:       dispatcher campaigns
    Stop a wrong campaign now:       dispatcher campaigns cancel CAMPAIGN_ID
    See plans, limits, circuits:     dispatcher plans
    Slow a plan down at runtime:     dispatcher plans set PLAN_ID --rate 10
    Inspect and replay failures:     dispatcher dlq list

    Configuration: a TOML file (DISPATCH_CONFIG) plus the environment; see README.md.
    """
