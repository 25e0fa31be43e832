"""Verdicts: what a scenario's evidence files prove, computed from those files only.

The format is ../shared/DESIGN.md's ("Evidence and verdicts"); every key it names comes first,
in its order, and the extra keys follow. The emulator, ``decode`` and the Azure evidence run all
call ``build_verdict``: this module gathers the evidence (the decoded capture, the traffic log,
the tenants, the failover, the hops) into the verdict, and ``vtaplab.judge.outcome.settle``
decides ``outcome`` / ``matches_expected`` / ``reason`` from it (delivered, degraded,
not-delivered, rejected, accepted, not-applicable, error, unknown: see that module).

Extra keys: ``reason``; ``inner_http`` also holds ``request_count``/``response_count``,
``request_lines``/``response_lines`` (line -> count), ``bodies`` (distinct whole response
bodies: request, status line, length, sha256, count), ``body_samples`` (the first bodies per
flow), ``incomplete_bodies`` (a count) and samples; ``tenants`` (per VNI: packets, requests,
responses, delivered, outer_sources); ``fragments`` (outer IPv4: frames, reassembled,
incomplete); ``capture`` (format, link types, frames, timestamps, truncated + notes, inner TCP
counters, largest VXLAN gap, a per-second VXLAN timeline); ``traffic`` (the traffic log's
summary); ``loss`` (TCP holes, missing bytes, incomplete fragments/bodies, largest gap, and
requests sent vs seen when there is a traffic log); ``fragments_at_collector`` (outer IPv4
fragment frames seen vs datagrams reassembled, and what that says about non-first fragments);
``tenant_table`` / ``tenants_told_apart`` (msp); ``failover`` (b3 proxy-down); ``hops`` (per
capture point); ``loss_at`` and ``missing_figures`` (a degraded verdict: where and what);
``evidence_error`` / ``missing_capture`` (why nothing, or no capture, could be judged).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vtaplab import facts
from vtaplab.judge.outcome import settle
from vtaplab.judge.tenants import separation_problems, tenant_table

TRAFFIC_LOG_HEADER = "# vtap-traffic v1"


class TrafficLogError(ValueError):
    """The traffic log is not in the ``# vtap-traffic v1`` format."""


def parse_traffic_log(path: Path) -> dict[str, Any]:
    """Summarise a traffic log: requests sent, statuses, bytes, failures, per URL."""
    from vtaplab.cli import MAX_TRAFFIC_LOG_BYTES, InputTooLarge, read_bytes_bounded

    try:
        data = read_bytes_bounded(Path(path), limit=MAX_TRAFFIC_LOG_BYTES, what="traffic log")
    except OSError as exc:
        raise TrafficLogError(f"{path}: cannot read ({exc.strerror})") from None
    except InputTooLarge as exc:
        raise TrafficLogError(str(exc)) from None
    text = data.decode("utf-8", errors="replace")
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
                         root: Path | None = None, reason: str | None = None,
                         missing_capture: str | None = None,
                         tenants: Mapping[str, int] | None = None,
                         tenants_sent: Mapping[str, int] | None = None,
                         decap: Mapping[int, tuple[str, int]] | None = None,
                         failover: Mapping[str, Any] | None = None,
                         hops: Sequence[Mapping[str, Any]] = (),
                         prediction: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The verdict for an already decoded capture (``summary``: a CaptureSummary or None),
    judged by ``outcome.judge``. ``reason``: why nothing could be looked at (outcome
    ``error``); ``missing_capture``: why there is no collector capture; ``tenants`` (msp:
    name -> VNI) with what each sent and the collector's decap counters; ``failover`` (b3
    proxy-down); ``hops``: per capture point, in path order, its figures; ``prediction``: the
    preflight rules' answer (``refusals``: rule, arm_code, resource, message)."""
    expected = _expectation(scenario)[0]
    capture = summary.to_dict() if summary is not None else None
    http = capture["inner_http"] if capture else {"requests": [], "responses": []}

    verdict: dict[str, Any] = {
        "scenario": scenario,
        "outcome": None,
        "vxlan_packets": capture["vxlan_packets"] if capture else 0,
        "vnis": capture["vnis"] if capture else [],
        "outer_sources": capture["outer_sources"] if capture else [],
        "outer_udp_source_ports": capture["outer_udp_source_ports"] if capture else 0,
        "inner_http": http,
        "arm_error": arm_error,
        "expected": expected,
        "matches_expected": None,
        "files": [_relative(Path(f), root) for f in files],
        "reason": None,
    }
    if reason is not None:
        verdict["evidence_error"] = reason
    if missing_capture is not None:
        verdict["missing_capture"] = missing_capture
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
    if tenants is not None:
        verdict["tenant_table"] = tenant_table(verdict, tenants, tenants_sent, decap)
        verdict["tenants_told_apart"] = not separation_problems(verdict, tenants, tenants_sent)
    if failover is not None:
        verdict["failover"] = dict(failover)
    if hops:
        verdict["hops"] = [dict(h) for h in hops]
    if prediction is not None:
        verdict["prediction"] = dict(prediction)
    if scenario is None or facts.SCENARIOS[scenario].carries_traffic:
        verdict["fragments_at_collector"] = fragments_at_collector(verdict)
    return settle(verdict)


def hop_figures(hop: str, pcap: Path, port: int = facts.VXLAN_PORT) -> dict[str, Any]:
    """One capture point's figures for the verdict's ``hops`` (the judge locates a loss at
    the first hop whose figures drop): packets, requests, responses, outer fragments seen /
    reassembled / incomplete, incomplete bodies; ``error`` when it can't be read."""
    from vtaplab.judge.decode import CaptureError, decode_capture

    row: dict[str, Any] = {"hop": hop, "file": Path(pcap).name}
    try:
        summary = decode_capture(Path(pcap), port=port).to_dict()
    except (CaptureError, OSError) as exc:
        row["error"] = str(exc)
        return row
    http, frags = summary["inner_http"], summary["fragments"]
    row.update(vxlan_packets=summary["vxlan_packets"], requests=http["request_count"],
               responses=http["response_count"], fragments=frags.get("frames", 0),
               reassembled=frags.get("reassembled", 0),
               fragments_incomplete=frags.get("incomplete", 0),
               incomplete_bodies=http["incomplete_bodies"],
               outer_sources=summary["outer_sources"])
    return row


def merged_hop(hop: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Parallel capture points (b3's two proxies, msp's tenants' proxies) as one hop: their
    figures added up."""
    merged: dict[str, Any] = {"hop": hop, "files": [r.get("file") for r in rows]}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, int) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
        if "error" in row:
            merged.setdefault("errors", []).append(row["error"])
    return merged


def fragments_at_collector(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """Outer IPv4 fragments at the collector: seen vs reassembled (issue: whether a PLS
    forwards non-first fragments is undocumented; a real run answers it from this figure)."""
    frags = verdict.get("fragments") or {}
    seen, whole, broken = (int(frags.get(k, 0)) for k in ("frames", "reassembled",
                                                           "incomplete"))
    if "capture" not in verdict:
        answer = "no collector capture: nothing to tell"
    elif seen == 0:
        answer = "no fragmented VXLAN datagram arrived"
    elif broken == 0:
        answer = "every fragmented datagram arrived whole: non-first fragments are forwarded"
    elif whole == 0:
        answer = ("no fragmented datagram was reassembled: non-first fragments do not arrive "
                  "(lost on the way: see the hops)")
    else:
        answer = f"{broken} of {whole + broken} fragmented datagrams incomplete"
    return {"fragment_frames_seen": seen, "datagrams_reassembled": whole,
            "datagrams_incomplete": broken, "answer": answer}


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


def build_verdict(*, scenario: str | None, collector_pcap: Path | None, files: Sequence[Path],
                  traffic_log: Path | None = None, arm_error: dict | None = None,
                  root: Path | None = None, port: int = facts.VXLAN_PORT,
                  **more: Any) -> dict[str, Any]:
    """Decode ``collector_pcap`` (if any) and judge ``scenario`` from the files alone
    (``more``: the other evidence ``verdict_from_summary`` takes: tenants, failover, hops).

    An unreadable capture gives outcome ``error`` with the reason; a missing one
    ``not-delivered`` for a traffic scenario.
    """
    from vtaplab.judge.decode import CaptureError, decode_capture, ring_members

    summary = None
    reason = None
    missing = None
    if collector_pcap is not None and arm_error is None:
        # A ring capture (tcpdump -C/-W) is named by its prefix: present when a member is.
        pcap = Path(collector_pcap)
        if not pcap.exists() and not ring_members(pcap):
            missing = f"collector capture {collector_pcap} does not exist"
        else:
            try:
                summary = decode_capture(pcap, port=port)
            except CaptureError as exc:
                reason = f"collector capture unreadable: {exc}"
    return verdict_from_summary(scenario=scenario, summary=summary, files=files,
                                traffic_log=traffic_log, arm_error=arm_error, root=root,
                                reason=reason, missing_capture=missing, **more)


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
        "delivered", "degraded", "not-delivered")
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
    if verdict.get("loss_at"):
        rows.append(("loss first at", str(verdict["loss_at"])))
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
