"""The ONE run plan of an evidence run, and the shell commands it sends.

A :class:`RunPlan` says which VMs the run logs into (:class:`RunVm`), what each captures and
under which file name (:class:`RunCapture`), the traffic each client sends and into which log
(:class:`RunTraffic`), which VMs are tapped (restarted for fastpath) and msp's tenants (name ->
VNI). :func:`plan_run` is the only place that names the files: ``collector.pcap``, then
``proxy.pcap``, ``proxy2.pcap``... (msp: ``proxy-<tenant>.pcap``), ``traffic.log`` (msp:
``traffic-<tenant>.log``).

Both drivers use it: ``components/evidence_run.py`` (pulumi-command, during ``pulumi up``;
its addresses are Pulumi Outputs) builds the plan and the stack exports it
(:meth:`RunPlan.to_json`, the ``run_plan`` output of each traffic scenario); ``python -m
vtaplab evidence`` (``vtaplab.azure.collect``, paramiko) reads that output back
(:meth:`RunPlan.from_json`). The commands (capture start/stop, traffic) call the scripts
cloud-init installed from ``cloudinit/`` (the ones the emulator runs), print one line or
nothing, and never carry a secret.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vtaplab import facts

REMOTE_DIR = "/var/lib/vtaplab"
# Mirrored packets still in flight when the client's last request returns.
DRAIN_SECONDS = 5
TRAFFIC_TIMEOUT = 10
TRAFFIC_LOG = "traffic.log"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _name(what: str, value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r}: accepted: 1-64 characters of A-Z a-z 0-9 . _ -")
    return value


def remote_dir(scenario: str, base: str = REMOTE_DIR) -> str:
    return f"{base}/{_name('scenario', scenario)}"


def capture_unit(scenario: str) -> str:
    """The transient systemd unit of a scenario's capture (one per VM)."""
    return f"vtaplab-capture-{_name('scenario', scenario)}"


def capture_start(scenario: str, file_name: str, seconds: int, *,
                  base: str = REMOTE_DIR) -> str:
    """Start (or restart) the capture into ``<dir>/<file_name>`` for at most ``seconds``."""
    directory, unit = remote_dir(scenario, base), capture_unit(scenario)
    out = f"{directory}/{_name('file name', file_name)}"
    return " && ".join([
        f"sudo mkdir -p {directory}",
        # A capture of an earlier run ends first: its file is replaced, never appended to.
        f"sudo vtap-capture.sh stop --unit {unit} >/dev/null",
        f"sudo rm -f {out} {out}.log",
        f"sudo vtap-capture.sh start --out {out} --duration {int(seconds)} "
        f"--port {facts.VXLAN_PORT} --unit {unit}"])


def capture_stop(scenario: str) -> str:
    return f"sudo vtap-capture.sh stop --unit {capture_unit(scenario)}"


def traffic_log_name(tenant: str | None = None) -> str:
    """The traffic log's file name: ``traffic.log``, or ``traffic-<tenant>.log`` (msp: one
    client per tenant)."""
    return TRAFFIC_LOG if tenant is None else f"traffic-{_name('tenant', tenant)}.log"


def traffic(scenario: str, target_ip: str, count: int, *, base: str = REMOTE_DIR,
            drain_seconds: int = DRAIN_SECONDS, log_name: str = "traffic.log") -> str:
    """``count`` rounds of GET / and GET /big.bin to vm-src's nginx, logged into
    ``<dir>/<log_name>``; then a pause so the last mirrored packets reach the collector before
    the capture stops. Exit 1 of the script (some requests failed) is evidence for the
    verdict, not a failed step."""
    ip = str(ipaddress.IPv4Address(str(target_ip).strip()))
    directory = remote_dir(scenario, base)
    log = f"{directory}/{_name('log name', log_name)}"
    return " && ".join([
        f"sudo mkdir -p {directory}",
        f"{{ sudo vtap-traffic.sh --url http://{ip}/ --url http://{ip}/big.bin "
        f"--count {int(count)} --log {log} --timeout {TRAFFIC_TIMEOUT} "
        "|| [ $? -eq 1 ]; }",
        f"sleep {int(drain_seconds)}"])


COLLECTOR_PCAP = "collector.pcap"
VNI_MAX = 2**24 - 1


def proxy_capture_name(index: int, tenant: str | None = None) -> str:
    """A proxy's capture file: ``proxy.pcap``, ``proxy2.pcap``... or, for a tenant's proxy,
    ``proxy-<tenant>.pcap``."""
    if tenant is not None:
        return f"proxy-{_name('tenant', tenant)}.pcap"
    return "proxy.pcap" if index == 0 else f"proxy{index + 1}.pcap"


class RunPlanError(ValueError):
    """A run plan that can't be run: one line naming what and what is accepted."""


@dataclass(frozen=True)
class RunVm:
    """One VM the run logs into. During ``pulumi up`` ``host``, ``host_key`` and ``vm_id`` are
    Pulumi Inputs; in a plan read back from the stack outputs they are text."""

    name: str
    """The VM's name (``provider-col``, ``b2-client``, ``msp-t1-proxy``...)."""
    host: Any
    """Its SSH address (public IP)."""
    user: str
    host_key: Any
    """Its pinned public host key, ``ssh-ed25519 AAAA...``."""
    wait_for: Sequence[Any] = field(default=(), compare=False)
    """Pulumi only: what creates the VM (readiness waits for it); not part of the plan."""
    vm_id: Any = None
    """The VM's ARM id; a tapped VM's (the fastpath restart)."""
    role: str = ""
    """What it is in this run (``collector``, ``proxy2``, ``t1.vm_client``...): set by
    :func:`plan_run`."""


@dataclass(frozen=True)
class RunTenant:
    """msp: one tenant: its client requests its own vm-src, its proxy stamps ``vni``."""

    name: str
    vni: int
    client: RunVm
    target_ip: Any


@dataclass(frozen=True)
class RunCapture:
    vm: RunVm
    file: str


@dataclass(frozen=True)
class RunTraffic:
    """``client`` requests http://``target_ip``/ and /big.bin into ``log``."""

    client: RunVm
    target_ip: Any
    log: str
    tenant: str | None = None


@dataclass(frozen=True)
class RunPlan:
    """One scenario's evidence run (see the module docstring)."""

    stack: str
    scenario: str
    captures: tuple[RunCapture, ...]
    """The collector's first, then every proxy's."""
    traffic: tuple[RunTraffic, ...]
    tapped: tuple[RunVm, ...]
    tenants: tuple[tuple[str, int], ...] = ()

    @property
    def collector(self) -> RunVm:
        return self.captures[0].vm

    @property
    def vms(self) -> list[RunVm]:
        """Every VM the run logs into or restarts, once each, in a stable order."""
        seen: dict[str, RunVm] = {}
        for vm in [*(c.vm for c in self.captures), *(t.client for t in self.traffic),
                   *self.tapped]:
            seen.setdefault(vm.name, vm)
        return list(seen.values())

    @property
    def remote_dir(self) -> str:
        return remote_dir(self.scenario)

    def files(self) -> list[tuple[str, RunVm]]:
        """What the fetch brings back: (file name, the VM that has it)."""
        return [*((c.file, c.vm) for c in self.captures),
                *((t.log, t.client) for t in self.traffic)]

    def capture_start(self, capture: RunCapture, seconds: int) -> str:
        return capture_start(self.scenario, capture.file, seconds)

    def capture_stop(self) -> str:
        return capture_stop(self.scenario)

    def traffic_command(self, step: RunTraffic, target_ip: str, count: int) -> str:
        return traffic(self.scenario, target_ip, count, log_name=step.log)

    def commands(self, capture_seconds: int, requests: int) -> list[tuple[str, str]]:
        """(VM name, command) in the order a run sends them (the target IPs must be text)."""
        out = [(c.vm.name, self.capture_start(c, capture_seconds)) for c in self.captures]
        out += [(t.client.name, self.traffic_command(t, str(t.target_ip), requests))
                for t in self.traffic]
        out += [(c.vm.name, self.capture_stop()) for c in self.captures]
        return out

    def to_json(self) -> dict[str, Any]:
        """The plan as the stack exports it (values may still be Pulumi Outputs)."""
        def vm(v: RunVm) -> dict[str, Any]:
            row = {"name": v.name, "role": v.role, "host": v.host, "user": v.user,
                   "host_key": v.host_key}
            return row | ({"vm_id": v.vm_id} if v.vm_id is not None else {})

        return {
            "stack": self.stack, "scenario": self.scenario, "remote_dir": self.remote_dir,
            "vms": [vm(v) for v in self.vms],
            "captures": [{"vm": c.vm.name, "file": c.file} for c in self.captures],
            "traffic": [{"vm": t.client.name, "target_ip": t.target_ip, "log": t.log,
                         **({"tenant": t.tenant} if t.tenant is not None else {})}
                        for t in self.traffic],
            "tapped": [v.name for v in self.tapped],
            "tenants": dict(self.tenants),
        }

    @classmethod
    def from_json(cls, data: object, where: str = "run_plan") -> RunPlan:
        """A plan read back from the stack outputs; bad shapes are one-line RunPlanErrors."""
        if not isinstance(data, Mapping):
            raise RunPlanError(f"{where}: {data!r}; accepted: the run_plan output this "
                               "project's program exports")
        vms: dict[str, RunVm] = {}
        for index, row in enumerate(_list(data, "vms", where)):
            at = f"{where}.vms[{index}]"
            name, role = _text(row, "name", at), _text(row, "role", at)
            host, user = _text(row, "host", at), _text(row, "user", at)
            key = row.get("host_key") if isinstance(row, Mapping) else None
            if not isinstance(key, str) or len(key.split()) < 2:
                raise RunPlanError(f"{at}: no pinned host key for {role or name} "
                                   f"({key!r}); refusing to connect unpinned")
            vm_id = row.get("vm_id")
            vms[name] = RunVm(name=name, host=host, user=user, host_key=key, role=role,
                              vm_id=str(vm_id) if vm_id else None)

        def vm_of(row: object, at: str) -> RunVm:
            name = _text(row, "vm", at)
            if name not in vms:
                raise RunPlanError(f"{at}: VM {name!r} is not in {where}.vms; accepted: "
                                   f"{', '.join(vms)}")
            return vms[name]

        captures = [RunCapture(vm_of(r, f"{where}.captures[{i}]"),
                               _name("file name", _text(r, "file", f"{where}.captures[{i}]")))
                    for i, r in enumerate(_list(data, "captures", where))]
        steps = [RunTraffic(vm_of(r, f"{where}.traffic[{i}]"),
                            _text(r, "target_ip", f"{where}.traffic[{i}]"),
                            _name("log name", _text(r, "log", f"{where}.traffic[{i}]")),
                            r.get("tenant"))
                 for i, r in enumerate(_list(data, "traffic", where))]
        tapped = [vms[n] for n in data.get("tapped") or [] if n in vms]
        tenants = data.get("tenants") or {}
        if not isinstance(tenants, Mapping) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in tenants.values()):
            raise RunPlanError(f"{where}.tenants: {tenants!r}; accepted: tenant name -> VNI")
        try:
            return _checked(RunPlan(stack=_text(data, "stack", where),
                                    scenario=_text(data, "scenario", where),
                                    captures=tuple(captures), traffic=tuple(steps),
                                    tapped=tuple(tapped), tenants=tuple(tenants.items())))
        except RunPlanError as exc:
            raise RunPlanError(f"{where}: {exc}") from None


def _list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise RunPlanError(f"{where}.{key}: {value!r}; accepted: a non-empty list")
    return value


def _text(row: object, key: str, where: str) -> str:
    value = row.get(key) if isinstance(row, Mapping) else None
    if not isinstance(value, str) or not value:
        raise RunPlanError(f"{where}.{key}: {value!r}; accepted: non-empty text (has the "
                           "stack been deployed?)")
    return value


def _checked(plan: RunPlan) -> RunPlan:
    if plan.scenario not in facts.SCENARIOS:
        raise RunPlanError(f"scenario {plan.scenario!r}; accepted: "
                           f"{', '.join(facts.SCENARIOS)}")
    names = [t for t, _ in plan.tenants]
    vnis = [v for _, v in plan.tenants]
    if len(set(names)) != len(names) or len(set(vnis)) != len(vnis):
        raise RunPlanError(f"tenants {names} with VNIs {vnis}: one repeats; accepted: one "
                           "tenant name and one VNI per tenant")
    for tenant, vni in plan.tenants:
        _name("tenant", tenant)
        if not 1 <= vni <= VNI_MAX:
            raise RunPlanError(f"tenant {tenant} VNI {vni}; accepted: 1..{VNI_MAX}")
    files = [f for f, _ in plan.files()]
    if len(set(files)) != len(files):
        raise RunPlanError(f"file names {files} repeat; accepted: one file per capture/log")
    if not plan.captures or plan.captures[0].file != COLLECTOR_PCAP:
        raise RunPlanError(f"the first capture must be the collector's {COLLECTOR_PCAP}")
    if not plan.traffic:
        raise RunPlanError("no traffic client; accepted: a client and its target, or tenants")
    return plan


def plan_run(*, stack: str, scenario: str, collector: RunVm, proxies: Sequence[RunVm],
             tapped: Sequence[RunVm], client: RunVm | None = None, target_ip: Any = None,
             tenants: Sequence[RunTenant] = ()) -> RunPlan:
    """The run plan: one client and its target (b2, a, b3) or one per tenant (msp, whose
    ``proxies`` and ``tapped`` are in tenant order). Names every file and every VM's role."""
    if tenants and (client is not None or target_ip is not None):
        raise RunPlanError("give either client and target_ip or tenants, not both")
    if not tenants and (client is None or target_ip is None):
        raise RunPlanError("no traffic client; accepted: client and target_ip, or tenants")
    if tenants and len(proxies) != len(tenants):
        raise RunPlanError(f"{len(proxies)} proxies for {len(tenants)} tenants; accepted: "
                           "one proxy per tenant")
    labels = [t.name for t in tenants]
    captures = [RunCapture(replace(collector, role="collector"), COLLECTOR_PCAP)]
    for index, proxy in enumerate(proxies):
        tenant = labels[index] if tenants else None
        file = proxy_capture_name(index, tenant)
        role = f"{tenant}.proxy" if tenant else file.removesuffix(".pcap")
        captures.append(RunCapture(replace(proxy, role=role), file))
    if tenants:
        steps = [RunTraffic(replace(t.client, role=f"{t.name}.vm_client"), t.target_ip,
                            traffic_log_name(t.name), t.name) for t in tenants]
        sources = [replace(vm, role=f"{label}.vm_src") for vm, label in
                   zip(tapped, labels, strict=False)]
    else:
        assert client is not None
        steps = [RunTraffic(replace(client, role="vm_client"), target_ip,
                            traffic_log_name(None))]
        sources = [replace(vm, role="vm_src") for vm in tapped]
    return _checked(RunPlan(stack=stack, scenario=scenario, captures=tuple(captures),
                            traffic=tuple(steps), tapped=tuple(sources),
                            tenants=tuple((t.name, t.vni) for t in tenants)))
