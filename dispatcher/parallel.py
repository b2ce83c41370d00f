"""The recipient check in two processes: an opt-in for callers that own their process.

Checking a million recipients is CPU-bound Python, so a second core halves it, but only by
forking, and a fork is the caller's business: it copies the whole process, can deadlock a
child of a threaded process, and leaves a zombie if interrupted at the wrong moment.  The
pure :mod:`dispatcher.campaign` never does it; the CLI's ``enqueue`` (a short-lived process of
its own) and the benchmarks pass :func:`check_unique` to ``prepare(..., checker=...)``, and
``Dispatcher.enqueue(..., parallel=True)`` does so for callers who ask.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
from array import array
from collections.abc import Sequence
from typing import Final

from dispatcher.campaign import recipients
from dispatcher.campaign.recipients import Checked, merge
from dispatcher.errors import InvalidNumber

__all__ = ["PARALLEL_MIN", "check_unique"]

PARALLEL_MIN: Final = 200_000
"""From this many recipients :func:`check_unique` forks when it safely can: below it the
fork and the pickled result cost more than they save."""


def check_unique(raws: Sequence[str], *, parallel: bool | None = None) -> Checked:
    """:func:`recipients.check_unique`, the second half in a forked child when that pays.

    On a multi-core Linux machine, for a large list, in a process with a single thread
    (forking a threaded process can deadlock the child on a lock held by another thread),
    the second half is checked in a forked child while this process checks the first; the
    child sends its compact result back through a pipe.  ``parallel`` forces the choice;
    any trouble with the child falls back to checking its half here.
    """
    if parallel is None:
        parallel = len(raws) >= PARALLEL_MIN and _can_fork()
    if not parallel or len(raws) < 2:
        return recipients.check_unique(raws)
    # The child also pickles its result and the parent merges it: a slightly smaller share
    # for the child has both finish at about the same time.
    half = len(raws) * 53 // 100
    child = _fork_check(raws, half)
    try:
        mine = recipients.check_unique(raws[:half] if isinstance(raws, list) else list(raws[:half]))
    except BaseException:  # interrupted: leave no child or descriptor behind
        if child is not None:
            os.kill(child[0], signal.SIGKILL)
            _collect(child)
        raise
    theirs = _collect(child) if child is not None else None
    if theirs is None:
        theirs = recipients.check_unique(raws[half:], half)
    return merge(mine, theirs)


def _can_fork() -> bool:
    if sys.platform != "linux" or threading.active_count() != 1:
        return False
    try:
        return len(os.sched_getaffinity(0)) > 1
    except (AttributeError, OSError):  # pragma: no cover - not Linux after all
        return False


def _fork_check(raws: Sequence[str], start: int) -> tuple[int, int] | None:
    """Fork a child that checks ``raws[start:]`` and pickles the result into a pipe."""
    try:
        read_end, write_end = os.pipe()
    except OSError:  # pragma: no cover - out of descriptors
        return None
    try:
        pid = os.fork()
    except OSError:  # pragma: no cover - out of processes or memory
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # pragma: no cover - the child; coverage does not follow forks
        status = 1
        try:
            os.close(read_end)
            data = pickle.dumps(
                _pack(recipients.check_unique(raws[start:], start)), pickle.HIGHEST_PROTOCOL
            )
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(data)
            status = 0
        finally:
            os._exit(status)  # no atexit handlers, no flushing the parent's buffers twice
    os.close(write_end)
    return pid, read_end


def _collect(child: tuple[int, int]) -> Checked | None:
    pid, read_end = child
    status = 0
    try:
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
    finally:
        # A SIGCHLD handler may have reaped it already: then the data, if complete,
        # unpickles, and if not, the half is checked here.
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(pid, 0)
    if status != 0 or not data:  # pragma: no cover - the child failed: check here instead
        return None
    try:
        return _unpack(pickle.loads(data))
    except Exception:  # pragma: no cover - a truncated write: check here instead
        return None


_Packed = tuple[str, bytes, dict[int, InvalidNumber], list[tuple[int, str]]]


def _pack(checked: Checked) -> _Packed:
    """The first occurrences as one string and one array: a dict of half a million entries
    pickles and unpickles several times slower than that."""
    numbers = "\n".join(checked.first)
    indices = array("q", checked.first.values()).tobytes()
    return numbers, indices, checked.invalid, checked.duplicates


def _unpack(packed: _Packed) -> Checked:
    numbers, raw_indices, invalid, duplicates = packed
    indices = array("q")
    indices.frombytes(raw_indices)
    first = dict(zip(numbers.split("\n"), indices, strict=True)) if numbers else {}
    return Checked(first, invalid, duplicates)
