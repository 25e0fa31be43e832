"""Commands run inside a test's own network namespace."""

from __future__ import annotations

import subprocess


def ns_run(ns: str, *argv: str, check: bool = True,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``argv`` inside namespace ``ns``, its output captured; with ``check``, exit 0 asserted."""
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check:
        assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc
