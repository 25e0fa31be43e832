"""The composition of one stack: a resource group, one provider, one consumer per scenario.

``__main__.py`` reads the config, calls ``build`` and exports what it returns; nothing else.
Every scenario gets its own ``SourceVnet`` (its own VNet: address spaces may repeat), all of
them against the stack's single ``CollectorService`` — the MSP shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vtaplab import facts, plan

if TYPE_CHECKING:
    import pulumi

    from components import CollectorService, ProxyNat, SourceVnet
    from vtaplab.config import LabConfig

# Scenarios whose PLS is Direct Connect: the stack's one provider is built that way.
DIRECT_CONNECT_SCENARIOS = frozenset({"a"})
# What this program builds today; the others come with later issues.
BUILT_SCENARIOS = ("r1", "b1", "b2", "a", "b3", "msp")


class StackError(ValueError):
    """A stack the program can't compose (one line: what and what is accepted)."""


@dataclass(frozen=True)
class Shared:
    """What every scenario of the stack builds on."""

    cfg: LabConfig
    resource_group_name: pulumi.Output[str]
    subscription_id: pulumi.Output[str]
    collector: CollectorService


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


def build(cfg: LabConfig) -> dict[str, object]:
    """Declare the stack's resources; return the stack outputs (name -> value)."""
    from pulumi_azure_native import authorization, resources

    from components import CollectorService, CollectorServiceArgs
    from components.tags import base_tags, component_tags
    from vtaplab import cloudinit

    check_composable(cfg)
    stack_tags = base_tags(cfg.project, cfg.stack, "+".join(cfg.scenarios))
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
            cloud_init=cloudinit.render("collector"),
            tags=stack_tags,
        ),
    )
    shared = Shared(cfg, group.name, subscription_id, collector)
    builders: dict[str, Callable[[Shared, str], dict[str, object]]] = {
        "r1": _consumer_only,
        "b1": _consumer_only,
        "b2": _proxied,
        "a": _proxied,
        "b3": _ha_proxied,
        "msp": _msp,
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
    from components import SourceVnet, SourceVnetArgs
    from components.tags import base_tags
    from vtaplab import cloudinit

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
            src_cloud_init=cloudinit.render("src"),
            client_cloud_init=cloudinit.render("client") if with_client else None,
            # b1's attempt points a vTAP at an LB in the source VNet; b3's vTAP does, too,
            # and that LB spreads the mirror over the proxies.
            with_ilb=scenario in ("b1", "b3"),
            ilb_all_ports=scenario == "b3",
            tags=base_tags(cfg.project, cfg.stack, scenario),
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
    outputs = _common_outputs(shared, consumer)
    outputs["pe_nic_id"] = consumer.pe_nic_id
    outputs["pe_nic_ip_configuration_id"] = consumer.pe_nic_ip_configuration_id
    outputs["src_nic_id"] = consumer.src_nic_id
    if consumer.ilb_frontend_id is not None:
        outputs["ilb_frontend_id"] = consumer.ilb_frontend_id
        outputs["ilb_backend_pool_id"] = consumer.ilb_backend_pool_id
    return outputs


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
    """A proxy VM in ``consumer``'s snet-proxy rewriting UDP/4789 to its PE (stamping ``vni``)."""
    from components import ProxyNat, ProxyNatArgs
    from components.tags import base_tags
    from vtaplab import cloudinit

    cfg = shared.cfg
    mode = cfg.proxy_mode
    extra = {"vni": str(vni)} if vni is not None else {}

    def proxy_user_data(pe_ip: str) -> str:
        return cloudinit.render("proxy", pe_ip=pe_ip, mode=mode, **extra)

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
            tags=base_tags(cfg.project, cfg.stack, scenario),
            backend_pool_ids=backend_pool_ids or [],
        ),
    )


def _proxy_outputs(proxy: ProxyNat, mode: str) -> dict[str, object]:
    return {"ip": proxy.private_ip, "ssh": proxy.ssh_host, "mode": mode}


def _proxied(shared: Shared, scenario: str) -> dict[str, object]:
    """b2 (and a, against a Direct Connect PLS): vTAP -> proxy NIC -> DNAT to the PE."""
    from components import VtapAttachment, VtapAttachmentArgs
    from components.tags import base_tags

    cfg = shared.cfg
    consumer = _source_vnet(shared, scenario, with_client=True)
    proxy = _proxy(shared, scenario, consumer, f"{scenario}-proxy", str(cfg.consumer.proxy_ip))
    tap = VtapAttachment(
        f"{scenario}-tap",
        VtapAttachmentArgs(
            resource_group_name=shared.resource_group_name,
            location=cfg.location,
            source_nic_names=[consumer.src_nic_name],
            destination_ip_configuration_id=proxy.ip_configuration_id,
            destination_port=facts.VXLAN_PORT,
            tags=base_tags(cfg.project, cfg.stack, scenario),
            # Tap the source once its VM runs, into a proxy that exists: never a NIC alone.
            depends_on=[consumer, proxy],
        ),
    )
    outputs = _common_outputs(shared, consumer)
    outputs["vm_client"] = {"ip": consumer.client_ip, "ssh": consumer.client_ssh_host}
    outputs["proxy"] = _proxy_outputs(proxy, cfg.proxy_mode)
    outputs["tap_id"] = tap.tap_id
    return outputs


def _ha_proxied(shared: Shared, scenario: str) -> dict[str, object]:
    """b3: vTAP -> the consumer LB's frontend (HA ports, TCP/22 probe) -> two proxies in its
    backend pool, each rewriting to the PE: one proxy down and the LB sends it nothing."""
    from components import VtapAttachment, VtapAttachmentArgs
    from components.tags import base_tags

    cfg = shared.cfg
    consumer = _source_vnet(shared, scenario, with_client=True)
    assert consumer.ilb_frontend_id is not None and consumer.ilb_backend_pool_id is not None
    proxies = [
        _proxy(shared, scenario, consumer, f"{scenario}-proxy{index}", str(ip),
               backend_pool_ids=[consumer.ilb_backend_pool_id])
        for index, ip in enumerate((cfg.consumer.proxy_ip, cfg.consumer.proxy2_ip), 1)
    ]
    tap = VtapAttachment(
        f"{scenario}-tap",
        VtapAttachmentArgs(
            resource_group_name=shared.resource_group_name,
            location=cfg.location,
            source_nic_names=[consumer.src_nic_name],
            destination_lb_frontend_id=consumer.ilb_frontend_id,
            destination_port=facts.VXLAN_PORT,
            tags=base_tags(cfg.project, cfg.stack, scenario),
            depends_on=[consumer, *proxies],
        ),
    )
    outputs = _common_outputs(shared, consumer)
    outputs["vm_client"] = {"ip": consumer.client_ip, "ssh": consumer.client_ssh_host}
    outputs["ilb"] = {"ip": str(cfg.consumer.ilb_ip), "frontend_id": consumer.ilb_frontend_id}
    outputs["proxies"] = [_proxy_outputs(p, cfg.proxy_mode) for p in proxies]
    outputs["tap_id"] = tap.tap_id
    return outputs


def _msp(shared: Shared, scenario: str) -> dict[str, object]:
    """msp: ``mspTenants`` consumers, each its own VNet with the *same* address plan, its proxy
    stamping the tenant's VNI (``plan.tenant_vni``), its vTAP and its PE, all into the stack's
    one PLS and collector, which can tell tenants apart only by that VNI."""
    from components import VtapAttachment, VtapAttachmentArgs
    from components.tags import base_tags

    cfg = shared.cfg
    tenants: list[dict[str, object]] = []
    for tenant in range(1, cfg.msp_tenants + 1):
        name = f"{scenario}-t{tenant}"
        vni = plan.tenant_vni(tenant)
        consumer = _source_vnet(shared, scenario, with_client=True, name=name)
        proxy = _proxy(shared, scenario, consumer, f"{name}-proxy", str(cfg.consumer.proxy_ip),
                       vni=vni)
        tap = VtapAttachment(
            f"{name}-tap",
            VtapAttachmentArgs(
                resource_group_name=shared.resource_group_name,
                location=cfg.location,
                source_nic_names=[consumer.src_nic_name],
                destination_ip_configuration_id=proxy.ip_configuration_id,
                destination_port=facts.VXLAN_PORT,
                tags=base_tags(cfg.project, cfg.stack, scenario),
                depends_on=[consumer, proxy],
            ),
        )
        outputs = _common_outputs(shared, consumer)
        outputs["tenant"] = tenant
        outputs["vni"] = vni
        outputs["vm_client"] = {"ip": consumer.client_ip, "ssh": consumer.client_ssh_host}
        outputs["proxy"] = _proxy_outputs(proxy, cfg.proxy_mode)
        outputs["tap_id"] = tap.tap_id
        tenants.append(outputs)
    return {
        "pls_alias": shared.collector.pls_alias,
        "collector": {
            "ip": shared.collector.collector_ip,
            "ssh": shared.collector.collector_ssh_host,
        },
        "tenants": tenants,
    }
