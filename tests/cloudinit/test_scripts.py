"""The VM scripts in cloudinit/: shellcheck, idempotence, and what they do to real packets.

Everything that touches the network runs in namespaces these tests create (per-run prefix,
deleted by name afterwards) or on their loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.netns import ns_run

from vtaplab import PROJECT_ROOT
from vtaplab.emulator.netns import Lab

REPO = PROJECT_ROOT
SCRIPTS = REPO / "cloudinit"
PROXY = SCRIPTS / "vtap-proxy.sh"
CAPTURE = SCRIPTS / "vtap-capture.sh"
TRAFFIC = SCRIPTS / "vtap-traffic.sh"

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root (network namespaces, firewall rules)")


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (./bootstrap.sh installs it)")
@pytest.mark.parametrize("script", [PROXY, CAPTURE, TRAFFIC], ids=lambda p: p.name)
def test_script_is_shellcheck_clean(script):
    proc = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout
    assert os.access(script, os.X_OK)
    assert "set -euo pipefail" in script.read_text()


def nft_table(ns: str, family: str) -> str:
    """The proxy's nft table of ``family`` or "", counters stripped."""
    nft = ns_run(ns, "nft", "list", "table", family, "vtaplab_proxy", check=False)
    return "" if nft.returncode else "\n".join(
        line.split(" counter")[0] for line in nft.stdout.splitlines())


def ruleset(ns: str) -> tuple[str, str, str]:
    """(the proxy's nft ip table, its iptables nat rules, its nft netdev table); "" if none."""
    ipt = ns_run(ns, "iptables", "-t", "nat", "-S").stdout
    nat = "\n".join(line for line in ipt.splitlines() if "VTAPLAB" in line)
    return nft_table(ns, "ip"), nat, nft_table(ns, "netdev")


NONE = ("", "", "")


def proxy_with_nic(lab: Lab) -> str:
    """A proxy namespace with one addressed NIC (10.30.4.5/24, via 10.30.4.1 to the PE's)."""
    ns, peer = lab.add_ns("prx"), lab.add_ns("gw")
    lab.add_veth(ns, lab.ifname("prx"), peer, lab.ifname("gw"))
    lab.add_addr(ns, lab.ifname("prx"), "10.30.4.5/24")
    lab.up(ns, lab.ifname("prx"))
    lab.add_route(ns, "10.30.3.0/24", "10.30.4.1")
    return ns


# --- vtap-proxy.sh ------------------------------------------------------------------------------
@needs_root
@pytest.mark.parametrize("mode", ["netdev", "stateless", "conntrack"])
def test_proxy_apply_twice_leaves_one_set_of_rules(lab, mode):
    ns = proxy_with_nic(lab)
    apply = [str(PROXY), "apply", "--mode", mode, "--target", "10.30.3.4"]
    ns_run(ns, *apply)
    once = ruleset(ns)
    ns_run(ns, *apply)
    assert ruleset(ns) == once
    table, nat, netdev = once
    if mode == "netdev":
        # Hooked on the NIC, for the host's address, out to the route's next hop.
        assert table == "" and nat == ""
        assert f'hook ingress device "{lab.ifname("prx")}"' in netdev, netdev
        assert netdev.count("ip daddr 10.30.4.5 ") == 2, netdev
        assert netdev.count(f'ip daddr set 10.30.3.4 fwd ip to 10.30.4.1 device '
                            f'"{lab.ifname("prx")}"') == 2, netdev
        assert "frag-off" in netdev
    elif mode == "stateless":
        assert table.count("ip daddr set 10.30.3.4") == 2      # datagrams + later fragments
        assert "notrack" in table and "frag-off" in table
        assert nat == "" and netdev == ""
    else:
        assert table == "" and netdev == ""
        assert nat.count("-j VTAPLAB_PROXY") == 1
        assert nat.count("--to-destination 10.30.3.4") == 1
    assert ns_run(ns, str(PROXY), "status").stdout.count(f"mode={mode}") == 1
    for key in ("ip_forward",):
        assert ns_run(ns, "cat", f"/proc/sys/net/ipv4/{key}").stdout.strip() == "1"
    for dev in ("all", "default", "lo"):
        for key, want in (("rp_filter", "0"), ("send_redirects", "0")):
            path = f"/proc/sys/net/ipv4/conf/{dev}/{key}"
            assert ns_run(ns, "cat", path).stdout.strip() == want, path


@needs_root
def test_proxy_mode_switch_and_remove(lab):
    ns = proxy_with_nic(lab)
    ns_run(ns, str(PROXY), "apply", "--mode", "conntrack", "--target", "10.30.3.4")
    ns_run(ns, str(PROXY), "apply", "--mode", "stateless", "--target", "10.30.3.5")
    table, nat, netdev = ruleset(ns)
    assert "10.30.3.5" in table and "10.30.3.4" not in table
    assert nat == "" and netdev == ""
    ns_run(ns, str(PROXY), "apply", "--mode", "netdev", "--target", "10.30.3.6")
    table, nat, netdev = ruleset(ns)
    assert table == "" and nat == "" and "10.30.3.6" in netdev and "10.30.3.5" not in netdev
    assert ns_run(ns, str(PROXY), "status").stdout.count("mode=") == 1
    ns_run(ns, str(PROXY), "apply", "--mode", "stateless", "--target", "10.30.3.5")
    assert ruleset(ns)[2] == ""
    ns_run(ns, str(PROXY), "apply", "--mode", "netdev", "--target", "10.30.3.6")
    ns_run(ns, str(PROXY), "remove")
    assert ruleset(ns) == NONE
    status = ns_run(ns, str(PROXY), "status", check=False)
    assert status.returncode == 1 and "no rewrite applied" in status.stdout
    ns_run(ns, str(PROXY), "remove", "--port", "4789")     # removing twice is fine
    assert ruleset(ns) == NONE


@needs_root
@pytest.mark.parametrize(("args", "needle"), [
    (["apply", "--mode", "fast", "--target", "10.30.3.4"], "--mode 'fast'"),
    (["apply", "--mode", "stateless", "--target", "10.30.3.400"], "--target '10.30.3.400'"),
    (["apply", "--mode", "stateless"], "--target ''"),
    (["apply", "--mode", "stateless", "--target", "10.30.3.4", "--port", "0"], "--port '0'"),
    (["apply", "--mode", "stateless", "--target", "10.30.3.4", "--vni", "16777216"],
     "--vni '16777216'"),
    (["apply", "--frobnicate"], "unknown option '--frobnicate'"),
    (["restart"], "unknown action 'restart'"),
    # A namespace with only lo: nothing to hook, and no route to the target.
    (["apply", "--mode", "netdev", "--target", "10.30.3.4"], "no interface (other than lo)"),
])
def test_proxy_bad_input_is_one_line(lab, args, needle):
    ns = lab.add_ns("prx")
    proc = ns_run(ns, str(PROXY), *args, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert ruleset(ns) == NONE


@needs_root
@pytest.mark.parametrize(("target", "needle"), [
    ("10.30.4.5", "is an address of this host"),
    ("192.0.2.9", "no route to --target 192.0.2.9"),
])
def test_proxy_netdev_needs_a_route_to_a_remote_target(lab, target, needle):
    ns = proxy_with_nic(lab)
    proc = ns_run(ns, str(PROXY), "apply", "--mode", "netdev", "--target", target, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert ruleset(ns) == NONE


# A UDP receiver/sender pair, run inside the namespaces (python3 of this venv).
RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 4789)); s.settimeout(3)
print("ready", flush=True)
got = []
try:
    while len(got) < int(sys.argv[1]):
        data, peer = s.recvfrom(65535)
        got.append(f"{len(data)} {data[4:7].hex()} {peer[0]}")
except socket.timeout:
    pass
print("\\n".join(got))
"""
SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for size in map(int, sys.argv[2:]):
    # A VXLAN header (flags I, VNI 1) and a payload of the given size.
    s.sendto(bytes([8, 0, 0, 0, 0, 0, 1, 0]) + bytes(size - 8), (sys.argv[1], 4789))
"""


def proxy_path(lab: Lab) -> tuple[str, str, str]:
    """snd 10.99.0.2 -- 10.99.0.1 prx 10.99.1.1 -- 10.99.1.2 rcv (MTU 1500 everywhere)."""
    snd, prx, rcv = (lab.add_ns(n) for n in ("snd", "prx", "rcv"))
    lab.add_veth(snd, lab.ifname("snd"), prx, lab.ifname("prx", "s"))
    lab.add_veth(rcv, lab.ifname("rcv"), prx, lab.ifname("prx", "r"))
    for ns, dev, addr in ((snd, lab.ifname("snd"), "10.99.0.2/24"),
                          (prx, lab.ifname("prx", "s"), "10.99.0.1/24"),
                          (prx, lab.ifname("prx", "r"), "10.99.1.1/24"),
                          (rcv, lab.ifname("rcv"), "10.99.1.2/24")):
        lab.add_addr(ns, dev, addr)
        lab.up(ns, dev)
    lab.add_route(snd, "default", "10.99.0.1")
    lab.add_route(rcv, "default", "10.99.1.1")
    return snd, prx, rcv


def send_through(snd: str, rcv: str, sizes: list[int]) -> list[tuple[int, str, str]]:
    receiver = subprocess.Popen(["ip", "netns", "exec", rcv, sys.executable, "-c", RECEIVER,
                                 str(len(sizes))], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        ns_run(snd, sys.executable, "-c", SENDER, "10.99.0.1", *map(str, sizes))
        out, _ = receiver.communicate(timeout=10)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return [(int(n), vni, src) for n, vni, src in rows]


@needs_root
@pytest.mark.parametrize("mode", ["netdev", "stateless", "conntrack"])
def test_proxy_forwards_every_fragment_of_large_datagrams(lab, mode):
    snd, prx, rcv = proxy_path(lab)
    ns_run(prx, str(PROXY), "apply", "--mode", mode, "--target", "10.99.1.2")
    sizes = [200, 1600, 3000, 8000]   # the last three leave the sender as 2, 3 and 6 fragments
    got = send_through(snd, rcv, sizes)
    # Whole datagrams at the receiver: the kernel reassembled them, so no fragment was lost;
    # the source is the sender's (the proxy rewrites the destination only).
    assert got == [(size, "000001", "10.99.0.2") for size in sizes]


@needs_root
@pytest.mark.parametrize("mode", ["netdev", "stateless", "conntrack"])
def test_stateless_mode_tracks_nothing_even_with_conntrack_loaded(lab, mode):
    """As on a VM where a stateful firewall loaded connection tracking (and defragmentation)."""
    snd, prx, rcv = proxy_path(lab)
    ns_run(prx, "nft", "add table ip host_fw; add chain ip host_fw input { type filter hook input "
                   "priority 0; ct state invalid drop; }")
    ns_run(prx, str(PROXY), "apply", "--mode", mode, "--target", "10.99.1.2")
    got = send_through(snd, rcv, [200, 3000, 8000])
    assert got == [(size, "000001", "10.99.0.2") for size in (200, 3000, 8000)]
    entries = int(ns_run(prx, "conntrack", "-C").stdout.strip())
    if mode in ("netdev", "stateless"):
        assert entries == 0
    else:
        assert entries > 0


@needs_root
def test_a_port_only_stateless_rule_loses_every_fragmented_datagram(lab):
    """The control: without the non-first-fragment rule, only unfragmented datagrams pass."""
    snd, prx, rcv = proxy_path(lab)
    ns_run(prx, str(PROXY), "apply", "--mode", "stateless", "--target", "10.99.1.2")
    listing = ns_run(prx, "nft", "-a", "list", "chain", "ip", "vtaplab_proxy", "prerouting").stdout
    handle = next(line.rsplit("# handle ", 1)[1] for line in listing.splitlines()
                  if "frag-off" in line)
    ns_run(prx, "nft", "delete", "rule", "ip", "vtaplab_proxy", "prerouting", "handle", handle)
    assert send_through(snd, rcv, [200, 3000, 300]) == [
        (200, "000001", "10.99.0.2"), (300, "000001", "10.99.0.2")]


@needs_root
@pytest.mark.parametrize("mode", ["netdev", "stateless", "conntrack"])
def test_proxy_stamps_the_vni(lab, mode):
    snd, prx, rcv = proxy_path(lab)
    ns_run(prx, str(PROXY), "apply", "--mode", mode, "--target", "10.99.1.2", "--vni", "4242")
    got = send_through(snd, rcv, [300, 3000])
    assert got == [(300, "001092", "10.99.0.2"), (3000, "001092", "10.99.0.2")]


@needs_root
def test_proxy_without_rule_forwards_nothing(lab):
    snd, _prx, rcv = proxy_path(lab)
    assert send_through(snd, rcv, [200, 3000]) == []


# --- vtap-capture.sh ----------------------------------------------------------------------------
def tcpdumps_writing(path: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = next(line for line in (proc / "status").read_text().splitlines()
                         if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if cmdline and cmdline[0].endswith(b"tcpdump") and str(path).encode() in cmdline \
                and "zombie" not in state:
            pids.append(int(proc.name))
    return pids


@needs_root
def test_capture_start_twice_runs_one_capture_and_stop_ends_it(lab, tmp_path):
    ns = lab.add_ns("col")
    pcap, pidfile = tmp_path / "c.pcap", tmp_path / "c.pid"
    start = [str(CAPTURE), "start", "--out", str(pcap), "--iface", "lo", "--duration", "60",
             "--pidfile", str(pidfile)]
    first = ns_run(ns, *start)
    second = ns_run(ns, *start)
    assert "already running" in second.stdout
    pids = tcpdumps_writing(pcap)
    assert len(pids) == 1 and str(pids[0]) == pidfile.read_text().split()[0], first.stdout
    # Something to capture: UDP/4789 on the namespace's loopback, one datagram fragmented.
    ns_run(ns, sys.executable, "-c",
       "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
       "[s.sendto(bytes(n), ('127.0.0.1', p)) for n, p in ((100, 4789), (100, 53))]")
    ns_run(ns, str(CAPTURE), "stop", "--pidfile", str(pidfile))
    assert tcpdumps_writing(pcap) == []
    assert not pidfile.exists()
    read = subprocess.run(["tcpdump", "-nr", str(pcap)], capture_output=True, text=True,
                          check=True)
    assert read.stdout.count(".4789:") == 1 and ".53:" not in read.stdout
    assert "not running" in ns_run(ns, str(CAPTURE), "stop", "--pidfile", str(pidfile)).stdout


@needs_root
def test_capture_ends_by_itself_after_the_duration(lab, tmp_path):
    ns = lab.add_ns("col")
    pcap, pidfile = tmp_path / "d.pcap", tmp_path / "d.pid"
    ns_run(ns, str(CAPTURE), "start", "--out", str(pcap), "--iface", "lo", "--duration", "1",
       "--pidfile", str(pidfile))
    deadline = time.monotonic() + 10
    while tcpdumps_writing(pcap) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tcpdumps_writing(pcap) == []
    assert pcap.stat().st_size >= 24          # a pcap header: the file was closed properly
    ns_run(ns, str(CAPTURE), "stop", "--pidfile", str(pidfile))


@pytest.mark.parametrize(("args", "needle"), [
    (["start"], "--out FILE is required"),
    (["start", "--out", "/nonexistent/dir/x.pcap"], "does not exist"),
    (["start", "--out", "/tmp/x.pcap", "--duration", "0"], "--duration '0'"),
    (["start", "--out", "/tmp/x.pcap", "--direction", "sideways"], "--direction 'sideways'"),
    (["stop"], "--pidfile FILE is required"),
    (["pause"], "unknown action 'pause'"),
])
def test_capture_bad_input_is_one_line(args, needle):
    proc = subprocess.run([str(CAPTURE), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# --- vtap-traffic.sh ----------------------------------------------------------------------------
@needs_root
def test_traffic_log_format_and_rerun(lab, tmp_path):
    ns = lab.add_ns("cli")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello\n")
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "vtaplab.emulator.httpserver", "--dir",
         str(www), "--bind", "127.0.0.1", "--port", "8080"],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("ready")
        log = tmp_path / "traffic.log"
        argv = [str(TRAFFIC), "--url", "http://127.0.0.1:8080/", "--url",
                "http://127.0.0.1:8081/", "--count", "2", "--log", str(log)]
        for _ in range(2):                      # a rerun rewrites the log
            proc = ns_run(ns, *argv, check=False)
            assert proc.returncode == 1         # the closed port failed
            lines = log.read_text().splitlines()
            assert lines[0] == "# vtap-traffic v1"
            rows = [line.split("\t") for line in lines[1:]]
            assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
                ("1", "http://127.0.0.1:8080/", "200", "6"),
                ("2", "http://127.0.0.1:8081/", "000", "0"),
                ("3", "http://127.0.0.1:8080/", "200", "6"),
                ("4", "http://127.0.0.1:8081/", "000", "0"),
            ]
            assert all(float(r[4]) >= 0 for r in rows)
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize(("args", "needle"), [
    (["--count", "1", "--log", "/tmp/t.log"], "--url URL is required"),
    (["--url", "ftp://x/", "--count", "1", "--log", "/tmp/t.log"], "--url 'ftp://x/'"),
    (["--url", "http://x/", "--count", "0", "--log", "/tmp/t.log"], "--count '0'"),
    (["--url", "http://x/", "--count", "1"], "--log FILE is required"),
    (["--url", "http://x/", "--count", "1", "--log", "/tmp/t.log", "--timeout", "soon"],
     "--timeout 'soon'"),
])
def test_traffic_bad_input_is_one_line(args, needle):
    proc = subprocess.run([str(TRAFFIC), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
