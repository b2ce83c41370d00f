"""What the dispatcher does with each answer of the SMS API: one table, consulted everywhere.

The sender never special-cases a status or a code; it asks :func:`decide` and carries out the
action.  docs/policy.md shows the same table (a test keeps the two equal).

The backoff arithmetic is tenacity's (exponential with full jitter, a cap, a stop after N
attempts or T seconds), evaluated against the attempt counts that live with the batch in Redis:
the retry state must survive the worker that saw the failure, which tenacity's in-process
retry loop cannot do by itself.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from enum import StrEnum

import tenacity

from dispatcher.config import WorkerConfig
from dispatcher.sinch.client import ProviderResponse


class Action(StrEnum):
    ACCEPT = "accept"  # batch accepted: record the provider's batch id
    RATE_WAIT = "rate_wait"  # the plan backs off, honouring Retry-After; not a failure
    RETRY = "retry"  # hold the lane, back off, resend the head (after a lookup if ambiguous)
    ISOLATE = "isolate"  # a recipient may be the cause: split to isolate the bad ones
    DEAD = "dead"  # permanent for this batch: dead-letter it, the lane moves on
    CIRCUIT = "circuit"  # the plan's fault: stop the plan, keep its queue, probe later


@dataclass(frozen=True)
class Rule:
    status: str  # "201", "4xx"-style class, "none" (no answer) or "*"
    code: str  # provider code, or "*"
    action: Action
    reason: str  # dead-letter reason when the action ends in the DLQ
    why: str


# First match wins; order from specific to general.
RULES: tuple[Rule, ...] = (
    Rule("2xx", "*", Action.ACCEPT, "", "created (201) or OK: the provider has the batch"),
    Rule("429", "*", Action.RATE_WAIT, "rate_wait_expired",
         "too many requests: the plan waits Retry-After (or backoff); rate halves, then regrows"),
    Rule("400", "syntax_invalid_parameter_format", Action.ISOLATE, "permanent",
         "a field value, e.g. one MSISDN, is malformed: split to find the recipient"),
    Rule("403", "illegal_number_type", Action.ISOLATE, "permanent",
         "a number type the region refuses: split to find the recipient"),
    Rule("400", "*", Action.DEAD, "permanent",
         "invalid JSON or a broken constraint: resending the same batch cannot help"),
    Rule("401", "*", Action.CIRCUIT, "", "the plan's token is wrong: every batch would fail"),
    Rule("403", "blocked_account", Action.CIRCUIT, "", "the account is blocked"),
    Rule("403", "missing_callback_url", Action.CIRCUIT, "", "callbacks requested, no URL"),
    Rule("403", "unknown_group", Action.CIRCUIT, "", "the plan refers to a deleted group"),
    Rule("403", "unknown_campaign", Action.DEAD, "permanent",
         "campaign id does not match the sender: this batch's fault"),
    Rule("403", "PERMISSION_DENIED", Action.CIRCUIT, "",
         "improper credentials (Google-style error body): every batch would fail"),
    Rule("403", "*", Action.DEAD, "permanent", "forbidden for this batch"),
    Rule("404", "*", Action.CIRCUIT, "", "the plan's URL does not exist (wrong id or region)"),
    Rule("415", "*", Action.DEAD, "permanent", "content type refused"),
    Rule("5xx", "*", Action.RETRY, "retries_exhausted",
         "provider error: hold the lane, back off with jitter, resend the head"),
    Rule("none", "*", Action.RETRY, "retries_exhausted",
         "no answer (timeout, dropped): look up by client_reference, then resend"),
    Rule("*", "*", Action.DEAD, "permanent", "405 and anything unknown: kept with status and body"),
)  # fmt: skip


def _status_matches(pattern: str, status: int | None) -> bool:
    if pattern == "*":
        return True
    if status is None:
        return pattern == "none"
    if pattern.endswith("xx"):
        return str(status)[0] == pattern[0] and len(str(status)) == 3
    return pattern == str(status)


def decide(resp: ProviderResponse) -> Rule:
    for rule in RULES:
        if _status_matches(rule.status, resp.status) and rule.code in ("*", resp.code):
            return rule
    raise AssertionError("the last rule matches everything")


@dataclass(frozen=True)
class Backoff:
    """Limits and waits.  Failures and rate waits are counted apart (PEERS.md 4); the values
    and what each means live in config.WorkerConfig."""

    max_attempts: int = WorkerConfig.max_attempts
    max_failure_age_s: float = WorkerConfig.max_failure_age_s
    retry_base_s: float = WorkerConfig.retry_base_s
    retry_cap_s: float = WorkerConfig.retry_cap_s
    rate_wait_base_s: float = WorkerConfig.rate_wait_base_s
    rate_wait_cap_s: float = WorkerConfig.rate_wait_cap_s
    max_rate_wait_age_s: float = WorkerConfig.max_rate_wait_age_s
    circuit_base_s: float = WorkerConfig.circuit_base_s
    circuit_cap_s: float = WorkerConfig.circuit_cap_s

    @classmethod
    def from_config(cls, w: WorkerConfig) -> Backoff:
        return cls(
            int(w.max_attempts), w.max_failure_age_s, w.retry_base_s, w.retry_cap_s,
            w.rate_wait_base_s, w.rate_wait_cap_s, w.max_rate_wait_age_s,
            w.circuit_base_s, w.circuit_cap_s,
        )  # fmt: skip

    def _state(self, attempt: int, age_s: float) -> tenacity.RetryCallState:
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(1, attempt)
        state.start_time = 0.0
        state.outcome_timestamp = max(0.0, age_s)
        return state

    def retry_delay_s(self, failures: int) -> float:
        wait = tenacity.wait_random_exponential(multiplier=self.retry_base_s, max=self.retry_cap_s)
        return float(wait(self._state(failures, 0.0)))

    def retries_exhausted(self, failures: int, age_s: float) -> bool:
        stop = tenacity.stop_after_attempt(self.max_attempts) | tenacity.stop_after_delay(
            self.max_failure_age_s
        )
        return bool(stop(self._state(failures, age_s)))

    def rate_wait_s(self, resp: ProviderResponse, waits: int) -> float:
        if resp.retry_after_s is not None:
            # A little jitter so that the plan's next request does not land exactly on the edge.
            return resp.retry_after_s + random.uniform(0, 0.05)
        wait = tenacity.wait_random_exponential(
            multiplier=self.rate_wait_base_s, max=self.rate_wait_cap_s
        )
        return float(wait(self._state(waits, 0.0)))

    def circuit_probe_s(self, probes: int) -> float:
        return float(min(self.circuit_cap_s, self.circuit_base_s * 2.0 ** max(0, probes)))


def age_s(first_at_ms: int | None) -> float:
    """Age of a batch since its first attempt, by this host's clock (as the backoff's caps
    are meant)."""
    return (time.time() * 1000 - first_at_ms) / 1000 if first_at_ms else 0.0


def sibling_of(then_suspect: str) -> tuple[str, str] | None:
    """(sibling batch id, refusal JSON) from an isolation probe's ``then_suspect`` mark."""
    if not then_suspect:
        return None
    mark = json.loads(then_suspect)
    return str(mark["id"]), json.dumps(mark["err"])


def status_of(resp: ProviderResponse | None) -> str:
    return (
        str(resp.status)
        if resp is not None and resp.status is not None
        else ((resp.error or "") if resp is not None else "")
    )


def log_outcome(
    log: logging.Logger,
    plan: str,
    campaign: str,
    batch: str,
    n: int,
    resp: ProviderResponse,
    action: Action,
    attempt: int,
) -> None:
    """One line per answer: INFO for an acceptance, WARNING otherwise (no token in it)."""
    level = logging.INFO if action is Action.ACCEPT else logging.WARNING
    if log.isEnabledFor(level):
        log.log(
            level,
            "batch outcome plan=%s campaign=%s batch=%s recipients=%d status=%s code=%s "
            "action=%s attempt=%d ms=%.0f provider_batch=%s",
            plan, campaign, batch, n, resp.status if resp.status is not None else resp.error,
            resp.code or "-", action.value, attempt, resp.elapsed_s * 1000, resp.batch_id or "-",
        )  # fmt: skip
