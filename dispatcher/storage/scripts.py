"""The Lua scripts in ``lua/``, registered once per Redis client and called by SHA, each
through one typed method (their text, includes expanded, comes from ``luasource.py``)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast, overload

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from dispatcher.storage import keys
from dispatcher.storage.base import as_text
from dispatcher.storage.connect import is_cluster
from dispatcher.storage.luasource import source
from dispatcher.storage.pending import Pending
from dispatcher.storage.results import (
    Busy,
    Circuit,
    Commit,
    Committed,
    Control,
    ControlAnswer,
    Cooldown,
    Dropped,
    Go,
    Grant,
    Held,
    Hold,
    Idle,
    Later,
    Lease,
    Leased,
    Lost,
    Moved,
    Oversize,
    Part,
    Paused,
    Resuppress,
    Rewritten,
    Split,
    SplitResult,
    Take,
    Unknown,
    Wait,
)

_NAMES = (
    "bucket", "take", "commit", "hold", "split", "lease", "release", "schedule", "claim",
    "replay", "purge", "admit", "idle", "pause", "resume", "cancel", "report",
    "resuppress", "give_back",
)  # fmt: skip
T = TypeVar("T")


def _opt_int(v: Any) -> int | None:
    return int(v) if v not in (None, b"", "") else None


def _fenced(r: list[Any]) -> Moved | Lost | None:
    """The refusal every fenced script may answer with (lib/fence.lua), else None."""
    kind = as_text(r[0])
    if kind == "lost":
        return Lost()
    if kind == "moved":
        return Moved(as_text(r[1]) or None if len(r) > 1 else None)
    return None


def _take(r: list[Any]) -> Take:
    refused = _fenced(r)
    if refused is not None:
        return refused
    kind = as_text(r[0])
    if kind == "go":
        return Go(
            payload=bytes(r[1]),
            n=int(r[2]),
            campaign=as_text(r[3]),
            fails=int(r[4]),
            waits=int(r[5]),
            suspect=as_text(r[6]),
            first_at_ms=_opt_int(r[7]),
            then_suspect=as_text(r[8]),
            next_id=as_text(r[9]) or None,
            recheck=len(r) > 10 and as_text(r[10]) == "1",
            tokens_left=int(r[11]) / 1000 if len(r) > 11 else None,
        )
    if kind == "wait":
        return Wait(int(r[1]))
    if kind == "cooldown":
        return Cooldown(int(r[1]))
    if kind == "circuit":
        return Circuit(int(r[1]))
    if kind == "unknown":
        return Unknown(_opt_int(r[1]), as_text(r[2]), int(r[3]), as_text(r[4]))
    if kind == "oversize":
        return Oversize(int(r[1]), bytes(r[2]), float(r[3]), _opt_int(r[4]))
    if kind == "paused":
        return Paused()
    if kind == "later":
        return Later()
    raise RuntimeError(f"take.lua answered {kind!r}")


def _take_call(
    plan: str, token: str, batch_id: str, rate: float, burst: float, ttl_ms: int,
    retention_s: int, now_us: int | None, window: list[str] | None,
) -> tuple[list[str], list[Any]]:  # fmt: skip
    k = [
        keys.lease(plan), keys.lane(plan), keys.state(plan), keys.bucket(plan),
        keys.batch(plan, batch_id), keys.prefix(plan),
    ]  # fmt: skip
    a: list[Any] = [token, batch_id, rate, burst, ttl_ms, _clock(now_us), retention_s]
    if window:
        a += [len(window), *window]
    return k, a


def _commit_call(
    plan: str, token: str, batch_id: str, campaign: str, outcome: str, rate: float,
    retention_s: int, status: str, code: str, text: str, provider_batch_id: str, reason: str,
    count_response: bool, sibling: tuple[str, str] | None, take_next: str | None, burst: float,
    ttl_ms: int, anywhere: bool, window: list[str] | None,
) -> tuple[list[str], list[Any]]:  # fmt: skip
    entry_id = keys.new_id("d") if outcome == "dead" else ""
    k = [
        keys.lease(plan), keys.lane(plan), keys.batch(plan, batch_id),
        keys.campaign(plan, campaign), keys.stats(plan), keys.state(plan), keys.dlq(plan),
        keys.dlq_entry(plan, entry_id or "-"), keys.batch(plan, sibling[0] if sibling else "-"),
        keys.bucket(plan), keys.batch(plan, take_next or "-"), keys.prefix(plan),
    ]  # fmt: skip
    a: list[Any] = [
        token, batch_id, outcome, status, code, text[:500], provider_batch_id, reason,
        retention_s, entry_id, plan, rate, "1" if count_response else "0",
        sibling[1] if sibling else "", take_next or "", burst, ttl_ms,
    ]  # fmt: skip
    if anywhere or window:
        a += ["1" if anywhere else "0", len(window or ()), *(window or ())]
    return k, a


def _commit(r: list[Any]) -> Commit:
    refused = _fenced(r)
    if refused is not None:
        return refused
    head = as_text(r[1]) or None
    taken = _take(r[2]) if head is not None and len(r) > 2 else None
    return Committed(head, taken)


ScheduleMode = Literal["set", "lt", "head"]
ClaimBy = Literal["ticker", "slot"]
GiveBack = Literal["given", "kept", "lost"]
HoldKind = Literal["retry", "ratewait", "circuit", "notfound", "suspect"]


class Scripts:
    """One typed method per script in ``lua/``, for one client.

    Each method builds its script's KEYS and ARGV from ``keys`` and decodes the reply into a
    value of ``results``, so the argument order a script documents in its header is spelled
    out here and nowhere else.  Failures are redis-py's exceptions: the send loop and the
    ticker ride out an outage by catching them, as they did before the wrappers existed.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._by_name: dict[str, Script] = {n: client.register_script(source(n)) for n in _NAMES}
        # redis-py's cluster pipeline refuses EVALSHA, and its keys span slots anyway: there a
        # script given a pipeline runs at once, on its own node (callers never read its answer
        # from the pipeline; see lanes.py).
        self._pipelines_scripts = not is_cluster(client)

    @property
    def pipelines(self) -> bool:
        """False on a cluster: a script given a pipeline runs at once and its pipeline answer
        is missing, so a caller that reads an answer must call it on its own there."""
        return self._pipelines_scripts

    def _run(self, name: str, k: list[str], a: list[Any], pipe: Pipeline | None = None) -> Any:
        if pipe is not None and not self._pipelines_scripts:
            pipe = None
        script = self._by_name[name]
        if pipe is not None:
            return script(keys=k, args=a, client=pipe)  # the pipeline loads it if need be
        try:
            # EVALSHA straight away: Script.__call__ would copy the arguments twice and import
            # inside the call, a few us that every send-path round trip would pay.
            return self._client.evalsha(script.sha, len(k), *k, *a)
        except NoScriptError:
            return script(keys=k, args=a)  # a restarted or flushed server: load it again

    def bucket(
        self, plan: str, rate: float, burst: float, cost: float, now_us: int | None = None
    ) -> Grant:
        r = self._run("bucket", [keys.bucket(plan)], [rate, burst, cost, _clock(now_us)])
        if isinstance(r, int):  # a grant: the tokens left, x1000
            return Grant(1, 0, r)
        return Grant(int(r[0]), int(r[1]), int(r[2]))

    def lease(self, plan: str, ttl_ms: int) -> Lease:
        token, pttl = self._run("lease", [keys.lease(plan), keys.fence(plan)], [ttl_ms])
        return Leased(as_text(token)) if token else Busy(int(pttl))

    @overload
    def release(self, plan: str, token: str) -> bool: ...
    @overload
    def release(self, plan: str, token: str, *, pipe: Pipeline) -> None: ...
    def release(self, plan: str, token: str, *, pipe: Pipeline | None = None) -> bool | None:
        """With ``pipe`` only queued (its answer is not wanted), to share a round trip."""
        r = self._run("release", [keys.lease(plan)], [token], pipe)
        return None if pipe is not None else bool(r)

    @overload
    def schedule(self, plan: str, delay_ms: int, mode: ScheduleMode = "set") -> int: ...
    @overload
    def schedule(
        self, plan: str, delay_ms: int, mode: ScheduleMode = "set", *, pipe: Pipeline
    ) -> None: ...
    def schedule(
        self, plan: str, delay_ms: int, mode: ScheduleMode = "set", *, pipe: Pipeline | None = None
    ) -> int | None:
        """With ``pipe`` only queued (its answer is not wanted), to share a round trip."""
        r = self._run("schedule", [keys.DUE], [plan, delay_ms, mode], pipe)
        return None if pipe is not None else int(r)

    def claim(self, max_plans: int, claim_ms: int, by: ClaimBy = "ticker") -> list[str]:
        """``by="slot"``: for a slot to drain itself, so also a plan whose task is queued."""
        got = self._run("claim", [keys.DUE, keys.CLAIMED], [max_plans, claim_ms, by])
        return [as_text(p) for p in got]

    def take(
        self,
        plan: str,
        token: str,
        batch_id: str,
        *,
        rate: float,
        burst: float,
        ttl_ms: int,
        retention_s: int = 7 * 86400,
        now_us: int | None = None,
        window: list[str] | None = None,
    ) -> Take:
        """Take the head; with ``window`` (the sender's batches in flight, in lane order) take
        ``batch_id`` as the next of that window instead, or answer :class:`Later`."""
        k, a = _take_call(plan, token, batch_id, rate, burst, ttl_ms, retention_s, now_us, window)
        return _take(self._run("take", k, a))

    def take_later(
        self, plan: str, token: str, batch_id: str, *, rate: float, burst: float, ttl_ms: int,
        retention_s: int, window: list[str],
    ) -> Pending[Take]:  # fmt: skip
        """:meth:`take` of a window's next, written now and read by ``result()`` (pending.py)."""
        k, a = _take_call(plan, token, batch_id, rate, burst, ttl_ms, retention_s, None, window)
        return self._write("take", k, a, _take)

    def commit(
        self,
        plan: str,
        token: str,
        batch_id: str,
        campaign: str,
        outcome: Literal["accepted", "dead"],
        *,
        rate: float,
        retention_s: int,
        status: str,
        code: str = "",
        text: str = "",
        provider_batch_id: str = "",
        reason: str = "",
        count_response: bool = True,
        sibling: tuple[str, str] | None = None,
        take_next: str | None = None,
        burst: float = 0.0,
        ttl_ms: int = 0,
        anywhere: bool = False,
        window: list[str] | None = None,
    ) -> Commit:
        """Record the head's final outcome.  ``sibling`` is (batch id, refusal JSON) to mark
        suspect when this accepted batch was an isolation probe; with ``take_next`` the batch
        after it is taken in the same round trip (with ``burst`` and ``ttl_ms``) and comes
        back as ``Committed.taken``.  A window (max_in_flight > 1) passes ``anywhere`` (the
        batch need not be the head) and ``window``, its other batches in flight, so that
        ``take_next`` is taken as the next of the window."""
        k, a = _commit_call(
            plan, token, batch_id, campaign, outcome, rate, retention_s, status, code, text,
            provider_batch_id, reason, count_response, sibling, take_next, burst, ttl_ms,
            anywhere, window,
        )  # fmt: skip
        return _commit(self._run("commit", k, a))

    def commit_later(
        self, plan: str, token: str, batch_id: str, campaign: str, *, rate: float,
        retention_s: int, status: str, code: str, text: str, provider_batch_id: str,
        take_next: str | None, burst: float, ttl_ms: int, window: list[str],
    ) -> Pending[Commit]:  # fmt: skip
        """:meth:`commit` of a window's acceptance, written now and read by ``result()``."""
        k, a = _commit_call(
            plan, token, batch_id, campaign, "accepted", rate, retention_s, status, code, text,
            provider_batch_id, "", True, None, take_next, burst, ttl_ms, True, window,
        )  # fmt: skip
        return self._write("commit", k, a, _commit)

    def _write(
        self, name: str, k: list[str], a: list[Any], decode: Callable[[Any], T]
    ) -> Pending[T]:
        return Pending(
            self._client, self._by_name[name], k, a, decode, at_once=not self._pipelines_scripts
        )

    def hold(
        self,
        plan: str,
        token: str,
        batch_id: str,
        kind: HoldKind,
        *,
        rate: float,
        delay_ms: int,
        status: str = "",
        code: str = "",
        text: str = "",
        ambiguous: bool = False,
        anywhere: bool = False,
        suspect: str = "",
    ) -> Hold:
        """Keep the head at the head and record why (see hold.lua for each ``kind``);
        ``ambiguous`` keeps the in-flight mark, so the batch is looked up before a resend.
        ``anywhere``: a window's batch, held in its place; ``suspect``: the refusal JSON for
        kind "suspect"."""
        k = [
            keys.lease(plan), keys.lane(plan), keys.batch(plan, batch_id), keys.stats(plan),
            keys.state(plan),
        ]  # fmt: skip
        a: list[Any] = [
            token, batch_id, kind, status, code, text[:500], delay_ms, "1" if ambiguous else "0",
            rate, "1" if anywhere else "0", suspect,
        ]  # fmt: skip
        r = self._run("hold", k, a)
        return _fenced(r) or Held()

    def give_back(
        self, plan: str, token: str, batch_id: str, n: int, burst: float, *,
        keep_for_ms: int | None = None,
    ) -> GiveBack:  # fmt: skip
        """Return a batch taken but never POSTed (its in-flight mark and its ``n`` tokens).
        With ``keep_for_ms``, only when its campaign or plan was paused or canceled since it
        was taken; else it is ``"kept"`` and the lease renewed for that long."""
        k = [keys.lease(plan), keys.batch(plan, batch_id), keys.bucket(plan), keys.state(plan)]
        mode = "always" if keep_for_ms is None else "stopped"
        r = self._run("give_back", k, [token, n, burst, mode, keep_for_ms or 0])
        if _fenced(r) is not None:
            return "lost"
        return "kept" if as_text(r[0]) == "go" else "given"

    def split(self, plan: str, token: str, batch_id: str, parts: list[Part]) -> SplitResult:
        k = [keys.lease(plan), keys.lane(plan), keys.batch(plan, batch_id)]
        k += [keys.batch(plan, p.batch_id) for p in parts]
        a: list[Any] = [token, batch_id, len(parts)]
        a += [x for p in parts for x in (p.batch_id, p.n, p.payload)]
        a += [p.suspect for p in parts] + [p.then_suspect for p in parts]
        r = self._run("split", k, a)
        return _fenced(r) or Split(as_text(r[1]))

    def replay(self, plan: str, entry_id: str, campaign: str, batch_id: str, payload: bytes) -> int:
        """Put a dead letter back as batch ``batch_id``; the recipients put back (0: gone)."""
        k = [
            keys.dlq_entry(plan, entry_id), keys.dlq(plan), keys.lane(plan),
            keys.batch(plan, batch_id), keys.campaign(plan, campaign), keys.stats(plan),
            keys.prefix(plan),
        ]  # fmt: skip
        return int(self._run("replay", k, [entry_id, batch_id, payload]))

    def purge(self, plan: str, entry_id: str) -> int:
        """Delete a dead letter; the recipients purged (0: it was gone already)."""
        k = [keys.dlq_entry(plan, entry_id), keys.dlq(plan), keys.stats(plan)]
        return int(self._run("purge", k, [entry_id]))

    @overload
    def admit(self, plan: str) -> str | None: ...
    @overload
    def admit(self, plan: str, *, pipe: Pipeline) -> None: ...
    def admit(self, plan: str, *, pipe: Pipeline | None = None) -> str | None:
        """Let due scheduled campaigns into the lane; the head batch (None: nothing to send).
        With ``pipe`` only queued; the pipeline's answer is the head or None."""
        k = [keys.lane(plan), keys.prefix(plan)]
        r = self._run("admit", k, [], pipe)
        return None if pipe is not None or not r else as_text(r)

    @overload
    def idle(self, plan: str) -> Idle: ...
    @overload
    def idle(self, plan: str, *, pipe: Pipeline) -> None: ...
    def idle(self, plan: str, *, pipe: Pipeline | None = None) -> Idle | None:
        """With ``pipe`` only queued; decode its answer with :func:`idle_answer`."""
        r = self._run("idle", [keys.lane(plan), keys.state(plan), keys.prefix(plan)], [], pipe)
        return None if pipe is not None else idle_answer(r)

    def pause(self, plan: str, campaign_id: str, reason: str = "campaign") -> ControlAnswer:
        r = self._run("pause", [keys.prefix(plan), keys.lane(plan)], [campaign_id, reason])
        return _control(r).answer

    def resume(self, plan: str, campaign_id: str) -> ControlAnswer:
        r = self._run("resume", [keys.prefix(plan), keys.lane(plan)], [campaign_id])
        return _control(r).answer

    def cancel(self, plan: str, campaign_id: str, retention_s: int) -> Control:
        k = [keys.prefix(plan), keys.lane(plan)]
        return _control(self._run("cancel", k, [campaign_id, retention_s]))

    def report(
        self,
        plan: str,
        kind: str,
        client_reference: str,
        provider_batch_id: str,
        retention_s: int,
        *,
        recipients: list[tuple[str, str]] | None = None,
        counts: list[tuple[str, int]] | None = None,
    ) -> tuple[str, int] | None:
        """Count a report's final statuses: (campaign, newly counted), or None (orphaned)."""
        mode = "recipients" if recipients else "counts"
        pairs: list[Any] = [x for pair in (recipients or counts or []) for x in pair]
        a: list[Any] = [kind, client_reference, provider_batch_id, retention_s, mode, *pairs]
        r = self._run("report", [keys.prefix(plan)], a)
        if as_text(r[0]) != "ok":
            return None
        return as_text(r[1]), int(r[2])

    def resuppress(
        self,
        plan: str,
        token: str,
        batch_id: str,
        payload: bytes,
        removed: int,
        version: int,
        retention_s: int,
    ) -> Resuppress:
        k = [keys.lease(plan), keys.lane(plan), keys.batch(plan, batch_id), keys.prefix(plan)]
        r = self._run("resuppress", k, [token, batch_id, payload, removed, version, retention_s])
        refused = _fenced(r)
        if refused is not None:
            return refused
        return Dropped(as_text(r[1]) or None) if as_text(r[0]) == "dropped" else Rewritten()


def idle_answer(r: list[Any]) -> Idle:
    return Idle(bool(int(r[0])), bool(int(r[1])), _opt_int(r[2]))


def _control(r: list[Any]) -> Control:
    answer = as_text(r[0])
    if answer not in ("ok", "already", "notpaused", "missing", "done", "canceled"):
        raise RuntimeError(f"control script answered {answer!r}")
    return Control(
        cast(ControlAnswer, answer), int(r[1]) if len(r) > 1 else 0, int(r[2]) if len(r) > 2 else 0
    )


def _clock(now_us: int | None) -> int | str:
    return "" if now_us is None else now_us


_lock = threading.Lock()
_registry: weakref.WeakKeyDictionary[Any, Scripts] = weakref.WeakKeyDictionary()


def for_client(client: redis.Redis) -> Scripts:
    """The client's scripts, registered once however many callers share the client."""
    with _lock:
        scripts = _registry.get(client)
        if scripts is None:
            scripts = _registry[client] = Scripts(client)
        return scripts
