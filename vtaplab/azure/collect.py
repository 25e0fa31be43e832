"""``python -m vtaplab evidence STACK [--scenario S]``: run capture + traffic again on a deployed
stack over SSH, fetch the evidence and write the verdict.

It reads the stack's outputs (``pulumi stack output --json -s STACK``, or ``--outputs FILE``
holding that JSON), logs in with the operator's key to the VMs (host keys pinned from the
outputs' ``host_keys``: a VM that shows another key is refused), and sends the same commands
``pulumi up`` sends (``vtaplab.azure.run``): capture start on the collector and the proxies,
the traffic from vm-client to vm-src, capture stop; then ``vtaplab.azure.fetch`` brings the
files into ``evidence/<stack>/<scenario>/`` and the verdict is computed from them.

msp (``scenarios.msp.tenants``): as ``pulumi up`` runs it (``components/evidence_run.py``):
one collector capture, a capture on every tenant's proxy (``proxy.pcap``, ``proxy2.pcap``...
in tenant order), every tenant's client runs its traffic to its own vm-src into
``traffic-<tenant>.log``, and the fetch judges the tenants apart by the VNI each proxy stamps.

Exit status: 0 when every verdict is what the scenario expects (or the scenario has no
expectation), 1 when a verdict differs or a step failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtaplab.azure import run as runsteps
from vtaplab.azure.fetch import RemoteFile, fetch_scenario, outputs_summary
from vtaplab.azure.ssh import SshError, SshSession

KEY_FALLBACKS = ("~/.ssh/id_ed25519", "~/.ssh/id_rsa")


class EvidenceError(ValueError):
    """Bad input: one line naming what and what is accepted."""


@dataclass(frozen=True)
class Host:
    role: str  # "collector", "proxy", "proxy2", "vm_client"
    address: str
    user: str
    host_key: str


@dataclass(frozen=True)
class Client:
    """One traffic step: ``tenant`` None for the single client (``traffic.log``)."""

    host: Host
    target_ip: str
    tenant: str | None = None

    @property
    def log_name(self) -> str:
        return runsteps.traffic_log_name(self.tenant)


@dataclass
class ScenarioHosts:
    scenario: str
    collector: Host
    clients: list[Client]
    proxies: list[Host] = field(default_factory=list)
    tenants: dict[str, int] = field(default_factory=dict)
    """msp: tenant name (``t1``...) -> the VNI its proxy stamps; empty otherwise."""


# --- reading the outputs --------------------------------------------------------------------

def read_outputs(stack: str, outputs_file: Path | None,
                 run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
                 ) -> dict[str, Any]:
    if outputs_file is not None:
        try:
            data = json.loads(outputs_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EvidenceError(f"--outputs {outputs_file}: {exc}; accepted: the JSON of "
                                f"pulumi stack output --json -s {stack}") from None
    else:
        if shutil.which("pulumi") is None:
            raise EvidenceError(
                "the pulumi CLI is not on PATH; accepted: --outputs FILE with the JSON of "
                f"pulumi stack output --json -s {stack} (run where the CLI is)")
        done = run(["pulumi", "stack", "output", "--json", "-s", stack], capture_output=True,
                   text=True, timeout=120, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no message"]
            raise EvidenceError(f"pulumi stack output -s {stack}: {tail[0]}")
        data = json.loads(done.stdout)
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), dict):
        raise EvidenceError(f"stack {stack}: its outputs have no 'scenarios' map; accepted: "
                            "the outputs of this project's program after pulumi up")
    return data


def _split_ssh(value: object, what: str) -> tuple[str, str]:
    if not isinstance(value, str) or "@" not in value:
        raise EvidenceError(f"{what}: {value!r} is not user@address (has the stack been "
                            "deployed?)")
    user, address = value.split("@", 1)
    if not user or not address:
        raise EvidenceError(f"{what}: {value!r} is not user@address")
    return user, address


def _hosts_of(out: Mapping[str, Any], where: str, keys: Mapping[str, Any]
              ) -> Callable[[str, Mapping[str, Any], str], Host]:
    def host(role: str, node: Mapping[str, Any], key_role: str) -> Host:
        if not isinstance(node, Mapping):
            raise EvidenceError(f"{where}.{role}: missing from the outputs")
        user, address = _split_ssh(node.get("ssh"), f"{where}.{role}.ssh")
        key = keys.get(key_role)
        if not key:
            raise EvidenceError(f"{where}: no pinned host key for {key_role} in the outputs' "
                                "host_keys; refusing to connect unpinned")
        return Host(role, address, user, key)
    return host


def _target(out: Mapping[str, Any], where: str) -> str:
    target = (out.get("vm_src") or {}).get("ip")
    if not target:
        raise EvidenceError(f"{where}: vm_src.ip missing from the outputs")
    return str(target)


def scenario_hosts(outputs: Mapping[str, Any], scenario: str) -> ScenarioHosts:
    """Where a traffic scenario's VMs are, from the stack outputs the program exports."""
    scenarios = outputs["scenarios"]
    if scenario not in scenarios:
        raise EvidenceError(f"--scenario {scenario!r}: not in this stack; accepted: "
                            f"{', '.join(scenarios)}")
    out = scenarios[scenario]
    if not _runs_traffic(out):
        raise EvidenceError(f"scenario {scenario!r} runs no traffic (an ARM attempt or a "
                            "shape this command does not drive); accepted: "
                            + ", ".join(traffic_scenarios(outputs)))
    if "tenants" in out:
        return _tenant_hosts(scenario, out)
    host = _hosts_of(out, scenario, out.get("host_keys") or {})
    proxies_out = out.get("proxies") or ([out["proxy"]] if out.get("proxy") else [])
    roles = runsteps.captured_files(len(proxies_out))[1:]
    proxies = [host(role.removesuffix(".pcap"), p, role.removesuffix(".pcap"))
               for role, p in zip(roles, proxies_out, strict=True)]
    target = _target(out, scenario)
    return ScenarioHosts(scenario, host("collector", out["collector"], "collector"),
                         [Client(host("vm_client", out["vm_client"], "vm_client"), target)],
                         proxies)


def _tenant_hosts(scenario: str, out: Mapping[str, Any]) -> ScenarioHosts:
    """msp: the one collector, and per tenant its client, its vm-src and its proxy (host keys
    from that tenant's ``host_keys``; the collector's is in every tenant's)."""
    rows = out["tenants"]
    if not isinstance(rows, list) or not rows:
        raise EvidenceError(f"{scenario}.tenants: {rows!r}; accepted: a non-empty list (the "
                            "outputs of this project's program after pulumi up)")
    clients: list[Client] = []
    proxies: list[Host] = []
    tenants: dict[str, int] = {}
    collector: Host | None = None
    proxy_files = runsteps.captured_files(len(rows))[1:]
    for index, (row, proxy_file) in enumerate(zip(rows, proxy_files, strict=True)):
        where = f"{scenario}.tenants[{index}]"
        number, vni = row.get("tenant"), row.get("vni")
        if not isinstance(number, int) or not isinstance(vni, int) or isinstance(vni, bool):
            raise EvidenceError(f"{where}: tenant {number!r}, vni {vni!r}; accepted: integers")
        name = f"t{number}"
        if name in tenants or vni in tenants.values():
            raise EvidenceError(f"{where}: tenant {name} VNI {vni} repeats; accepted: one "
                                "tenant number and one VNI per tenant")
        tenants[name] = vni
        host = _hosts_of(row, where, row.get("host_keys") or {})
        if collector is None:
            collector = host("collector", out.get("collector") or {}, "collector")
        proxies.append(host(f"{name}.{proxy_file.removesuffix('.pcap')}",
                            row.get("proxy") or {}, "proxy"))
        clients.append(Client(host(f"{name}.vm_client", row.get("vm_client") or {},
                                   "vm_client"), _target(row, where), name))
    assert collector is not None
    return ScenarioHosts(scenario, collector, clients, proxies, tenants)


def _runs_traffic(out: object) -> bool:
    return isinstance(out, dict) and ("vm_client" in out or "tenants" in out)


def traffic_scenarios(outputs: Mapping[str, Any]) -> list[str]:
    return [s for s, o in outputs["scenarios"].items() if _runs_traffic(o)]


# --- the run --------------------------------------------------------------------------------

def run_scenario(stack: str, hosts: ScenarioHosts, *, key: str, port: int = 22,
                 capture_seconds: int = 60, requests: int = 20,
                 connect_seconds: float = 120.0, root: Path | None = None,
                 log: Callable[[str], None] = lambda _line: None) -> dict[str, Any]:
    """Capture, traffic, stop, fetch, verdict. Returns the fetch's outputs summary."""
    everyone = [hosts.collector, *hosts.proxies, *[c.host for c in hosts.clients]]
    known = {h.address: h.host_key for h in everyone}

    def connect(address: str) -> SshSession:
        user = next(h.user for h in everyone if h.address == address)
        return SshSession(address, username=user, private_key=key, known_hosts=known,
                          port=port, connect_total_seconds=connect_seconds)

    captured = list(zip([hosts.collector, *hosts.proxies],
                        runsteps.captured_files(len(hosts.proxies)), strict=True))
    sessions: dict[str, SshSession] = {}

    def session(h: Host) -> SshSession:
        if h.address not in sessions:
            sessions[h.address] = connect(h.address).connect()
        return sessions[h.address]

    started: list[Host] = []
    try:
        for h, file_name in captured:
            log(f"{hosts.scenario}: capture start on {h.role} ({h.address})")
            session(h).run(runsteps.capture_start(hosts.scenario, file_name, capture_seconds),
                           timeout=60, check=True)
            started.append(h)
        for client in hosts.clients:  # one after the other, all inside the one capture
            log(f"{hosts.scenario}: {requests} x 2 requests from {client.host.role} to "
                f"{client.target_ip}")
            session(client.host).run(
                runsteps.traffic(hosts.scenario, client.target_ip, requests,
                                 log_name=client.log_name),
                timeout=120 + requests * 2 * (runsteps.TRAFFIC_TIMEOUT + 1), check=True)
    finally:
        for h in started:  # always, so no capture runs on after a failed step
            log(f"{hosts.scenario}: capture stop on {h.role}")
            session(h).run(runsteps.capture_stop(hosts.scenario), timeout=60, check=False)
        for s in sessions.values():
            s.close()
    directory = runsteps.remote_dir(hosts.scenario)
    files = [RemoteFile(name, h.address, f"{directory}/{name}") for h, name in captured]
    files += [RemoteFile(c.log_name, c.host.address, f"{directory}/{c.log_name}")
              for c in hosts.clients]
    verdict = fetch_scenario(stack=stack, scenario=hosts.scenario, files=files,
                             connect=connect, root=root, tenants=hosts.tenants or None)
    return outputs_summary(verdict, stack=stack)


def _key_file(given: str | None) -> str:
    candidates = [given] if given else list(KEY_FALLBACKS)
    for candidate in candidates:
        path = Path(candidate).expanduser()
        if path.is_file():
            return str(path)
    raise EvidenceError(f"--key-file: none of {', '.join(candidates)} is a file; accepted: "
                        "the private key of the stack's sshPublicKey")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vtaplab evidence",
        description="re-run capture + traffic on a deployed stack over SSH (pinned host "
                    "keys), fetch the evidence and write the verdict")
    parser.add_argument("stack")
    parser.add_argument("--scenario", help="one scenario (default: every traffic scenario)")
    parser.add_argument("--outputs", type=Path,
                        help="the stack outputs as JSON (default: pulumi stack output --json)")
    parser.add_argument("--key-file", help="private key (default ~/.ssh/id_ed25519, id_rsa)")
    parser.add_argument("--port", type=int, default=22, help=argparse.SUPPRESS)
    parser.add_argument("--capture-seconds", type=int, default=60)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--connect-seconds", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON")
    args = parser.parse_args(list(argv))

    try:
        if not 10 <= args.capture_seconds <= 3600:
            raise EvidenceError(f"--capture-seconds {args.capture_seconds}: accepted: 10-3600")
        if not 1 <= args.requests <= 10000:
            raise EvidenceError(f"--requests {args.requests}: accepted: 1-10000")
        outputs = read_outputs(args.stack, args.outputs)
        names = [args.scenario] if args.scenario else traffic_scenarios(outputs)
        if not names:
            raise EvidenceError(f"stack {args.stack}: no scenario that runs traffic")
        plans = [scenario_hosts(outputs, name) for name in names]
        key = _key_file(args.key_file)
    except EvidenceError as exc:
        print(f"vtaplab evidence: {exc}", file=sys.stderr)
        return 2
    summaries: list[dict[str, Any]] = []
    failed = False
    for hosts in plans:
        try:
            summary = run_scenario(
                args.stack, hosts, key=key, port=args.port,
                capture_seconds=args.capture_seconds, requests=args.requests,
                connect_seconds=args.connect_seconds,
                log=lambda line: print(line, file=sys.stderr))
        except SshError as exc:
            print(f"vtaplab evidence: {hosts.scenario}: {exc}", file=sys.stderr)
            failed = True
            continue
        summaries.append(summary)
        failed |= summary.get("matches_expected") is False or summary["outcome"] == "error"
        if not args.json:
            expected = {True: "as expected", False: "NOT as expected", None: "no expectation"}
            print(f"{summary['scenario']}: {summary['outcome']} "
                  f"({expected[summary.get('matches_expected')]}) -> {summary['verdict']}"
                  + (f" — {summary['reason']}" if summary.get("reason") else ""))
    if args.json:
        print(json.dumps(summaries, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
