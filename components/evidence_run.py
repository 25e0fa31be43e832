"""``EvidenceRun``: one scenario's run on Azure, in dependency order, with pulumi-command.

    readiness (per VM) ─┐
    tap configuration(s)┴─> [fastpath restart (per tapped VM, local: ARM deallocate + start,
                            then SSH readiness): only with ``restart_sources``]
                            ─> settle (the documented "up to 60 s" blip after a source joins)
                            ─> capture start (collector, every proxy)
                            ─> traffic (vm-client -> vm-src; msp: every tenant's client to
                            its own vm-src) ─> capture stop ─> fetch + verdict

By default a tapped VM first boots after its vTAP and tap configuration (``LinuxVm``), so it
needs no restart; ``restart_sources`` (``vtaplab:tapExistingSource``) is for VMs that ran
before they were tapped, which Azure says must be deallocated and started once.

Every step is bounded (``vtaplab.program.budget``, from ``capture_seconds`` and the traffic
size): a create timeout, SSH dial retries that fit in it, and on the VM ``timeout`` around the
command itself.

msp: one run over all tenants (``EvidenceRunArgs.tenants``): one collector capture, every
tenant's client runs its traffic between capture start and stop into ``traffic-<tenant>.log``,
every tenant's vm-src is fastpath-restarted, and the fetch judges the tenants apart by the VNI
each one's proxy stamps (``vtaplab.judge.tenants.separate_tenants``, as the emulator does).

- Readiness: ``cloud-init status --wait`` on each VM, with as many dial retries as fit in its
  budget and a create timeout; every other command on that VM depends on it.
- The captures run ``vtap-capture.sh --unit`` (a transient systemd unit: it outlives the SSH
  session and ends by itself after ``capture_seconds``); the traffic is ``vtap-traffic.sh``.
  Both are the files in ``cloudinit/`` cloud-init installed — the ones the emulator runs.
- Fetch is a local ``python -m vtaplab fetch``: SFTP with pinned host keys into
  ``evidence/<stack>/<scenario>/``, the verdict computed by the project's decoder; its stdout
  is one small JSON line, parsed into :attr:`EvidenceRun.summary` for the stack outputs.

Secrets: the private key reaches remote commands only as ``connection.private_key`` (a secret
Output), local commands only as a file path; host keys are public halves. No command's
``create`` string or ``environment`` carries a secret. ``run_id`` is in the ``triggers`` of
capture, traffic and fetch: changing it re-runs them without touching the VMs.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi import Input, Output, ResourceOptions
from pulumi_command import local, remote

from vtaplab import facts
from vtaplab.azure import run as runsteps
from vtaplab.azure.fastpath import READY_COMMAND
from vtaplab.program import budget as budgets

# The project's interpreter: Pulumi.yaml's virtualenv, unless the operator says otherwise.
PYTHON = '"${VTAPLAB_PYTHON:-venv/bin/python}"'
VNI_MAX = 2**24 - 1


@dataclass
class RunVm:
    """One VM the run logs in to."""

    name: str
    """The VM's name (resource names derive from it)."""
    host: Input[str]
    """Its SSH address (public IP)."""
    user: str
    host_key: Input[str]
    """Its pinned public host key, ``ssh-ed25519 AAAA...`` (``LinuxVm.host_key``)."""
    wait_for: Sequence[pulumi.Resource] = field(default_factory=list)
    """What creates the VM: readiness waits for it."""
    vm_id: Input[str] | None = None
    """The VM's ARM id; needed for a tapped VM (the fastpath restart)."""


@dataclass
class RunTenant:
    """msp: one tenant's traffic: its client requests its own vm-src, its proxy stamps ``vni``."""

    name: str
    """The tenant's label in the evidence (``t1``, ``t2``...): ``traffic-<name>.log``."""
    vni: int
    """The VNI its proxy stamps (``vtaplab.plan.tenant_vni``)."""
    client: RunVm
    target_ip: Input[str]


@dataclass(kw_only=True)
class EvidenceRunArgs:
    stack: str
    scenario: str
    collector: RunVm
    client: RunVm | None = None
    """The one traffic client (b2, a, b3); msp gives ``tenants`` instead."""
    tenants: Sequence[RunTenant] = ()
    """msp: one client per tenant, all running their traffic during the one capture."""
    tapped: Sequence[RunVm]
    """The vTAP's source VMs: fastpath-restarted once their tap configuration exists."""
    proxies: Sequence[RunVm]
    """Captured on both sides of the rewrite (proxy.pcap, proxy2.pcap, ...)."""
    target_ip: Input[str] | None = None
    """vm-src's private IP: the client requests http://IP/ and http://IP/big.bin."""
    proxy_files: Sequence[str] = ()
    """The proxies' capture file names (default ``runsteps.captured_files``: proxy.pcap,
    proxy2.pcap, ...)."""
    tap_configurations: Sequence[pulumi.Resource]
    private_key: Input[str]
    """The operator's private key text, a secret Output: only ever a connection.private_key."""
    private_key_file: str
    """The same key as a file path, for the local commands (fastpath, fetch)."""
    capture_seconds: int
    request_count: int
    run_id: str = "1"
    restart_sources: bool = False
    """True (``vtaplab:tapExistingSource``): the tapped VMs ran before their tap configuration
    existed, so each is deallocated and started once (fastpath); False: they first booted
    after it, and need nothing."""
    after: Sequence[pulumi.Resource] = field(default_factory=list)
    """Runs to finish first (e.g. another scenario's on the same collector): the captures
    start after them."""


class EvidenceRun(pulumi.ComponentResource):
    """The commands of one scenario's run. :attr:`summary` is the fetch's small JSON, parsed
    (``{}`` until the fetch ran, e.g. in a preview)."""

    summary: Output[dict[str, Any]]
    ready: dict[str, remote.Command]
    done: local.Command
    """The last step (the fetch): what a later run waits for."""

    def __init__(self, name: str, args: EvidenceRunArgs,
                 opts: ResourceOptions | None = None) -> None:
        super().__init__("vtaplab:index:EvidenceRun", name, None, opts)
        if args.scenario not in facts.SCENARIOS:
            raise ValueError(f"{name}: scenario {args.scenario!r}; accepted: "
                             f"{', '.join(facts.SCENARIOS)}")
        if not args.tapped or any(vm.vm_id is None for vm in args.tapped):
            raise ValueError(f"{name}: give the tapped VMs with their vm_id (fastpath restart)")
        self._name, self._args = name, args
        self.budget = budgets.run_budget(
            args.capture_seconds, args.request_count, traffic_timeout=runsteps.TRAFFIC_TIMEOUT,
            drain_seconds=runsteps.DRAIN_SECONDS)
        self._remote_dir = runsteps.remote_dir(args.scenario)
        self._clients = _traffic_clients(name, args)
        vms = {vm.name: vm for vm in [args.collector, *(c.client for c in self._clients),
                                      *args.tapped, *args.proxies]}

        self.ready = {vm_name: self._ready(vm) for vm_name, vm in vms.items()}
        fastpath: list[pulumi.Resource] = (
            [self._fastpath(vm) for vm in args.tapped] if args.restart_sources else [])
        settle = self._settle([*args.tap_configurations, *fastpath,
                               *[self.ready[vm.name] for vm in args.tapped]])
        proxy_files = list(args.proxy_files) or runsteps.captured_files(len(args.proxies))[1:]
        if len(proxy_files) != len(args.proxies):
            raise ValueError(f"{name}: {len(proxy_files)} proxy capture file names for "
                             f"{len(args.proxies)} proxies; accepted: one per proxy")
        captured = list(zip([args.collector, *args.proxies],
                            [runsteps.captured_files(0)[0], *proxy_files], strict=True))
        starts = [self._capture_start(vm, file_name, [settle, *args.after])
                  for vm, file_name in captured]
        traffic = [self._traffic(client, starts, [settle]) for client in self._clients]
        stops = [self._capture_stop(vm, file_name, traffic) for vm, file_name in captured]
        fetch = self._fetch(captured, stops)

        self.done = fetch
        self.summary = fetch.stdout.apply(parse_summary)
        self.register_outputs({"summary": self.summary})

    # --- pieces ------------------------------------------------------------------------------

    def _connection(self, vm: RunVm, seconds: int) -> remote.ConnectionArgs:
        return remote.ConnectionArgs(
            host=vm.host, user=vm.user, private_key=Output.secret(self._args.private_key),
            host_key=vm.host_key,
            # A booting VM refuses connections for minutes: retry, but only as often as fits
            # in the step's budget (never forever: an unreachable VM must fail the step).
            dial_error_limit=budgets.dial_limit(seconds),
            per_dial_timeout=budgets.PER_DIAL_SECONDS)

    def _opts(self, depends_on: Sequence[pulumi.Resource], seconds: int) -> ResourceOptions:
        return ResourceOptions(
            parent=self, depends_on=list(depends_on),
            custom_timeouts=pulumi.CustomTimeouts(create=budgets.pulumi_timeout(seconds)))

    def _ready(self, vm: RunVm) -> remote.Command:
        seconds = self.budget.ready
        return remote.Command(
            f"{self._name}-ready-{vm.name}",
            connection=self._connection(vm, seconds),
            create=bounded(READY_COMMAND, seconds),
            opts=self._opts(vm.wait_for, seconds))

    def _settle(self, after: Sequence[pulumi.Resource]) -> local.Command:
        # Adding a source may cut the VM's network for up to 60 s (facts.
        # VTAP_SOURCE_BLIP_SECONDS): wait it out once before anything is captured.
        return local.Command(
            f"{self._name}-settle",
            create=f"sleep {facts.VTAP_SOURCE_BLIP_SECONDS}",
            opts=self._opts(after, self.budget.settle))

    def _fastpath(self, vm: RunVm) -> local.Command:
        a = self._args
        create = Output.all(vm.vm_id, vm.host, vm.host_key).apply(lambda v: " ".join([
            PYTHON, "-m", "vtaplab", "fastpath", shlex.quote(str(v[0])),
            "--ssh-host", shlex.quote(str(v[1])), "--ssh-user", shlex.quote(vm.user),
            "--host-key", shlex.quote(str(v[2])),
            "--ssh-key-file", shlex.quote(a.private_key_file)]))
        return local.Command(
            f"{self._name}-fastpath-{vm.name}",
            create=create,
            # Once per VM: deallocating again on a re-run would cut the source for nothing.
            opts=self._opts([*a.tap_configurations, self.ready[vm.name]], self.budget.fastpath))

    def _capture_start(self, vm: RunVm, file_name: str,
                       after: Sequence[pulumi.Resource]) -> remote.Command:
        a = self._args
        seconds = self.budget.capture_start
        create = bounded(runsteps.capture_start(a.scenario, file_name, a.capture_seconds),
                         seconds)
        return remote.Command(
            f"{self._name}-capture-start-{vm.name}",
            connection=self._connection(vm, seconds), create=create, triggers=[a.run_id],
            opts=self._opts([self.ready[vm.name], *after], seconds))

    def _traffic(self, client: _Client, starts: Sequence[pulumi.Resource],
                 after: Sequence[pulumi.Resource]) -> remote.Command:
        a = self._args
        seconds = self.budget.traffic
        create = Output.from_input(client.target_ip).apply(
            lambda ip: bounded(runsteps.traffic(a.scenario, ip, a.request_count,
                                                log_name=client.log_name), seconds))
        suffix = "" if client.tenant is None else f"-{client.tenant}"
        return remote.Command(
            f"{self._name}-traffic{suffix}",
            connection=self._connection(client.client, seconds), create=create,
            triggers=[a.run_id],
            opts=self._opts([self.ready[client.client.name],
                             *[self.ready[vm.name] for vm in a.tapped], *starts, *after],
                            seconds))

    def _capture_stop(self, vm: RunVm, file_name: str, traffic: Sequence[pulumi.Resource]
                      ) -> remote.Command:
        seconds = self.budget.capture_stop
        return remote.Command(
            f"{self._name}-capture-stop-{vm.name}",
            connection=self._connection(vm, seconds),
            create=bounded(runsteps.capture_stop(self._args.scenario), seconds),
            triggers=[self._args.run_id],
            opts=self._opts([self.ready[vm.name], *traffic], seconds))

    def _fetch(self, captured: Sequence[tuple[RunVm, str]],
               stops: Sequence[pulumi.Resource]) -> local.Command:
        a = self._args
        sources = [*captured, *[(c.client, c.log_name) for c in self._clients]]
        hosts = Output.all(*[vm.host for vm, _ in sources])
        host_keys = Output.all(*[vm.host_key for vm, _ in sources])

        def command(addresses: list[str], keys: list[str]) -> str:
            argv = [PYTHON, "-m", "vtaplab", "fetch", "--stack", shlex.quote(a.stack),
                    "--scenario", shlex.quote(a.scenario), "--user",
                    shlex.quote(a.collector.user), "--key-file", shlex.quote(a.private_key_file)]
            pinned: dict[str, str] = {}
            for (_vm, file_name), host, key in zip(sources, addresses, keys, strict=True):
                pinned[str(host)] = str(key)
                argv += ["--file", shlex.quote(f"{file_name}={host}:"
                                               f"{self._remote_dir}/{file_name}")]
            for host, key in sorted(pinned.items()):
                argv += ["--known-host", shlex.quote(f"{host}={key}")]
            for tenant in a.tenants:
                argv += ["--tenant", shlex.quote(f"{tenant.name}={tenant.vni}")]
            return " ".join(argv)

        return local.Command(
            f"{self._name}-fetch",
            create=Output.all(hosts, host_keys).apply(lambda v: command(v[0], v[1])),
            triggers=[a.run_id],
            opts=self._opts(stops, self.budget.fetch))


def bounded(command: str, seconds: int) -> str:
    """``command`` run on the VM under coreutils ``timeout`` (killed 10 s after the TERM):
    the step ends within its budget even when the VM stops answering mid-command."""
    return f"timeout -k 10 {int(seconds)} sh -c {shlex.quote(command)}"


@dataclass(frozen=True)
class _Client:
    """One traffic step: ``tenant`` None for the single client (``traffic.log``)."""

    tenant: str | None
    client: RunVm
    target_ip: Input[str]
    log_name: str


def _traffic_clients(name: str, args: EvidenceRunArgs) -> list[_Client]:
    """The run's traffic steps: the one client, or one per tenant (checked: names, VNIs)."""
    if args.tenants:
        if args.client is not None or args.target_ip is not None:
            raise ValueError(f"{name}: give either client and target_ip or tenants, not both")
        names = [t.name for t in args.tenants]
        vnis = [t.vni for t in args.tenants]
        if len(set(names)) != len(names) or len(set(vnis)) != len(vnis):
            raise ValueError(f"{name}: tenants {names} with VNIs {vnis}; accepted: distinct "
                             "names and distinct VNIs")
        for tenant in args.tenants:
            if not 1 <= tenant.vni <= VNI_MAX:
                raise ValueError(f"{name}: tenant {tenant.name} VNI {tenant.vni}; accepted: "
                                 f"1..{VNI_MAX}")
        return [_Client(t.name, t.client, t.target_ip, runsteps.traffic_log_name(t.name))
                for t in args.tenants]
    if args.client is None or args.target_ip is None:
        raise ValueError(f"{name}: no traffic client; accepted: client and target_ip, or "
                         "tenants")
    return [_Client(None, args.client, args.target_ip, runsteps.traffic_log_name(None))]


def parse_summary(stdout: str | None) -> dict[str, Any]:
    """The fetch's JSON line as a dict; ``{}`` before it ran. Only the keys the stack outputs
    need are kept (outputs stay small whatever the fetch printed)."""
    if not stdout:
        return {}
    try:
        data = json.loads(stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"outcome": "error", "reason": "the fetch printed no JSON summary"}
    if not isinstance(data, dict):
        return {"outcome": "error", "reason": "the fetch's summary is not a JSON object"}
    keep = ("outcome", "matches_expected", "reason", "verdict", "files", "tenants",
            "tenants_told_apart")
    return {k: data[k] for k in keep if k in data}
