"""The time budget of a run: how long each pulumi-command step may take, derived from the
stack's ``captureSeconds`` and traffic size, and what a whole ``pulumi up`` plus destroy may
take (the platform-watch workflow's job timeout must stay above it; a test checks).

Every step is bounded: an unreachable VM fails its step when its budget runs out instead of
hanging ``pulumi up`` until CI kills the job before the destroy (and the lab keeps billing).
The figures that are not derived (boot, deployment, destroy) are named assumptions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vtaplab import facts

# Assumption: a fresh Ubuntu VM is reachable and cloud-init (apt) done within this.
READY_SECONDS = 30 * 60
# Assumption: ARM deallocates and starts a small VM within this (tapExistingSource only).
FASTPATH_SECONDS = 40 * 60
# One SSH dial's timeout; dial retries are bounded by the step's budget / this.
PER_DIAL_SECONDS = 15
# A reachable VM answers a short command within this (sudo, systemd-run, mkdir).
SHORT_STEP_SECONDS = 2 * 60
# vtap-traffic.sh: curl --max-time per request (vtaplab.azure.run.TRAFFIC_TIMEOUT), two URLs a
# round, then the drain pause; plus slack for SSH and the log.
TRAFFIC_URLS_PER_ROUND = 2
TRAFFIC_SLACK_SECONDS = 2 * 60
# Fetch: SFTP of the captures and the decode; the capture grows with its duration.
FETCH_BASE_SECONDS = 5 * 60
# Assumption: ARM creates a stack's resources (VNets, LBs, PLS, PEs, VMs) within this, and
# `pulumi destroy` removes them within the other.
DEPLOY_SECONDS = 45 * 60
DESTROY_SECONDS = 45 * 60


@dataclass(frozen=True)
class RunBudget:
    """Seconds per step of one scenario's run."""

    ready: int
    fastpath: int
    settle: int
    capture_start: int
    traffic: int
    capture_stop: int
    fetch: int

    def serial(self, *, restart: bool) -> int:
        """One run's steps after readiness, one after the other (runs on the stack's one
        collector are chained)."""
        return ((self.fastpath if restart else 0) + self.settle + self.capture_start
                + self.traffic + self.capture_stop + self.fetch)


def run_budget(capture_seconds: int, request_count: int, *, traffic_timeout: int,
               drain_seconds: int) -> RunBudget:
    """The budget of a run capturing ``capture_seconds`` while each client makes
    ``request_count`` rounds, each request bounded by ``traffic_timeout``."""
    traffic = (request_count * TRAFFIC_URLS_PER_ROUND * traffic_timeout + drain_seconds
               + TRAFFIC_SLACK_SECONDS)
    return RunBudget(
        ready=READY_SECONDS,
        fastpath=FASTPATH_SECONDS,
        # The documented blip when a source is added, plus one dial.
        settle=facts.VTAP_SOURCE_BLIP_SECONDS + PER_DIAL_SECONDS,
        capture_start=SHORT_STEP_SECONDS,
        traffic=traffic,
        capture_stop=SHORT_STEP_SECONDS,
        fetch=FETCH_BASE_SECONDS + capture_seconds,
    )


def dial_limit(step_seconds: int) -> int:
    """SSH dial attempts that fit in ``step_seconds``: bounded, never "forever"."""
    return max(1, math.ceil(step_seconds / PER_DIAL_SECONDS))


def pulumi_timeout(seconds: int) -> str:
    """``seconds`` as a Pulumi custom timeout string ("125s")."""
    return f"{int(seconds)}s"


def stack_seconds(budget: RunBudget, runs: int, *, restart: bool) -> int:
    """A whole stack: deploy, readiness, its ``runs`` runs one after another, destroy."""
    return (DEPLOY_SECONDS + budget.ready + runs * budget.serial(restart=restart)
            + DESTROY_SECONDS)
