"""``dispatcher demo`` as a user runs it: exits 0 with a checked summary, leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _demo_processes() -> list[int]:
    """PIDs whose environment points at a demo's private config (workers, their children)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if b"dispatcher-demo-" in env:
            found.append(int(d.name))
    return found


def _run_demo(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env["COLUMNS"] = "100"
    return subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "demo", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_demo_runs_checks_and_cleans_up() -> None:
    proc = _run_demo("--scale", "0.2")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    summary = out[out.index("summary") :]
    for plan in ("acme-alerts", "globex-news", "initech-otp"):
        row = next(line for line in summary.splitlines() if plan in line)
        cells = [c.strip() for c in row.split("│") if c.strip()]
        sent, fifo, dups, delivered, failed = cells[2], cells[-4], cells[-3], cells[-2], cells[-1]
        assert fifo == "yes", row  # FIFO per the simulator's log
        assert dups == "0", row  # no duplicates
        assert int(delivered) + int(failed) == int(sent), row  # every report counted, once
    assert "nothing left behind" in out
    assert _demo_processes() == []


@pytest.mark.slow
def test_demo_ctrl_c_leaves_no_process() -> None:
    proc = _run_demo()
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    for line in proc.stdout:
        if "enqueued" in line or time.monotonic() > deadline:
            break
    assert _demo_processes(), "the demo's workers should be running by now"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    time.sleep(0.5)
    assert _demo_processes() == []
