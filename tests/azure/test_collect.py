"""``python -m vtaplab evidence`` against "VMs" that are real OpenSSH servers on loopback.

The run plan is the program's own: the ``run_plan`` stack output of b2 (and msp) built under
Pulumi's mocks, its VMs moved onto loopback sshd (collector, proxy, vm-client), each on its
own 127.x address with its own pinned host key. They run the real commands ``pulumi up``
sends (``vtaplab.azure.run``): the real ``vtap-capture.sh --unit`` and ``vtap-traffic.sh``
from ``cloudinit/``. What is stood in for: ``systemd-run``/``systemctl`` (this machine's PID
1 is not systemd; the stand-ins of tests/helpers/systemd.py), ``sudo`` (the sessions are root
already; real sudo would reset PATH), and the vTAP itself: "vm-src" is an HTTP server on a
127.x address that, for each request it answers, sends that exchange as VXLAN (UDP/4789) to
127.0.0.1, where the captures listen. The verdict is then computed by the project's decoder
from what was captured.

msp: the same with the stack's three tenants (a collector, and per tenant a proxy and a
client sshd, and a vm-src whose "vTAP" stamps that tenant's VNI, as its proxy would); the
files fetched are the ones ``pulumi up``'s fetch command names in the msp graph. Stood in for
as well: every capture here listens on the one loopback, so each proxy's capture also holds
the other tenants' packets; the verdict and the tenant table are the collector's.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import re
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers.sshd import SSHD, Sshd, free_port
from helpers.systemd import SYSTEMCTL, SYSTEMD_RUN

from vtaplab import PROJECT_ROOT, plan
from vtaplab.azure import collect, ssh
from vtaplab.bench import pcapgen

REPO = PROJECT_ROOT
pytestmark = pytest.mark.skipif(
    not (os.path.exists(SSHD) and os.geteuid() == 0 and shutil.which("tcpdump")
         and shutil.which("curl")),
    reason="needs root, openssh-server, tcpdump and curl")
BIG = 20_000
VNI = 4242


class VmSshd(Sshd):
    """An sshd on its own loopback address whose sessions see the stand-in tools first."""

    def __init__(self, tmp: Path, client_public: str, host_key: ssh.HostKeyPair,
                 address: str, port: int, tools: Path) -> None:
        super().__init__(tmp, client_public, host_key)
        self.address, self.port = address, port
        state = tmp / "systemd-state"
        state.mkdir()
        text = self.config.read_text().splitlines()
        text = [f"ListenAddress {address}:{port}" if line.startswith("ListenAddress") else line
                for line in text]
        text.append(f"SetEnv PATH={tools}:/usr/sbin:/usr/bin:/sbin:/bin STUB_STATE={state}")
        self.config.write_text("\n".join(text) + "\n")

    def wait_listening(self, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"sshd not listening:\n{self.log()}")


def tools_dir(tmp: Path) -> Path:
    """What cloud-init installs in /usr/local/sbin (the real scripts) plus the stand-ins."""
    import sys

    tools = tmp / "tools"
    tools.mkdir()
    for name in ("vtap-capture.sh", "vtap-traffic.sh"):
        (tools / name).symlink_to(REPO / "cloudinit" / name)
    for name, text in (("systemd-run", SYSTEMD_RUN), ("systemctl", SYSTEMCTL)):
        (tools / name).write_text(text.replace("PYTHON", sys.executable, 1))
    (tools / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for path in tools.iterdir():
        if not path.is_symlink():
            path.chmod(0o755)
    return tools


class MirroringServer:
    """vm-src's nginx plus the vTAP: each answered request is also sent, as the VXLAN the
    collector would receive, to 127.0.0.1:4789."""

    def __init__(self, address: str, vni: int = VNI) -> None:
        self.sent = 0
        outer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        owner = self
        counter = iter(range(40000, 60000))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = {"/": b"<p>vtaplab</p>\n", "/big.bin": b"v" * BIG}.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                exchange = pcapgen.HttpExchange(
                    client_port=next(counter),
                    messages=[(pcapgen.http_get(self.path), pcapgen.http_ok(body))])
                for frame in exchange.frames():
                    outer.sendto(pcapgen.vxlan(vni, frame), ("127.0.0.1", 4789))
                    owner.sent += 1

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 80), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._outer = outer

    def __enter__(self) -> MirroringServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._outer.close()


def _loopback_base() -> str:
    return f"127.{random.randint(64, 250)}.{random.randint(1, 250)}"


def _operator_key(tmp_path: Path) -> tuple[ssh.HostKeyPair, Path]:
    client_key = ssh.generate_host_key()
    key_file = tmp_path / "operator_key"
    key_file.write_text(client_key.private_pem)
    key_file.chmod(0o600)
    return client_key, key_file


def _start_vms(tmp_path: Path, client_key: ssh.HostKeyPair, addresses: dict[str, str],
               roles: tuple[str, ...], port: int, servers: list[VmSshd]
               ) -> dict[str, ssh.HostKeyPair]:
    """One sshd per role (appended to ``servers`` as it starts, for the caller to stop)."""
    tools = tools_dir(tmp_path)
    host_keys = {}
    for role in roles:
        host_keys[role] = ssh.host_key_for(os.urandom(16), role)
        directory = tmp_path / role
        directory.mkdir()
        server = VmSshd(directory, client_key.public_line, host_keys[role],
                        addresses[role], port, tools)
        servers.append(server)
        server.start()
    for server in servers:
        server.wait_listening()
    return host_keys


def loopback_plan(plan: dict, addresses: dict[str, str], keys: dict[str, ssh.HostKeyPair],
                  targets: dict[str | None, str]) -> dict:
    """The program's own run plan (its ``run_plan`` stack output under mocks) with its VMs
    moved onto the loopback sshd: address, user and host key by role (``t1.proxy`` is the
    sshd ``t1-proxy``), each client's target by tenant (None: the one vm_src)."""
    plan = copy.deepcopy(plan)
    for vm in plan["vms"]:
        role = vm["role"].replace(".", "-")
        vm["host"], vm["user"] = addresses[role], "root"
        vm["host_key"] = (keys[role] if role in keys else ssh.generate_host_key()).public_line
    for step in plan["traffic"]:
        step["target_ip"] = targets[step.get("tenant")]
    return plan


@pytest.fixture
def lab(tmp_path: Path, run_of):
    """Stack b2's run plan, its VMs on loopback sshd."""
    base = _loopback_base()
    addresses = {role: f"{base}.{n}" for n, role in
                 enumerate(("collector", "proxy", "vm_client", "vm_src"), start=10)}
    client_key, key_file = _operator_key(tmp_path)
    port = free_port()
    servers: list[VmSshd] = []
    try:
        host_keys = _start_vms(tmp_path, client_key, addresses,
                               ("collector", "proxy", "vm_client"), port, servers)
        plan = loopback_plan(run_of("b2").outputs["scenarios"]["b2"]["run_plan"], addresses,
                             host_keys, {None: addresses["vm_src"]})
        outputs = {"scenarios": {"b2": {"run_plan": plan},
                                 "r1": {"result": {"outcome": None}}}}
        outputs_file = tmp_path / "outputs.json"
        outputs_file.write_text(json.dumps(outputs))
        yield {"port": port, "key": key_file, "outputs": outputs_file, "data": outputs,
               "addresses": addresses, "host_keys": host_keys}
    finally:
        for server in servers:
            server.stop()
        _cleanup_remote_dir()


MSP_TENANTS = (1, 2, 3)  # the committed msp stack's (mspTenants default)


@pytest.fixture
def msp_lab(tmp_path: Path, run_of):
    """Stack msp's run plan (every tenant), its VMs on loopback sshd."""
    base = _loopback_base()
    roles = ["collector"] + [f"t{t}-{r}" for t in MSP_TENANTS for r in ("proxy", "vm_client")]
    addresses = {role: f"{base}.{n}" for n, role in enumerate(
        [*roles, *[f"t{t}-vm_src" for t in MSP_TENANTS]], start=10)}
    client_key, key_file = _operator_key(tmp_path)
    port = free_port()
    servers: list[VmSshd] = []
    try:
        keys = _start_vms(tmp_path, client_key, addresses, tuple(roles), port, servers)
        # The same address plan in every tenant's VNet: only the VMs (here each tenant's
        # loopback stand-in of its own 10.30.1.4) tell the tenants apart.
        plan = loopback_plan(run_of("msp").outputs["scenarios"]["msp"]["run_plan"], addresses,
                             keys, {f"t{t}": addresses[f"t{t}-vm_src"] for t in MSP_TENANTS})
        assert len(plan["tenants"]) == len(MSP_TENANTS)
        outputs = {"scenarios": {"msp": {"pls_alias": "alias", "run_plan": plan,
                                         "result": {"outcome": None}}}}
        outputs_file = tmp_path / "outputs.json"
        outputs_file.write_text(json.dumps(outputs))
        yield {"port": port, "key": key_file, "outputs": outputs_file,
               "addresses": addresses}
    finally:
        for server in servers:
            server.stop()
        _cleanup_remote_dir("msp")


def _cleanup_remote_dir(scenario: str = "b2") -> None:
    # The "VMs" share this machine's /var/lib/vtaplab/<scenario>: remove what the run left.
    remote = Path("/var/lib/vtaplab") / scenario
    names = ["collector.pcap", "proxy.pcap", "proxy2.pcap",
             *[f"proxy-t{t}.pcap" for t in MSP_TENANTS]]
    names += [f"{n}.log" for n in names]
    names += ["traffic.log", *[f"traffic-t{t}.log" for t in MSP_TENANTS]]
    for name in names:
        (remote / name).unlink(missing_ok=True)
    for directory in (remote, remote.parent):
        try:
            directory.rmdir()
        except OSError:
            pass


def run_cli(lab: dict, tmp_path: Path, *extra: str, stack: str = "b2") -> int:
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        return collect.main([stack, "--outputs", str(lab["outputs"]), "--key-file",
                             str(lab["key"]), "--port", str(lab["port"]), "--requests", "3",
                             "--capture-seconds", "30", "--connect-seconds", "10", *extra])
    finally:
        os.chdir(cwd)


def test_evidence_reruns_capture_traffic_fetch_and_decodes(lab, tmp_path, capsys):
    if Path("/var/lib/vtaplab/b2").exists():
        pytest.skip("/var/lib/vtaplab/b2 exists on this machine: not ours to overwrite")
    with MirroringServer(lab["addresses"]["vm_src"]) as mirror:
        rc = run_cli(lab, tmp_path, "--json")
    out = capsys.readouterr()
    assert rc == 0, out.err
    [summary] = json.loads(out.out)
    assert summary["scenario"] == "b2" and summary["outcome"] == "delivered", summary
    assert summary["matches_expected"] is True
    evidence_dir = tmp_path / "evidence" / "b2" / "b2"
    verdict = json.loads((evidence_dir / "verdict.json").read_text())
    assert verdict["outcome"] == "delivered"
    assert VNI in verdict["vnis"]
    assert "GET /" in verdict["inner_http"]["requests"]
    assert "HTTP/1.1 200 OK" in verdict["inner_http"]["responses"]
    assert set(verdict["fetched"]) == {"collector.pcap", "proxy.pcap", "traffic.log"}
    # the traffic really ran: 3 rounds of / and /big.bin, every one a 200 of the right size
    lines = (evidence_dir / "traffic.log").read_text().splitlines()
    assert lines[0] == "# vtap-traffic v1" and len(lines) == 7
    rows = [line.split("\t") for line in lines[1:]]
    assert {r[2] for r in rows} == {"200"}
    assert sorted({int(r[3]) for r in rows}) == [15, BIG]
    assert mirror.sent > 0
    # nothing of the key went to the terminal; the captures were stopped
    assert "PRIVATE" not in out.out + out.err
    assert "capture stop on collector" in out.err


def vm_of(plan: dict, role: str) -> dict:
    return next(vm for vm in plan["vms"] if vm["role"] == role)


def test_a_vm_with_another_host_key_is_refused(lab, tmp_path, capsys):
    data = json.loads(lab["outputs"].read_text())
    vm_of(data["scenarios"]["b2"]["run_plan"], "collector")["host_key"] = \
        ssh.generate_host_key().public_line
    lab["outputs"].write_text(json.dumps(data))
    rc = run_cli(lab, tmp_path)
    err = capsys.readouterr().err
    assert rc == 1
    assert "host key mismatch" in err and "refusing" in err
    assert not (tmp_path / "evidence").exists()  # nothing was run, nothing claimed


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: vm_of(d["scenarios"]["b2"]["run_plan"], "proxy").pop("host_key"),
     "no pinned host key for proxy"),
    (lambda d: vm_of(d["scenarios"]["b2"]["run_plan"], "vm_client").update(host=""),
     ".host: ''; accepted: non-empty text"),
    (lambda d: d["scenarios"]["b2"]["run_plan"]["captures"].append(
        {"vm": "nowhere", "file": "x.pcap"}), "VM 'nowhere' is not in b2.run_plan.vms"),
    (lambda d: d.pop("scenarios"), "no 'scenarios' map"),
])
def test_bad_outputs_are_one_line(lab, tmp_path, capsys, mutate, needle):
    data = json.loads(lab["outputs"].read_text())
    mutate(data)
    lab["outputs"].write_text(json.dumps(data))
    assert run_cli(lab, tmp_path) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_a_scenario_without_traffic_is_named(lab, tmp_path, capsys):
    assert run_cli(lab, tmp_path, "--scenario", "r1") == 2
    assert "runs no traffic" in capsys.readouterr().err
    assert run_cli(lab, tmp_path, "--scenario", "zz") == 2
    assert "accepted: b2, r1" in capsys.readouterr().err


def test_without_the_cli_or_a_file_says_what_to_do(monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert collect.main(["b2"]) == 2
    err = capsys.readouterr().err
    assert "pulumi CLI is not on PATH" in err and "--outputs FILE" in err


def graph_fetch_files(resources: list[dict], name: str) -> list[str]:
    """The evidence file names in the ``--file NAME=HOST:PATH`` arguments of a fetch command."""
    create = next(r for r in resources if r["name"] == name)["inputs"]["create"]
    return [spec.split("=", 1)[0] for spec in re.findall(r"--file '?([^' ]+)", create)]


def test_evidence_drives_msp_one_capture_every_tenant(msp_lab, tmp_path, capsys, run_of):
    if Path("/var/lib/vtaplab/msp").exists():
        pytest.skip("/var/lib/vtaplab/msp exists on this machine: not ours to overwrite")
    vnis = {f"t{t}": plan.tenant_vni(t) for t in MSP_TENANTS}
    with contextlib.ExitStack() as stack:
        mirrors = [stack.enter_context(MirroringServer(msp_lab["addresses"][f"{t}-vm_src"],
                                                       vni)) for t, vni in vnis.items()]
        rc = run_cli(msp_lab, tmp_path, "--json", stack="lab")
    out = capsys.readouterr()
    assert rc == 0, out.err
    [summary] = json.loads(out.out)
    assert summary["scenario"] == "msp" and summary["outcome"] == "delivered", summary
    assert summary["tenants_told_apart"] is True
    assert {row["tenant"]: row["vni"] for row in summary["tenants"]} == vnis
    assert all(row["sent"] == 6 and row["delivered"] for row in summary["tenants"]), summary
    evidence_dir = tmp_path / "evidence" / "lab" / "msp"
    verdict = json.loads((evidence_dir / "verdict.json").read_text())
    # the files pulumi up's fetch names (the msp graph under mocks), not another set
    fetch = graph_fetch_files(run_of("msp").resources, "msp-run-fetch")
    assert set(verdict["fetched"]) == set(fetch) == {
        "collector.pcap", *[f"proxy-t{t}.pcap" for t in MSP_TENANTS],
        *[f"traffic-t{t}.log" for t in MSP_TENANTS]}
    assert set(vnis.values()) <= set(verdict["vnis"])
    rows = {row["tenant"]: row for row in verdict["tenant_table"]}
    assert {row["requests"] for row in rows.values()} == {6}, rows
    # each tenant's client really ran its own traffic: 3 rounds of / and /big.bin, all 200
    for tenant in vnis:
        lines = (evidence_dir / f"traffic-{tenant}.log").read_text().splitlines()
        assert lines[0] == "# vtap-traffic v1" and len(lines) == 7
        assert {line.split("\t")[2] for line in lines[1:]} == {"200"}
    # the merged log the verdict's loss figures come from: every tenant, 6 requests each
    assert len((evidence_dir / "traffic.log").read_text().splitlines()) == \
        1 + 6 * len(MSP_TENANTS)
    assert all(m.sent > 0 for m in mirrors)
    # one collector capture, started once and stopped once, around both tenants' traffic
    assert out.err.count("capture start on collector") == 1
    assert out.err.count("capture stop on collector") == 1
    assert all(f"from t{t}.vm_client" in out.err for t in MSP_TENANTS)
    assert "PRIVATE" not in out.out + out.err


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: vm_of(d["run_plan"], "t2.proxy").pop("host_key"),
     "no pinned host key for t2.proxy"),
    (lambda d: d["run_plan"]["tenants"].update(t2=d["run_plan"]["tenants"]["t1"]), "repeats"),
    (lambda d: d["run_plan"].update(traffic=[]), "traffic: []; accepted: a non-empty list"),
])
def test_bad_msp_outputs_are_one_line(msp_lab, tmp_path, capsys, mutate, needle):
    data = json.loads(msp_lab["outputs"].read_text())
    mutate(data["scenarios"]["msp"])
    msp_lab["outputs"].write_text(json.dumps(data))
    assert run_cli(msp_lab, tmp_path, stack="lab") == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "evidence").exists()
