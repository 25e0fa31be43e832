"""``bench proxy``: the generator, the summary, and a short run (no timing is asserted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vtaplab.bench import proxy
from vtaplab.bench.proxy import ModeResult, Sample
from vtaplab.emulator.netns import Lab, list_namespaces

needs_root_and_cc = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("cc") is None,
    reason="needs root (namespaces) and a C compiler (the generator is built at run time)")


# --- pure parts -------------------------------------------------------------------------------
def test_generator_line_is_parsed_and_checked():
    got = proxy._parse_generator("sent=10 frames=30 seconds=0.5 cpu=0.25\n")
    assert got == {"sent": 10, "frames": 30, "seconds": 0.5, "cpu": 0.25}
    with pytest.raises(proxy.BenchError, match="unexpected generator output"):
        proxy._parse_generator("sent=10 frames=30\n")


def _result(mode: str, cpu_pps: list[float], *, entries: int = 0, whole: int = 10) -> ModeResult:
    res = ModeResult(mode, conntrack_entries=entries, flows_sent=1000, fragmented_sent=10,
                     fragmented_whole=whole)
    res.samples = [Sample(mode, sent=int(p), received=int(p), seconds=1.0, cpu=1.0)
                   for p in cpu_pps]
    return res


def test_summary_ratios_use_medians_and_the_best_mode_must_be_safe():
    results = {
        "plain": _result("plain", [1000, 990, 2000]),                 # median 1000
        "conntrack": _result("conntrack", [950, 960, 970], entries=1000),   # fastest: tracked
        "stateless": _result("stateless", [800, 810, 790]),
        "netdev": _result("netdev", [900, 10, 905], whole=9),        # lost a fragment
    }
    summary = proxy.summarise(results)
    modes = summary["modes"]
    assert modes["plain"]["ratio_to_plain"] == 1.0
    assert modes["stateless"]["ratio_to_plain"] == 0.8
    assert modes["netdev"]["median_pps_per_cpu_second"] == 900
    assert modes["netdev"]["fragment_safe"] is False
    # Round by round against plain routing of the same round.
    assert modes["stateless"]["ratio_per_round"] == [0.8, 0.818, 0.395]
    # conntrack keeps entries, netdev lost a fragment: stateless is the best that qualifies.
    assert summary["best_fragment_safe_stateless_mode"] == "stateless"
    assert summary["best_ratio"] == 0.8 and summary["goal_met"] is False
    results["netdev"] = _result("netdev", [950, 940, 960])
    summary = proxy.summarise(results)
    assert summary["best_fragment_safe_stateless_mode"] == "netdev"
    assert summary["best_ratio"] == 0.95 and summary["goal_met"] is True


@pytest.mark.parametrize(("argv", "needle"), [
    (["--repeats", "0"], "accepted: an integer >= 1"),
    (["--seconds", "soon"], "accepted: 0.05 to 60"),
    (["--cpu", "9999"], "invalid CPU '9999'"),
])
def test_bad_arguments_are_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        proxy.main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


# --- the generator on a veth -----------------------------------------------------------------
@pytest.fixture(scope="module")
def udpgen(tmp_path_factory) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    return proxy.compile_generator(tmp_path_factory.mktemp("gen"))


def _pair(lab: Lab) -> tuple[str, str, str]:
    """gen -- rx: the receiver counts IPv4 frames and UDP source ports at ingress, then drops."""
    gen, rx = lab.add_ns("gen"), lab.add_ns("rx")
    gen_if, rx_if = lab.ifname("g"), lab.ifname("r")
    lab.add_veth(gen, gen_if, rx, rx_if)
    lab.up(gen, gen_if)
    lab.up(rx, rx_if)
    lab.nft(rx, (
        "table netdev t {\n  counter frames {}\n  counter firsts {}\n"
        "  set sports { type inet_service; size 65535; flags dynamic; }\n"
        "  chain in {\n"
        f'    type filter hook ingress device "{rx_if}" priority filter; policy accept;\n'
        "    ip protocol udp counter name frames\n"
        "    udp dport 4789 counter name firsts add @sports { udp sport } drop\n"
        "    drop\n  }\n}\n"))
    return gen, rx, gen_if


def _count(lab: Lab, ns: str, name: str) -> int:
    out = lab.exec(ns, ["nft", "-j", "list", "counter", "netdev", "t", name]).stdout
    return next(int(i["counter"]["packets"]) for i in json.loads(out)["nftables"] if "counter" in i)


def _gen(lab: Lab, gen: str, binary: Path, iface: str, *extra: str,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    return lab.exec(gen, [str(binary), "-i", iface, "-s", "02:00:00:00:00:01",
                          "-d", "02:00:00:00:00:02", "-S", "198.18.1.1", "-D", "198.18.0.1",
                          *extra], check=check)


@needs_root_and_cc
def test_generator_sends_exactly_the_count_cycling_source_ports(lab, udpgen):
    gen, rx, gen_if = _pair(lab)
    out = _gen(lab, gen, udpgen, gen_if, "-c", "3000", "-t", "30", "-n", "1000").stdout
    fields = proxy._parse_generator(out)
    assert fields["sent"] == 3000 and fields["frames"] == 3000
    assert _count(lab, rx, "frames") == 3000 == _count(lab, rx, "firsts")
    ports = lab.exec(rx, ["nft", "-j", "list", "set", "netdev", "t", "sports"]).stdout
    elems = next(i["set"] for i in json.loads(ports)["nftables"] if "set" in i)["elem"]
    assert sorted(elems) == list(range(10000, 11000))     # -P 10000 (default), -n 1000 ports


@needs_root_and_cc
def test_generator_fragments_and_stops_at_the_time_bound(lab, udpgen):
    gen, rx, gen_if = _pair(lab)
    out = _gen(lab, gen, udpgen, gen_if, "-c", "100", "-t", "30", "-f", "-l", "3000").stdout
    fields = proxy._parse_generator(out)
    # 3,008 bytes of UDP datagram: 1,480 + 1,480 + 48, only the first with the UDP header.
    assert fields["sent"] == 100 and fields["frames"] == 300
    assert _count(lab, rx, "frames") == 300 and _count(lab, rx, "firsts") == 100
    out = _gen(lab, gen, udpgen, gen_if, "-c", "1000000000", "-t", "0.1").stdout
    assert 0 < proxy._parse_generator(out)["sent"] < 1_000_000_000


@needs_root_and_cc
@pytest.mark.parametrize(("extra", "needle"), [
    (["-c", "0", "-t", "1"], "-c COUNT '0'"),
    (["-c", "1", "-t", "0"], "-t SECONDS '0'"),
    (["-c", "1", "-t", "1", "-l", "2000"], "pass -f to send fragments"),
    (["-c", "1", "-t", "1", "-P", "65000", "-n", "1000"], "must stay within 1..65535"),
    (["-c", "1"], "are required"),
])
def test_generator_bad_input_is_one_line(lab, udpgen, extra, needle):
    gen, _rx, gen_if = _pair(lab)
    proc = _gen(lab, gen, udpgen, gen_if, *extra, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# --- the bench, short -----------------------------------------------------------------------
@needs_root_and_cc
def test_short_bench_measures_every_mode_and_cleans_up(capsys):
    assert proxy.main(["--short", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    modes = summary["modes"]
    assert list(modes) == ["plain", "netdev", "stateless", "conntrack"]
    for name, mode in modes.items():
        assert mode["median_pps_per_cpu_second"] > 0, name
        assert len(mode["samples"]) == 1 and mode["samples"][0]["received"] > 0, name
        # Every mode forwards every fragment: the sink reassembled every datagram.
        assert mode["fragmented_datagrams_sent"] == 50, name
        assert mode["fragmented_datagrams_whole"] == 50, name
        assert mode["flows_sent"] == 2000, name
    # Only DNAT keeps state: one entry per flow (2,000 distinct flows in the short run).
    assert modes["conntrack"]["conntrack_entries"] == 2000
    assert [modes[m]["conntrack_entries"] for m in ("plain", "stateless", "netdev")] == [0, 0, 0]
    assert modes["plain"]["ratio_to_plain"] == 1.0
    assert summary["best_fragment_safe_stateless_mode"] in ("stateless", "netdev")
    assert not [n for n in list_namespaces() if n.startswith(summary["run"] + "-")]


@needs_root_and_cc
def test_short_bench_prints_the_table(capsys):
    assert proxy.main(["--short"]) == 0
    out = capsys.readouterr().out
    for needle in ("plain ", "conntrack ", "stateless ", "netdev ", "ratio",
                   "best fragment-safe mode with no tracked entries:"):
        assert needle in out
