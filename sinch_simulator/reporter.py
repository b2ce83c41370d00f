"""Delivery reports and inbound messages, posted to callback URLs as Sinch posts them.

A batch that asks for reports (``delivery_report`` not ``none``, a ``callback_url``) gets them
after ``delay_s``: one ``delivery_report_sms`` per batch (``summary``, ``full``) or one
``recipient_delivery_report_sms`` per recipient (``per_recipient``, ``per_recipient_final``).
Each recipient's status is drawn from ``mix``; ``repeat_ratio`` of the callbacks are sent twice
(a retry Sinch made), at a random later time, so some arrive out of order.  A 5xx, a 429 or no
answer is retried on Sinch's doubling schedule (API.md 4.7), from ``retry_base_s`` (5 s at
Sinch; shortened for tests); a 429 also slows the posting down; any other 4xx is not
retried.  ``tally`` is the simulator's own count of what it reported, the oracle the
dispatcher's delivery counts are checked against.
"""

from __future__ import annotations

import heapq
import http.client
import json
import random
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ReportSettings:
    mix: dict[str, float] = field(default_factory=lambda: {"Delivered": 1.0})
    delay_s: float = 0.2
    repeat_ratio: float = 0.0
    retry_base_s: float = 5.0
    max_tries: int = 15  # Sinch: the last try ~22 h 45 min after the first failure
    # After a 429 the reporter waits this long between posts, doubled by each further 429 and
    # halved by each 2xx (Sinch "lowers its callback throughput"; by how much is not said).
    slowdown_s: float = 0.05
    # A share of the callbacks first posted after ``late_s`` instead of ``delay_s``: a report
    # that comes hours late (Sinch retries for ~23 h), after its campaign has moved on or expired.
    late_ratio: float = 0.0
    late_s: float = 30.0


class Reporter:
    def __init__(self, rng: random.Random, settings: ReportSettings | None = None) -> None:
        self.settings = settings or ReportSettings()
        self.rng = rng
        self.tally: dict[str, Counter[str]] = {}  # plan -> final status -> recipients
        self.delivered_posts = 0
        self.failed_posts = 0  # given up after max_tries
        self.refused_posts = 0  # answered 4xx other than 429: Sinch does not retry those
        self.throttled_posts = 0  # answered 429: retried, and the posting slowed down
        self._gap_s = 0.0  # the current pause between posts, after 429s
        self._resume_at = 0.0  # no post before this (monotonic)
        self._conns: dict[tuple[str, str, int], http.client.HTTPConnection] = {}
        self._heap: list[tuple[float, int, str, bytes, int]] = []
        self._seq = 0
        self._cv = threading.Condition()
        self._stop = False
        self._posting = 0
        self._thread = threading.Thread(target=self._run, name="sim-reporter", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=5)
        if not self._thread.is_alive():  # else the poster still owns them
            for key in list(self._conns):
                self._drop(key)

    def pending(self) -> int:
        """Callbacks not yet answered 2xx (queued, being posted, or waiting for a retry)."""
        with self._cv:
            return len(self._heap) + self._posting

    # ------------------------------------------------------------ what to send
    def accepted(self, plan: str, doc: dict[str, Any], batch_id: str, to: list[str]) -> None:
        mode, url = doc.get("delivery_report", "none"), doc.get("callback_url")
        if mode == "none" or not url:
            return
        s = self.settings
        names, weights = zip(*s.mix.items(), strict=True)
        outcome = {n: self.rng.choices(names, weights)[0] for n in to}
        self.tally.setdefault(plan, Counter()).update(st.lower() for st in outcome.values())
        ref = doc.get("client_reference")
        bodies: list[dict[str, Any]] = []
        if mode in ("per_recipient", "per_recipient_final"):
            for n, status in outcome.items():
                bodies.append({
                    "type": "recipient_delivery_report_sms", "batch_id": batch_id,
                    "recipient": n, "code": 0 if status == "Delivered" else 60,
                    "status": status, "at": _now(), "client_reference": ref,
                })  # fmt: skip
        else:
            by: dict[str, list[str]] = {}
            for n, status in outcome.items():
                by.setdefault(status, []).append(n)
            statuses = [
                {"code": 0 if st == "Delivered" else 60, "status": st, "count": len(ns),
                 **({"recipients": ns} if mode == "full" else {})}
                for st, ns in by.items()
            ]  # fmt: skip
            bodies.append({
                "type": "delivery_report_sms", "batch_id": batch_id,
                "total_message_count": str(len(to)), "statuses": statuses, "client_reference": ref,
            })  # fmt: skip
        for b in bodies:
            raw = json.dumps(b).encode()
            late = self.rng.random() < s.late_ratio
            delay = s.late_s if late else s.delay_s
            self._push(time.monotonic() + delay * self.rng.uniform(0.5, 1.5), url, raw)
            if self.rng.random() < s.repeat_ratio:
                self._push(time.monotonic() + delay * self.rng.uniform(1, 4), url, raw)

    def inbound(self, url: str, sender: str, body: str, to: str = "") -> None:
        """An inbound ``mo_text`` (a recipient answering, e.g. STOP) posted to ``url``."""
        doc = {"type": "mo_text", "from": sender, "to": to, "body": body, "received_at": _now()}
        self._push(time.monotonic(), url, json.dumps(doc).encode())

    def _push(self, at: float, url: str, raw: bytes, tries: int = 0) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, url, raw, tries))
            self._cv.notify()

    # ------------------------------------------------------------ sending
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now and self._resume_at <= now:
                        break
                    wait = max(self._heap[0][0], self._resume_at) - now if self._heap else None
                    self._cv.wait(timeout=wait)
                if self._stop:
                    return
                _, _, url, raw, tries = heapq.heappop(self._heap)
                self._posting += 1
            status = self._post(url, raw)
            if 200 <= status < 300:
                self.delivered_posts += 1
                self._gap_s = self._gap_s / 2 if self._gap_s > 0.001 else 0.0
            elif 400 <= status < 500 and status != 429:
                self.refused_posts += 1
            elif tries + 1 < self.settings.max_tries:
                if status == 429:
                    self.throttled_posts += 1
                    self._gap_s = max(self.settings.slowdown_s, 2 * self._gap_s)
                # 5 s, 10, 20, 40 ... after the failure (API.md 4.7), scaled by retry_base_s.
                delay = self.settings.retry_base_s * 2**tries
                self._push(time.monotonic() + delay, url, raw, tries + 1)
            else:
                self.failed_posts += 1
            with self._cv:
                self._posting -= 1
                self._resume_at = time.monotonic() + self._gap_s

    def _post(self, url: str, raw: bytes) -> int:
        """The answer's status, or 0 for no answer.  Connections are kept alive per receiver,
        as a provider posting thousands of callbacks keeps them; one the receiver closed while
        idle is opened again once."""
        parts = urllib.parse.urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (scheme, host, port)
        for attempt in (0, 1):
            conn = self._conns.get(key)
            fresh = conn is None
            if conn is None:
                cls = (
                    http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
                )
                conn = self._conns[key] = cls(host, port, timeout=5)
            try:
                conn.request("POST", path, raw, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.will_close:
                    self._drop(key)
                return resp.status
            except (http.client.HTTPException, OSError):
                self._drop(key)
                if fresh or attempt:
                    return 0
        return 0

    def _drop(self, key: tuple[str, str, int]) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn.close()


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
