"""Commands run inside a test's own network namespace, and waiting for an emulator run's
traffic to start."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest


def ns_run(ns: str, *argv: str, check: bool = True,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``argv`` inside namespace ``ns``, its output captured; with ``check``, exit 0 asserted."""
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check:
        assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc


def wait_for_traffic(out: Path, timeout: float, poll: float) -> None:
    """Return once the run writing to ``out`` has started its traffic (its commands.log names
    vtap-traffic.sh): the point where an interrupted run has the most to tear down. Fails the
    test after ``timeout`` seconds, polling every ``poll``."""
    log = out / "commands.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and "vtap-traffic.sh" in log.read_text():
            return
        time.sleep(poll)
    pytest.fail("the traffic never started")
