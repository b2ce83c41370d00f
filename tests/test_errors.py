"""One error tree: a caller catches ``DispatcherError`` and never needs to import ``redis``."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import dispatcher
from dispatcher import errors
from dispatcher.devtools.localredis import free_port


def test_every_error_class_is_under_dispatcher_error() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    ]
    assert len(classes) >= 8
    assert all(issubclass(c, dispatcher.DispatcherError) for c in classes)
    # The tree drawn in the docstring names every class, so it cannot drift from the code.
    doc = errors.__doc__ or ""
    assert [c.__name__ for c in classes if c.__name__ not in doc] == []


def test_no_other_module_defines_a_public_exception() -> None:
    root = Path(dispatcher.__file__).parent
    stray = [
        f"{p.relative_to(root)}: {line.strip()}"
        for p in root.rglob("*.py")
        if p.name != "errors.py"
        for line in p.read_text().splitlines()
        if line.startswith("class ")
        and ("Error" in line or "Exception)" in line)
        and not line.startswith("class _")
    ]
    assert stray == []


def test_an_unreachable_redis_is_a_dispatcher_error_without_the_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    cfg = tmp_path / "dispatch.toml"
    cfg.write_text(
        f'redis_url = "redis://ops:hunter2-s3cr3t@127.0.0.1:{port}/0"\n\n'
        '[plans.p1]\nbase_url = "http://127.0.0.1:9"\ntoken_env = "P1_TOKEN"\nrate = 10\n'
    )
    d = dispatcher.Dispatcher.from_env(str(cfg))
    campaign = dispatcher.Campaign(plan="p1", sender="Acme", body="Hi", recipients=["+46701234567"])
    with pytest.raises(dispatcher.RedisUnavailable) as caught:
        d.enqueue(campaign)
    assert isinstance(caught.value, dispatcher.DispatcherError)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(dispatcher.StorageError):
        d.status("c-unknown")
