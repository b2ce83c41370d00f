"""The :class:`Simulator`: a Sinch-like batches API on a local port, and its lifecycle.

It owns the provider's state (``state.py``) and serves it over HTTP (``server.py``), from a
daemon thread (:meth:`Simulator.start`, for tests) or in the foreground
(:meth:`Simulator.serve_forever`, for the command line).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType
from typing import Any

from sinch_simulator.faults import Faults
from sinch_simulator.model import Arrival, PlanSpec, rate_text
from sinch_simulator.reporter import ReportSettings
from sinch_simulator.server import Server
from sinch_simulator.state import State


class Simulator:
    """A Sinch-like batches API on a local port, with an arrival log and fault injection."""

    def __init__(
        self,
        plans: Iterable[PlanSpec],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        rate_tolerance_s: float = 0.25,
        keep_log: bool = True,
        seed: int | None = None,
    ) -> None:
        self._state = State(
            plans,
            faults=faults,
            rate_tolerance_s=rate_tolerance_s,
            keep_log=keep_log,
            seed=seed,
        )
        self._host = host
        self._port = port
        self._httpd: Server | None = None
        self._thread: threading.Thread | None = None
        self._foreground = False

    @property
    def reports(self) -> ReportSettings:
        """How the simulator reports deliveries to batches' callback URLs (mutable)."""
        return self._state.reporter.settings

    @reports.setter
    def reports(self, value: ReportSettings) -> None:
        self._state.reporter.settings = value

    def report_tally(self, plan: str) -> dict[str, int]:
        """Final statuses the simulator reported for ``plan``'s recipients (each once)."""
        return dict(self._state.reporter.tally.get(plan, {}))

    def reports_pending(self) -> int:
        """Callbacks still to post (or to retry)."""
        return self._state.reporter.pending()

    def send_inbound(self, url: str, sender: str, body: str) -> None:
        """Post an inbound mo_text (e.g. a STOP) to ``url``, as Sinch would."""
        self._state.reporter.inbound(url, sender, body)

    @property
    def faults(self) -> Faults:
        """The live fault switches: change fields (or call ``update``) at any time."""
        return self._state.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._state.faults = value

    @property
    def rate_tolerance_s(self) -> float:
        """Extra bucket credit in seconds of rate, for plans added or reset from now on."""
        return self._state.rate_tolerance_s

    @rate_tolerance_s.setter
    def rate_tolerance_s(self, value: float) -> None:
        self._state.rate_tolerance_s = value

    # ---- lifecycle ---------------------------------------------------------------------

    def _bind(self) -> Server:
        if self._httpd is None:
            self._httpd = Server((self._host, self._port), self._state)
            # Remember the port so that stop() and start() again come back on the same URL,
            # which is how a test simulates a provider outage.
            self._port = self._httpd.server_address[1]
        return self._httpd

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the simulator is not started")
        host = self._host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

    def start(self) -> Simulator:
        """Serve from a daemon thread; returns at once, bound and ready for requests."""
        if self._thread is not None:
            return self
        if self._foreground:
            raise RuntimeError("serve_forever() is already serving this simulator")
        httpd = self._bind()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sinch-simulator:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open keep-alive connection.

        Cutting them matters: a pooled client would otherwise keep talking to a "stopped"
        provider through its old connections.
        """
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        if self._foreground:
            # serve_forever() runs on another thread and cleans up when its loop returns.
            httpd.shutdown()
            return
        if thread is not None:
            httpd.shutdown()
            thread.join()
        httpd.close_connections()
        httpd.server_close()
        self._httpd = None
        self._thread = None

    def serve_forever(self, on_ready: Callable[[Simulator], None] | None = None) -> None:
        """Serve in the foreground until Ctrl-C (or SIGTERM when on the main thread).

        ``on_ready`` runs once the port is bound, so a CLI can print the real port.
        """
        httpd = self._bind()
        self._foreground = True
        if on_ready is not None:
            on_ready(self)
        previous: Any = None
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            httpd.serve_forever(poll_interval=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            if on_main:
                signal.signal(signal.SIGTERM, previous)
            httpd.close_connections()
            httpd.server_close()
            self._httpd = None
            self._foreground = False

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def describe(self) -> str:
        """One line for humans: where it listens, which plans; never a token."""
        plans = ", ".join(f"{s.plan_id} ({rate_text(s)}, token ****)" for s in self.plans())
        where = self.url if self._httpd is not None else f"{self._host}:{self._port}"
        line = f"Sinch SMS simulator listening on {where} - plans: {plans or 'none'}"
        defaults = Faults().to_json()
        active = {k: v for k, v in self.faults.to_json().items() if v != defaults[k]}
        if active:
            line += " - faults: " + " ".join(f"{k}={v}" for k, v in active.items())
        return line

    # ---- plans -------------------------------------------------------------------------

    def add_plan(self, spec: PlanSpec) -> None:
        """Add or replace a plan; a replaced plan keeps its batches and stats, gets a new bucket."""
        self._state.add_plan(spec)

    def set_token(self, plan_id: str, token: str) -> None:
        """Rotate a token without touching the plan's limiter (a 401 test in mid-run)."""
        self._state.set_token(plan_id, token)

    def plans(self) -> list[PlanSpec]:
        return self._state.specs()

    # ---- observations ------------------------------------------------------------------

    def arrivals(self, plan: str | None = None) -> list[Arrival]:
        """Every POST /batches to a known plan, in decision order (RuntimeError without a log)."""
        return self._state.arrivals(plan)

    def accepted_recipients(self, plan: str | None = None) -> list[str]:
        """The normalized ``to`` of every created batch, in arrival order."""
        return self._state.accepted_recipients(plan)

    def stats(self) -> dict[str, dict[str, int]]:
        return self._state.stats()

    def reset(self) -> None:
        """Forget everything but the plans: log, batches, stats, faults, limiter state."""
        self._state.reset()


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
