"""Rate-limited bulk SMS dispatcher for the Sinch SMS REST API.

The public API is what this module exports; everything else may change.

``Dispatcher`` is loaded on first use (PEP 562): it brings in redis-py, and code that only
needs the pure parts (``dispatcher.campaign``, the models, the errors) should not pay for
that or find a Redis client library in its process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dispatcher.config import PlanConfig, Settings
from dispatcher.errors import (
    CampaignError,
    ConfigError,
    ControlError,
    DispatcherError,
    NotFound,
    RedisUnavailable,
    StorageError,
)
from dispatcher.models import (
    AuditEntry,
    Campaign,
    CampaignStatus,
    DeadLetter,
    EnqueueResult,
    InvalidRecipient,
    PlanStatus,
)

if TYPE_CHECKING:
    from dispatcher.api import Dispatcher

__all__ = [
    "AuditEntry",
    "Campaign",
    "CampaignError",
    "CampaignStatus",
    "ConfigError",
    "ControlError",
    "DeadLetter",
    "Dispatcher",
    "DispatcherError",
    "EnqueueResult",
    "InvalidRecipient",
    "NotFound",
    "PlanConfig",
    "PlanStatus",
    "RedisUnavailable",
    "Settings",
    "StorageError",
]


def __getattr__(name: str) -> Any:
    if name == "Dispatcher":
        from dispatcher.api import Dispatcher

        return Dispatcher
    raise AttributeError(f"module 'dispatcher' has no attribute {name!r}")
