"""``EvidenceRun``: one scenario's run on Azure, in dependency order, with pulumi-command.

    readiness (per VM) ─┐
    tap configuration(s)┴─> fastpath restart (per tapped VM, local: ARM deallocate + start,
                            then SSH readiness) ─> capture start (collector, every proxy)
                            ─> traffic (vm-client -> vm-src; msp: every tenant's client to
                            its own vm-src) ─> capture stop ─> fetch + verdict

What it runs is the scenario's run plan (``vtaplab.azure.run.plan_run``: the VMs, each
capture's file name, each client's traffic and log, the tenants), the one ``python -m vtaplab
evidence`` reads back from the stack's ``run_plan`` output (:attr:`EvidenceRun.plan_output`).

msp: one run over all tenants (``EvidenceRunArgs.tenants``): one collector capture, every
tenant's client runs its traffic between capture start and stop into ``traffic-<tenant>.log``,
every tenant's vm-src is fastpath-restarted, and the fetch judges the tenants apart by the VNI
each one's proxy stamps (``vtaplab.judge.outcome``, as the emulator's verdict is judged).

- Readiness: ``cloud-init status --wait`` on each VM with unlimited dial retries and a create
  timeout; every other command on that VM depends on it.
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

# The project's interpreter: Pulumi.yaml's virtualenv, unless the operator says otherwise.
PYTHON = '"${VTAPLAB_PYTHON:-venv/bin/python}"'
# Long enough for a fresh Ubuntu VM's apt work; a booting VM refuses SSH for a while.
READY_TIMEOUT = "30m"
FASTPATH_TIMEOUT = "40m"
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
        try:
            self.plan = runsteps.plan_run(
                stack=args.stack, scenario=args.scenario, collector=args.collector,
                proxies=args.proxies, tapped=args.tapped, client=args.client,
                target_ip=args.target_ip, tenants=args.tenants)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        plan = self.plan
        self.ready = {vm.name: self._ready(vm) for vm in plan.vms}
        fastpath = [self._fastpath(vm) for vm in plan.tapped]
        starts = [self._capture_start(capture, [*fastpath, *args.after])
                  for capture in plan.captures]
        traffic = [self._traffic(step, starts, fastpath) for step in plan.traffic]
        stops = [self._capture_stop(capture.vm, traffic) for capture in plan.captures]
        fetch = self._fetch(stops)

        self.done = fetch
        self.summary = fetch.stdout.apply(lambda out: parse_summary(out, args.scenario))
        self.plan_output = plan.to_json()
        """The run plan as the stack exports it (``run_plan``): ``python -m vtaplab evidence``
        reads it back (``RunPlan.from_json``)."""
        self.register_outputs({"summary": self.summary})

    # --- pieces ------------------------------------------------------------------------------

    def _connection(self, vm: RunVm) -> remote.ConnectionArgs:
        return remote.ConnectionArgs(
            host=vm.host, user=vm.user, private_key=Output.secret(self._args.private_key),
            host_key=vm.host_key,
            # A booting VM refuses connections for minutes: retry without a count limit;
            # the create timeout bounds the wait.
            dial_error_limit=-1, per_dial_timeout=15)

    def _opts(self, depends_on: Sequence[pulumi.Resource], timeout: str | None = None
              ) -> ResourceOptions:
        return ResourceOptions(
            parent=self, depends_on=list(depends_on),
            custom_timeouts=pulumi.CustomTimeouts(create=timeout) if timeout else None)

    def _ready(self, vm: RunVm) -> remote.Command:
        return remote.Command(
            f"{self._name}-ready-{vm.name}",
            connection=self._connection(vm),
            create=READY_COMMAND,
            opts=self._opts(vm.wait_for, READY_TIMEOUT))

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
            opts=self._opts([*a.tap_configurations, self.ready[vm.name]], FASTPATH_TIMEOUT))

    def _capture_start(self, capture: runsteps.RunCapture,
                       after: Sequence[pulumi.Resource]) -> remote.Command:
        a = self._args
        return remote.Command(
            f"{self._name}-capture-start-{capture.vm.name}",
            connection=self._connection(capture.vm),
            create=self.plan.capture_start(capture, a.capture_seconds), triggers=[a.run_id],
            opts=self._opts([self.ready[capture.vm.name], *after]))

    def _traffic(self, step: runsteps.RunTraffic, starts: Sequence[pulumi.Resource],
                 after: Sequence[pulumi.Resource]) -> remote.Command:
        a = self._args
        create = Output.from_input(step.target_ip).apply(
            lambda ip: self.plan.traffic_command(step, ip, a.request_count))
        suffix = "" if step.tenant is None else f"-{step.tenant}"
        return remote.Command(
            f"{self._name}-traffic{suffix}",
            connection=self._connection(step.client), create=create, triggers=[a.run_id],
            opts=self._opts([self.ready[step.client.name],
                             *[self.ready[vm.name] for vm in self.plan.tapped], *starts,
                             *after]))

    def _capture_stop(self, vm: RunVm, traffic: Sequence[pulumi.Resource]
                      ) -> remote.Command:
        return remote.Command(
            f"{self._name}-capture-stop-{vm.name}",
            connection=self._connection(vm),
            create=self.plan.capture_stop(),
            triggers=[self._args.run_id],
            opts=self._opts([self.ready[vm.name], *traffic]))

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
            opts=self._opts(stops))


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
