"""Lookups over the program's registered resources (the graph under mocks)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vtaplab.preflight import mocks

NETWORK = "azure-native:network:"


TAP = NETWORK + "VirtualNetworkTap"


TAP_CONFIG = NETWORK + "NetworkInterfaceTapConfiguration"


NIC = NETWORK + "NetworkInterface"


VM = "azure-native:compute:VirtualMachine"


def of_type(resources: Iterable[Mapping[str, Any]], type_: str) -> list[Mapping[str, Any]]:
    return [r for r in resources if r["type"] == type_]


def one(resources: list[Mapping[str, Any]], what: str) -> Mapping[str, Any]:
    assert len(resources) == 1, f"expected one {what}, found {[r['name'] for r in resources]}"
    return resources[0]


def arm_id(resource: Mapping[str, Any]) -> str:
    return mocks.azure_id(resource["type"], resource["name"], resource["inputs"])


def nic_with_ip(resources: list[Mapping[str, Any]], address: object) -> Mapping[str, Any]:
    return one([n for n in of_type(resources, NIC)
                if n["inputs"]["ipConfigurations"][0]["privateIPAddress"] == str(address)],
               f"NIC with {address}")
