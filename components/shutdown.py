"""Cost guardrails for every VM: a daily auto-shutdown and an ``expires-on`` tag.

The shutdown is Azure's own VM auto-shutdown — a DevTest Labs global schedule named exactly
``shutdown-computevm-<vmName>`` (the portal's "Auto-shutdown" blade reads that name) with
task type ``ComputeVmShutdownTask``, which deallocates the VM daily at a UTC time. The time
comes in as an argument (``AutoShutdown``, from ``LabConfig.auto_shutdown_time``); the
``expires-on`` tag comes with the stack's tags (``vtaplab:expiresOn``; ``unset`` without it).
Nothing here reads config or the clock: running the program twice gives identical inputs.
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
    """``time``: HHMM (UTC) or ``"off"`` (``LabConfig.auto_shutdown_time``)."""

    time: str = "1900"

    @property
    def enabled(self) -> bool:
        from vtaplab.program.config import AUTO_SHUTDOWN_OFF

        return self.time != AUTO_SHUTDOWN_OFF


def schedule_name(vm_name: str) -> str:
    """The one name Azure recognises as a VM's auto-shutdown schedule."""
    return f"shutdown-computevm-{vm_name}"


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
        tags=dict(tags),
        opts=opts,
    )
