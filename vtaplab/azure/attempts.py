"""The rejected attempts (r1, b1): make exactly the ARM request the lab is about, keep ARM's
answer as evidence, and classify it.

- r1 ``vtap-pe-destination``: GET the Private Endpoint -> its NIC -> the NIC's
  ip-configuration id -> PUT a ``virtualNetworkTaps`` whose destination is that
  ip-configuration (UDP 4789).
- b1 ``nic-pool``: GET the PE's NIC and PUT it back with the source-side ILB's backend pool
  added to its ip-configuration.
- b1 ``ip-pool``: PUT an IP-based backend pool on the source-side ILB holding the PE's IP.

Outcomes: ``rejected`` (ARM said no; ``matches_expected`` when the code is one of
``facts.SCENARIOS[s].expected_arm_codes``), ``accepted`` (ARM said yes: a loud warning, and
what was created is remembered so :func:`undo` removes it — for the NIC edit, the NIC's
previous body is PUT back), ``error`` (anything else: authorization, quota, an unregistered
feature, the network). An ``error`` never counts as the expected rejection.

Pure functions over an :class:`~vtaplab.azure.arm.ArmClient`; the Pulumi dynamic provider in
``components.rejected_attempt`` wraps them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vtaplab import facts
from vtaplab.azure import arm_bodies
from vtaplab.azure.arm import NETWORK_API, ArmClient, ArmError, ArmResponse
from vtaplab.judge.verdict import build_verdict, write_verdict

log = logging.getLogger("vtaplab.azure.attempts")

# attempt name -> (scenario, evidence file name, what "accepted" would mean)
ATTEMPTS: dict[str, tuple[str, str, str]] = {
    "vtap-pe-destination": (
        "r1", "arm-response.json",
        "a Private Endpoint's NIC ip-configuration as a Virtual Network TAP destination"),
    "nic-pool": (
        "b1", "arm-response-nic.json",
        "a Private Endpoint's NIC in a load balancer backend pool (NIC edit)"),
    "ip-pool": (
        "b1", "arm-response-ip-pool.json",
        "a Private Endpoint's IP in an IP-based load balancer backend pool"),
}
SCENARIO_ATTEMPTS: dict[str, tuple[str, ...]] = {
    "r1": ("vtap-pe-destination",),
    "b1": ("nic-pool", "ip-pool"),
}


@dataclass
class AttemptOutcome:
    scenario: str
    attempt: str
    outcome: str                      # rejected | accepted | error
    matches_expected: bool | None
    arm_code: str | None
    arm_message: str | None
    status: int                       # HTTP status of the decisive answer; 0: none came
    evidence_path: str
    created_id: str | None = None     # what undo() deletes (accepted, or failed async)
    restore_body: dict[str, Any] | None = None  # accepted NIC edit: what undo() PUTs back
    warning: str | None = None
    expected_codes: tuple[str, ...] = field(default_factory=tuple)

    def arm_error(self) -> dict[str, Any] | None:
        if self.arm_code is None:
            return None
        return {"code": self.arm_code, "message": self.arm_message or "",
                "status": self.status, "attempt": self.attempt,
                "outcome": self.outcome, "evidence": self.evidence_path}

    def summary(self) -> dict[str, Any]:
        """The small, secret-free dict stack outputs and verdicts carry."""
        return {"attempt": self.attempt, "outcome": self.outcome,
                "matches_expected": self.matches_expected, "arm_code": self.arm_code,
                "arm_message": self.arm_message, "status": self.status,
                "evidence": self.evidence_path, "created_id": self.created_id,
                "warning": self.warning}


# --- the attempts ---------------------------------------------------------------------------

def attempt_r1(client: ArmClient, *, private_endpoint_id: str, vtap_id: str, location: str,
               evidence_dir: Path, tags: Mapping[str, str] | None = None,
               port: int = facts.VXLAN_PORT, root: Path | None = None) -> AttemptOutcome:
    """PUT a vTAP at ``vtap_id`` whose destination is the PE NIC's ip-configuration."""
    def plan(nic: dict[str, Any]) -> _PlannedPut:
        body = arm_bodies.vtap_body(arm_bodies.VtapParams(
            location=location, destination_nic_ip_configuration_id=_first_ip_config(nic)["id"],
            port=port, tags=dict(tags or {})))
        return _PlannedPut(vtap_id, body, created_id=vtap_id)

    return _put_from_pe_nic(client, "vtap-pe-destination", private_endpoint_id, plan,
                            evidence_dir, root)


def attempt_b1_nic(client: ArmClient, *, private_endpoint_id: str, backend_pool_id: str,
                   evidence_dir: Path, root: Path | None = None) -> AttemptOutcome:
    """PUT the PE's NIC back with ``backend_pool_id`` added to its ip-configuration."""
    def plan(nic: dict[str, Any]) -> _PlannedPut:
        body = arm_bodies.nic_with_backend_pool(nic, backend_pool_id)
        return _PlannedPut(str(nic["id"]), body, restore_body=nic)

    return _put_from_pe_nic(client, "nic-pool", private_endpoint_id, plan, evidence_dir, root)


def attempt_b1_ip_pool(client: ArmClient, *, private_endpoint_id: str, pool_id: str,
                       evidence_dir: Path, root: Path | None = None) -> AttemptOutcome:
    """PUT an IP-based backend pool at ``pool_id`` (``<ilb id>/backendAddressPools/<name>``,
    a pool of its own) holding the PE's IP, in the PE's VNet."""
    def plan(nic: dict[str, Any]) -> _PlannedPut:
        ip_config = _first_ip_config(nic)
        ip_address = ip_config["properties"]["privateIPAddress"]
        subnet_id = ip_config["properties"]["subnet"]["id"]
        vnet_id = subnet_id[: subnet_id.lower().rindex("/subnets/")]
        body = arm_bodies.ip_backend_pool_body(ip_address=ip_address, virtual_network_id=vnet_id)
        return _PlannedPut(pool_id, body, created_id=pool_id)

    return _put_from_pe_nic(client, "ip-pool", private_endpoint_id, plan, evidence_dir, root)


def undo(client: ArmClient, outcome: AttemptOutcome) -> None:
    """Remove what an attempt created (or PUT the NIC's previous body back): an accepted
    one, or one ARM accepted and then failed asynchronously (the resource may exist in a
    Failed state). Nothing to do for a synchronous rejection. Already gone is fine."""
    if outcome.outcome == "accepted" and outcome.restore_body is not None:
        body = {k: v for k, v in outcome.restore_body.items() if k not in ("etag", "type")}
        log.warning("restoring NIC %s to its body before the accepted attempt",
                    outcome.restore_body.get("id"))
        client.put(str(outcome.restore_body["id"]), body, api_version=NETWORK_API)
    elif outcome.created_id:
        log.warning("deleting %s, left by the %s attempt %s", outcome.created_id,
                    outcome.outcome, outcome.attempt)
        try:
            client.delete(outcome.created_id, api_version=NETWORK_API)
        except ArmError as exc:
            if exc.status != 404:
                raise


# --- verdict --------------------------------------------------------------------------------

def scenario_verdict(scenario: str, outcomes: Sequence[AttemptOutcome], *,
                     root: Path | None = None) -> dict[str, Any]:
    """The scenario's verdict from its attempts; the first attempt is the scenario's own
    (r1: the vTAP; b1: the NIC edit), the others ride along under ``attempts``."""
    if not outcomes:
        raise ValueError(f"scenario_verdict({scenario!r}): no attempts")
    primary = outcomes[0]
    files = [Path(o.evidence_path) for o in outcomes]
    from vtaplab.judge.outcome import settle

    verdict = build_verdict(scenario=scenario, collector_pcap=None, files=files,
                            arm_error=primary.arm_error(), root=root)
    verdict["attempts"] = [o.summary() for o in outcomes]
    warnings = [o.warning for o in outcomes if o.warning]
    if warnings:
        verdict["warnings"] = warnings
    # The attempts decide (an AuthorizationFailed is an "error", never a "rejected"): the
    # judge reads them from the verdict.
    return settle(verdict)


def verdict_from_evidence(scenario: str, evidence_dir: Path, *,
                          root: Path | None = None) -> dict[str, Any] | None:
    """Rebuild the scenario's verdict from the ``arm-response*.json`` records in
    ``evidence_dir`` (each attempt writes its own, possibly in another process); None when
    none is there yet."""
    outcomes = []
    for name in SCENARIO_ATTEMPTS.get(scenario, ()):
        path = evidence_dir / ATTEMPTS[name][1]
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        outcomes.append(AttemptOutcome(
            scenario=scenario, attempt=name, outcome=rec["outcome"],
            matches_expected=bool(rec["matches_expected"]), arm_code=rec.get("arm_code"),
            arm_message=rec.get("arm_message"), status=int(rec.get("status") or 0),
            evidence_path=_rel(path, root), created_id=rec.get("created_id"),
            warning=rec.get("warning"),
            expected_codes=tuple(rec.get("expected_codes") or ())))
    return scenario_verdict(scenario, outcomes, root=root) if outcomes else None


def write_scenario_verdict(evidence_dir: Path, verdict: dict[str, Any]) -> Path:
    return write_verdict(evidence_dir, verdict)


# --- internals ------------------------------------------------------------------------------

def _pe_nic(client: ArmClient, private_endpoint_id: str) -> dict[str, Any]:
    pe = client.get(private_endpoint_id, api_version=NETWORK_API).body
    nic_id = pe["properties"]["networkInterfaces"][0]["id"]
    nic = client.get(nic_id, api_version=NETWORK_API).body
    if not isinstance(nic, dict):
        raise TypeError(f"GET {nic_id}: not a JSON object")
    return nic


def _first_ip_config(nic: Mapping[str, Any]) -> dict[str, Any]:
    return dict(nic["properties"]["ipConfigurations"][0])


@dataclass
class _PlannedPut:
    """The PUT an attempt makes once it has read the PE's NIC."""
    path: str
    body: dict[str, Any]
    created_id: str | None = None
    restore_body: dict[str, Any] | None = None


def _put_from_pe_nic(client: ArmClient, name: str, private_endpoint_id: str,
                     plan: Callable[[dict[str, Any]], _PlannedPut], evidence_dir: Path,
                     root: Path | None) -> AttemptOutcome:
    """GET the PE's NIC, let ``plan`` derive the PUT from it, and make it. Every attempt
    reads the NIC the same way, so a failed GET or a NIC of an unexpected shape is
    recorded alike for all of them (as the attempt's evidence, not a traceback)."""
    try:
        put = plan(_pe_nic(client, private_endpoint_id))
    except ArmError as exc:
        return _record(name, evidence_dir, root, "GET", exc.url, None, error=exc)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return _record_shape_error(name, evidence_dir, root, private_endpoint_id, exc)
    return _put(client, name, put.path, put.body, evidence_dir, root,
                created_id=put.created_id, restore_body=put.restore_body)


def _put(client: ArmClient, name: str, path: str, body: dict[str, Any], evidence_dir: Path,
         root: Path | None, *, created_id: str | None = None,
         restore_body: dict[str, Any] | None = None) -> AttemptOutcome:
    url = client.url_for(path, NETWORK_API)
    try:
        resp = client.put(path, body, api_version=NETWORK_API)
    except ArmError as exc:
        return _record(name, evidence_dir, root, "PUT", url, body, error=exc,
                       created_id=created_id)
    return _record(name, evidence_dir, root, "PUT", url, body, response=resp,
                   created_id=created_id, restore_body=restore_body)


def _classify(scenario: str, error: ArmError | None, attempt: str | None = None
              ) -> tuple[str, bool | None]:
    from vtaplab.judge.outcome import classify_attempt

    if error is None:
        return classify_attempt(scenario, None, 0, attempt=attempt)
    return classify_attempt(scenario, error.code, error.status or 0, attempt=attempt,
                            operation_failed=error.operation_failed)


def _record(name: str, evidence_dir: Path, root: Path | None, method: str, url: str,
            body: dict[str, Any] | None, *, error: ArmError | None = None,
            response: ArmResponse | None = None, created_id: str | None = None,
            restore_body: dict[str, Any] | None = None) -> AttemptOutcome:
    scenario, file_name, meaning = ATTEMPTS[name]
    outcome, matches = _classify(scenario, error, name)
    # What may now exist and must be removed on destroy.
    created = outcome == "accepted" or (error is not None and error.operation_failed)
    evidence_path = evidence_dir / file_name
    warning = None
    if outcome == "accepted":
        warning = (f"the platform changed: Azure now allows {meaning} "
                   f"(ARM answered HTTP {response.status if response else '?'} to "
                   f"{method} {_path_of(url)}); it is undone on destroy")
        log.warning("%s/%s: %s", scenario, name, warning)
    elif outcome == "error":
        log.warning("%s/%s: ARM error %s: %s — not the expected rejection", scenario, name,
                    error.code if error else "?", error.message if error else "")
    record: dict[str, Any] = {
        "scenario": scenario, "attempt": name, "outcome": outcome,
        "matches_expected": matches,
        "expected_codes": list(facts.SCENARIOS[scenario].expected_arm_codes),
        "arm_code": error.code if error else None,
        "arm_message": error.message if error else None,
        "status": error.status if error else response.status if response else 0,
        "created_id": created_id if created else None,
        "request": {"method": method, "url": url, "body": body},
        "response": (error.to_evidence() if error else response.to_evidence()
                     if response else None),
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if error is not None and error.operation_failed:
        record["operation_failed"] = True  # accepted first, then failed asynchronously
    history = error.history if error is not None else response.history if response else []
    if history:
        record["operation"] = history  # every answer: the first one, the polls, the final
    if warning:
        record["warning"] = warning
    evidence_dir.mkdir(parents=True, exist_ok=True)
    evidence_path.write_text(json.dumps(record, indent=2) + "\n")
    return AttemptOutcome(
        scenario=scenario, attempt=name, outcome=outcome, matches_expected=matches,
        arm_code=error.code if error else None, arm_message=error.message if error else None,
        status=(error.status if error else response.status if response else 0),
        evidence_path=_rel(evidence_path, root),
        created_id=created_id if created else None,
        restore_body=restore_body if outcome == "accepted" else None,
        warning=warning, expected_codes=facts.SCENARIOS[scenario].expected_arm_codes)


def _record_shape_error(name: str, evidence_dir: Path, root: Path | None, pe_id: str,
                        exc: Exception) -> AttemptOutcome:
    """ARM answered, but not with the shape the lab reads (no NIC on the PE, ...)."""
    err = ArmError("UnexpectedResponseShape", f"{type(exc).__name__}: {exc}", 0,
                   method="GET", url=pe_id)
    return _record(name, evidence_dir, root, "GET", pe_id, None, error=err)


def _path_of(url: str) -> str:
    return urlsplit(url).path


def _rel(path: Path, root: Path | None) -> str:
    base = (root or Path.cwd()).resolve()
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path)
