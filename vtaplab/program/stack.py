"""The composition of one stack: a resource group, one provider, one consumer per scenario.

``__main__.py`` reads the config, calls ``build`` and exports what it returns; nothing else.
Every scenario gets its own ``SourceVnet`` (its own VNet: address spaces may repeat), all of
them against the stack's single ``CollectorService`` — the MSP shape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi import Output, ResourceOptions
from pulumi_azure_native import authorization, resources

from components import (
    CollectorService,
    CollectorServiceArgs,
    ProxyNat,
    ProxyNatArgs,
    SourceVnet,
    SourceVnetArgs,
    VtapAttachment,
    VtapAttachmentArgs,
)
from components.evidence_run import EvidenceRun, EvidenceRunArgs, RunTenant, RunVm
from components.proxy_tier import ProxyTier, ProxyTierArgs
from components.rejected_attempt import RejectedAttempt
from components.shutdown import UNSET, AutoShutdown
from components.tags import base_tags, component_tags
from vtaplab import arm_ids, facts, plan
from vtaplab.azure.attempts import SCENARIO_ATTEMPTS
from vtaplab.program import userdata
from vtaplab.program.config import PROXY_PROBE_HTTP, LabConfig

# Scenarios whose PLS is Direct Connect: the stack's one provider is built that way.
DIRECT_CONNECT_SCENARIOS = frozenset({"a"})
# What this program builds (c1 is not expressible: facts.SCENARIOS says why).
BUILT_SCENARIOS = ("r1", "b1", "b2", "a", "b3", "msp", "b4")
# Scenarios whose vTAP points at the consumer LB's frontend (HA ports, a probe of the proxies:
# HTTP to vtap-health.py, or vtaplab:proxyProbe tcp) rather than at one proxy's NIC.
LB_FRONTED_SCENARIOS = frozenset({"b3", "b4"})


class StackError(ValueError):
    """A stack the program can't compose (one line: what and what is accepted)."""


@dataclass(frozen=True)
class Shared:
    """What every scenario of the stack builds on."""

    cfg: LabConfig
    resource_group_name: pulumi.Output[str]
    subscription_id: pulumi.Output[str]
    collector: CollectorService
    keys: RunKeys | None = None
    """The operator's private key, for stacks whose scenarios run traffic."""
    runs: list[EvidenceRun] = field(default_factory=list)
    """The runs declared so far: one collector captures one run at a time."""


@dataclass(frozen=True)
class RunKeys:
    private_key: pulumi.Output[str]
    """The key's text, a secret: only ever a pulumi-command connection.private_key."""
    private_key_file: str
    """The same key as a file, for the local commands (fastpath, fetch): a project-relative
    path (``KEY_DIR``), never a machine's absolute one."""


def check_composable(cfg: LabConfig) -> None:
    """Reject, before any resource is declared, a scenario list this program can't build."""
    for scenario in cfg.scenarios:
        if scenario not in BUILT_SCENARIOS:
            raise StackError(
                f"vtaplab:scenarios: {scenario!r} is not built by the program yet; "
                f"accepted: {', '.join(BUILT_SCENARIOS)}"
            )
    direct = [s for s in cfg.scenarios if s in DIRECT_CONNECT_SCENARIOS]
    if direct and len(cfg.scenarios) > 1:
        raise StackError(
            f"vtaplab:scenarios: {','.join(cfg.scenarios)!r} mixes {direct[0]!r} (a Direct "
            "Connect PLS) with scenarios that need a load-balanced PLS; accepted: "
            f"{direct[0]!r} in a stack of its own"
        )


def _tags(cfg: LabConfig, scenario: str) -> dict[str, str]:
    """The stack's tags for ``scenario``: the four of every resource plus ``expires-on``
    (``vtaplab:expiresOn``, which ``matrix`` sets per run; "unset" otherwise)."""

    return base_tags(cfg.project, cfg.stack, scenario, expires_on=cfg.expires_on or UNSET)


def _shutdown(cfg: LabConfig) -> AutoShutdown:
    """Every VM's daily shutdown: ``vtaplab:autoShutdownTime``, read once with the config."""
    return AutoShutdown(cfg.auto_shutdown_time)


def build(cfg: LabConfig) -> dict[str, object]:
    """Declare the stack's resources; return the stack outputs (name -> value)."""
    check_composable(cfg)
    stack_tags = _tags(cfg, "+".join(cfg.scenarios))
    group = resources.ResourceGroup(
        "rg",
        resource_group_name=f"rg-{cfg.project}-{cfg.stack}",
        location=cfg.location,
        tags=component_tags(stack_tags, "stack"),
    )
    subscription_id = authorization.get_client_config_output().subscription_id
    collector = CollectorService(
        "provider",
        CollectorServiceArgs(
            resource_group_name=group.name,
            location=cfg.location,
            subscription_id=subscription_id,
            plan=cfg.provider,
            direct_connect=any(s in DIRECT_CONNECT_SCENARIOS for s in cfg.scenarios),
            vm_size=cfg.collector_vm_size,
            admin_username=cfg.admin_username,
            ssh_public_key=cfg.ssh_public_key,
            operator_cidr=cfg.operator_cidr,
            cloud_init=collector_user_data(cfg),
            tags=stack_tags,
            auto_shutdown=_shutdown(cfg),
        ),
    )
    shared = Shared(cfg, group.name, subscription_id, collector, keys=_run_keys(cfg))
    builders: dict[str, Callable[[Shared, str], dict[str, object]]] = {
        "r1": _consumer_only,
        "b1": _consumer_only,
        "b2": _proxied,
        "a": _proxied,
        "b3": _ha_proxied,
        "msp": _msp,
        "b4": _tier,
    }
    return {
        "resource_group": group.name,
        "location": cfg.location,
        "collector": {
            "ip": collector.collector_ip,
            "ssh": collector.collector_ssh_host,
            "pls_alias": collector.pls_alias,
            "nat_ips": collector.nat_ips,
        },
        "scenarios": {s: builders[s](shared, s) for s in cfg.scenarios},
    }


def _source_vnet(
    shared: Shared, scenario: str, *, with_client: bool, name: str | None = None
) -> SourceVnet:
    """The consumer VNet ``name`` (default: the scenario's id) of ``scenario``."""
    cfg = shared.cfg
    return SourceVnet(
        name or scenario,
        SourceVnetArgs(
            resource_group_name=shared.resource_group_name,
            location=cfg.location,
            subscription_id=shared.subscription_id,
            plan=cfg.consumer,
            pls_id=shared.collector.pls_id,
            vm_size=cfg.source_vm_size,
            admin_username=cfg.admin_username,
            ssh_public_key=cfg.ssh_public_key,
            operator_cidr=cfg.operator_cidr,
            src_cloud_init=userdata.render("src"),
            client_cloud_init=userdata.render("client") if with_client else None,
            # b1's attempt points a vTAP at an LB in the source VNet; b3's and b4's vTAPs do,
            # too, and that LB spreads the mirror over the proxies it probes: over HTTP, or
            # (vtaplab:proxyProbe tcp) over TCP/22, which can't see a failed rewrite. The
            # proxies' health endpoint stays either way: b4's upgrades are gated by it.
            with_ilb=scenario == "b1" or scenario in LB_FRONTED_SCENARIOS,
            ilb_all_ports=scenario in LB_FRONTED_SCENARIOS,
            ilb_http_probe=(scenario in LB_FRONTED_SCENARIOS
                            and cfg.proxy_probe == PROXY_PROBE_HTTP),
            tags=_tags(cfg, scenario),
            auto_shutdown=_shutdown(cfg),
        ),
    )


def _common_outputs(shared: Shared, consumer: SourceVnet) -> dict[str, object]:
    return {
        "vm_src": {"ip": consumer.src_ip, "ssh": consumer.src_ssh_host},
        "pe_ip": consumer.pe_ip,
        "pls_alias": shared.collector.pls_alias,
        "collector": {
            "ip": shared.collector.collector_ip,
            "ssh": shared.collector.collector_ssh_host,
        },
    }


def _consumer_only(shared: Shared, scenario: str) -> dict[str, object]:
    """r1 and b1: the consumer side their (later) ARM attempts need, nothing that carries
    traffic. The attempts use the PE NIC (r1) and the consumer LB (b1) exported here."""
    consumer = _source_vnet(shared, scenario, with_client=False)
    consumer.add_source()  # nothing mirrors r1's or b1's source: a plain VM
    outputs = _common_outputs(shared, consumer)
    outputs["pe_nic_id"] = consumer.pe_nic_id
    outputs["pe_nic_ip_configuration_id"] = consumer.pe_nic_ip_configuration_id
    outputs["src_nic_id"] = consumer.src_nic_id
    if consumer.ilb_frontend_id is not None:
        outputs["ilb_frontend_id"] = consumer.ilb_frontend_id
        outputs["ilb_backend_pool_id"] = consumer.ilb_backend_pool_id
    outputs.update(_rejected_attempts(shared, scenario, consumer))
    return outputs


def _rejected_attempts(shared: Shared, scenario: str, consumer: SourceVnet
                       ) -> dict[str, object]:
    """r1/b1: the ARM request the scenario is about, as ``RejectedAttempt`` resources (the
    bodies built by ``vtaplab.azure.arm_bodies``, as the real resources'); ARM's answer becomes the
    evidence and these outputs. A ``warning`` (ARM accepted: the platform changed) is logged."""
    cfg = shared.cfg
    targets: dict[str, Any] = {}
    if scenario == "r1":
        targets["vtap-pe-destination"] = Output.all(
            shared.subscription_id, shared.resource_group_name).apply(
            lambda parts: arm_ids.build(parts[0], parts[1], arm_ids.VTAP, f"{scenario}-vtap"))
    else:
        pool = consumer.ilb_backend_pool_id
        if pool is None:
            raise StackError(f"{scenario}: the attempts need the consumer's internal LB")
        targets["nic-pool"] = pool
        # A pool of its own: the IP-based attempt must not touch the NIC-based pool.
        targets["ip-pool"] = Output.from_input(pool).apply(
            lambda p: p.rsplit("/backendAddressPools/", 1)[0] + "/backendAddressPools/pe-ip")
    declared: list[RejectedAttempt] = []
    for attempt in SCENARIO_ATTEMPTS[scenario]:
        declared.append(RejectedAttempt(
            f"{scenario}-{attempt}", scenario=scenario, attempt=attempt, stack=cfg.stack,
            private_endpoint_id=consumer.pe_id, target_id=targets[attempt],
            location=cfg.location, tags=_tags(cfg, scenario),
            # One at a time: each rewrites the scenario's verdict from all records so far.
            # A tag change (matrix writes expires-on per run) must never replay an attempt:
            # its diff replaces on any input, and a replacement is a new real ARM request.
            opts=ResourceOptions(depends_on=declared[-1:], ignore_changes=["tags"])))
    for resource, attempt in zip(declared, SCENARIO_ATTEMPTS[scenario], strict=True):
        resource.warning.apply(
            lambda text, a=attempt: pulumi.log.warn(f"{scenario} {a}: {text}") if text else None)
    attempts = {
        attempt: {"outcome": r.outcome, "matches_expected": r.matches_expected,
                  "arm_code": r.arm_code, "evidence": r.evidence_path, "warning": r.warning}
        for attempt, r in zip(SCENARIO_ATTEMPTS[scenario], declared, strict=True)}
    outcomes = Output.all(*[r.outcome for r in declared])
    return {
        "attempts": attempts,
        "result": {
            "outcome": outcomes.apply(combined_outcome),
            "matches_expected": Output.all(*[r.matches_expected for r in declared]).apply(
                # The scenario's own attempt decides (as the judge does); a ride-along whose
                # expectation is unknown (b1's IP-based pool) matches nothing either way.
                lambda flags: bool(flags) and flags[0] is True),
            "arm_codes": Output.all(*[r.arm_code for r in declared]).apply(
                lambda codes: [c for c in codes if c]),
            # The last attempt's verdict covers them all.
            "verdict": declared[-1].verdict_path,
            "files": Output.all(*[r.evidence_path for r in declared]).apply(
                lambda paths: [p for p in paths if p]),
        },
    }


def combined_outcome(outcomes: Sequence[str | None]) -> str | None:
    """One outcome for a scenario of several attempts, as the judge decides it
    (``vtaplab.judge.outcome``: the scenario's own attempt, an error anywhere wins)."""
    from vtaplab.judge.outcome import worst_attempt_outcome

    return worst_attempt_outcome(outcomes)


def _proxy(
    shared: Shared,
    scenario: str,
    consumer: SourceVnet,
    name: str,
    proxy_ip: str,
    *,
    vni: int | None = None,
    backend_pool_ids: list[pulumi.Output[str]] | None = None,
) -> ProxyNat:
    """A proxy VM in ``consumer``'s snet-proxy rewriting UDP/4789 to its PE (stamping ``vni``);
    in an LB's pool it also answers the LB's HTTP probe (vtap-health.py)."""
    cfg = shared.cfg
    health_port = facts.HEALTH_PORT if backend_pool_ids else None
    proxy_user_data = proxy_user_data_for(cfg, vni=vni, health_port=health_port)

    return ProxyNat(
        name,
        ProxyNatArgs(
            resource_group_name=shared.resource_group_name,
            location=cfg.location,
            subnet_id=consumer.subnet_ids["snet-proxy"],
            proxy_ip=proxy_ip,
            pe_ip=consumer.pe_ip,
            cloud_init=proxy_user_data,
            vm_size=cfg.proxy_vm_size,
            admin_username=cfg.admin_username,
            ssh_public_key=cfg.ssh_public_key,
            operator_cidr=cfg.operator_cidr,
            tags=_tags(cfg, scenario),
            auto_shutdown=_shutdown(cfg),
            backend_pool_ids=backend_pool_ids or [],
            health_port=health_port,
        ),
    )


def proxy_user_data_for(cfg: LabConfig, *, vni: int | None = None,
                        health_port: int | None = None) -> Callable[[str], str]:
    """Given the PE's IP, a proxy's cloud-init: the rewrite (stamping ``vni``) and, behind an
    LB, the health endpoint on ``health_port``."""
    from vtaplab.program import userdata as cloudinit

    extra = {"vni": str(vni)} if vni is not None else {}
    if health_port is not None:
        extra["health_port"] = str(health_port)

    def render(pe_ip: str) -> str:
        return cloudinit.render("proxy", pe_ip=pe_ip, mode=cfg.proxy_mode, **extra)

    return render


def _proxy_outputs(proxy: ProxyNat, mode: str) -> dict[str, object]:
    return {"ip": proxy.private_ip, "ssh": proxy.ssh_host, "mode": mode}


@dataclass(frozen=True)
class Tapped:
    """A consumer's vm-src tapped into a vTAP: the vTAP and the tap configuration(s) the run
    waits for."""

    tap: VtapAttachment
    tap_configurations: list[pulumi.Resource]


def _tap(shared: Shared, scenario: str, name: str, consumer: SourceVnet, *,
         destination: Callable[[], dict[str, Any]], waits_for: Sequence[pulumi.Resource]
         ) -> Tapped:
    """The vTAP ``name`` and ``consumer``'s vm-src as its source, in the documented order
    (``facts.VTAP_SOURCE_ORDER_SOURCE``). Default: the vTAP, then the source NIC's tap
    configuration, then the VM, so the VM first boots tapped and needs no restart.
    ``vtaplab:tapExistingSource``: the VM first, then the vTAP and the tap configuration; the
    run then deallocates and starts it."""
    cfg = shared.cfg
    common: dict[str, Any] = {
        "resource_group_name": shared.resource_group_name,
        "location": cfg.location,
        "destination_port": facts.VXLAN_PORT,
        "tags": _tags(cfg, scenario),
        **destination(),
    }
    if cfg.tap_existing_source:
        consumer.add_source()
        tap = VtapAttachment(name, VtapAttachmentArgs(
            source_nic_names=[consumer.src_nic_name],
            # Tap the source once its VM runs, into a destination that exists.
            depends_on=[consumer, *waits_for], **common))
        return Tapped(tap, tap.tap_configurations)
    # The vTAP needs only its destination; vm-src comes after it.
    tap = VtapAttachment(name, VtapAttachmentArgs(depends_on=list(waits_for), **common))
    source = consumer.add_source(tap.tap_id, tap_configuration_name=f"{name}-cfg")
    return Tapped(tap, source.tap_configurations)


def _tap_into_proxy(shared: Shared, scenario: str, name: str, consumer: SourceVnet,
                    proxy: ProxyNat) -> Tapped:
    """vm-src's NIC tapped into the proxy NIC's ip-configuration on UDP/4789 (b2, a, msp)."""
    return _tap(shared, scenario, name, consumer,
                destination=lambda: {
                    "destination_ip_configuration_id": proxy.ip_configuration_id},
                waits_for=[proxy])


def _proxied(shared: Shared, scenario: str) -> dict[str, object]:
    """b2 (and a, against a Direct Connect PLS): vTAP -> proxy NIC -> DNAT to the PE."""

    cfg = shared.cfg
    consumer = _source_vnet(shared, scenario, with_client=True)
    proxy = _proxy(shared, scenario, consumer, f"{scenario}-proxy", str(cfg.consumer.proxy_ip))
    tapped = _tap_into_proxy(shared, scenario, f"{scenario}-tap", consumer, proxy)
    run = evidence_run(shared, scenario, consumer=(scenario, consumer),
                       proxies=[(f"{scenario}-proxy", proxy)], tap=tapped.tap_configurations)
    outputs = _common_outputs(shared, consumer)
    outputs["vm_client"] = {"ip": consumer.client_ip, "ssh": consumer.client_ssh_host}
    outputs["proxy"] = _proxy_outputs(proxy, cfg.proxy_mode)
    outputs["tap_id"] = tapped.tap.tap_id
    outputs["host_keys"] = run_host_keys(shared, consumer, [proxy])
    outputs["result"] = run.summary
    outputs["run_plan"] = run.plan_output
    return outputs


def _ha_proxied(shared: Shared, scenario: str) -> dict[str, object]:
    """b3: vTAP -> the consumer LB's frontend (HA ports, HTTP probe of each proxy's
    vtap-health.py) -> two proxies in its backend pool, each rewriting to the PE: one proxy
    down, or its rewrite gone, and the LB sends it nothing."""

    cfg = shared.cfg
    consumer = _source_vnet(shared, scenario, with_client=True)
    assert consumer.ilb_frontend_id is not None and consumer.ilb_backend_pool_id is not None
    proxies = [
        _proxy(shared, scenario, consumer, f"{scenario}-proxy{index}", str(ip),
               backend_pool_ids=[consumer.ilb_backend_pool_id])
        for index, ip in enumerate((cfg.consumer.proxy_ip, cfg.consumer.proxy2_ip), 1)
    ]
    frontend_id = consumer.ilb_frontend_id
    tapped = _tap(shared, scenario, f"{scenario}-tap", consumer,
                  destination=lambda: {"destination_lb_frontend_id": frontend_id},
                  waits_for=proxies)
    tap = tapped.tap
    proxy_names = [f"{scenario}-proxy{index}" for index in range(1, len(proxies) + 1)]
    run = evidence_run(shared, scenario, consumer=(scenario, consumer),
                       proxies=list(zip(proxy_names, proxies, strict=True)),
                       tap=tapped.tap_configurations)
    outputs = _common_outputs(shared, consumer)
    outputs["vm_client"] = {"ip": consumer.client_ip, "ssh": consumer.client_ssh_host}
    outputs["ilb"] = {"ip": str(cfg.consumer.ilb_ip), "frontend_id": consumer.ilb_frontend_id}
    outputs["proxies"] = [_proxy_outputs(p, cfg.proxy_mode) for p in proxies]
    outputs["tap_id"] = tap.tap_id
    outputs["host_keys"] = run_host_keys(shared, consumer, proxies)
    outputs["result"] = run.summary
    outputs["run_plan"] = run.plan_output
    return outputs


def _tier(shared: Shared, scenario: str) -> dict[str, object]:
    """b4: vTAP -> the consumer LB's frontend (HA ports, HTTP probe) -> a Flexible scale set
    of ``proxyCount`` proxies (``ProxyTier``) in its pool, spread over the region's zones,
    patched by automatic OS image upgrades in rolling batches gated by the same health
    endpoint. The run captures at the collector only: the instances' public IPs are the
    scale set's, not stack outputs, so no proxy capture is fetched."""
    cfg = shared.cfg
    consumer = _source_vnet(shared, scenario, with_client=True)
    assert consumer.ilb_frontend_id is not None and consumer.ilb_backend_pool_id is not None
    tier = ProxyTier(
        f"{scenario}-tier",
        ProxyTierArgs(
            resource_group_name=shared.resource_group_name,
            location=cfg.location,
            subnet_id=consumer.subnet_ids["snet-proxy"],
            pe_ip=consumer.pe_ip,
            cloud_init=proxy_user_data_for(cfg, health_port=facts.HEALTH_PORT),
            vm_size=cfg.proxy_vm_size,
            admin_username=cfg.admin_username,
            ssh_public_key=cfg.ssh_public_key,
            operator_cidr=cfg.operator_cidr,
            tags=_tags(cfg, scenario),
            backend_pool_ids=[consumer.ilb_backend_pool_id],
            instance_count=cfg.proxy_count,
            zones=list(facts.AVAILABILITY_ZONES) if cfg.location in facts.ZONE_REGIONS else [],
        ),
    )
    frontend_id = consumer.ilb_frontend_id
    tapped = _tap(shared, scenario, f"{scenario}-tap", consumer,
                  destination=lambda: {"destination_lb_frontend_id": frontend_id},
                  waits_for=[tier])
    tap = tapped.tap
    run = evidence_run(shared, scenario, consumer=(scenario, consumer), proxies=[],
                       tap=tapped.tap_configurations)
    outputs = _common_outputs(shared, consumer)
    outputs["vm_client"] = {"ip": consumer.client_ip, "ssh": consumer.client_ssh_host}
    outputs["ilb"] = {"ip": str(cfg.consumer.ilb_ip), "frontend_id": consumer.ilb_frontend_id}
    outputs["proxy_tier"] = {"scale_set": tier.scale_set_name, "instances": cfg.proxy_count,
                             "mode": cfg.proxy_mode, "health": {
                                 "port": facts.HEALTH_PORT, "path": facts.HEALTH_PATH}}
    outputs["tap_id"] = tap.tap_id
    outputs["host_keys"] = {**run_host_keys(shared, consumer, []),
                            "proxy_tier": tier.host_key}
    outputs["result"] = run.summary
    outputs["run_plan"] = run.plan_output
    return outputs


def collector_params(cfg: LabConfig) -> dict[str, str]:
    """The collector's cloud-init parameters: with msp, every tenant's VNI
    (``plan.tenant_vni``), one decap interface each (``vtap-decap.sh``, every boot)."""
    if "msp" not in cfg.scenarios:
        return {}
    return {"decap_vnis": ",".join(str(plan.tenant_vni(tenant))
                                   for tenant in range(1, cfg.msp_tenants + 1))}


def collector_user_data(cfg: LabConfig) -> str:
    """The collector's cloud-init (``collector_params``: msp's decap interfaces)."""
    return userdata.render("collector", **collector_params(cfg))


def _msp(shared: Shared, scenario: str) -> dict[str, object]:
    """msp: ``mspTenants`` consumers, each its own VNet with the *same* address plan, its proxy
    stamping the tenant's VNI (``plan.tenant_vni``), its vTAP and its PE, all into the stack's
    one PLS and collector, which can tell tenants apart only by that VNI."""

    cfg = shared.cfg
    tenants: list[dict[str, object]] = []
    run_tenants: list[RunTenantSpec] = []
    run_proxies: list[tuple[str, ProxyNat]] = []
    taps: list[pulumi.Resource] = []
    for tenant in range(1, cfg.msp_tenants + 1):
        name = f"{scenario}-t{tenant}"
        vni = plan.tenant_vni(tenant)
        consumer = _source_vnet(shared, scenario, with_client=True, name=name)
        proxy = _proxy(shared, scenario, consumer, f"{name}-proxy", str(cfg.consumer.proxy_ip),
                       vni=vni)
        tapped = _tap_into_proxy(shared, scenario, f"{name}-tap", consumer, proxy)
        outputs = _common_outputs(shared, consumer)
        outputs["tenant"] = tenant
        outputs["vni"] = vni
        outputs["vm_client"] = {"ip": consumer.client_ip, "ssh": consumer.client_ssh_host}
        outputs["proxy"] = _proxy_outputs(proxy, cfg.proxy_mode)
        outputs["tap_id"] = tapped.tap.tap_id
        outputs["host_keys"] = run_host_keys(shared, consumer, [proxy])
        tenants.append(outputs)
        run_tenants.append(RunTenantSpec(f"t{tenant}", name, consumer, vni))
        run_proxies.append((f"{name}-proxy", proxy))
        taps.extend(tapped.tap_configurations)
    # One run over all tenants: one collector capture, every tenant's traffic inside it.
    run = evidence_run(shared, scenario, proxies=run_proxies, tap=taps, tenants=run_tenants)
    return {
        "pls_alias": shared.collector.pls_alias,
        "collector": {
            "ip": shared.collector.collector_ip,
            "ssh": shared.collector.collector_ssh_host,
        },
        "tenants": tenants,
        "result": run.summary,
        "run_plan": run.plan_output,
    }


# --- the run: host keys, private key, evidence -----------------------------------------------

COLLECTOR_ROLE = "col"  # CollectorService names its VM "<name>-col"


def host_key_of(component: pulumi.Resource, vm_name: str) -> pulumi.Output[str]:
    """The public SSH host key of ``vm_name`` (one of ``component``'s VMs): LinuxVm's
    ``tls.PrivateKey``, kept as a secret in the stack state."""
    key: pulumi.Output[str] | None = None
    if isinstance(component, CollectorService):
        key = component.collector_host_key
    elif isinstance(component, ProxyNat):
        key = component.host_key
    elif isinstance(component, SourceVnet):
        key = component.client_host_key if vm_name.endswith("-client") else component.src_host_key
    if key is None:
        raise StackError(f"{vm_name}: {type(component).__name__} has no host key for it")
    return key


def run_host_keys(shared: Shared, consumer: SourceVnet, proxies: Sequence[ProxyNat]
                  ) -> dict[str, pulumi.Output[str]]:
    """The public host keys of a run's VMs by role (stack outputs: ``python -m vtaplab
    evidence`` pins them)."""
    if consumer.client_host_key is None:
        raise StackError("a run's consumer needs its client VM")
    keys = {"collector": shared.collector.collector_host_key,
            "vm_src": consumer.src_host_key,
            "vm_client": consumer.client_host_key}
    for index, proxy in enumerate(proxies):
        keys["proxy" if index == 0 else f"proxy{index + 1}"] = proxy.host_key
    return keys


# Where the run's local commands (fastpath, fetch) find the operator's private key: a path
# relative to the project, the same on every machine, so no home directory or machine-specific
# path ever enters a resource input (a colleague's `pulumi up` would otherwise re-run every
# command). The program writes the key there (0600, git-ignored) each time it runs, from
# vtaplab:sshPrivateKey (a secret) or the key file; the commands read it when they run.
KEY_DIR = Path(".vtaplab") / "keys"


def _run_keys(cfg: LabConfig) -> RunKeys | None:
    if not any(s in facts.TRAFFIC_SCENARIOS for s in cfg.scenarios):
        return None
    text, path = cfg.ssh_private_key, cfg.ssh_private_key_file
    if not text:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise StackError(f"vtaplab:sshPrivateKeyFile: {path!r}: {exc.strerror}; accepted: "
                             "a readable private key file") from None
    key_file = KEY_DIR / cfg.stack
    if not key_file.is_file() or key_file.read_text(encoding="utf-8") != text:
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    return RunKeys(private_key=Output.secret(text), private_key_file=str(key_file))


@dataclass(frozen=True)
class RunTenantSpec:
    """msp: one tenant of a run: its label (``t1``), its consumer (name, component), its VNI."""

    label: str
    consumer_name: str
    consumer: SourceVnet
    vni: int


def evidence_run(shared: Shared, scenario: str, *, consumer: tuple[str, SourceVnet] | None = None,
                 proxies: Sequence[tuple[str, ProxyNat]],
                 tap: Sequence[pulumi.Resource],
                 tenants: Sequence[RunTenantSpec] = (),
                 name: str | None = None) -> EvidenceRun:
    """Declare one scenario's run (readiness, fastpath restart, captures, traffic, fetch):
    ``consumer`` and ``proxies`` as (name the component was given, component); msp gives
    ``tenants`` instead of ``consumer`` (every tenant's vm-src tapped, its client sending).
    Runs on the stack's one collector are chained, so no capture holds another scenario's
    traffic."""
    cfg = shared.cfg
    if shared.keys is None:
        raise StackError(f"{scenario}: a run needs the operator's private key")
    if (consumer is None) == (not tenants):
        raise StackError(f"{scenario}: a run takes one consumer or tenants, not both/neither")

    def address(ssh_host: pulumi.Output[str] | None, vm_name: str) -> pulumi.Output[str]:
        if ssh_host is None:
            raise StackError(f"{vm_name}: no public IP, so the run can't reach it over SSH")
        return ssh_host.apply(lambda text: text.split("@", 1)[-1])

    def vm(vm_name: str, ssh_host: pulumi.Output[str] | None,
           component: pulumi.Resource, tapped: bool = False) -> RunVm:
        vm_id = Output.all(shared.subscription_id, shared.resource_group_name).apply(
            lambda parts: arm_ids.build(parts[0], parts[1], arm_ids.VM, vm_name)
        ) if tapped else None
        return RunVm(name=vm_name, host=address(ssh_host, vm_name), user=cfg.admin_username,
                     host_key=host_key_of(component, vm_name), wait_for=[component],
                     vm_id=vm_id)

    consumers = ([(consumer[0], consumer[1])] if consumer is not None
                 else [(t.consumer_name, t.consumer) for t in tenants])
    run = EvidenceRun(
        name or f"{scenario}-run",
        EvidenceRunArgs(
            stack=cfg.stack, scenario=scenario,
            collector=vm(f"provider-{COLLECTOR_ROLE}", shared.collector.collector_ssh_host,
                         shared.collector),
            client=(vm(f"{consumer[0]}-client", consumer[1].client_ssh_host, consumer[1])
                    if consumer is not None else None),
            target_ip=consumer[1].src_ip if consumer is not None else None,
            tenants=[RunTenant(name=t.label, vni=t.vni,
                               client=vm(f"{t.consumer_name}-client",
                                         t.consumer.client_ssh_host, t.consumer),
                               target_ip=t.consumer.src_ip) for t in tenants],
            tapped=[vm(f"{consumer_name}-src", vnet.src_ssh_host, vnet, tapped=True)
                    for consumer_name, vnet in consumers],
            proxies=[vm(proxy_name, proxy.ssh_host, proxy) for proxy_name, proxy in proxies],
            tap_configurations=list(tap),
            restart_sources=cfg.tap_existing_source,
            private_key=shared.keys.private_key,
            private_key_file=shared.keys.private_key_file,
            capture_seconds=cfg.capture_seconds,
            request_count=cfg.traffic_requests,
            run_id=cfg.run_id,
            after=[r.done for r in shared.runs],
        ),
    )
    shared.runs.append(run)
    return run
