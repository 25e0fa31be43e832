"""Verdicts computed from evidence files: outcomes, expectations, the traffic log, the format."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vtaplab import PROJECT_ROOT, facts
from vtaplab.bench import pcapgen
from vtaplab.bench.pcapgen import HttpExchange, Outer, http_get, http_ok
from vtaplab.judge import verdict

ROOT = PROJECT_ROOT
DESIGN_KEYS = ["scenario", "outcome", "vxlan_packets", "vnis", "outer_sources",
               "outer_udp_source_ports", "inner_http", "arm_error", "expected",
               "matches_expected", "files"]


def capture(tmp_path: Path, *exchanges: HttpExchange, name: str = "collector.pcap",
            vni: int = 100) -> Path:
    path = tmp_path / name
    outer = Outer(vni=vni)
    pcapgen.write_capture(path, pcapgen.http_capture_frames((outer, e) for e in exchanges))
    return path


def get_ok() -> HttpExchange:
    return HttpExchange(messages=[(http_get("/"), http_ok(b"<html>hi</html>"))])


def test_b2_delivered_in_designs_format(tmp_path):
    pcap = capture(tmp_path, get_ok())
    v = verdict.build_verdict(scenario="b2", collector_pcap=pcap, files=[pcap], root=tmp_path)
    assert list(v)[:len(DESIGN_KEYS)] == DESIGN_KEYS
    assert v["outcome"] == "delivered" and v["matches_expected"] is True
    assert v["expected"] == facts.SCENARIOS["b2"].expected
    assert v["inner_http"]["requests"] == ["GET /"]
    assert v["inner_http"]["responses"] == ["HTTP/1.1 200 OK"]
    assert v["outer_sources"] == ["10.40.2.5"] and v["vnis"] == [100]
    assert v["files"] == ["collector.pcap"]
    assert v["arm_error"] is None
    json.dumps(v)  # serialisable as is


def test_no_vxlan_is_not_delivered_with_a_reason(tmp_path):
    path = tmp_path / "collector.pcap"
    noise = pcapgen.ethernet(pcapgen.ipv4("10.40.3.4", "10.40.3.9", 17,
                                          pcapgen.udp(5000, 53, b"\0" * 30)))
    pcapgen.write_capture(path, [noise] * 3)
    v = verdict.build_verdict(scenario="b2", collector_pcap=path, files=[path])
    assert v["outcome"] == "not-delivered" and v["matches_expected"] is False
    assert "no VXLAN" in v["reason"] and "3 packets" in v["reason"]


def test_requests_without_responses_are_not_delivered(tmp_path):
    exchange = HttpExchange(messages=[(http_get("/"), b"")])
    pcap = capture(tmp_path, exchange)
    v = verdict.build_verdict(scenario="b2", collector_pcap=pcap, files=[pcap])
    assert v["outcome"] == "not-delivered"
    assert v["reason"].endswith("no inner HTTP response")


def test_missing_empty_and_unreadable_captures(tmp_path):
    missing = tmp_path / "collector.pcap"
    v = verdict.build_verdict(scenario="b2", collector_pcap=missing, files=[])
    assert v["outcome"] == "not-delivered" and "does not exist" in v["reason"]
    pcapgen.write_capture(missing, [])
    v = verdict.build_verdict(scenario="b2", collector_pcap=missing, files=[missing])
    assert v["outcome"] == "not-delivered" and "no packets" in v["reason"]
    missing.write_text("garbage, not a capture")
    v = verdict.build_verdict(scenario="b2", collector_pcap=missing, files=[missing])
    assert v["outcome"] == "error" and "pcap or pcapng" in v["reason"]
    assert v["matches_expected"] is None
    v = verdict.build_verdict(scenario="b2", collector_pcap=None, files=[])
    assert v["outcome"] == "not-delivered" and v["reason"] == "no collector capture"


def test_arm_rejections(tmp_path):
    code = facts.ARM_PE_AS_VTAP_DESTINATION
    v = verdict.build_verdict(scenario="r1", collector_pcap=None, files=[],
                              arm_error={"code": code, "message": "no"})
    assert v["outcome"] == "rejected" and v["matches_expected"] is True
    v = verdict.build_verdict(scenario="r1", collector_pcap=None, files=[],
                              arm_error={"code": "SomethingElse", "message": "no"})
    assert v["outcome"] == "rejected" and v["matches_expected"] is False
    v = verdict.build_verdict(scenario="b2", collector_pcap=None, files=[],
                              arm_error={"code": code, "message": "no"})
    assert v["outcome"] == "rejected" and v["matches_expected"] is False
    v = verdict.build_verdict(scenario="a", collector_pcap=None, files=[],
                              arm_error={"code": code, "message": "no"})
    assert v["matches_expected"] is None and v["expected"] == facts.SCENARIOS["a"].expected
    v = verdict.build_verdict(scenario="r1", collector_pcap=None, files=[])
    assert v["outcome"] == "accepted" and v["matches_expected"] is False
    v = verdict.build_verdict(scenario="c1", collector_pcap=None, files=[])
    assert v["outcome"] == "not-applicable" and v["matches_expected"] is True


def test_unknown_scenario_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"'zz'.*b2"):
        verdict.build_verdict(scenario="zz", collector_pcap=None, files=[])


def test_msp_tenants_per_vni(tmp_path):
    path = tmp_path / "collector.pcap"
    pairs = [(Outer(vni=vni, ident=vni * 100), get_ok()) for vni in (1001, 1002, 1003)]
    pcapgen.write_capture(path, pcapgen.http_capture_frames(pairs))
    v = verdict.build_verdict(scenario="msp", collector_pcap=path, files=[path])
    assert v["outcome"] == "delivered"
    assert set(v["tenants"]) == {"1001", "1002", "1003"}
    assert all(t["requests"] == t["responses"] == 1 for t in v["tenants"].values())


def test_traffic_log_summary_and_bad_logs(tmp_path):
    log = tmp_path / "traffic.log"
    log.write_text("# vtap-traffic v1\n"
                   "1\thttp://10.30.1.4/\t200\t612\t0.003\n"
                   "2\thttp://10.30.1.4/big.bin\t200\t200000\t0.020\n"
                   "3\thttp://10.30.1.4/\t000\t0\t5.0\n")
    pcap = capture(tmp_path, get_ok())
    v = verdict.build_verdict(scenario="b2", collector_pcap=pcap, files=[pcap, log],
                              traffic_log=log, root=tmp_path)
    t = v["traffic"]
    assert (t["requests"], t["ok"], t["failed"], t["bytes"]) == (3, 2, 1, 200612)
    assert t["urls"] == {"http://10.30.1.4/": 2, "http://10.30.1.4/big.bin": 1}
    assert v["files"] == ["collector.pcap", "traffic.log"]
    log.write_text("n url status\n")
    v = verdict.build_verdict(scenario="b2", collector_pcap=pcap, files=[pcap],
                              traffic_log=log)
    assert "vtap-traffic v1" in v["traffic"]["error"]
    assert v["outcome"] == "delivered"  # the log is context, the capture decides
    log.write_text("# vtap-traffic v1\n1\thttp://x/\t200\tmany\t0.1\n")
    with pytest.raises(verdict.TrafficLogError, match=r"traffic\.log:2"):
        verdict.parse_traffic_log(log)


def test_write_load_and_table(tmp_path):
    pcap = capture(tmp_path, get_ok())
    v = verdict.build_verdict(scenario="b2", collector_pcap=pcap, files=[pcap])
    out = verdict.write_verdict(tmp_path / "ev" / "b2", v)
    assert out == tmp_path / "ev" / "b2" / "verdict.json"
    assert verdict.load_verdict(out) == v
    assert verdict.load_verdict(out.parent) == v
    table = verdict.format_table(v)
    assert "delivered" in table and "GET / x1" in table and "HTTP/1.1 200 OK x1" in table
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a verdict"):
        verdict.load_verdict(tmp_path / "bad.json")


def test_decode_cli_with_scenario(tmp_path):
    pcap = capture(tmp_path, get_ok())
    done = subprocess.run([sys.executable, "-m", "vtaplab", "decode", str(pcap), "--json",
                           "--scenario", "b2"], capture_output=True, text=True, cwd=ROOT,
                          check=True)
    v = json.loads(done.stdout)
    assert v["scenario"] == "b2" and v["outcome"] == "delivered" and v["matches_expected"]
    log = tmp_path / "traffic.log"
    log.write_text("# vtap-traffic v1\n1\thttp://10.30.1.4/\t200\t15\t0.001\n"
                   "2\thttp://10.30.1.4/\t000\t0\t5\n")
    done = subprocess.run([sys.executable, "-m", "vtaplab", "decode", str(pcap),
                           "--traffic-log", str(log)],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    assert re.search(r"outcome +delivered", done.stdout)
    assert re.search(r"requests not seen +1 of 2 sent", done.stdout)
    assert re.search(r"traffic log +2 requests sent, 1 ok, 1 failed", done.stdout)
    done = subprocess.run([sys.executable, "-m", "vtaplab", "decode", str(pcap), "--port",
                           "70000"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 2 and "1-65535" in done.stderr


def test_loss_section_compares_the_traffic_log_with_the_capture(tmp_path):
    log = tmp_path / "traffic.log"
    log.write_text("# vtap-traffic v1\n" + "".join(
        f"{n}\thttp://10.30.1.4/\t200\t15\t0.001\n" for n in range(1, 4)))
    pcap = capture(tmp_path, get_ok())
    v = verdict.build_verdict(scenario="b2", collector_pcap=pcap, files=[pcap],
                              traffic_log=log)
    assert v["loss"]["requests_sent"] == 3 and v["loss"]["requests_seen"] == 1
    assert v["loss"]["requests_not_seen"] == 2 and v["loss"]["tcp_holes"] == 0
    assert re.search(r"requests not seen +2 of 3 sent", verdict.format_table(v))


def test_msp_needs_every_arriving_tenant_delivered(tmp_path):
    path = tmp_path / "collector.pcap"
    ssh = HttpExchange(server_port=22, messages=[(b"SSH-2.0-x\r\n", b"SSH-2.0-y\r\n")])
    pairs = [(Outer(vni=1001, src="10.40.2.5"), get_ok()),
             (Outer(vni=1002, src="10.40.2.6", ident=900), ssh)]
    pcapgen.write_capture(path, pcapgen.http_capture_frames(pairs))
    v = verdict.build_verdict(scenario="msp", collector_pcap=path, files=[path])
    assert v["outcome"] == "not-delivered" and v["matches_expected"] is False
    assert v["reason"].startswith("VNI(s) 1002 arrived without") and "1 of 2" in v["reason"]
    assert v["tenants"]["1001"]["delivered"] and not v["tenants"]["1002"]["delivered"]
    assert v["tenants"]["1002"]["outer_sources"] == ["10.40.2.6"]
    table = verdict.format_table(v)
    assert re.search(r"vni 1002 +NOT delivered: .* from 10\.40\.2\.6", table)
    v = verdict.build_verdict(scenario="b2", collector_pcap=path, files=[path])
    assert v["outcome"] == "delivered" and v["reason"].endswith("1 of 2 VNIs delivered")


def test_table_of_an_arm_verdict_has_no_capture_rows():
    v = verdict.build_verdict(scenario="r1", collector_pcap=None, files=[],
                              arm_error={"code": facts.ARM_PE_AS_VTAP_DESTINATION,
                                         "message": "cannot be a destination"})
    table = verdict.format_table(v)
    assert "rejected" in table and "cannot be a destination" in table
    assert "vxlan packets" not in table and "inner requests" not in table
    assert re.search(r"^outcome +error$", verdict.format_table({"outcome": "error"}), re.M)


def test_a_truncated_capture_says_so_in_the_reason(tmp_path):
    pcap = capture(tmp_path, get_ok())
    pcap.write_bytes(pcap.read_bytes()[:-20])
    v = verdict.build_verdict(scenario="b2", collector_pcap=pcap, files=[pcap])
    assert v["outcome"] == "delivered" and v["reason"].endswith("(capture truncated)")
    assert v["capture"]["truncated"] and "file truncated" in v["capture"]["notes"][0]
    assert "TRUNCATED" in verdict.format_table(v)


def test_a_ring_prefix_is_a_capture_when_its_members_exist(tmp_path):
    # tcpdump -w collector.pcap -C M -W N writes collector.pcap0, collector.pcap1, ...
    capture(tmp_path, get_ok(), name="collector.pcap0")
    prefix = tmp_path / "collector.pcap"
    v = verdict.build_verdict(scenario="b2", collector_pcap=prefix, files=[prefix],
                              root=tmp_path)
    assert v["outcome"] == "delivered", v.get("reason")
    assert v["inner_http"]["requests"] == ["GET /"]
