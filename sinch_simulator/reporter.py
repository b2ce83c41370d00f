"""Delivery reports and inbound messages, posted to callback URLs as Sinch posts them.

A batch that asks for reports (``delivery_report`` not ``none``, a ``callback_url``) gets them
after ``delay_s``: one ``delivery_report_sms`` per batch (``summary``, ``full``) or one
``recipient_delivery_report_sms`` per recipient (``per_recipient``, ``per_recipient_final``).
Each recipient's status is drawn from ``mix``; ``repeat_ratio`` of the callbacks are sent twice
(a retry Sinch made), at a random later time, so some arrive out of order.  A non-2xx answer or
no answer is retried on Sinch's doubling schedule (API.md 4.7), from ``retry_base_s`` (5 s at
Sinch; shortened for tests).  ``tally`` is the simulator's own count of what it reported, the
oracle the dispatcher's delivery counts are checked against.
"""

from __future__ import annotations

import heapq
import json
import random
import threading
import time
import urllib.error
import urllib.request
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


class Reporter:
    def __init__(self, rng: random.Random, settings: ReportSettings | None = None) -> None:
        self.settings = settings or ReportSettings()
        self.rng = rng
        self.tally: dict[str, Counter[str]] = {}  # plan -> final status -> recipients
        self.delivered_posts = 0
        self.failed_posts = 0
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
            self._push(time.monotonic() + s.delay_s * self.rng.uniform(0.5, 1.5), url, raw)
            if self.rng.random() < s.repeat_ratio:
                self._push(time.monotonic() + s.delay_s * self.rng.uniform(1, 4), url, raw)

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
                while not self._stop and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(timeout=wait)
                if self._stop:
                    return
                _, _, url, raw, tries = heapq.heappop(self._heap)
                self._posting += 1
            if self._post(url, raw):
                self.delivered_posts += 1
            elif tries + 1 < self.settings.max_tries:
                # 5 s, 10, 20, 40 ... after the failure (API.md 4.7), scaled by retry_base_s.
                delay = self.settings.retry_base_s * 2**tries
                self._push(time.monotonic() + delay, url, raw, tries + 1)
            else:
                self.failed_posts += 1
            with self._cv:
                self._posting -= 1

    @staticmethod
    def _post(url: str, raw: bytes) -> bool:
        req = urllib.request.Request(
            url, data=raw, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return bool(200 <= resp.status < 300)
        except (urllib.error.URLError, OSError):
            return False


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
