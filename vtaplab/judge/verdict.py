"""Verdicts: what a scenario's evidence files prove, computed from those files only.

A verdict's documented keys come first, in their order, and the extra keys follow. The
emulator, ``decode`` and the Azure evidence run all call ``build_verdict``, so there is one
definition of "delivered":

  delivered      the collector capture holds VXLAN whose inner traffic has at least one HTTP
                 request and one HTTP response (msp: every VNI that arrived has both)
  not-delivered  otherwise, with the reason (no capture, no packets, no VXLAN, no HTTP, ...)
  rejected       an ARM error was recorded (matches_expected: its code is an expected one)
  accepted       a non-traffic scenario without an ARM error; not-applicable: c1
  error          the capture could not be read (matches_expected: null, nothing is claimed)

Extra keys: ``reason``; ``inner_http`` also holds ``request_count``/``response_count``,
``request_lines``/``response_lines`` (line -> count), ``bodies`` (distinct whole response
bodies: request, status line, length, sha256, count), ``body_samples`` (the first bodies per
flow), ``incomplete_bodies`` (a count) and samples; ``tenants`` (per VNI: packets, requests,
responses, delivered, outer_sources); ``fragments`` (outer IPv4: frames, reassembled,
incomplete); ``capture`` (format, link types, frames, timestamps, truncated + notes, inner TCP
counters, largest VXLAN gap, a per-second VXLAN timeline); ``traffic`` (the traffic log's
summary); ``loss`` (TCP holes, missing bytes, incomplete fragments/bodies, largest gap, and
requests sent vs seen when there is a traffic log).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vtaplab import facts

TRAFFIC_LOG_HEADER = "# vtap-traffic v1"


class TrafficLogError(ValueError):
    """The traffic log is not in the ``# vtap-traffic v1`` format."""


def parse_traffic_log(path: Path) -> dict[str, Any]:
    """Summarise a traffic log: requests sent, statuses, bytes, failures, per URL."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TrafficLogError(f"{path}: cannot read ({exc.strerror})") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != TRAFFIC_LOG_HEADER:
        raise TrafficLogError(f"{path}: first line is not {TRAFFIC_LOG_HEADER!r}; accepted: "
                              "that header, then n<TAB>url<TAB>status<TAB>bytes<TAB>seconds")
    statuses: dict[str, int] = {}
    urls: dict[str, int] = {}
    total_bytes = 0
    seconds = 0.0
    sent = 0
    for number, line in enumerate(lines[1:], 2):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 5:
            raise TrafficLogError(f"{path}:{number}: {len(fields)} fields; accepted: "
                                  "n<TAB>url<TAB>status<TAB>bytes<TAB>seconds")
        _n, url, status, size, took = fields
        try:
            total_bytes += int(size)
            seconds += float(took)
        except ValueError:
            raise TrafficLogError(f"{path}:{number}: bytes {size!r} / seconds {took!r} are "
                                  "not numbers") from None
        sent += 1
        statuses[status] = statuses.get(status, 0) + 1
        urls[url] = urls.get(url, 0) + 1
    ok = sum(n for s, n in statuses.items() if s.startswith("2"))
    return {"requests": sent, "ok": ok, "failed": statuses.get("000", 0),
            "statuses": dict(sorted(statuses.items())), "urls": urls, "bytes": total_bytes,
            "seconds": round(seconds, 6)}


def _relative(path: Path, root: Path | None) -> str:
    if root is None:
        return str(path)
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def _expectation(scenario: str | None) -> tuple[str | None, str | None, tuple[str, ...]]:
    if scenario is None:
        return None, None, ()
    if scenario not in facts.SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; accepted: "
                         f"{', '.join(facts.SCENARIOS)}")
    s = facts.SCENARIOS[scenario]
    return s.expected, s.expected_outcome, s.expected_arm_codes


def verdict_from_summary(*, scenario: str | None, summary: Any, files: Sequence[Path],
                         traffic_log: Path | None = None, arm_error: dict | None = None,
                         root: Path | None = None, reason: str | None = None) -> dict[str, Any]:
    """The verdict for an already decoded capture (``summary``: a CaptureSummary or None)."""
    expected, expected_outcome, arm_codes = _expectation(scenario)
    carries_traffic = facts.SCENARIOS[scenario].carries_traffic if scenario else True
    capture = summary.to_dict() if summary is not None else None
    http = capture["inner_http"] if capture else {"requests": [], "responses": []}

    if arm_error is not None:
        outcome = "rejected"
        code = str(arm_error.get("code", ""))
        reason = reason or f"ARM rejected the deployment with {code or 'no code'}"
        matches = None if expected_outcome is None else (
            expected_outcome == "rejected" and code in arm_codes)
    else:
        if reason is not None:
            outcome = "error"
        elif scenario == "c1":
            outcome = "not-applicable"
            reason = "a vTAP destination can only be a NIC ip-configuration or an ILB frontend"
        elif not carries_traffic:
            outcome = "accepted"
            reason = "ARM accepted the deployment (no error recorded)"
        elif summary is None:
            outcome = "not-delivered"
            reason = "no collector capture"
        elif scenario == "msp" and summary.delivered and not all(
                t["delivered"] for t in summary.vnis.values()):
            # "Delivered per tenant": every VNI that arrived must carry a whole exchange.
            outcome = "not-delivered"
            missing = [str(v) for v, t in sorted(summary.vnis.items()) if not t["delivered"]]
            reason = (f"VNI(s) {', '.join(missing)} arrived without an inner HTTP request "
                      f"and response ({len(summary.vnis) - len(missing)} of "
                      f"{len(summary.vnis)} tenants delivered)")
        elif summary.delivered:
            outcome = "delivered"
            reason = (f"{summary.vxlan_packets} VXLAN packets; inner HTTP: "
                      f"{summary.request_count} requests, {summary.response_count} responses")
            if len(summary.vnis) > 1:
                done = sum(1 for t in summary.vnis.values() if t["delivered"])
                reason += f"; {done} of {len(summary.vnis)} VNIs delivered"
            if summary.truncated:
                reason += " (capture truncated)"
        else:
            outcome = "not-delivered"
            reason = _why_not(summary)
        # An unreadable capture proves nothing either way: "error" claims no match.
        matches = (None if expected_outcome is None or outcome == "error"
                   else outcome == expected_outcome)

    verdict: dict[str, Any] = {
        "scenario": scenario,
        "outcome": outcome,
        "vxlan_packets": capture["vxlan_packets"] if capture else 0,
        "vnis": capture["vnis"] if capture else [],
        "outer_sources": capture["outer_sources"] if capture else [],
        "outer_udp_source_ports": capture["outer_udp_source_ports"] if capture else 0,
        "inner_http": http,
        "arm_error": arm_error,
        "expected": expected,
        "matches_expected": matches,
        "files": [_relative(Path(f), root) for f in files],
        "reason": reason,
    }
    if capture is not None:
        verdict["tenants"] = capture["per_vni"]
        verdict["fragments"] = capture["fragments"]
        verdict["capture"] = {k: v for k, v in capture.items()
                              if k not in ("inner_http", "vnis", "outer_sources",
                                           "outer_udp_source_ports", "vxlan_packets",
                                           "per_vni", "fragments")}
        verdict["capture"]["file"] = _relative(Path(summary.path), root)
    if traffic_log is not None:
        try:
            verdict["traffic"] = parse_traffic_log(traffic_log)
        except TrafficLogError as exc:
            verdict["traffic"] = {"error": str(exc)}
    if capture is not None:
        verdict["loss"] = _loss(capture, verdict.get("traffic"))
    return verdict


def _loss(capture: dict[str, Any], traffic: dict[str, Any] | None) -> dict[str, Any]:
    """Where the capture shows data missing: one place for the fault tests to look."""
    inner = capture["inner"]
    gap = capture.get("largest_vxlan_gap") or {}
    loss: dict[str, Any] = {
        "tcp_holes": inner["tcp_holes"],
        "tcp_missing_bytes": inner["tcp_missing_bytes"],
        "fragments_incomplete": capture["fragments"]["incomplete"],
        "incomplete_bodies": capture["inner_http"]["incomplete_bodies"],
        "largest_vxlan_gap_seconds": gap.get("seconds", 0.0),
    }
    if traffic and "error" not in traffic:
        seen = capture["inner_http"]["request_count"]
        loss["requests_sent"] = traffic["requests"]
        loss["requests_seen"] = seen
        loss["requests_not_seen"] = max(0, traffic["requests"] - seen)
    return loss


def _why_not(summary: Any) -> str:
    if summary.format == "empty" or summary.frames == 0:
        why = "the collector capture holds no packets"
    elif summary.vxlan_packets == 0:
        why = (f"no VXLAN (UDP/{summary.port}) among {summary.frames} packets "
               f"({summary.non_vxlan_packets} other)")
    elif summary.request_count == 0 and summary.response_count == 0:
        why = f"{summary.vxlan_packets} VXLAN packets but no inner HTTP request or response"
    elif summary.request_count == 0:
        why = f"{summary.vxlan_packets} VXLAN packets but no inner HTTP request"
    else:
        why = f"{summary.vxlan_packets} VXLAN packets but no inner HTTP response"
    if summary.truncated:
        why += " (capture truncated)"
    return why


def build_verdict(*, scenario: str | None, collector_pcap: Path | None, files: Sequence[Path],
                  traffic_log: Path | None = None, arm_error: dict | None = None,
                  root: Path | None = None, port: int = facts.VXLAN_PORT) -> dict[str, Any]:
    """Decode ``collector_pcap`` (if any) and judge ``scenario`` from the files alone.

    An unreadable capture gives outcome ``error`` with the reason; a missing one
    ``not-delivered`` for a traffic scenario.
    """
    from vtaplab.judge.decode import CaptureError, decode_capture, ring_members

    summary = None
    reason = None
    if collector_pcap is not None and arm_error is None:
        # A ring capture (tcpdump -C/-W) is named by its prefix: present when a member is.
        pcap = Path(collector_pcap)
        if not pcap.exists() and not ring_members(pcap):
            reason_missing = f"collector capture {collector_pcap} does not exist"
            result = verdict_from_summary(scenario=scenario, summary=None, files=files,
                                          traffic_log=traffic_log, root=root)
            if result["outcome"] == "not-delivered":
                result["reason"] = reason_missing
            return result
        try:
            summary = decode_capture(pcap, port=port)
        except CaptureError as exc:
            reason = f"collector capture unreadable: {exc}"
    return verdict_from_summary(scenario=scenario, summary=summary, files=files,
                                traffic_log=traffic_log, arm_error=arm_error, root=root,
                                reason=reason)


def write_verdict(out_dir: Path, verdict: dict[str, Any]) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "verdict.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(verdict, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_verdict(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "verdict.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable verdict.json ({exc})") from None
    if not isinstance(data, dict) or "outcome" not in data:
        raise ValueError(f"{path}: not a verdict (no 'outcome' key)")
    return data


def format_table(verdict: dict[str, Any]) -> str:
    """A short human-readable table of a verdict (what the emulator and ``decode`` print)."""
    http = verdict.get("inner_http") or {}
    rows: list[tuple[str, str]] = [
        ("scenario", str(verdict.get("scenario"))),
        ("outcome", str(verdict.get("outcome"))),
        ("reason", str(verdict.get("reason") or "")),
        ("expected", str(verdict.get("expected"))),
        ("matches expected", {True: "yes", False: "NO", None: "n/a"}.get(
            verdict.get("matches_expected"), "?")),
    ]
    # ARM-only verdicts (rejected/accepted/not-applicable) have no capture to describe.
    traffic_rows = "capture" in verdict or verdict.get("outcome") in (
        "delivered", "not-delivered")
    if traffic_rows:
        rows += [
            ("vxlan packets", str(verdict.get("vxlan_packets", 0))),
            ("vnis", ", ".join(str(v) for v in verdict.get("vnis", [])) or "-"),
            ("outer sources", ", ".join(verdict.get("outer_sources", [])) or "-"),
            ("outer udp src ports", str(verdict.get("outer_udp_source_ports", 0))),
        ]
    if http and traffic_rows:
        req = http.get("request_lines") or {r: 1 for r in http.get("requests", [])}
        resp = http.get("response_lines") or {r: 1 for r in http.get("responses", [])}
        rows.append(("inner requests", "; ".join(f"{k} x{n}" for k, n in req.items()) or "-"))
        rows.append(("inner responses",
                     "; ".join(f"{k} x{n}" for k, n in resp.items()) or "-"))
        for body in http.get("bodies", [])[:5]:
            rows.append(("body", f"{body['request'] or '?'} -> {body['length']} bytes "
                                 f"sha256 {body['sha256'][:16]}.. x{body['count']}"))
        if http.get("incomplete_bodies"):
            rows.append(("incomplete bodies", str(http["incomplete_bodies"])))
    frags = verdict.get("fragments")
    if frags and frags.get("frames"):
        rows.append(("outer fragments", f"{frags['frames']} frames, {frags['reassembled']} "
                                        f"reassembled, {frags['incomplete']} incomplete"))
    capture = verdict.get("capture") or {}
    loss = verdict.get("loss") or {}
    if loss.get("tcp_holes"):
        rows.append(("inner tcp holes", f"{loss['tcp_holes']} "
                                        f"({loss['tcp_missing_bytes']} bytes missing)"))
    if loss.get("largest_vxlan_gap_seconds", 0) >= 1:
        rows.append(("largest vxlan gap", f"{loss['largest_vxlan_gap_seconds']:.3f} s"))
    if loss.get("requests_not_seen"):
        rows.append(("requests not seen", f"{loss['requests_not_seen']} of "
                                          f"{loss['requests_sent']} sent"))
    if capture.get("truncated"):
        rows.append(("capture", "TRUNCATED: " + "; ".join(capture.get("notes", []))))
    tenants = verdict.get("tenants") or {}
    if len(tenants) > 1:
        for vni, t in tenants.items():
            state = "delivered" if t.get("delivered") else "NOT delivered"
            rows.append((f"vni {vni}", f"{state}: {t['packets']} packets, {t['requests']} "
                                       f"requests, {t['responses']} responses from "
                                       f"{', '.join(t.get('outer_sources', [])) or '-'}"))
    traffic = verdict.get("traffic")
    if traffic:
        if "error" in traffic:
            rows.append(("traffic log", traffic["error"]))
        else:
            rows.append(("traffic log", f"{traffic['requests']} requests sent, "
                                        f"{traffic['ok']} ok, {traffic['failed']} failed"))
    if verdict.get("arm_error"):
        err = verdict["arm_error"]
        rows.append(("arm error", f"{err.get('code')}: {str(err.get('message', ''))[:80]}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
