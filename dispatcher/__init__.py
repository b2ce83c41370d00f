"""Rate-limited bulk SMS dispatcher for the Sinch SMS REST API.

The public API is what this module exports; everything else may change.
"""

from dispatcher.api import Dispatcher
from dispatcher.config import PlanConfig, Settings
from dispatcher.errors import (
    CampaignError,
    ConfigError,
    DispatcherError,
    NotFound,
    RedisUnavailable,
    StorageError,
)
from dispatcher.models import (
    Campaign,
    CampaignStatus,
    DeadLetter,
    EnqueueResult,
    InvalidRecipient,
    PlanStatus,
)

__all__ = [
    "Campaign",
    "CampaignError",
    "CampaignStatus",
    "ConfigError",
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
