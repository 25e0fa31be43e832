"""The composition of one stack: a resource group, one provider, one consumer per scenario.

``__main__.py`` reads the config, calls ``build`` and exports what it returns; nothing else.
Every scenario gets its own ``SourceVnet`` (its own VNet: address spaces may repeat), all of
them against the stack's single ``CollectorService`` — the MSP shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vtaplab import facts

if TYPE_CHECKING:
    import pulumi

    from components import CollectorService, SourceVnet
    from vtaplab.config import LabConfig

# Scenarios whose PLS is Direct Connect: the stack's one provider is built that way.
DIRECT_CONNECT_SCENARIOS = frozenset({"a"})
# What this program builds today; the others come with later issues.
BUILT_SCENARIOS = ("r1", "b1", "b2", "a")


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


def _source_vnet(shared: Shared, scenario: str, *, with_client: bool) -> SourceVnet:
    from components import SourceVnet, SourceVnetArgs
    from components.tags import base_tags
    from vtaplab import cloudinit

    cfg = shared.cfg
    return SourceVnet(
        scenario,
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
            # b1's attempt points a vTAP at an LB in the source VNet.
            with_ilb=scenario == "b1",
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


def _proxied(shared: Shared, scenario: str) -> dict[str, object]:
    """b2 (and a, against a Direct Connect PLS): vTAP -> proxy NIC -> DNAT to the PE."""
    from components import ProxyNat, ProxyNatArgs, VtapAttachment, VtapAttachmentArgs
    from components.tags import base_tags
    from vtaplab import cloudinit

    cfg = shared.cfg
    consumer = _source_vnet(shared, scenario, with_client=True)
    mode = cfg.proxy_mode

    def proxy_user_data(pe_ip: str) -> str:
        return cloudinit.render("proxy", pe_ip=pe_ip, mode=mode)

    proxy = ProxyNat(
        f"{scenario}-proxy",
        ProxyNatArgs(
            resource_group_name=shared.resource_group_name,
            location=cfg.location,
            subnet_id=consumer.subnet_ids["snet-proxy"],
            proxy_ip=str(cfg.consumer.proxy_ip),
            pe_ip=consumer.pe_ip,
            cloud_init=proxy_user_data,
            vm_size=cfg.proxy_vm_size,
            admin_username=cfg.admin_username,
            ssh_public_key=cfg.ssh_public_key,
            operator_cidr=cfg.operator_cidr,
            tags=base_tags(cfg.project, cfg.stack, scenario),
        ),
    )
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
    outputs["proxy"] = {"ip": proxy.private_ip, "ssh": proxy.ssh_host, "mode": mode}
    outputs["tap_id"] = tap.tap_id
    return outputs
