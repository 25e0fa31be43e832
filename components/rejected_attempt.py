"""A Pulumi dynamic resource that makes one rejected attempt (r1/b1) and records the answer.

``pulumi up -s r1`` should end with stack outputs that say what ARM said, not a red console:
so an ARM rejection is a *successful* create whose outputs carry the outcome. What the
resource does on each step:

- create: runs the attempt (``vtaplab.azure.attempts``), writes ``arm-response*.json`` and the
  scenario's ``verdict.json`` under ``evidence/<stack>/<scenario>/``, returns
  ``{outcome, matches_expected, arm_code, arm_message, evidence_path, verdict_path,
  created_id, warning}``;
- delete: undoes what an *accepted* attempt created (deletes the vTAP / IP-based pool, or PUTs
  the PE NIC's previous body back), and deletes what ARM accepted and then failed
  asynchronously; nothing for a synchronous rejection;
- diff: a change of what the request *is* (``ATTEMPT_KEYS``) replaces — the attempt is one
  request, there is nothing to update — and an ``error`` outcome (auth, quota, network...) is
  replaced on the next ``up`` so it is retried rather than remembered. A change of ``tags``
  alone is an in-place update that only records the new tags: ``matrix`` rewrites
  ``expires-on`` on every run, and a tag must never replay a real ARM request;
- update: keeps the recorded answer and takes the new tags (no ARM request).

Its identity is a contract: the engine stores this provider pickled *by reference* (module
``components.rejected_attempt``, class ``AttemptProvider``) in every stack's state, and the
dynamic-provider host (``python -u -m pulumi.dynamic``, started in the project root) imports
that module to refresh or destroy the resource. Moving or renaming either breaks existing
stacks; tests/components/test_rejected_attempt_host.py pins both.

The ARM client is built inside the provider when it runs, authenticated as azure-native is
(``vtaplab.azure.credentials``: ``ARM_*`` environment, or the ``azure-native:*`` stack config
the engine hands the provider in ``configure``), so no credential is an input, an output or
part of the serialized provider.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from vtaplab.azure import attempts
from vtaplab.azure.arm import ArmClient

# Inputs whose change means a new attempt (a different request, or evidence elsewhere).
ATTEMPT_KEYS = ("scenario", "attempt", "stack", "private_endpoint_id", "location", "target_id",
                "port", "evidence_root")
# Inputs recorded but never worth a new ARM request: updated in place.
UPDATE_KEYS = ("tags",)
INPUT_KEYS = ATTEMPT_KEYS + UPDATE_KEYS
OUTPUT_KEYS = ("outcome", "matches_expected", "arm_code", "arm_message", "evidence_path",
               "verdict_path", "created_id", "warning")

ClientFactory = Callable[[], ArmClient]
# azure-native's authentication settings read from the stack config when present.
AUTH_CONFIG_KEYS = ("clientId", "tenantId", "clientSecret", "clientCertificatePath",
                    "clientCertificatePassword", "useDefaultAzureCredential", "useOidc",
                    "oidcToken", "oidcTokenFilePath", "oidcRequestUrl", "oidcRequestToken",
                    "oidcAudience", "useMsi")


class AttemptProvider(ResourceProvider):
    """CRUD of one attempt. ``client_factory`` exists for tests (a fake ARM); the default
    builds an :class:`ArmClient` with ``DefaultAzureCredential`` at run time."""

    def __init__(self, client_factory: ClientFactory | None = None) -> None:
        super().__init__()
        self._client_factory = client_factory

    def configure(self, req: Any) -> None:
        # The stack's config reaches the provider host here, never the pickled provider.
        self._auth_config = {k: req.config.get(f"azure-native:{k}") for k in AUTH_CONFIG_KEYS}

    def _client(self) -> ArmClient:
        if self._client_factory:
            return self._client_factory()
        from vtaplab.azure.arm import ARM_SCOPE
        from vtaplab.azure.credentials import token_provider

        config = {k: v for k, v in getattr(self, "_auth_config", {}).items() if v is not None}
        return ArmClient(token_provider=token_provider(ARM_SCOPE, config=config))

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> Any:
        failures = []
        attempt = news.get("attempt")
        if attempt not in attempts.ATTEMPTS:
            failures.append(CheckFailure("attempt", f"{attempt!r}; accepted: "
                                         f"{', '.join(attempts.ATTEMPTS)}"))
        elif news.get("scenario") != attempts.ATTEMPTS[attempt][0]:
            failures.append(CheckFailure(
                "scenario", f"{news.get('scenario')!r}: attempt {attempt} belongs to "
                f"scenario {attempts.ATTEMPTS[attempt][0]}"))
        for key in ("stack", "private_endpoint_id", "target_id"):
            if not str(news.get(key) or "").strip():
                failures.append(CheckFailure(key, "empty"))
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        outcome = run_attempt(self._client(), props)
        evidence_dir = _evidence_dir(props)
        verdict = attempts.verdict_from_evidence(props["scenario"], evidence_dir,
                                                 root=_root(props))
        verdict_path = ""
        if verdict is not None:
            verdict_path = attempts._rel(
                attempts.write_scenario_verdict(evidence_dir, verdict), _root(props))
        outs = {k: props[k] for k in INPUT_KEYS if k in props}
        outs.update({
            "outcome": outcome.outcome, "matches_expected": outcome.matches_expected,
            "arm_code": outcome.arm_code or "", "arm_message": outcome.arm_message or "",
            "evidence_path": outcome.evidence_path, "verdict_path": verdict_path,
            "created_id": outcome.created_id or "", "warning": outcome.warning or "",
            # What delete needs to put an accepted NIC edit back (no secrets in a NIC body).
            "restore_body": json.dumps(outcome.restore_body) if outcome.restore_body else "",
        })
        rid = f"{props['scenario']}-{props['attempt']}-{uuid.uuid4().hex[:8]}"
        return CreateResult(id_=rid, outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ATTEMPT_KEYS if olds.get(k) != news.get(k)]
        if olds.get("outcome") == "error":
            replaces.append("outcome")  # retried, never kept as the answer
        updates = [k for k in UPDATE_KEYS if _norm(olds.get(k)) != _norm(news.get(k))]
        return DiffResult(changes=bool(replaces or updates), replaces=replaces, stables=[],
                          delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """A tags-only change: the recorded answer stays, the new tags are recorded; no ARM
        request is made (an accepted attempt's vTAP keeps the tags it was created with)."""
        outs = {k: v for k, v in olds.items() if k != "__provider"}
        outs.update({k: news[k] for k in UPDATE_KEYS if k in news})
        return UpdateResult(outs=outs)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        restore = props.get("restore_body") or ""
        if props.get("outcome") != "accepted" and not props.get("created_id"):
            return
        outcome = attempts.AttemptOutcome(
            scenario=props["scenario"], attempt=props["attempt"], outcome=props["outcome"],
            matches_expected=False, arm_code=None, arm_message=None, status=0,
            evidence_path=props.get("evidence_path", ""),
            created_id=props.get("created_id") or None,
            restore_body=json.loads(restore) if restore else None)
        attempts.undo(self._client(), outcome)


def _norm(value: Any) -> Any:
    """Tags compare as mappings: absent and empty are the same."""
    return dict(value) if isinstance(value, Mapping) else ({} if value is None else value)


def run_attempt(client: ArmClient, props: Mapping[str, Any]) -> attempts.AttemptOutcome:
    """Dispatch to the attempt named in ``props`` (the resource's inputs)."""
    evidence_dir = _evidence_dir(props)
    root = _root(props)
    name = props["attempt"]
    pe_id = props["private_endpoint_id"]
    target = props["target_id"]
    if name == "vtap-pe-destination":
        return attempts.attempt_r1(
            client, private_endpoint_id=pe_id, vtap_id=target, location=props["location"],
            tags=props.get("tags") or {}, port=int(props.get("port") or 4789),
            evidence_dir=evidence_dir, root=root)
    if name == "nic-pool":
        return attempts.attempt_b1_nic(client, private_endpoint_id=pe_id,
                                       backend_pool_id=target, evidence_dir=evidence_dir,
                                       root=root)
    if name == "ip-pool":
        return attempts.attempt_b1_ip_pool(client, private_endpoint_id=pe_id, pool_id=target,
                                           evidence_dir=evidence_dir, root=root)
    raise ValueError(f"attempt {name!r}: accepted: {', '.join(attempts.ATTEMPTS)}")


def _root(props: Mapping[str, Any]) -> Path:
    # Evidence paths in outputs are relative to where the program runs (the project).
    return Path.cwd()


def _evidence_dir(props: Mapping[str, Any]) -> Path:
    base = Path(props.get("evidence_root") or "evidence")
    if not base.is_absolute():
        base = _root(props) / base
    return base / props["stack"] / props["scenario"]


class RejectedAttempt(Resource, module="vtaplab", name="RejectedAttempt"):
    """One ARM attempt as a resource. ``target_id`` is what the attempt PUTs: the vTAP id
    (``vtap-pe-destination``), the backend pool id to add (``nic-pool``), or the id of the
    IP-based pool to create (``ip-pool``)."""

    outcome: pulumi.Output[str]
    matches_expected: pulumi.Output[bool]
    arm_code: pulumi.Output[str]
    arm_message: pulumi.Output[str]
    evidence_path: pulumi.Output[str]
    verdict_path: pulumi.Output[str]
    created_id: pulumi.Output[str]
    warning: pulumi.Output[str]

    def __init__(self, name: str, *, scenario: str, attempt: str, stack: str,
                 private_endpoint_id: pulumi.Input[str], target_id: pulumi.Input[str],
                 location: pulumi.Input[str], tags: pulumi.Input[Mapping[str, str]] | None = None,
                 port: int = 4789, evidence_root: str = "evidence",
                 opts: pulumi.ResourceOptions | None = None,
                 provider: AttemptProvider | None = None) -> None:
        props: dict[str, Any] = {
            "scenario": scenario, "attempt": attempt, "stack": stack,
            "private_endpoint_id": private_endpoint_id, "target_id": target_id,
            "location": location, "tags": tags or {}, "port": port,
            "evidence_root": evidence_root}
        props.update({k: None for k in OUTPUT_KEYS})
        super().__init__(provider or AttemptProvider(), name, props, opts)
