"""Bring a scenario's evidence back from the VMs over SFTP and judge it.

Each remote file (the collector's pcap, the proxy's, the traffic log) lands in
``evidence/<stack>/<scenario>/<name>``; then ``vtaplab.judge.verdict.build_verdict`` computes
``verdict.json`` from what arrived. A file that is not there is a fact, not a crash: a
missing collector capture gives ``not-delivered`` with the reason; a VM that cannot be
reached (or whose host key is wrong), or a file that is there but cannot be read, gives
``error`` with the reason — nobody looked, so nothing is claimed.

    python -m vtaplab fetch --stack b2 --scenario b2 --user azureuser \\
        --key-file ~/.ssh/vtaplab --known-hosts hosts.json \\
        --file collector.pcap=20.0.0.1:/var/lib/vtaplab/b2/collector.pcap \\
        --file traffic.log=20.0.0.2:/var/lib/vtaplab/b2/traffic.log

prints one small JSON line (outcome and evidence paths; no secrets) for stack outputs. The
private key may instead come as PEM text in the environment variable ``VTAPLAB_SSH_KEY``.

msp: ``--tenant t1=1001 --tenant t2=1002 ...`` (each tenant's name and the VNI its proxy
stamps) with one ``--file traffic-<tenant>.log=...`` per tenant. The tenant logs are also
merged (renumbered, tenant by tenant) into ``traffic.log`` for the verdict's loss figures, and
the verdict carries the per-tenant table, judged (``vtaplab.judge.outcome``) as the emulator's
is: tenants that can't be told apart fail it, a tenant's requests missing degrade it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vtaplab import facts
from vtaplab.azure.run import COLLECTOR_PCAP, TRAFFIC_LOG, traffic_log_name
from vtaplab.azure.ssh import RemoteFileMissing, SshError, SshSession
from vtaplab.judge.verdict import (
    TRAFFIC_LOG_HEADER,
    TrafficLogError,
    build_verdict,
    parse_traffic_log,
    write_verdict,
)

KEY_ENV = "VTAPLAB_SSH_KEY"


@dataclass(frozen=True)
class RemoteFile:
    """``name`` is the local file name in the evidence directory (``collector.pcap``,
    ``proxy.pcap``, ``traffic.log``...); ``host`` the SSH host that has it at ``path``."""

    name: str
    host: str
    path: str

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"evidence file name {self.name!r}: accepted: a plain file "
                             "name such as collector.pcap")
        if not self.path.startswith("/"):
            raise ValueError(f"remote path {self.path!r} for {self.name}: accepted: an "
                             "absolute path")


Connect = Callable[[str], SshSession]


def fetch_scenario(*, stack: str, scenario: str, files: Sequence[RemoteFile],
                   connect: Connect, root: Path | None = None,
                   evidence_base: str = "evidence",
                   tenants: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Fetch ``files`` into ``<root>/<evidence_base>/<stack>/<scenario>/``, write and return
    the verdict (with ``fetched`` and, where something was missing, ``reason``/``missing``).
    ``tenants`` (msp: name -> VNI): judge them apart from ``traffic-<name>.log`` each."""
    from vtaplab.judge.outcome import settle
    from vtaplab.judge.verdict import hop_figures, merged_hop

    if scenario not in facts.SCENARIOS:
        raise ValueError(f"scenario {scenario!r}: accepted: {', '.join(facts.SCENARIOS)}")
    root = (root or Path.cwd()).resolve()
    out_dir = root / evidence_base / stack / scenario
    out_dir.mkdir(parents=True, exist_ok=True)
    sessions: dict[str, SshSession] = {}
    unreachable: dict[str, str] = {}
    fetched: dict[str, dict[str, Any]] = {}
    missing: dict[str, str] = {}
    unreadable: set[str] = set()
    try:
        for item in files:
            if item.host in unreachable:
                missing[item.name] = unreachable[item.host]
                continue
            try:
                session = sessions.get(item.host)
                if session is None:
                    session = connect(item.host).connect()
                    sessions[item.host] = session
            except SshError as exc:
                unreachable[item.host] = str(exc)
                missing[item.name] = str(exc)
                continue
            try:
                got = session.fetch(item.path, out_dir / item.name)
            except RemoteFileMissing as exc:
                missing[item.name] = str(exc)
                (out_dir / item.name).unlink(missing_ok=True)  # no stale copy from a past run
                continue
            except SshError as exc:
                missing[item.name] = str(exc)
                unreadable.add(item.name)  # there, perhaps, but not read: claim nothing
                (out_dir / item.name).unlink(missing_ok=True)
                continue
            fetched[item.name] = {"host": item.host, "remote": item.path, "bytes": got.size,
                                  "sha256": got.sha256}
    finally:
        for session in sessions.values():
            session.close()

    present = [out_dir / name for name in fetched]
    collector = out_dir / COLLECTOR_PCAP if COLLECTOR_PCAP in fetched else None
    traffic = out_dir / TRAFFIC_LOG if TRAFFIC_LOG in fetched else None
    sent: dict[str, int] = {}
    if tenants:
        logs = {t: out_dir / tenant_log_name(t) for t in tenants
                if tenant_log_name(t) in fetched}
        sent = _tenant_sent(logs)
        if traffic is None and logs:
            traffic = merge_traffic_logs(list(logs.values()), out_dir / TRAFFIC_LOG)
            present.append(traffic)
    wanted_collector = any(f.name == COLLECTOR_PCAP for f in files)
    problem = missing_collector = None
    if wanted_collector and collector is None:
        why = "no collector capture: " + missing.get(COLLECTOR_PCAP,
                                                     "collector.pcap was not fetched")
        collector_host = next(f.host for f in files if f.name == COLLECTOR_PCAP)
        if collector_host in unreachable or COLLECTOR_PCAP in unreadable:
            problem = why  # nobody could look: claim nothing
        else:
            missing_collector = why
    # The proxies' captures, side by side on the path: one hop between clients and collector.
    proxy_rows = [hop_figures(name.removesuffix(".pcap"), out_dir / name) for name in fetched
                  if name != COLLECTOR_PCAP and name.endswith(".pcap")]
    hops = [merged_hop("proxies", proxy_rows)] if proxy_rows else []
    verdict = build_verdict(scenario=scenario, collector_pcap=collector, files=present,
                            traffic_log=traffic, root=root, hops=hops,
                            tenants=dict(tenants) if tenants else None,
                            tenants_sent=sent if tenants else None)
    verdict["fetched"] = fetched
    if missing:
        verdict["missing"] = missing
    if problem is not None or missing_collector is not None:
        if problem is not None:
            verdict["evidence_error"] = problem
        else:
            verdict["missing_capture"] = missing_collector
        settle(verdict)
    write_verdict(out_dir, verdict)
    return verdict


def tenant_log_name(tenant: str) -> str:
    """A tenant's traffic log in the evidence directory (the run plan's name for it)."""
    return traffic_log_name(tenant)


def _tenant_sent(logs: Mapping[str, Path]) -> dict[str, int]:
    """Requests each tenant's client sent (a log that can't be read: not known, left out)."""
    sent: dict[str, int] = {}
    for tenant, path in logs.items():
        try:
            sent[tenant] = int(parse_traffic_log(path)["requests"])
        except TrafficLogError:
            continue
    return sent


def merge_traffic_logs(parts: Sequence[Path], out: Path) -> Path:
    """One ``# vtap-traffic v1`` log from several, renumbered, part by part (a part without
    the header is left out: the verdict reports the tenant's log separately)."""
    lines = [TRAFFIC_LOG_HEADER]
    for part in parts:
        rows = Path(part).read_text(encoding="utf-8", errors="replace").splitlines()
        if not rows or rows[0].strip() != TRAFFIC_LOG_HEADER:
            continue
        for row in rows[1:]:
            if row.strip() and not row.startswith("#"):
                lines.append("\t".join([str(len(lines)), *row.split("\t")[1:]]))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def outputs_summary(verdict: dict[str, Any], *, stack: str, root: Path | None = None,
                    evidence_base: str = "evidence") -> dict[str, Any]:
    """The small JSON a pulumi-command prints for stack outputs (msp: per tenant, too)."""
    scenario = verdict["scenario"]
    summary = {"scenario": scenario, "outcome": verdict["outcome"],
               "matches_expected": verdict.get("matches_expected"),
               "reason": verdict.get("reason"),
               "verdict": f"{evidence_base}/{stack}/{scenario}/verdict.json",
               "files": verdict.get("files", [])}
    if "tenant_table" in verdict:
        summary["tenants_told_apart"] = verdict.get("tenants_told_apart")
        summary["tenants"] = [{k: row.get(k) for k in ("tenant", "vni", "sent", "requests",
                                                        "responses", "delivered")}
                              for row in verdict["tenant_table"]]
    return summary


def _parse_file(spec: str) -> RemoteFile:
    name, sep, rest = spec.partition("=")
    host, sep2, path = rest.partition(":")
    if not sep or not sep2 or not host:
        raise ValueError(f"--file {spec!r}: accepted: NAME=HOST:/ABSOLUTE/PATH")
    return RemoteFile(name, host, path)


def _parse_tenants(specs: Sequence[str]) -> dict[str, int] | None:
    tenants: dict[str, int] = {}
    for spec in specs:
        name, sep, vni = spec.partition("=")
        if (not sep or not name or name in tenants or not vni.isdigit()
                or not 1 <= int(vni) <= facts.VNI_MAX):
            raise ValueError(f"--tenant {spec!r}: accepted: NAME=VNI, a new name and a VNI "
                             f"1..{facts.VNI_MAX}")
        try:
            tenant_log_name(name)  # a name a file can carry
        except ValueError as exc:
            raise ValueError(f"--tenant {spec!r}: {exc}") from None
        tenants[name] = int(vni)
    if len(set(tenants.values())) != len(tenants):
        raise ValueError(f"--tenant: VNIs {sorted(tenants.values())}; accepted: one VNI per "
                         "tenant")
    return tenants or None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtaplab fetch",
                                     description="fetch a scenario's evidence over SFTP and "
                                                 "write its verdict")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--user", default="azureuser")
    parser.add_argument("--port", type=int, default=22)
    parser.add_argument("--key-file", help=f"private key file (else PEM text in ${KEY_ENV})")
    parser.add_argument("--known-hosts",
                        help='JSON file {"HOST": "ssh-ed25519 AAAA..."}')
    parser.add_argument("--known-host", action="append", default=[],
                        metavar="HOST=KEYLINE",
                        help="a pinned host key (public), e.g. '20.0.0.1=ssh-ed25519 AAAA...'")
    parser.add_argument("--file", action="append", default=[], metavar="NAME=HOST:PATH")
    parser.add_argument("--tenant", action="append", default=[], metavar="NAME=VNI",
                        help="msp: a tenant and the VNI its proxy stamps, e.g. t1=1001")
    parser.add_argument("--connect-seconds", type=float, default=300.0)
    args = parser.parse_args(argv)
    try:
        files = [_parse_file(s) for s in args.file]
        if not files:
            raise ValueError("--file: none given; accepted: NAME=HOST:/ABSOLUTE/PATH")
        key: str | None = args.key_file or os.environ.get(KEY_ENV)
        if not key:
            raise ValueError(f"--key-file: none given and ${KEY_ENV} is empty")
        known: dict[str, str] = {}
        if args.known_hosts:
            try:
                known.update(json.loads(Path(args.known_hosts).read_text()))
            except (OSError, json.JSONDecodeError, TypeError, ValueError) as exc:
                raise ValueError(f"--known-hosts {args.known_hosts}: {exc}; accepted: a JSON "
                                 'object {"HOST": "ssh-ed25519 AAAA..."}') from None
        for spec in args.known_host:
            host, sep, line = spec.partition("=")
            if not sep or not host or len(line.split()) < 2:
                raise ValueError(f"--known-host {spec[:60]!r}: accepted: HOST=TYPE BASE64")
            known[host] = line
        if not known:
            raise ValueError("no pinned host key: give --known-host HOST=KEYLINE or "
                             "--known-hosts FILE (the lab never trusts a host on first use)")

        def connect(host: str) -> SshSession:
            return SshSession(host, username=args.user, private_key=key, known_hosts=known,
                              port=args.port, connect_total_seconds=args.connect_seconds)

        verdict = fetch_scenario(stack=args.stack, scenario=args.scenario, files=files,
                                 connect=connect, tenants=_parse_tenants(args.tenant))
    except (ValueError, SshError) as exc:
        print(f"vtaplab fetch: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(outputs_summary(verdict, stack=args.stack)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
