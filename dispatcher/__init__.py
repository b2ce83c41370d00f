"""Rate-limited bulk SMS dispatcher for the Sinch SMS REST API.

The public API is what this module exports; everything else may change.
"""

from dispatcher.api import Dispatcher
from dispatcher.config import ConfigError, PlanConfig, Settings
from dispatcher.models import (
    Campaign,
    CampaignStatus,
    DeadLetter,
    EnqueueResult,
    InvalidRecipient,
    PlanStatus,
)
from dispatcher.store import NotFound
from dispatcher.validation import CampaignError

__all__ = [
    "Campaign",
    "CampaignError",
    "CampaignStatus",
    "ConfigError",
    "DeadLetter",
    "Dispatcher",
    "EnqueueResult",
    "InvalidRecipient",
    "NotFound",
    "PlanConfig",
    "PlanStatus",
    "Settings",
]
