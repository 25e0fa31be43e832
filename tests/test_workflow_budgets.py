"""The workflows against what the program really does: the PR preview keeps its summary and
shows no change caused only by CI's key and CIDR; the platform-watch job outlives a whole run
of each stack it may be asked for (deploy, every bounded step, destroy)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from vtaplab import PROJECT_ROOT
from vtaplab.azure import run as runsteps
from vtaplab.preflight import mocks
from vtaplab.program import budget, config

ROOT = PROJECT_ROOT
WORKFLOWS = ROOT / ".github" / "workflows"


def load(name: str) -> dict[Any, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))


def preview_job() -> dict[str, Any]:
    return load("preview.yml")["jobs"]["preview"]


def test_preview_comments_always_keep_the_summary():
    action = next(s for s in preview_job()["steps"]
                  if str(s.get("uses", "")).startswith("pulumi/actions@"))
    assert action["with"]["always-include-summary"] is True
    assert action["with"]["comment-on-pr"] is True


def test_preview_uses_the_deployed_stacks_key_and_cidr_before_a_throwaway():
    job = preview_job()
    env = job["env"]
    assert "vars.VTAPLAB_OPERATOR_CIDR" in env["VTAPLAB_OPERATOR_CIDR"]
    assert env["VTAPLAB_SSH_PUBLIC_KEY"] == "${{ vars.VTAPLAB_SSH_PUBLIC_KEY }}"
    # the private half is a secret, never a variable
    assert env["VTAPLAB_SSH_PRIVATE_KEY"] == "${{ secrets.VTAPLAB_SSH_PRIVATE_KEY }}"
    install = next(s for s in job["steps"] if "ssh-keygen" in s.get("run", ""))["run"]
    # the shared pair is written first; the throwaway only in the else branch, with a notice
    assert install.index("$VTAPLAB_SSH_PUBLIC_KEY") < install.index("ssh-keygen")
    assert install.index("else") < install.index("ssh-keygen")
    assert "::notice title=throwaway SSH key::" in install


def _stack_seconds(stack: str) -> int:
    cfg = config.from_values(mocks.mock_config(stack, ROOT), stack=stack)
    runs = sum(1 for s in cfg.scenarios if s in config.TRAFFIC_SCENARIOS)
    steps = budget.run_budget(cfg.capture_seconds, cfg.traffic_requests,
                              traffic_timeout=runsteps.TRAFFIC_TIMEOUT,
                              drain_seconds=runsteps.DRAIN_SECONDS)
    return budget.stack_seconds(steps, runs, restart=cfg.tap_existing_source)


@pytest.mark.parametrize("stack", mocks.stack_names(ROOT))
def test_the_watch_job_outlives_a_whole_bounded_run_and_its_destroy(stack):
    job = load("platform-watch.yml")["jobs"]["matrix"]
    assert job["timeout-minutes"] * 60 > _stack_seconds(stack)


def test_the_budget_counts_every_run_and_the_destroy():
    steps = budget.run_budget(60, 20, traffic_timeout=10, drain_seconds=5)
    one, two = (budget.stack_seconds(steps, n, restart=False) for n in (1, 2))
    assert two - one == steps.serial(restart=False)
    assert one > budget.DEPLOY_SECONDS + budget.DESTROY_SECONDS + steps.ready
    assert budget.stack_seconds(steps, 1, restart=True) - one == steps.fastpath
