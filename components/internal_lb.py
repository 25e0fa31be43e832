"""A Standard internal load balancer: one static frontend, one backend pool, optionally one
HA-ports rule with its health probe. Used by the provider (to the collector, fronting the PLS),
by b1 (an empty pool: the attempt's vTAP destination) and by b3/b4 (the vTAP's destination in
the source VNet, spreading the mirror over the proxies, probed over HTTP, or over TCP/22 when
``vtaplab:proxyProbe`` is tcp).

Every rule is an HA-ports rule, never a port rule: load-balancing rules don't forward IP
fragments, HA-ports rules do (``facts.LB_FRAGMENTS_SOURCE``), and full-size mirrored frames
make fragmented VXLAN datagrams whose non-first fragments carry no UDP port to match."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pulumi import Input, Output, ResourceOptions
from pulumi_azure_native import network

from vtaplab import arm_ids, facts

FRONTEND = "fe"
BACKEND_POOL = "be"
PROBE = "probe-tcp"
# Azure can't probe UDP; the probe asks the backend's sshd (TCP/22), which is up exactly
# when the VM is, and the AzureLoadBalancer tag is admitted by every NSG's default rules.
# What it can't tell: a proxy VM that is up but whose rewrite failed still probes healthy
# (facts: lb-tcp-probe); b3/b4 use it only with vtaplab:proxyProbe tcp, to show exactly that.
PROBE_PORT = 22
HA_PORTS_RULE = "ha-ports"
# The proxies' probe (b3, b4): HTTP to vtap-health.py, 200 only while the rewrite and the
# route to the PE are in place, so a proxy whose rewrite failed is taken out of the pool.
HTTP_PROBE = "probe-http"


@dataclass(frozen=True)
class HttpProbe:
    """An HTTP health probe: healthy on 200 only (facts: lb-http-probe)."""

    port: int = facts.HEALTH_PORT
    path: str = facts.HEALTH_PATH


@dataclass(frozen=True)
class InternalLb:
    load_balancer: network.LoadBalancer
    frontend_id: Output[str]
    backend_pool_id: Output[str]


def internal_lb(
    name: str,
    *,
    resource_group_name: Input[str],
    location: str,
    subscription_id: Input[str],
    subnet_id: Input[str],
    frontend_ip: str,
    ha_ports: bool,
    tags: Mapping[str, str],
    opts: ResourceOptions,
    http_probe: HttpProbe | None = None,
) -> InternalLb:
    """Declare the LB ``name`` (also its Azure name); with ``ha_ports``, an HA-ports rule
    (protocol All, ports 0: every protocol, port and IP fragment) and its probe (TCP/22, or
    ``http_probe``); without, no rule at all (b1's attempt needs only the frontend and the
    pool)."""
    # A rule names its frontend, pool and probe by id, and those ids live inside the LB being
    # declared: they are written out from the LB's own (deterministic) Azure id.
    lb_id = Output.all(subscription_id, resource_group_name).apply(
        lambda parts: arm_ids.build(parts[0], parts[1], arm_ids.LOAD_BALANCER, name))
    frontend_ref = {"id": Output.concat(lb_id, "/frontendIPConfigurations/", FRONTEND)}
    pool_ref = {"id": Output.concat(lb_id, "/backendAddressPools/", BACKEND_POOL)}
    probe_ref = {"id": Output.concat(lb_id, "/probes/",
                                     HTTP_PROBE if http_probe is not None else PROBE)}
    probes: list[dict[str, object]] = []
    rules: list[dict[str, object]] = []
    if ha_ports and http_probe is not None:
        probes.append(
            {
                "name": HTTP_PROBE,
                "protocol": "Http",
                "port": http_probe.port,
                "request_path": http_probe.path,
                "interval_in_seconds": facts.PROBE_INTERVAL_S,
                "number_of_probes": 2,
                "probe_threshold": facts.PROBE_THRESHOLD,
            }
        )
    elif ha_ports:
        probes.append(
            {
                "name": PROBE,
                "protocol": "Tcp",
                "port": PROBE_PORT,
                # The HTTP probe's cadence: with vtaplab:proxyProbe tcp on b3/b4, only what
                # the probe asks differs, so the twin's windows compare like with like.
                "interval_in_seconds": facts.PROBE_INTERVAL_S,
                "number_of_probes": 2,
                "probe_threshold": facts.PROBE_THRESHOLD,
            }
        )
    if ha_ports:
        rules.append(
            {
                "name": HA_PORTS_RULE,
                "protocol": facts.LB_HA_PORTS_PROTOCOL,
                "frontend_port": facts.LB_HA_PORTS_PORT,
                "backend_port": facts.LB_HA_PORTS_PORT,
                "frontend_ip_configuration": frontend_ref,
                "backend_address_pool": pool_ref,
                "probe": probe_ref,
                "enable_floating_ip": False,
                "idle_timeout_in_minutes": 4,
                "load_distribution": "Default",
                # Backends reach the internet through their own public IPs.
                "disable_outbound_snat": True,
            }
        )
    lb = network.LoadBalancer(
        name,
        load_balancer_name=name,
        resource_group_name=resource_group_name,
        location=location,
        sku={"name": "Standard", "tier": "Regional"},
        frontend_ip_configurations=[
            {
                "name": FRONTEND,
                "private_ip_address": frontend_ip,
                "private_ip_allocation_method": "Static",
                "private_ip_address_version": "IPv4",
                "subnet": {"id": subnet_id},
            }
        ],
        backend_address_pools=[{"name": BACKEND_POOL}],
        probes=probes,
        load_balancing_rules=rules,
        tags=dict(tags),
        opts=opts,
    )
    return InternalLb(
        load_balancer=lb,
        frontend_id=lb.frontend_ip_configurations.apply(lambda fes: _first_id(fes, name)),
        backend_pool_id=lb.backend_address_pools.apply(lambda pools: _first_id(pools, name)),
    )


def _first_id(items: list[object] | None, name: str) -> str:
    if not items or getattr(items[0], "id", None) is None:
        raise ValueError(f"load balancer {name} reports no sub-resource id")
    return str(items[0].id)  # type: ignore[attr-defined]
