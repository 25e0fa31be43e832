"""The one judge: ``judge(evidence)`` decides a verdict's ``outcome``, ``matches_expected`` and
``reason``; ``settle(verdict)`` writes them into a verdict from the evidence it carries.

Nothing else in the project writes those three fields. Every producer of evidence (the
decoder via ``verdict.verdict_from_summary``, the SFTP fetch, the ARM attempts, the emulator's
tenant and failover figures, the matrix's predictions and its b3 proxy-down variant) adds its
evidence to the verdict under the key named below and calls ``settle``; so a ``verdict.json``
can be judged again from itself, and the judge's decision is a pure function of what it shows.

Inputs (verdict keys) and what they decide, first match wins:

  evidence_error   nobody could look (capture unreadable, VM unreachable, run failed):
                   ``error``, matches_expected None — nothing is claimed
  attempts         r1/b1: the scenario's own attempt (the first) decides ``rejected`` /
                   ``accepted`` / ``error`` (``classify_attempt``); an ``error`` in any other
                   attempt makes the scenario ``error`` (never hidden); an accepted ride-along
                   attempt stays a warning
  arm_error        ARM refused the deployment: ``rejected``, matching when its code is expected
  prediction       the preflight rules' answer (matrix offline): a refusal -> ``rejected``
                   (c1: ``not-applicable``); none -> ``accepted`` (``unknown`` for a traffic
                   scenario: only Azure can measure it)
  capture figures  (``capture``, ``vxlan_packets``, ``inner_http``, ``fragments``, ``loss``,
                   ``traffic``, ``tenants``): ``not-delivered`` (no capture, no VXLAN, no HTTP,
                   a tenant without a whole exchange, tenants not told apart), ``degraded``
                   (a failover that leaked: mirror sent to a proxy at fault outside its
                   window; or VXLAN and HTTP arrived but something the clients
                   exchanged is missing: requests/responses fewer than the traffic log, bodies
                   incomplete, TCP holes, outer fragments never reassembled; per tenant for
                   msp), else ``delivered``
  tenant_table     msp: the per-tenant rows (``tenants.tenant_table``) to judge separation
  failover         b3/b4 with a proxy at fault (down, rewrite gone, rolling upgrade): a
                   failover whose loss leaked outside its window(s) degrades it; loss inside
                   the windows is reported, not held against the scenario
  variants         b3, b4: the runs with a proxy at fault; the scenario is only as good as
                   its worst run
  hops             per capture point (client log, proxies, collector): where the loss happened

Every outcome it returns is in ``facts.OUTCOMES`` (``Judgement`` refuses any other).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vtaplab import facts
from vtaplab.judge import tenants as tenant_rules

# What each outcome means, one line each (RESULTS.md's legend; a test keeps it to OUTCOMES).
MEANINGS: dict[str, str] = {
    "delivered": "the mirror was complete: every request, response and body the clients "
                 "exchanged arrived whole at the collector (per tenant for msp)",
    "degraded": "VXLAN and HTTP arrived, but something the clients exchanged did not; the "
                "verdict says what is missing and where it was lost first",
    "not-delivered": "no VXLAN, no inner HTTP, a tenant missing or tenants not told apart",
    "rejected": "ARM refused the request (matches when its code is the expected one)",
    "accepted": "ARM accepted what it used to refuse: the platform changed",
    "not-applicable": "the approach can't be expressed (c1)",
    "error": "nothing could be looked at (auth, quota, an unreachable VM, an unreadable "
             "capture): never counted as the expected answer",
    "unknown": "a prediction nothing in the rules decides: only a run on Azure can",
}

# Outcomes from the least to the most alarming, for combining runs of one scenario.
_SEVERITY = ("delivered", "degraded", "not-delivered")
# Attempt outcomes, the most alarming first: an error is never hidden behind a rejection.
_ATTEMPT_SEVERITY = ("error", "accepted", "rejected")


@dataclass(frozen=True)
class Judgement:
    """What the judge decided; ``loss_at`` names the hop where the loss shows first."""

    outcome: str
    matches_expected: bool | None
    reason: str
    loss_at: str | None = None
    missing: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.outcome not in facts.OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r}: accepted: {', '.join(facts.OUTCOMES)}")


@dataclass(frozen=True)
class Evidence:
    """Everything the judge reads; ``Evidence.of(verdict)`` takes it from a verdict's keys."""

    scenario: str | None
    evidence_error: str | None = None
    missing_capture: str | None = None
    attempts: Sequence[Mapping[str, Any]] = ()
    arm_error: Mapping[str, Any] | None = None
    prediction: Mapping[str, Any] | None = None
    capture: Mapping[str, Any] | None = None
    """The decoded collector capture as the verdict holds it (vxlan_packets, inner_http,
    fragments, loss, tenants, capture); None when there is none."""
    traffic: Mapping[str, Any] | None = None
    tenant_table: Sequence[Mapping[str, Any]] | None = None
    failover: Mapping[str, Any] | None = None
    variants: Sequence[Mapping[str, Any]] = ()
    hops: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    mirror: Mapping[str, Any] | None = None
    """The emulator's account of the path (drops by resource, fastpath, lost_between)."""

    @classmethod
    def of(cls, verdict: Mapping[str, Any]) -> Evidence:
        capture = None
        if "capture" in verdict:
            capture = {k: verdict.get(k) for k in ("capture", "vxlan_packets", "inner_http",
                                                   "fragments", "loss", "tenants")}
        return cls(scenario=verdict.get("scenario"),
                   evidence_error=verdict.get("evidence_error"),
                   missing_capture=verdict.get("missing_capture"),
                   attempts=verdict.get("attempts") or (),
                   arm_error=verdict.get("arm_error"),
                   prediction=verdict.get("prediction"),
                   capture=capture,
                   traffic=verdict.get("traffic"),
                   tenant_table=verdict.get("tenant_table"),
                   failover=verdict.get("failover"),
                   variants=verdict.get("variants") or (),
                   hops=verdict.get("hops") or (),
                   mirror=verdict.get("mirror"))


def settle(verdict: dict[str, Any]) -> dict[str, Any]:
    """Judge ``verdict`` from the evidence it carries and write outcome, matches_expected,
    reason (and ``loss_at`` / ``missing`` for a degraded one). Returns ``verdict``."""
    decided = judge(Evidence.of(verdict))
    verdict["outcome"] = decided.outcome
    verdict["matches_expected"] = decided.matches_expected
    verdict["reason"] = decided.reason
    for key in ("loss_at", "missing_figures"):
        verdict.pop(key, None)
    if decided.loss_at is not None:
        verdict["loss_at"] = decided.loss_at
    if decided.missing:
        verdict["missing_figures"] = list(decided.missing)
    return verdict


def _spec(scenario: str | None) -> facts.Scenario | None:
    if scenario is None:
        return None
    if scenario not in facts.SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; accepted: "
                         f"{', '.join(facts.SCENARIOS)}")
    return facts.SCENARIOS[scenario]


def _matches(spec: facts.Scenario | None, outcome: str) -> bool | None:
    """An outcome against the scenario's expectation; ``error`` and ``unknown`` claim none."""
    if spec is None or spec.expected_outcome is None or outcome in ("error", "unknown"):
        return None
    return outcome == spec.expected_outcome


def classify_attempt(scenario: str, code: str | None, status: int, *, attempt: str | None = None,
                     operation_failed: bool = False) -> tuple[str, bool | None]:
    """One ARM attempt's answer: ``accepted`` (no error), ``rejected`` (an expected code, as a
    4xx or a failed operation), else ``error``; and whether that is the expected answer. An
    attempt whose expectation is unknown (``facts.ATTEMPT_EXPECTED_ARM_CODES``: None, b1's
    IP-based pool) records any refusal as ``rejected`` and matches nothing (None)."""
    spec = _spec(scenario)
    assert spec is not None
    expected: tuple[str, ...] | None = spec.expected_arm_codes
    if attempt is not None and attempt in facts.ATTEMPT_EXPECTED_ARM_CODES:
        expected = facts.ATTEMPT_EXPECTED_ARM_CODES[attempt]
    refused = operation_failed or 400 <= (status or 0) < 500
    if code is None:
        return "accepted", None if expected is None else False
    if expected is None:
        # Not an answer to the question: the caller could not ask it (auth, throttling).
        if refused and (status or 0) not in (401, 403, 429):
            return "rejected", None
        return "error", False
    if code in expected and refused:
        return "rejected", True
    return "error", False


def judge(ev: Evidence) -> Judgement:
    """The outcome, matches_expected and reason for ``ev`` (see the module docstring)."""
    spec = _spec(ev.scenario)
    if ev.evidence_error is not None:
        return Judgement("error", None, ev.evidence_error)
    if ev.attempts:
        return _judge_attempts(ev.attempts)
    if ev.arm_error is not None and not (ev.prediction and ev.arm_error.get("predicted")):
        code = str(ev.arm_error.get("code") or "")
        matches = None if spec is None or spec.expected_outcome is None else (
            spec.expected_outcome == "rejected" and code in spec.expected_arm_codes)
        return Judgement("rejected", matches,
                         f"ARM rejected the deployment with {code or 'no code'}")
    if ev.prediction is not None:
        return _judge_prediction(spec, ev.prediction)
    if spec is not None and spec.id == "c1":
        return Judgement("not-applicable", _matches(spec, "not-applicable"),
                         "a vTAP destination can only be a NIC ip-configuration or an ILB "
                         "frontend")
    if spec is not None and not spec.carries_traffic:
        return Judgement("accepted", _matches(spec, "accepted"),
                         "ARM accepted the deployment (no error recorded)")
    base = _with_mirror(_judge_capture(spec, ev), ev.mirror)
    return _with_variants(spec, base, ev.variants)


def _with_mirror(base: Judgement, mirror: Mapping[str, Any] | None) -> Judgement:
    """The emulator knows more than the captures: which tapped NICs were not on fastpath and
    which resource's rules dropped packets. That sharpens the reason and the loss location;
    the outcome stays what the evidence at the collector shows."""
    if not mirror:
        return base
    notes = list(mirror.get("not_on_fastpath") or [])
    drops = {k: v for k, v in (mirror.get("drops") or {}).items() if not k.startswith("fault:")}
    if drops and base.outcome != "delivered":
        notes.append("dropped by " + ", ".join(f"{k} ({v})" for k, v in drops.items()))
    if not notes:
        return base
    lost = [str(r) for r in mirror.get("lost_at") or []]
    loss_at = base.loss_at
    if lost and base.outcome in ("degraded", "not-delivered"):
        loss_at = ", ".join(lost)
    return replace(base, reason=f"{base.reason}; {'; '.join(notes)}", loss_at=loss_at)


def _judge_attempts(attempts: Sequence[Mapping[str, Any]]) -> Judgement:
    primary = attempts[0]
    outcome = str(primary.get("outcome"))
    matches = bool(primary.get("matches_expected"))
    others = [a for a in attempts[1:] if a.get("outcome") == "error"]
    if outcome != "error" and others:
        bad = others[0]
        return Judgement("error", False,
                         f"attempt {bad.get('attempt')}: ARM answered {bad.get('arm_code')} "
                         f"(HTTP {bad.get('status')}): fix that and run again")
    if outcome == "error" and not primary.get("status"):
        # No ARM answer at all (authentication, network): say what failed, in one line.
        return Judgement("error", False,
                         f"{primary.get('arm_code')}: {primary.get('arm_message')}; nothing "
                         "reached ARM: fix that and run again")
    if outcome == "error":
        return Judgement("error", False,
                         f"ARM answered {primary.get('arm_code')} (HTTP {primary.get('status')}"
                         "), not the expected rejection: fix that and run again")
    if outcome == "accepted":
        return Judgement("accepted", matches, str(primary.get("warning") or
                                                  "ARM accepted the attempt"))
    code = primary.get("arm_code") or "no code"
    return Judgement(outcome, matches, f"ARM rejected the deployment with {code}")


def worst_attempt_outcome(outcomes: Sequence[str | None]) -> str | None:
    """The stack outputs' one outcome of several attempts, judged as ``judge`` does (the
    first attempt decides, an error anywhere wins); None before any attempt answered."""
    answered = [o for o in outcomes if o in _ATTEMPT_SEVERITY]
    if not answered:
        return None
    if "error" in answered:
        return "error"
    return answered[0]


def _judge_prediction(spec: facts.Scenario | None, pred: Mapping[str, Any]) -> Judgement:
    refusals = list(pred.get("refusals") or [])
    if spec is not None and spec.id == "c1":
        if refusals:
            return Judgement("not-applicable", _matches(spec, "not-applicable"),
                             f"rule {refusals[0].get('rule')}: {refusals[0].get('message')}")
        return Judgement("accepted", False,
                         "no rule objects to an Azure Firewall as vTAP destination")
    if refusals:
        expected = spec.expected_arm_codes if spec else ()
        matches = (None if spec is None or spec.expected_outcome is None else
                   spec.expected_outcome == "rejected"
                   and all(r.get("arm_code") in (*expected, None) for r in refusals))
        return Judgement("rejected", matches,
                         "the preflight rules predict ARM's refusal: " + "; ".join(
                             f"{r.get('rule')} {r.get('arm_code') or '(unsupported)'} on "
                             f"{r.get('resource')}" for r in refusals))
    if spec is not None and spec.carries_traffic:
        return Judgement("unknown", None,
                         f"the preflight rules find nothing ARM refuses "
                         f"({int(pred.get('advisory') or 0)} advisory finding(s)); whether the "
                         "data path carries vTAP's VXLAN is only measurable on Azure")
    return Judgement("accepted", False,
                     "no rule predicts a refusal: ARM would accept it, if the rules are right")


def _judge_capture(spec: facts.Scenario | None, ev: Evidence) -> Judgement:
    cap = ev.capture
    if cap is None:
        return Judgement("not-delivered", _matches(spec, "not-delivered"),
                         ev.missing_capture or "no collector capture")
    meta = cap.get("capture") or {}
    http = cap.get("inner_http") or {}
    vxlan = int(cap.get("vxlan_packets") or 0)
    requests, responses = int(http.get("request_count", 0)), int(http.get("response_count", 0))
    truncated = " (capture truncated)" if meta.get("truncated") else ""

    def verdict(outcome: str, reason: str, **extra: Any) -> Judgement:
        return Judgement(outcome, _matches(spec, outcome), reason + truncated, **extra)

    if not (vxlan and requests and responses):
        return verdict("not-delivered", _why_not(meta, vxlan, requests, responses))
    per_vni = cap.get("tenants") or {}
    if spec is not None and spec.id == "msp":
        missing = [v for v, t in sorted(per_vni.items()) if not t.get("delivered")]
        if missing:
            return verdict("not-delivered",
                           f"VNI(s) {', '.join(missing)} arrived without an inner HTTP request "
                           f"and response ({len(per_vni) - len(missing)} of {len(per_vni)} "
                           "tenants delivered)")
    if ev.tenant_table is not None:
        problems = _separation(per_vni, ev.tenant_table)
        if problems:
            return verdict("not-delivered",
                           "the tenants can't be told apart: " + "; ".join(problems))
    failover_note = ""
    excused = False
    if ev.failover is not None:
        fo = ev.failover
        what = facts.FAILOVER_CAUSES.get(str(fo.get("cause") or "down"), "went down")
        if fo.get("confined"):
            excused = True
            windows = fo.get("windows") or [fo]
            failover_note = "; failover: " + ", ".join(
                f"{w.get('backend')} out of the LB {w.get('window_s')} s after it {what}"
                for w in windows) + (
                f"; {fo.get('lost_in_window')} datagrams lost in "
                f"{'that window' if len(windows) == 1 else 'those windows'}, none after")
        else:
            # Part of the mirror went to a proxy that couldn't carry it, outside any window:
            # the rest arrived, so the mirror is partial (degraded), and the loss is located.
            why = fo.get("why") or (f"{fo.get('lost_after_window')} datagrams sent to "
                                    f"{fo.get('backend')} after it {what} and the LB took it "
                                    "out")
            where = f"proxy {fo.get('backend')} (LB backend at fault)"
            return verdict("degraded", f"{vxlan} VXLAN packets; failover not confined: {why}",
                           loss_at=where, missing=(f"failover: {why}",))
    reason = f"{vxlan} VXLAN packets; inner HTTP: {requests} requests, {responses} responses"
    if len(per_vni) > 1:
        done = sum(1 for t in per_vni.values() if t.get("delivered"))
        reason += f"; {done} of {len(per_vni)} VNIs delivered"
    gaps = _gaps(cap, ev.traffic, ev.tenant_table)
    if gaps and not excused:
        where = _loss_at(_path(cap, ev.traffic, ev.hops))
        located = f"; lost first at {where}" if where else ""
        return verdict("degraded", f"{reason}, but incomplete: {'; '.join(gaps)}{located}",
                       loss_at=where, missing=tuple(gaps))
    if gaps:
        failover_note += f" (missing: {'; '.join(gaps)})"
    return verdict("delivered", reason + failover_note)




def _why_not(meta: Mapping[str, Any], vxlan: int, requests: int, responses: int) -> str:
    if meta.get("format") == "empty" or not meta.get("frames"):
        return "the collector capture holds no packets"
    if vxlan == 0:
        return (f"no VXLAN (UDP/{meta.get('vxlan_port', facts.VXLAN_PORT)}) among "
                f"{meta.get('frames')} packets ({meta.get('non_vxlan_packets', 0)} other)")
    if requests == 0 and responses == 0:
        return f"{vxlan} VXLAN packets but no inner HTTP request or response"
    if requests == 0:
        return f"{vxlan} VXLAN packets but no inner HTTP request"
    return f"{vxlan} VXLAN packets but no inner HTTP response"


def _separation(per_vni: Mapping[str, Any], table: Sequence[Mapping[str, Any]]) -> list[str]:
    vnis = {str(r["tenant"]): int(r["vni"]) for r in table}
    sent = {str(r["tenant"]): int(r["sent"]) for r in table if r.get("sent") is not None}
    return tenant_rules.separation_problems({"tenants": per_vni}, vnis,
                                            sent if len(sent) == len(vnis) else None)


def _gaps(cap: Mapping[str, Any], traffic: Mapping[str, Any] | None,
          table: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """What the clients exchanged that did not arrive whole at the collector."""
    http = cap.get("inner_http") or {}
    loss = cap.get("loss") or {}
    frags = cap.get("fragments") or {}
    gaps: list[str] = []
    if traffic and "error" not in traffic:
        # A request that failed at the client (status 000) was never exchanged: what the
        # mirror owes the collector is every answered request and its response.
        answered = int(traffic.get("requests", 0)) - int(traffic.get("failed", 0))
        seen_req, seen_resp = int(http.get("request_count", 0)), int(http.get("response_count", 0))
        if seen_req < answered:
            gaps.append(f"{answered - seen_req} of {answered} answered requests not seen")
        if seen_resp < answered:
            gaps.append(f"{answered - seen_resp} of {answered} responses not seen")
    if http.get("incomplete_bodies"):
        gaps.append(f"{http['incomplete_bodies']} bodies incomplete")
    if frags.get("incomplete"):
        gaps.append(f"{frags['incomplete']} outer datagrams never reassembled "
                    f"({frags.get('frames', 0)} fragment frames seen, "
                    f"{frags.get('reassembled', 0)} datagrams reassembled)")
    if loss.get("tcp_holes"):
        gaps.append(f"{loss['tcp_holes']} inner TCP holes ({loss.get('tcp_missing_bytes', 0)} "
                    "bytes missing)")
    for row in table or ():
        if row.get("sent") is not None and int(row.get("requests", 0)) < int(row["sent"]):
            gaps.append(f"tenant {row['tenant']}: {int(row['sent']) - int(row['requests'])} "
                        f"of {row['sent']} requests not seen on VNI {row['vni']}")
    return gaps


# Figures comparable from hop to hop (a proxy's capture holds each datagram twice, before and
# after its rewrite, so packet and fragment counts are not; the inner exchanges are).
_HOP_FIGURES = ("requests", "responses")


def _path(cap: Mapping[str, Any], traffic: Mapping[str, Any] | None,
          hops: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The hops in path order: the clients (their log), the capture points given, and the
    collector (from its capture, unless the hops already end there)."""
    path: list[Mapping[str, Any]] = []
    if traffic and "error" not in traffic:
        answered = int(traffic.get("requests", 0)) - int(traffic.get("failed", 0))
        path.append({"hop": "clients", "requests": answered, "responses": answered})
    path.extend(hops)
    if not hops or hops[-1].get("hop") != "collector":
        http = cap.get("inner_http") or {}
        frags = cap.get("fragments") or {}
        path.append({"hop": "collector", "requests": http.get("request_count", 0),
                     "responses": http.get("response_count", 0),
                     "incomplete_bodies": http.get("incomplete_bodies", 0),
                     "fragments_incomplete": frags.get("incomplete", 0)})
    return path


def _loss_at(hops: Sequence[Mapping[str, Any]]) -> str | None:
    """The first hop whose figures drop below the hop before it (requests, responses), or
    that counts incomplete bodies/fragments the one before did
    not: ``"<before> -> <hop>"``."""
    for before, hop in itertools.pairwise(hops):
        for key in _HOP_FIGURES:
            if key in before and key in hop and int(hop[key] or 0) < int(before[key] or 0):
                return f"{before.get('hop')} -> {hop.get('hop')}"
        for key in ("incomplete_bodies", "fragments_incomplete"):
            if int(hop.get(key) or 0) > int(before.get(key) or 0):
                return f"{before.get('hop')} -> {hop.get('hop')}"
    return None


def _with_variants(spec: facts.Scenario | None, base: Judgement,
                   variants: Sequence[Mapping[str, Any]]) -> Judgement:
    """b3, b4: "delivered, and still delivered with a proxy at fault": the worst run
    decides (the first of equally bad ones names it)."""
    worst: tuple[str, Mapping[str, Any]] | None = None
    for variant in variants:
        other = str(variant.get("outcome"))
        if other not in _SEVERITY:  # the variant measured nothing: the claim is not shown
            other = "not-delivered"
        if worst is None or _SEVERITY.index(other) > _SEVERITY.index(worst[0]):
            worst = (other, variant)
    if worst is None or base.outcome not in _SEVERITY or \
            _SEVERITY.index(worst[0]) <= _SEVERITY.index(base.outcome):
        return base
    other, variant = worst
    return Judgement(other, _matches(spec, other),
                     f"{base.outcome} without a fault, but with {variant.get('name')}: "
                     f"{other} ({variant.get('reason')})")
