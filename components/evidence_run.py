"""``EvidenceRun``: one scenario's run on Azure, in dependency order, with pulumi-command.

    readiness (per VM) ─┐
    tap configuration(s)┴─> [fastpath restart (per tapped VM, local: ARM deallocate + start,
                            then SSH readiness): only with ``restart_sources``]
                            ─> settle (the documented "up to 60 s" blip after a source joins)
                            ─> capture start (collector, every proxy)
                            ─> traffic (vm-client -> vm-src; msp: every tenant's client to
                            its own vm-src) ─> capture stop ─> fetch + verdict

What it runs is the scenario's run plan (``vtaplab.azure.run.plan_run``: the VMs, each
capture's file name, each client's traffic and log, the tenants), the one ``python -m vtaplab
evidence`` reads back from the stack's ``run_plan`` output (:attr:`EvidenceRun.plan_output`).

By default a tapped VM first boots after its vTAP and tap configuration (``LinuxVm``), so it
needs no restart; ``restart_sources`` (``vtaplab:tapExistingSource``) is for VMs that ran
before they were tapped, which Azure says must be deallocated and started once.

Every step is bounded (``vtaplab.program.budget``, from ``capture_seconds`` and the traffic
size): a create timeout, SSH dial retries that fit in it, and on the VM ``timeout`` around the
command itself.

msp: one run over all tenants (``EvidenceRunArgs.tenants``): one collector capture, every
tenant's client runs its traffic between capture start and stop into ``traffic-<tenant>.log``,
every tenant's vm-src is fastpath-restarted, and the fetch judges the tenants apart by the VNI
each one's proxy stamps (``vtaplab.judge.outcome``, as the emulator's verdict is judged).

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
from vtaplab.judge.outcome import Evidence, judge
from vtaplab.program import budget as budgets

# The project's interpreter: Pulumi.yaml's virtualenv, unless the operator says otherwise.
PYTHON = '"${VTAPLAB_PYTHON:-venv/bin/python}"'
# The VM and tenant of a run are the run plan's (one description for both drivers).
RunVm = runsteps.RunVm
RunTenant = runsteps.RunTenant


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
    """Captured on both sides of the rewrite (file names: ``runsteps.plan_run``)."""
    target_ip: Input[str] | None = None
    """vm-src's private IP: the client requests http://IP/ and http://IP/big.bin."""
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
        try:
            self.plan = runsteps.plan_run(
                stack=args.stack, scenario=args.scenario, collector=args.collector,
                proxies=args.proxies, tapped=args.tapped, client=args.client,
                target_ip=args.target_ip, tenants=args.tenants)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        plan = self.plan
        self.ready = {vm.name: self._ready(vm) for vm in plan.vms}
        fastpath: list[pulumi.Resource] = (
            [self._fastpath(vm) for vm in plan.tapped] if args.restart_sources else [])
        settle = self._settle([*args.tap_configurations, *fastpath,
                               *[self.ready[vm.name] for vm in plan.tapped]])
        starts = [self._capture_start(capture, [settle, *args.after])
                  for capture in plan.captures]
        traffic = [self._traffic(step, starts, [settle]) for step in plan.traffic]
        stops = [self._capture_stop(capture.vm, traffic) for capture in plan.captures]
        fetch = self._fetch(stops)

        self.done = fetch
        self.summary = fetch.stdout.apply(lambda out: parse_summary(out, args.scenario))
        self.plan_output = plan.to_json()
        """The run plan as the stack exports it (``run_plan``): ``python -m vtaplab evidence``
        reads it back (``RunPlan.from_json``)."""
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

    def _capture_start(self, capture: runsteps.RunCapture,
                       after: Sequence[pulumi.Resource]) -> remote.Command:
        a = self._args
        seconds = self.budget.capture_start
        create = bounded(self.plan.capture_start(capture, a.capture_seconds), seconds)
        return remote.Command(
            f"{self._name}-capture-start-{capture.vm.name}",
            connection=self._connection(capture.vm, seconds), create=create,
            triggers=[a.run_id],
            opts=self._opts([self.ready[capture.vm.name], *after], seconds))

    def _traffic(self, step: runsteps.RunTraffic, starts: Sequence[pulumi.Resource],
                 after: Sequence[pulumi.Resource]) -> remote.Command:
        a = self._args
        seconds = self.budget.traffic
        create = Output.from_input(step.target_ip).apply(
            lambda ip: bounded(self.plan.traffic_command(step, ip, a.request_count), seconds))
        suffix = "" if step.tenant is None else f"-{step.tenant}"
        return remote.Command(
            f"{self._name}-traffic{suffix}",
            connection=self._connection(step.client, seconds), create=create,
            triggers=[a.run_id],
            opts=self._opts([self.ready[step.client.name],
                             *[self.ready[vm.name] for vm in self.plan.tapped], *starts,
                             *after], seconds))

    def _capture_stop(self, vm: RunVm, traffic: Sequence[pulumi.Resource]
                      ) -> remote.Command:
        seconds = self.budget.capture_stop
        return remote.Command(
            f"{self._name}-capture-stop-{vm.name}",
            connection=self._connection(vm, seconds),
            create=bounded(self.plan.capture_stop(), seconds),
            triggers=[self._args.run_id],
            opts=self._opts([self.ready[vm.name], *traffic], seconds))

    def _fetch(self, stops: Sequence[pulumi.Resource]) -> local.Command:
        a = self._args
        sources = self.plan.files()
        hosts = Output.all(*[vm.host for _, vm in sources])
        host_keys = Output.all(*[vm.host_key for _, vm in sources])
        remote_dir = self.plan.remote_dir

        def command(addresses: list[str], keys: list[str]) -> str:
            argv = [PYTHON, "-m", "vtaplab", "fetch", "--stack", shlex.quote(a.stack),
                    "--scenario", shlex.quote(a.scenario), "--user",
                    shlex.quote(a.collector.user), "--key-file", shlex.quote(a.private_key_file)]
            pinned: dict[str, str] = {}
            for (file_name, _vm), host, key in zip(sources, addresses, keys, strict=True):
                pinned[str(host)] = str(key)
                argv += ["--file", shlex.quote(f"{file_name}={host}:{remote_dir}/{file_name}")]
            for host, key in sorted(pinned.items()):
                argv += ["--known-host", shlex.quote(f"{host}={key}")]
            for tenant, vni in self.plan.tenants:
                argv += ["--tenant", shlex.quote(f"{tenant}={vni}")]
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


def parse_summary(stdout: str | None, scenario: str | None = None) -> dict[str, Any]:
    """The fetch's JSON line as a dict; ``{}`` before it ran. Only the keys the stack outputs
    need are kept (outputs stay small whatever the fetch printed). A fetch that printed no
    summary is judged (``vtaplab.judge.outcome``) as evidence nobody could read."""
    if not stdout:
        return {}
    problem = None
    data: Any = None
    try:
        data = json.loads(stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        problem = "the fetch printed no JSON summary"
    if problem is None and not isinstance(data, dict):
        problem = "the fetch's summary is not a JSON object"
    if problem is not None:
        decided = judge(Evidence(scenario=scenario, evidence_error=problem))
        return {"outcome": decided.outcome, "matches_expected": decided.matches_expected,
                "reason": decided.reason}
    keep = ("outcome", "matches_expected", "reason", "verdict", "files", "tenants",
            "tenants_told_apart")
    return {k: data[k] for k in keep if k in data}
