"""The one judge (vtaplab.judge.outcome): every outcome reachable, no other possible, complete vs
lossy mirrors, the fragments figure, and nobody else writing the verdict's outcome fields."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from vtaplab import PROJECT_ROOT, facts
from vtaplab.bench import pcapgen
from vtaplab.bench.pcapgen import HttpExchange, Outer, http_get, http_ok
from vtaplab.judge import outcome, verdict
from vtaplab.judge.outcome import Evidence, Judgement, judge, settle

BIG_BODY = pcapgen.body_of(200_000, 1)


def exchange(*messages: tuple[bytes, bytes]) -> HttpExchange:
    return HttpExchange(messages=list(messages))


def small() -> tuple[bytes, bytes]:
    return http_get("/"), http_ok(b"<html>hi</html>")


def big() -> tuple[bytes, bytes]:
    return http_get("/big.bin"), http_ok(BIG_BODY)


def write_capture(tmp_path: Path, frames: list[bytes], name: str = "collector.pcap") -> Path:
    path = tmp_path / name
    pcapgen.write_capture(path, frames)
    return path


def frames_of(*pairs: tuple[Outer, HttpExchange]) -> list[bytes]:
    return list(pcapgen.http_capture_frames(pairs))


def traffic_log(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    """rows: (url, status) per request the client sent."""
    path = tmp_path / "traffic.log"
    lines = [verdict.TRAFFIC_LOG_HEADER]
    lines += [f"{n}\t{url}\t{status}\t10\t0.01" for n, (url, status) in enumerate(rows, 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def capture_figures(requests: int = 2, responses: int = 2, incomplete: int = 0,
                    per_vni: dict | None = None) -> dict:
    return {"capture": {"format": "pcap", "frames": 50, "vxlan_port": facts.VXLAN_PORT},
            "vxlan_packets": 40 if requests or responses else 0,
            "inner_http": {"request_count": requests, "response_count": responses,
                           "incomplete_bodies": incomplete},
            "fragments": {"frames": 0, "reassembled": 0, "incomplete": 0},
            "loss": {"tcp_holes": 0}, "tenants": per_vni or {}}


# One input per outcome: each outcome in facts.OUTCOMES comes out of the judge for some input.
REACHING: dict[str, Evidence] = {
    "delivered": Evidence("b2", capture=capture_figures(),
                          traffic={"requests": 2, "failed": 0}),
    "degraded": Evidence("b2", capture=capture_figures(requests=1, responses=1),
                         traffic={"requests": 2, "failed": 0}),
    "not-delivered": Evidence("b2", missing_capture="collector capture missing"),
    "rejected": Evidence("r1", arm_error={"code": facts.ARM_PE_AS_VTAP_DESTINATION}),
    "accepted": Evidence("r1"),
    "not-applicable": Evidence("c1"),
    "error": Evidence("b2", evidence_error="collector unreachable"),
    "unknown": Evidence("a", prediction={"refusals": [], "advisory": 1}),
}


def test_every_outcome_is_reachable_and_in_facts():
    assert set(REACHING) == set(facts.OUTCOMES)
    for name, evidence in REACHING.items():
        assert judge(evidence).outcome == name, name


def test_the_judge_can_return_no_other_outcome():
    with pytest.raises(ValueError, match="accepted: delivered, degraded"):
        Judgement("unknown-thing", None, "r")
    # Every combination of the judge's inputs over every scenario: only facts.OUTCOMES.
    captures = [None, capture_figures(), capture_figures(1, 1), capture_figures(0, 0),
                capture_figures(incomplete=1),
                capture_figures(per_vni={"1001": {"delivered": True, "requests": 2}})]
    seen: set[str] = set()
    for scenario, cap, traffic, arm, pred, failover, variant in itertools.product(
            [None, *facts.SCENARIOS], captures, [None, {"requests": 2, "failed": 0}],
            [None, {"code": "X"}], [None, {"refusals": []},
                                   {"refusals": [{"rule": "R", "arm_code": None}]}],
            [None, {"confined": True}, {"confined": False, "why": "leak"}],
            [(), ({"name": "proxy-down", "outcome": "error"},)]):
        got = judge(Evidence(scenario, capture=cap, traffic=traffic, arm_error=arm,
                             prediction=pred, failover=failover, variants=variant))
        assert got.outcome in facts.OUTCOMES
        seen.add(got.outcome)
    assert seen >= set(facts.OUTCOMES) - {"error"}


def test_meanings_cover_exactly_the_outcomes():
    assert tuple(outcome.MEANINGS) == facts.OUTCOMES


def test_a_complete_mirror_is_delivered(tmp_path):
    pcap = write_capture(tmp_path, frames_of((Outer(), exchange(big(), small()))))
    log = traffic_log(tmp_path, [("http://10.30.1.4/big.bin", "200"),
                                 ("http://10.30.1.4/", "200")])
    v = verdict.build_verdict(scenario="b2", collector_pcap=pcap, files=[pcap], traffic_log=log)
    assert v["outcome"] == "delivered" and v["matches_expected"] is True
    assert "missing_figures" not in v and "loss_at" not in v


def test_a_request_the_collector_never_saw_is_degraded_not_delivered(tmp_path):
    # The old judge said delivered: one request and one response were enough.
    pcap = write_capture(tmp_path, frames_of((Outer(), exchange(small()))))
    log = traffic_log(tmp_path, [("http://10.30.1.4/", "200"), ("http://10.30.1.4/", "200")])
    v = verdict.build_verdict(scenario="b2", collector_pcap=pcap, files=[pcap], traffic_log=log)
    assert v["outcome"] == "degraded" and v["matches_expected"] is False
    assert "1 of 2 answered requests not seen" in v["reason"]
    assert v["loss_at"] == "clients -> collector"


def test_a_lost_fragment_is_degraded_with_the_figures(tmp_path):
    frames = frames_of((Outer(), exchange(big(), small())))
    fragment_frames = [i for i, f in enumerate(frames) if f[20] & 0x3F or f[21]]
    del frames[fragment_frames[40]]
    pcap = write_capture(tmp_path, frames)
    v = verdict.build_verdict(scenario="b2", collector_pcap=pcap, files=[pcap])
    assert v["outcome"] == "degraded"
    assert "1 bodies incomplete" in v["reason"]
    assert "1 outer datagrams never reassembled" in v["reason"]
    frags = v["fragments_at_collector"]
    assert frags["datagrams_incomplete"] == 1 and frags["datagrams_reassembled"] > 100
    assert frags["fragment_frames_seen"] == 2 * frags["datagrams_reassembled"] + 1


def test_the_fragments_figure_answers_whether_non_first_fragments_arrive(tmp_path):
    whole = write_capture(tmp_path, frames_of((Outer(), exchange(big()))))
    v = verdict.build_verdict(scenario="b2", collector_pcap=whole, files=[whole])
    assert v["fragments_at_collector"]["answer"].startswith("every fragmented datagram")
    # Only first fragments arrive (a hop that drops non-first fragments): nothing reassembles.
    firsts = [f for f in frames_of((Outer(), exchange(big())))
              if not ((f[20] & 0x1F) or f[21])]
    cut = write_capture(tmp_path, firsts, "firsts.pcap")
    v = verdict.build_verdict(scenario="b2", collector_pcap=cut, files=[cut])
    assert v["fragments_at_collector"]["datagrams_reassembled"] == 0
    assert "non-first fragments do not arrive" in v["fragments_at_collector"]["answer"]
    assert v["outcome"] in ("degraded", "not-delivered")
    assert "outer fragments" in verdict.format_table(v)


def test_the_loss_is_located_at_the_first_hop_whose_count_drops():
    hops = [{"hop": "proxy-in", "requests": 4, "responses": 4},
            {"hop": "proxy-out", "requests": 4, "responses": 4},
            {"hop": "pls", "requests": 3, "responses": 3},
            {"hop": "collector", "requests": 3, "responses": 3}]
    got = judge(Evidence("b2", capture=capture_figures(3, 3),
                         traffic={"requests": 4, "failed": 0}, hops=hops))
    assert got.outcome == "degraded" and got.loss_at == "proxy-out -> pls"
    bodies = [{"hop": "proxy", "requests": 4, "responses": 4, "incomplete_bodies": 0},
              {"hop": "collector", "requests": 4, "responses": 4, "incomplete_bodies": 2}]
    got = judge(Evidence("b2", capture=capture_figures(4, 4, incomplete=2), hops=bodies))
    assert got.outcome == "degraded" and got.loss_at == "proxy -> collector"


def test_msp_per_tenant_loss_is_degraded_and_mixing_is_not_delivered():
    per_vni = {"1001": {"packets": 9, "requests": 2, "responses": 2, "delivered": True},
               "1002": {"packets": 9, "requests": 1, "responses": 1, "delivered": True}}
    table = [{"tenant": "t1", "vni": 1001, "sent": 2, "requests": 2},
             {"tenant": "t2", "vni": 1002, "sent": 2, "requests": 1}]
    got = judge(Evidence("msp", capture=capture_figures(3, 3, per_vni=per_vni),
                         tenant_table=table))
    assert got.outcome == "degraded" and "tenant t2: 1 of 2 requests" in got.reason
    mixed = [{**table[0], "sent": 1}, table[1]]
    got = judge(Evidence("msp", capture=capture_figures(3, 3, per_vni=per_vni),
                         tenant_table=mixed))
    assert got.outcome == "not-delivered" and "can't be told apart" in got.reason


def test_failover_loss_inside_the_window_is_reported_not_held_against_b3():
    ev = Evidence("b3", capture=capture_figures(3, 3), traffic={"requests": 4, "failed": 0},
                  failover={"confined": True, "backend": "p2", "window_s": 0.9,
                            "lost_in_window": 5})
    got = judge(ev)
    assert got.outcome == "delivered" and "1 of 4 answered requests not seen" in got.reason
    leaked = Evidence("b3", capture=capture_figures(), failover={"confined": False,
                                                                 "backend": "p2",
                                                                 "why": "sent to p2 after"})
    got = judge(leaked)
    # The rest of the mirror arrived: partial, and the loss named where it happened.
    assert got.outcome == "degraded" and "sent to p2 after" in got.reason
    assert got.loss_at is not None and "p2" in got.loss_at


def test_a_rolling_upgrade_reports_every_window():
    windows = [{"backend": "p1", "window_s": 0.6, "lost_in_window": 10, "confined": True},
               {"backend": "p12", "window_s": 0.7, "lost_in_window": 12, "confined": True}]
    ev = Evidence("b4", capture=capture_figures(), failover={
        "confined": True, "cause": "upgrade", "backend": "p1, p12", "lost_in_window": 22,
        "windows": windows})
    got = judge(ev)
    assert got.outcome == "delivered"
    assert ("p1 out of the LB 0.6 s after it went down for its upgrade, p12 out of the LB "
            "0.7 s after it went down for its upgrade; 22 datagrams lost in those windows, "
            "none after") in got.reason
    rewrite = Evidence("b4", capture=capture_figures(), failover={
        "confined": False, "cause": "rewrite", "backend": "p12", "lost_after_window": None,
        "why": "the LB never took p12 out after it lost its rewrite"})
    assert judge(rewrite).outcome == "degraded"


def test_b3_is_as_good_as_its_worst_run():
    base = Evidence("b3", capture=capture_figures())
    for variant, expected in (("delivered", "delivered"), ("degraded", "degraded"),
                              ("not-delivered", "not-delivered"), ("error", "not-delivered")):
        got = judge(Evidence(base.scenario, capture=base.capture,
                             variants=[{"name": "proxy-down", "outcome": variant}]))
        assert got.outcome == expected, variant


def test_a_verdict_can_be_judged_again_from_itself(tmp_path):
    pcap = write_capture(tmp_path, frames_of((Outer(), exchange(small()))))
    log = traffic_log(tmp_path, [("http://10.30.1.4/", "200"), ("http://10.30.1.4/", "200")])
    v = verdict.build_verdict(scenario="b2", collector_pcap=pcap, files=[pcap], traffic_log=log)
    again = settle(dict(v, outcome="delivered", reason="typed by hand"))
    assert (again["outcome"], again["reason"]) == (v["outcome"], v["reason"])


WRITES = re.compile(r"""(\[\s*["'](outcome|matches_expected|reason)["']\s*\]\s*=(?!=)"""
                    r"""|\.update\([^)]*\b(outcome|matches_expected)=)""")


def test_nothing_but_the_judge_writes_the_outcome_fields():
    offenders = []
    for folder in ("vtaplab", "components", "policy"):
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            if path == PROJECT_ROOT / "vtaplab" / "judge" / "outcome.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if WRITES.search(line):
                    offenders.append(f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}")
    assert offenders == []
