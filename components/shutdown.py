"""Cost guardrails for every VM: a daily auto-shutdown and an ``expires-on`` tag.

The shutdown is Azure's own VM auto-shutdown — a DevTest Labs global schedule named exactly
``shutdown-computevm-<vmName>`` (the portal's "Auto-shutdown" blade reads that name) with
task type ``ComputeVmShutdownTask``, which deallocates the VM daily at a UTC time. The time
and the tag come from ``vtaplab:autoShutdownTime`` and ``vtaplab:expiresOn``, validated by
``vtaplab.program.config.shutdown_settings``. Neither is computed from the clock here: running the
program twice gives identical inputs; ``python -m vtaplab matrix`` writes ``expiresOn`` for
its run, and without it the tag says ``unset``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
from pulumi import Input, ResourceOptions

EXPIRES_TAG = "expires-on"
UNSET = "unset"
TIME_ZONE = "UTC"
TASK_TYPE = "ComputeVmShutdownTask"


@dataclass(frozen=True)
class AutoShutdown:
    """``time``: HHMM (UTC) or ``"off"``; ``expires_on``: the tag's value, "" when not set."""

    time: str = "1900"
    expires_on: str = ""

    @property
    def enabled(self) -> bool:
        from vtaplab.program.config import AUTO_SHUTDOWN_OFF

        return self.time != AUTO_SHUTDOWN_OFF


def from_config() -> AutoShutdown:
    """The stack's settings (``pulumi.Config("vtaplab")``; defaults outside a program)."""
    from vtaplab.program import config

    cfg = pulumi.Config(config.NAMESPACE)
    values = {k: v for k in ("autoShutdownTime", "expiresOn")
              if (v := cfg.get(k)) is not None}
    time, expires_on = config.shutdown_settings(values)
    return AutoShutdown(time, expires_on)


def schedule_name(vm_name: str) -> str:
    """The one name Azure recognises as a VM's auto-shutdown schedule."""
    return f"shutdown-computevm-{vm_name}"


def with_expiry(tags: Mapping[str, str], settings: AutoShutdown) -> dict[str, str]:
    return {**tags, EXPIRES_TAG: settings.expires_on or UNSET}


def daily_shutdown(vm_name: str, vm_id: Input[str], *, resource_group_name: Input[str],
                   location: str, tags: Mapping[str, str], settings: AutoShutdown,
                   opts: ResourceOptions) -> pulumi.CustomResource | None:
    """The VM's auto-shutdown schedule, or None when ``autoShutdownTime`` is off."""
    from pulumi_azure_native import devtestlab

    if not settings.enabled:
        return None
    return devtestlab.GlobalSchedule(
        f"{vm_name}-shutdown",
        name=schedule_name(vm_name),
        resource_group_name=resource_group_name,
        location=location,
        status="Enabled",
        task_type=TASK_TYPE,
        daily_recurrence={"time": settings.time},
        time_zone_id=TIME_ZONE,
        notification_settings={"status": "Disabled"},
        target_resource_id=vm_id,
        tags=with_expiry(tags, settings),
        opts=opts,
    )
