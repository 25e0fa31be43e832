"""The emulator's engine end to end: the twin of b2 in every proxy mode, the faults, b3's
failover, msp's tenants, teardown, bad input.

The engine's mechanics are tested on the stacks' graphs with the provider ILB on HA ports (the
fix of the issue "Azure and Pulumi as they really are"), so a complete mirror is what a
correct engine shows; what the committed program's UDP/4789 port rule does is test_twin.py's.
Each run builds its own namespaces (per-run prefix), sends traffic only between them, and
must leave none behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
from helpers.netns import wait_for_traffic

from vtaplab import PROJECT_ROOT, plan
from vtaplab.emulator.topology import stack_graph
from vtaplab.judge.verdict import parse_traffic_log

REPO = PROJECT_ROOT
ROUNDS = 6   # each round fetches / and the 200 kB file

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the emulator needs root (network namespaces, veths)")


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    prefix: str
    out: Path

    @property
    def verdict(self) -> dict:
        return json.loads((self.out / "verdict.json").read_text())

    @property
    def emulator(self) -> dict:
        return json.loads((self.out / "emulator.json").read_text())

    def hop(self, name: str) -> dict:
        return next(h for h in self.emulator["hops"] if h["hop"] == name)


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def ha_graph(stack: str, where: Path) -> Path:
    """``stack``'s graph with the provider ILB's rule as HA ports, written to a file."""
    g = stack_graph(stack)[0]
    for resource in g:
        if resource["type"].endswith(":LoadBalancer") and resource["name"] == "provider-ilb":
            for rule in resource["inputs"]["loadBalancingRules"]:
                rule.update(protocol="All", frontendPort=0, backendPort=0, name="ha-ports")
    path = where / f"{stack}.json"
    path.write_text(json.dumps(g))
    return path


def emulate(out: Path, *args: str, rounds: int = ROUNDS) -> list[Run]:
    """One ``emulate`` of b2's twin; one Run per proxy mode it ran (every one when not given)."""
    proc = subprocess.run(
        [sys.executable, "-m", "vtaplab", "emulate", "--graph", str(ha_graph("b2", out.parent)),
         "--out", str(out), "--requests", str(rounds), *args],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    found = re.findall(r"run (vl[0-9a-f]{4}), proxy mode (\w+)", proc.stdout)
    assert found, f"no run prefix in output:\n{proc.stdout}\n{proc.stderr}"
    runs = []
    for i, (prefix, mode) in enumerate(found):
        left = [ns for ns in namespaces() if ns.startswith(prefix + "-")]
        assert left == [], f"namespaces left behind by run {prefix}: {left}"
        runs.append(Run(proc.returncode, proc.stdout, proc.stderr, prefix,
                        out if i == 0 else out / mode))
    return runs


def sent(run: Run) -> tuple[dict[str, int], int]:
    """GETs per request line and 200s, as the client's traffic log records them."""
    gets: dict[str, int] = {}
    ok = 0
    for line in (run.out / "traffic.log").read_text().splitlines()[1:]:
        _n, url, status, _size, _secs = line.split("\t")
        key = f"GET {urlparse(url).path}"
        gets[key] = gets.get(key, 0) + 1
        ok += status == "200"
    return gets, ok


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """Every run once, lazily: tests of one mode or fault share its run."""
    class Lazy(dict):
        def __missing__(self, key: str) -> Run:
            mode, _, fault = key.partition("/")
            if not fault:
                # The README's command: no --proxy-mode runs netdev (the default: its evidence
                # in OUT), then stateless and conntrack (in OUT/<mode>).
                every = emulate(tmp_path_factory.mktemp("all"))
                assert [r.out.name for r in every[1:]] == ["stateless", "conntrack"]
                self["netdev"], self["stateless"], self["conntrack"] = every
                return self[key]
            out = tmp_path_factory.mktemp(key.replace("/", "-"))
            (self[key],) = emulate(out, "--proxy-mode", mode, "--fault", fault)
            return self[key]

    return Lazy()


# --- end to end -------------------------------------------------------------------------------
@needs_root
@pytest.mark.parametrize("mode", ["netdev", "stateless", "conntrack"])
def test_b2_delivers_in_every_proxy_mode(runs, mode):
    run = runs[mode]
    assert run.rc == 0, run.stderr
    verdict = run.verdict
    assert verdict["outcome"] == "delivered"
    assert verdict["matches_expected"] is True
    assert "delivered" in run.stdout and "took" in run.stdout
    assert ("every proxy mode: netdev delivered, stateless delivered, conntrack delivered"
            in run.stdout)


@needs_root
@pytest.mark.parametrize("mode", ["netdev", "stateless", "conntrack"])
def test_inner_http_counts_equal_what_the_client_sent(runs, mode):
    run = runs[mode]
    gets, ok = sent(run)
    assert gets == {"GET /": ROUNDS, "GET /big.bin": ROUNDS}
    assert ok == 2 * ROUNDS
    http = run.verdict["inner_http"]
    assert http["request_lines"] == gets
    assert http["response_lines"] == {"HTTP/1.1 200 OK": ok}
    assert run.verdict["traffic"] == parse_traffic_log(run.out / "traffic.log")


@needs_root
@pytest.mark.parametrize("mode", ["netdev", "stateless", "conntrack"])
def test_the_200kB_body_reassembles_at_the_collector(runs, mode):
    run = runs[mode]
    served = run.emulator["served"]["s1"]["/big.bin"]
    assert served["bytes"] == 200 * 1024
    bodies = [b for b in run.verdict["inner_http"]["bodies"] if b["request"] == "GET /big.bin"]
    assert bodies, run.verdict["inner_http"]
    assert [(b["length"], b["sha256"], b["count"]) for b in bodies] == [
        (served["bytes"], served["sha256"], ROUNDS)]
    # Full-size inner frames: the outer packets were fragmented and every fragment arrived.
    frags = run.verdict["fragments"]
    assert frags["frames"] > 0 and frags["incomplete"] == 0
    assert run.hop("collector")["fragments"] == run.hop("vtap")["fragments"]


@needs_root
@pytest.mark.parametrize("mode", ["netdev", "stateless", "conntrack"])
def test_outer_source_at_the_collector_is_the_nat_ip(runs, mode):
    run = runs[mode]
    assert run.verdict["outer_sources"] == [plan.PLS_NAT_IPS[0]]
    # ...while the proxy forwarded without source NAT, as on Azure.
    assert plan.PLS_NAT_IPS[0] not in run.hop("proxy-out")["outer_sources"]


@needs_root
def test_stateless_proxies_keep_no_connection_tracking_entries(runs):
    assert runs["netdev"].emulator["conntrack_entries"] == {"p1": 0}
    assert runs["stateless"].emulator["conntrack_entries"] == {"p1": 0}
    # The measure can see entries: the conntrack mode leaves some.
    assert runs["conntrack"].emulator["conntrack_entries"]["p1"] > 0


@needs_root
def test_evidence_files_are_listed_in_the_verdict(runs):
    run = runs["stateless"]
    names = {Path(f).name for f in run.verdict["files"]}
    assert {"collector.pcap", "vtap.pcap", "proxy-out.pcap", "traffic.log"} <= names
    for name in names:
        assert (run.out / name).exists(), name


# --- faults -----------------------------------------------------------------------------------
@needs_root
def test_missing_proxy_rule_is_not_delivered(runs):
    run = runs["stateless/no-proxy-rule"]
    assert run.rc == 0, run.stderr
    assert run.verdict["outcome"] == "not-delivered"
    assert run.verdict["matches_expected"] is False
    # The vTAP did mirror; the proxy just did not forward.
    assert run.hop("vtap")["vxlan_packets"] > 0
    assert run.hop("proxy-out")["vxlan_packets"] == 0


@needs_root
def test_two_percent_loss_is_degraded_with_the_loss_in_the_counts(runs):
    run = runs["stateless/loss-2pct"]
    # VXLAN and HTTP arrive, but not all of it: a lossy mirror is degraded, never delivered,
    # and the loss shows first after the proxy (where the fault drops packets).
    assert run.verdict["outcome"] == "degraded" and run.verdict["matches_expected"] is False
    assert run.verdict["missing_figures"]
    assert run.verdict["loss_at"] is None or run.verdict["loss_at"].startswith("proxy-out ->")
    dropped = run.emulator["injected_loss_packets"]
    assert dropped > 0
    assert run.verdict["mirror"]["complete"] is False
    assert run.verdict["mirror"]["drops"]["fault:loss-2pct"] == dropped
    upstream = run.hop("proxy-out")
    if upstream["kernel_drops"] == 0:
        assert run.verdict["vxlan_packets"] < upstream["vxlan_packets"]
    http = run.verdict["inner_http"]
    assert http["incomplete_bodies"] > 0 or http["request_count"] < 2 * ROUNDS


@needs_root
def test_capture_started_after_the_traffic_is_not_delivered(runs):
    run = runs["stateless/late-capture"]
    assert run.verdict["outcome"] == "not-delivered"
    # Nothing of the exchanges reached the capture. A straggler may (a keep-alive connection
    # the server closes after the traffic is mirrored too): a few packets, no HTTP in them.
    assert run.verdict["vxlan_packets"] <= 8
    assert run.verdict["inner_http"]["requests"] == []
    assert run.verdict["inner_http"]["responses"] == []
    # The data path itself worked: the PLS hop saw everything.
    assert run.hop("pls-out")["requests"] == 2 * ROUNDS


@needs_root
@pytest.mark.parametrize("mode", ["stateless", "conntrack"])
def test_proxy_rule_flushed_and_restored_mid_run_shows_the_gap(runs, mode):
    run = runs[f"{mode}/flap-proxy-rule"]
    gets, _ok = sent(run)
    seen = run.verdict["inner_http"]["request_count"]
    assert sum(gets.values()) == 2 * ROUNDS
    assert 0 < seen < 2 * ROUNDS
    # The third with the rule removed is what is missing (conntrack's entries are flushed).
    phases = run.emulator["flap"]["requests_per_phase"]
    assert seen == 2 * (phases[0] + phases[2])
    # A lossy mirror: the judge says degraded, and the figures say what is missing.
    assert run.verdict["outcome"] == "degraded"
    assert f"{2 * ROUNDS - seen} of {2 * ROUNDS} answered requests not seen" in \
        run.verdict["reason"]
    mirror = run.verdict["mirror"]
    assert mirror["complete"] is False
    assert mirror["missing_at_collector"]["requests"] == 2 * phases[1]
    assert run.hop("proxy-out")["vxlan_packets"] < run.hop("vtap")["vxlan_packets"]


# --- b3: an LB over two proxies ----------------------------------------------------------------
def emulate_scenario(scenario: str, out: Path, *args: str, requests: int = 4,
                     rc: int = 0) -> tuple[dict, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "vtaplab", "emulate", "--graph",
         str(ha_graph(scenario, out.parent)), "--out", str(out), "--requests", str(requests),
         *args],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    prefix = re.search(r"run (vl[0-9a-f]{4})", proc.stdout).group(1)
    assert [ns for ns in namespaces() if ns.startswith(prefix + "-")] == []
    return (json.loads((out / "verdict.json").read_text()),
            json.loads((out / "emulator.json").read_text()))


def hop_of(emulator_json: dict, name: str) -> dict:
    return next(h for h in emulator_json["hops"] if h["hop"] == name)


@needs_root
def test_b3_spreads_flows_over_both_proxies(tmp_path):
    verdict, facts_ = emulate_scenario("b3", tmp_path)
    assert verdict["outcome"] == "delivered" and verdict["matches_expected"] is True
    assert facts_["lb_backends"] == {"p1": True, "p12": True}
    one, two = hop_of(facts_, "p1-out"), hop_of(facts_, "p12-out")
    assert one["vxlan_packets"] > 0 and two["vxlan_packets"] > 0
    assert verdict["inner_http"]["request_count"] == 8


@needs_root
def test_b3_stopping_a_proxy_mid_run_loses_only_the_failover_window(tmp_path):
    verdict, facts_ = emulate_scenario("b3", tmp_path, "--fault", "proxy-down",
                                       "--proxy-mode", "stateless", requests=6)
    assert verdict["outcome"] == "delivered" and verdict["matches_expected"] is True
    failover = verdict["failover"]
    assert failover == facts_["failover"] and failover["backend"] == "p12"
    # The LB took p12 out (and never put it back) once its probe failed.
    assert facts_["lb_backends"] == {"p1": True, "p12": False}
    [event] = facts_["lb_events"]
    assert event["health"] == {"p1": True, "p12": False}
    assert failover["removed_at"] == event["at"] > failover["down_at"]
    assert 0 < failover["window_s"] < 5
    # Before the fault both proxies carried flows; after the window only p1 did.
    assert sum(failover["steered_before_down"].values()) > 0
    assert failover["lost_after_window"] == 0 and failover["confined"] is True
    assert failover["to_healthy_after_window"]["p1"] > 0
    # What the vTAP sent minus what the collector got is exactly what went to the stopped
    # proxy inside the window: no loss anywhere else.
    # (Counted from just before the link went down: a straggler of the first phase may be
    # counted as lost yet have made it, and on a loaded machine one may be counted on the wrong
    # side of the removal. Within a few packets only when neither capture dropped packets.)
    vtep, collector = hop_of(facts_, "vtap"), hop_of(facts_, "collector")
    missing = vtep["vxlan_packets"] - collector["vxlan_packets"]
    if vtep["kernel_drops"] == collector["kernel_drops"] == 0:
        assert abs(missing - failover["lost_in_window"]) <= 5, (
            missing, failover, facts_["hops"])
    assert collector["vxlan_packets"] == verdict["vxlan_packets"]
    # The third phase runs after the failover: every one of its requests arrived.
    phases = facts_["failover_phases"]["requests_per_phase"]
    assert verdict["inner_http"]["request_count"] >= 2 * (phases[0] + phases[2])
    assert "failover" in verdict["reason"] and "none after" in verdict["reason"]


# --- b4: a scale set of proxies behind the LB, probed over HTTP (or, to compare, TCP/22) ------
def emulate_b4(out: Path, probe: str, fault: str, requests: int = 4) -> tuple[int, dict, dict]:
    """The committed b4 stack's twin, its consumer LB's probe as deployed (``http``) or, with
    ``--set proxyProbe=tcp``, as the reference lab's TCP/22 (the program builds either)."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "vtaplab", "emulate", "b4", "--set", f"proxyProbe={probe}",
         "--out", str(out / "ev"), "--requests", str(requests), "--proxy-mode", "netdev",
         "--fault", fault], capture_output=True, text=True, cwd=REPO, timeout=300,
        check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"with proxyProbe={probe}" in proc.stdout
    prefix = re.search(r"run (vl[0-9a-f]{4})", proc.stdout).group(1)
    assert [ns for ns in namespaces() if ns.startswith(prefix + "-")] == []
    return (proc.returncode, json.loads((out / "ev" / "verdict.json").read_text()),
            json.loads((out / "ev" / "emulator.json").read_text()))


@needs_root
def test_b4_one_instance_losing_its_rewrite_is_taken_out_by_the_http_probe(tmp_path):
    rc, verdict, facts_ = emulate_b4(tmp_path, "http", "no-proxy-rule", requests=6)
    assert rc == 0 and verdict["outcome"] == "delivered" and verdict["matches_expected"]
    failover = verdict["failover"]
    assert failover["cause"] == "rewrite" and failover["backend"] == "p12"
    assert failover["confined"] is True and failover["lost_after_window"] == 0
    assert 0 < failover["window_s"] < 3
    # The instance whose rewrite is gone answers 503: the LB takes it out and never back.
    assert facts_["lb_backends"] == {"p1": True, "p12": False}
    assert failover["to_healthy_after_window"]["p1"] > 0
    assert "lost its rewrite" in verdict["reason"]


@needs_root
def test_b4_the_same_fault_under_a_tcp22_probe_is_degraded(tmp_path):
    rc, verdict, facts_ = emulate_b4(tmp_path, "tcp", "no-proxy-rule", requests=6)
    # TCP/22 still answers on the instance whose rewrite is gone: it stays in the LB, and
    # what the LB sends it after the fault is lost.
    assert verdict["outcome"] == "degraded" and rc == 1
    failover = verdict["failover"]
    assert failover["confined"] is False and failover["removed_at"] is None
    assert failover["lost_in_window"] > 0
    assert facts_["lb_backends"] == {"p1": True, "p12": True}
    assert "TCP/22 still answered" in verdict["reason"]
    assert verdict["loss_at"] and "p12" in verdict["loss_at"]


@needs_root
@pytest.mark.parametrize(("probe", "outcome"), [("http", "delivered"), ("tcp", "degraded")])
def test_b4_rolling_upgrade_loses_nothing_outside_its_windows(tmp_path, probe, outcome):
    rc, verdict, facts_ = emulate_b4(tmp_path, probe, "rolling-upgrade", requests=3)
    upgrade = facts_["rolling_upgrade"]
    # One instance at a time (maxBatchInstancePercent 50 of 2), both upgraded, under traffic.
    assert upgrade["batches"] == [["p1"], ["p12"]] and upgrade["scale_set"] == "b4-tier-vmss"
    assert all(rounds >= 1 for rounds in upgrade["rounds_per_batch"])
    windows = verdict["failover"]["windows"]
    assert [w["backend"] for w in windows] == ["p1", "p12"]
    for window in windows:
        # Out after it went down, back after it came up: in that order on one clock.
        assert window["down_at"] < window["removed_at"] < window["up_at"] < window["back_at"]
    # Both back in the pool at the end.
    assert facts_["lb_backends"] == {"p1": True, "p12": True}
    assert verdict["outcome"] == outcome
    if probe == "http":
        # Back only once its rewrite was installed: nothing lost after any window.
        assert rc == 0 and verdict["failover"]["confined"] is True
        for window in windows:
            assert window["ready_at"] < window["back_at"] and window["lost_after_window"] == 0
    else:
        # TCP/22 answers as soon as the NIC is up, before the rewrite: that loss is outside.
        assert verdict["failover"]["confined"] is False
        assert any(w["back_at"] < w["ready_at"] and w["lost_after_window"] > 0
                   for w in windows)
    ids = {a["id"] for a in verdict["assumptions"]}
    assert {"upgrade-no-drain", "upgrade-boot-order", "upgrade-pause-scale"} <= ids


# --- msp: tenants with the same address space, told apart by VNI ------------------------------
@needs_root
def test_msp_tenants_are_told_apart_by_vni(tmp_path):
    # The default: three tenants.
    proc = subprocess.run(
        [sys.executable, "-m", "vtaplab", "emulate", "--graph",
         str(ha_graph("msp", tmp_path.parent)), "--out", str(tmp_path),
         "--requests", "2", "--proxy-mode", "stateless"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    prefix = re.search(r"run (vl[0-9a-f]{4})", proc.stdout).group(1)
    assert [ns for ns in namespaces() if ns.startswith(prefix + "-")] == []
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    facts_ = json.loads((tmp_path / "emulator.json").read_text())
    assert verdict["outcome"] == "delivered" and verdict["matches_expected"] is True
    assert verdict["vnis"] == [1001, 1002, 1003] == [plan.tenant_vni(i) for i in (1, 2, 3)]
    assert verdict["tenants_told_apart"] is True
    # One NAT IP for all: the source address can't tell the tenants apart, the VNI does.
    assert verdict["outer_sources"] == [plan.PLS_NAT_IPS[0]]
    for i in (1, 2, 3):
        sent_by_client = facts_["traffic_per_client"][f"c{i}"]
        assert sent_by_client["requests"] == sent_by_client["ok"] == 4
        tenant = verdict["tenants"][str(1000 + i)]
        assert (tenant["requests"], tenant["responses"]) == (4, 4)
        row = verdict["tenant_table"][i - 1]
        assert (row["tenant"], row["vni"], row["sent"], row["requests"]) == (
            f"t{i}", 1000 + i, 4, 4)
        # The collector's decap interface for the VNI got that VNI's packets (its counter is
        # read after the capture stopped: a late straggler may be counted there only).
        assert row["decap_interface"] == f"vtap{1000 + i}"
        assert 0 < tenant["packets"] <= row["decap_packets"] <= tenant["packets"] + 3
    # The per-tenant table is printed.
    assert re.search(r"^t2\s+1002\s+4\s+4\s+4\s+\d+\s+yes", proc.stdout, re.M), proc.stdout
    # Every tenant's consumer side uses the same addresses.
    ports = facts_["topology"]["ports"]
    src_addrs = {v.split(" ")[0] for k, v in ports.items() if re.fullmatch(r"s\d", k)}
    assert src_addrs == {f"{plan.VM_SRC_IP}/24"}


@needs_root
def test_msp_tenants_on_one_vni_cannot_be_told_apart(tmp_path):
    verdict, _facts = emulate_scenario("msp", tmp_path, "--fault", "shared-vni",
                                       "--proxy-mode", "stateless", requests=2)
    # Everything arrived, all of it on tenant 1's VNI: delivered traffic, no separation.
    assert verdict["vnis"] == [1001]
    assert verdict["inner_http"]["request_count"] == 12
    assert verdict["outcome"] == "not-delivered" and verdict["matches_expected"] is False
    assert verdict["tenants_told_apart"] is False
    assert "can't be told apart" in verdict["reason"]
    assert [row["delivered"] for row in verdict["tenant_table"]] == [True, False, False]
    assert [row["decap_packets"] > 0 for row in verdict["tenant_table"]] == [True, False, False]


# --- teardown, interruption, bad input ----------------------------------------------------------
@needs_root
def test_ctrl_c_mid_run_tears_everything_down(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "vtaplab", "emulate", "b2", "--out", str(tmp_path),
         "--requests", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        wait_for_traffic(tmp_path, timeout=30, poll=0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    prefixes = re.findall(r"run (vl[0-9a-f]{4})", stdout)
    assert len(prefixes) == 1            # the second proxy mode never started
    assert proc.returncode == 130          # README: 130 interrupted, every command alike
    assert "interrupted" in stderr
    assert [ns for ns in namespaces() if ns.startswith(prefixes[0] + "-")] == []
    # No capture of this run still runs.
    for pidfile in tmp_path.glob(".*.pid"):
        pytest.fail(f"capture pidfile left: {pidfile}")


@needs_root
def test_captures_are_killed_by_pid_when_their_stop_cannot_run(tmp_path):
    from vtaplab.emulator import engine
    from vtaplab.emulator.netns import Lab, Runner, new_prefix

    lab = Lab(new_prefix(namespaces()), Runner())
    try:
        ns = lab.add_ns("col")
        pidfile = tmp_path / ".c.pid"
        subprocess.run(["ip", "netns", "exec", ns, str(engine.CAPTURE_SCRIPT), "start",
                        "--out", str(tmp_path / "c.pcap"), "--iface", "lo", "--pidfile",
                        str(pidfile)], check=True, capture_output=True)
        tcpdump, watchdog = (int(w) for w in pidfile.read_text().split())
        topo = engine.from_graph(stack_graph("b2")[0], "b2")
        emu = engine.Emulation(topo, engine.RunOptions(stack="b2", out=tmp_path), lab)
        emu._kill_pidfile(pidfile)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(p) for p in (tcpdump, watchdog)):
            time.sleep(0.05)
        assert not _running(tcpdump) and not _running(watchdog)
        assert not pidfile.exists()
    finally:
        assert lab.teardown() == []


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status


FAILING_BUILD = """
import sys
from vtaplab.emulator import engine as emulator
emulator.nft.fabric_ruleset = lambda *_args: "table ip t { chain c { NOSUCHTARGET } }"
sys.exit(emulator.main(sys.argv[1:]))
"""


@needs_root
def test_a_failure_mid_build_still_tears_everything_down(tmp_path):
    proc = subprocess.run([sys.executable, "-c", FAILING_BUILD, "b2", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    prefixes = re.findall(r"run (vl[0-9a-f]{4})", proc.stdout)
    assert len(prefixes) == 3            # each proxy mode failed on its own, and cleaned up
    assert proc.returncode == 3
    assert "NOSUCHTARGET" in proc.stderr and "Traceback" not in proc.stderr
    for prefix in prefixes:
        assert [ns for ns in namespaces() if ns.startswith(prefix + "-")] == []
    assert "ip netns del" in (tmp_path / "commands.log").read_text()


@needs_root
@pytest.mark.parametrize(("args", "needle"), [
    (["r1"], "accepted: b2, b3, b4, msp, a, uksouth"),
    (["b2", "--tenants", "2"], "--tenants '2'"),
    (["b2", "--fault", "proxy-down"], "--fault 'proxy-down'"),
    (["b2", "--fault", "rolling-upgrade"], "--fault 'rolling-upgrade'"),
    (["b4", "--set", "proxyProbe=udp"], "vtaplab:proxyProbe: 'udp'"),
    (["b4", "--set", "proxyProbe"], "--set 'proxyProbe': not KEY=VALUE"),
    (["--graph", "/tmp/x.json", "--set", "proxyProbe=tcp"], "not accepted with --graph"),
    (["b3", "--fault", "shared-vni"], "--fault 'shared-vni'"),
    (["msp", "--tenants", "11"], "--tenants '11'"),   # facts.MSP_TENANTS_RANGE: 1..10
    (["msp", "--proxy-vni", "5"], "unrecognized arguments: --proxy-vni"),
    (["nosuch"], "stack 'nosuch'"),
    (["--graph", "/nonexistent/graph.json"], "--graph '/nonexistent/graph.json'"),
    (["b2", "--proxy-mode", "fast"], "--proxy-mode 'fast'"),
    (["b2", "--fault", "meteor"], "--fault 'meteor'"),
    (["b2", "--requests", "0"], "--requests '0'"),
    (["b2", "--requests", "many"], "--requests 'many'"),
    (["b2", "--teardown", "eth0"], "run prefix 'eth0'"),
    ([], "required: stack"),
    (["b2", "--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_input_is_one_clear_line(args, needle):
    proc = subprocess.run([sys.executable, "-m", "vtaplab", "emulate", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=30, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "run vl" not in proc.stdout          # refused before any namespace was made


def test_not_root_is_one_clear_line(monkeypatch, capsys):
    # In-process with the effective uid faked: dropping to a real unprivileged user would also
    # need the checkout to be readable by that user, which a CI clone need not be.
    from vtaplab.emulator import engine

    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    assert engine.main(["b2", "--out", "/nonexistent/x"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "emulate: must run as root (network namespaces, veths and firewall rules need it)")
    assert "run vl" not in captured.out          # refused before any namespace was made
