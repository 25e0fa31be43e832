"""vtaplab.judge.tenants: when can the collector tell msp's tenants apart? (Pure: verdict dicts.)"""

from __future__ import annotations

from typing import Any

from vtaplab import plan
from vtaplab.judge.outcome import settle
from vtaplab.judge.tenants import format_tenant_table, separate_tenants, separation_problems

VNIS = {f"t{i}": plan.tenant_vni(i) for i in (1, 2, 3)}
SENT = {"t1": 4, "t2": 4, "t3": 4}


def verdict(per_vni: dict[int, tuple[int, int]], outcome: str = "delivered") -> dict[str, Any]:
    """A settled msp verdict whose capture held ``per_vni``: VNI -> (requests, responses)."""
    tenants = {str(v): {"packets": 10 * (q + r), "requests": q, "responses": r,
                        "delivered": q > 0 and r > 0, "outer_sources": ["10.40.2.5"]}
               for v, (q, r) in per_vni.items()}
    requests = sum(q for q, _ in per_vni.values())
    responses = sum(r for _, r in per_vni.values())
    packets = sum(t["packets"] for t in tenants.values())
    v = settle({
        "scenario": "msp", "vxlan_packets": packets, "tenants": tenants,
        "inner_http": {"request_count": requests, "response_count": responses,
                       "incomplete_bodies": 0},
        "fragments": {"frames": 0, "reassembled": 0, "incomplete": 0},
        "loss": {"tcp_holes": 0}, "capture": {"format": "pcap", "frames": packets},
    })
    assert v["outcome"] == outcome, v["reason"]
    return v


def test_each_tenant_on_its_own_vni_is_told_apart():
    v = separate_tenants(verdict({1001: (4, 4), 1002: (4, 4), 1003: (4, 4)}), VNIS, SENT)
    assert v["outcome"] == "delivered" and v["tenants_told_apart"] is True
    assert [(r["tenant"], r["vni"], r["sent"], r["requests"]) for r in v["tenant_table"]] == [
        ("t1", 1001, 4, 4), ("t2", 1002, 4, 4), ("t3", 1003, 4, 4)]


def test_all_tenants_on_one_vni_fail():
    v = separate_tenants(verdict({1001: (12, 12)}), VNIS, SENT)
    assert v["outcome"] == "not-delivered" and v["matches_expected"] is False
    assert "can't be told apart" in v["reason"]
    assert "VNI 1001 carries 12 requests, tenant t1 sent 4" in v["reason"]
    assert [r["delivered"] for r in v["tenant_table"]] == [True, False, False]


def test_two_tenants_configured_with_one_vni_fail_even_if_counts_add_up():
    problems = separation_problems(verdict({1001: (4, 4)}), {"t1": 1001, "t2": 1001})
    assert problems and "tenants t1, t2 all stamp VNI 1001" in problems[0]


def test_a_vni_of_no_tenant_fails():
    v = separate_tenants(verdict({1001: (4, 4), 1002: (4, 4), 1003: (4, 4), 1: (1, 1)}),
                         VNIS, SENT)
    assert v["outcome"] == "not-delivered" and "VNI(s) 1 belong to no tenant" in v["reason"]


def test_unknown_sent_counts_judge_on_vnis_alone():
    v = separate_tenants(verdict({1001: (3, 3), 1002: (4, 4), 1003: (5, 5)}), VNIS, None)
    assert v["tenants_told_apart"] is True and v["tenant_table"][0]["sent"] is None


def test_an_undelivered_verdict_stays_as_it_was():
    before = verdict({}, outcome="not-delivered")
    reason = before["reason"]
    v = separate_tenants(before, VNIS, SENT)
    assert v["outcome"] == "not-delivered" and v["reason"] == reason
    assert v["tenants_told_apart"] is False


def test_the_table_has_a_row_per_tenant():
    v = separate_tenants(verdict({1001: (4, 4), 1002: (4, 4)}), VNIS, SENT)
    lines = format_tenant_table(v["tenant_table"]).splitlines()
    assert lines[0].split()[:4] == ["tenant", "vni", "sent", "requests"]
    assert lines[3].split()[:7] == ["t3", "1003", "4", "0", "0", "0", "NO"]


def test_decap_columns_when_the_collector_has_decap_interfaces():
    v = separate_tenants(verdict({1001: (4, 4), 1002: (4, 4), 1003: (4, 4)}), VNIS, SENT,
                         decap={1001: ("vtap1001", 80), 1002: ("vtap1002", 80)})
    rows = v["tenant_table"]
    assert [(r["decap_interface"], r["decap_packets"]) for r in rows] == [
        ("vtap1001", 80), ("vtap1002", 80), (None, 0)]
    header = format_tenant_table(rows).splitlines()[0]
    assert "decap interface" in header and "decap packets" in header


def test_fewer_requests_than_sent_is_loss_not_mixing():
    v = separate_tenants(verdict({1001: (3, 3), 1002: (4, 4), 1003: (4, 4)}), VNIS, SENT)
    # Told apart (nobody's requests on another's VNI), but t1's mirror is not complete: a
    # delivered msp needs every tenant's exchange whole, so this is degraded, not delivered.
    assert v["outcome"] == "degraded" and v["tenants_told_apart"] is True
    assert "tenant t1: 1 of 4 requests not seen on VNI 1001" in v["reason"]
    assert v["matches_expected"] is False
