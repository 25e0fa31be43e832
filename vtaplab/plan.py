"""The default address plan: VNets, subnets, fixed addresses, msp tenant VNIs. Imports nothing.

The config loader starts from these values and validates whatever the stack file overrides;
the emulator builds its namespaces from the same numbers, so a capture from the emulator and
one from Azure show the same addresses.
"""

from __future__ import annotations

# Consumer side (SourceVnet): one VNet per scenario, address spaces may repeat.
CONSUMER_VNET = "10.30.0.0/16"
CONSUMER_SUBNETS: dict[str, str] = {
    "snet-src": "10.30.1.0/24",
    "snet-ilb": "10.30.2.0/24",
    "snet-pe": "10.30.3.0/24",
    "snet-proxy": "10.30.4.0/24",
}
VM_SRC_IP = "10.30.1.4"
VM_CLIENT_IP = "10.30.1.5"
CONSUMER_ILB_IP = "10.30.2.4"
PE_IP = "10.30.3.4"
VM_PROXY_IP = "10.30.4.4"
VM_PROXY2_IP = "10.30.4.5"

# Provider side (CollectorService): one per stack.
PROVIDER_VNET = "10.40.0.0/16"
PROVIDER_SUBNETS: dict[str, str] = {
    "snet-pls": "10.40.2.0/24",
    "snet-col": "10.40.3.0/24",
}
PROVIDER_ILB_IP = "10.40.2.4"
# PLS NAT ip-configurations: the provider sees these as the source of everything.
PLS_NAT_IPS: tuple[str, ...] = ("10.40.2.5", "10.40.2.6")
VM_COL_IP = "10.40.3.4"

# msp: tenant i (1, 2, ...) is told apart at the collector by the VXLAN VNI its proxy stamps.
# The program (each tenant's proxy cloud-init) and the emulator both number tenants with it.
MSP_VNI_BASE = 1000


def tenant_vni(tenant: int) -> int:
    """The VNI tenant ``tenant`` (1-based) stamps: 1001, 1002, ... (never the vTAP's own 1)."""
    if tenant < 1:
        raise ValueError(f"tenant {tenant!r} is not accepted; accepted: 1, 2, ...")
    return MSP_VNI_BASE + tenant
