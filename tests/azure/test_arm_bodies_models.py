"""The ARM bodies the attempts send, checked against Microsoft's generated models.

``azure-mgmt-network`` 28.1.0 is generated from azure-rest-api-specs for exactly the API
version the lab sends (``vtaplab.azure.arm.NETWORK_API``, 2024-05-01). Each body is
deserialised into its model (``VirtualNetworkTap``, ``NetworkInterface``,
``BackendAddressPool``), validated (required fields, read-only fields), serialised back, and
compared key by key: a key the model does not know is dropped by the deserialiser, so a
misspelled ``destinationPort`` or a property at the wrong nesting level shows up as a
difference. Enum values are checked against the model package's enums.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.fake_arm import fixture

from vtaplab.azure import arm_bodies
from vtaplab.azure.arm import NETWORK_API

models = pytest.importorskip("azure.mgmt.network.models")

RG = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-vtaplab-r1"
IPCONF = (RG + "/providers/Microsoft.Network/networkInterfaces/nic-proxy"
          "/ipConfigurations/ipconfig1")
FRONTEND = RG + "/providers/Microsoft.Network/loadBalancers/ilb/frontendIPConfigurations/fe"
POOL = RG + "/providers/Microsoft.Network/loadBalancers/ilb/backendAddressPools/pool"
VNET = RG + "/providers/Microsoft.Network/virtualNetworks/vnet-consumer"

# Wire keys whose values are enums in the 2024-05-01 spec -> the model package's enum.
ENUM_KEYS = {
    "privateIPAllocationMethod": models.IPAllocationMethod,
    "privateIPAddressVersion": models.IPVersion,
    "provisioningState": models.ProvisioningState,
    "adminState": models.LoadBalancerBackendAddressAdminState,
    "nicType": models.NetworkInterfaceNicType,
    "auxiliaryMode": models.NetworkInterfaceAuxiliaryMode,
    "auxiliarySku": models.NetworkInterfaceAuxiliarySku,
    "migrationPhase": models.NetworkInterfaceMigrationPhase,
}


def _package_api_version() -> str:
    import azure.mgmt.network.operations._operations as ops

    versions = re.findall(r'"api-version", "(\d{4}-\d{2}-\d{2})"',
                          open(ops.__file__, encoding="utf-8").read())
    return max(set(versions), key=versions.count)


def _paths(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of a JSON value as (dotted path, value); list items by index."""
    if isinstance(value, dict):
        if not value:
            yield prefix, value
        for k, v in value.items():
            yield from _paths(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(value, list):
        if not value:
            yield prefix, value
        for i, v in enumerate(value):
            yield from _paths(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _missing_required(model: Any, path: str = "") -> list[str]:
    """Required attributes (the model's ``_validation``) left empty, anywhere in the tree."""
    missing = []
    for attr, rules in getattr(model, "_validation", {}).items():
        if rules.get("required") and getattr(model, attr, None) is None:
            missing.append(f"{path}{model._attribute_map[attr]['key']}")
    for attr, meta in getattr(model, "_attribute_map", {}).items():
        value = getattr(model, attr, None)
        children = value if isinstance(value, list) else [value]
        for i, child in enumerate(children):
            if hasattr(child, "_attribute_map"):
                where = f"{path}{meta['key']}" + (f"[{i}]" if isinstance(value, list) else "")
                missing += _missing_required(child, where + ".")
    return missing


def _round_trip(model_cls: type, body: dict[str, Any]) -> dict[str, Any]:
    model = model_cls.deserialize(body)
    missing = _missing_required(model)
    assert not missing, f"{model_cls.__name__}: required but empty: {missing}"
    return model.serialize(keep_readonly=True)


def _dropped(body: dict[str, Any], model_cls: type) -> list[str]:
    kept = dict(_paths(_round_trip(model_cls, body)))
    return [path for path, _ in _paths(body) if path not in kept]


def _bad_enums(body: dict[str, Any]) -> list[str]:
    bad = []
    for path, value in _paths(body):
        key = path.rsplit(".", 1)[-1]
        enum = ENUM_KEYS.get(key)
        if enum is not None and value not in {e.value for e in enum}:
            bad.append(f"{path}={value!r} (accepted: {', '.join(e.value for e in enum)})")
    return bad


def test_the_models_are_for_the_api_version_the_lab_sends():
    # A different package version would validate against another spec.
    assert _package_api_version() == NETWORK_API


@pytest.mark.parametrize("destination", ["nic", "lb"])
def test_vtap_body_matches_the_virtual_network_tap_model(destination):
    params = arm_bodies.VtapParams(
        location="uksouth", tags={"project": "vtaplab"},
        destination_nic_ip_configuration_id=IPCONF if destination == "nic" else None,
        destination_lb_frontend_ip_configuration_id=FRONTEND if destination == "lb" else None)
    body = arm_bodies.vtap_body(params)
    assert _dropped(body, models.VirtualNetworkTap) == []
    model = models.VirtualNetworkTap.deserialize(body)
    assert model.destination_port == 4789
    ref = (model.destination_network_interface_ip_configuration if destination == "nic"
           else model.destination_load_balancer_front_end_ip_configuration)
    assert ref.id == (IPCONF if destination == "nic" else FRONTEND)


def test_nic_edit_body_matches_the_network_interface_model():
    got = fixture("pe-nic.json")
    body = arm_bodies.nic_with_backend_pool(got, POOL)
    # The edit PUTs ARM's own GET answer back; that answer carries two keys the 2024-05-01
    # spec does not describe (newer properties NRP returns anyway). The lab's edit must add
    # no unknown key of its own.
    echoed = {k: v for k, v in got.items() if k not in ("etag", "type")}
    assert _dropped(echoed, models.NetworkInterface) == ["kind", "properties.allowPort25Out"]
    assert _dropped(body, models.NetworkInterface) == ["kind", "properties.allowPort25Out"]
    assert _bad_enums(body) == []
    nic = models.NetworkInterface.deserialize(body)
    assert [p.id for p in nic.ip_configurations[0].load_balancer_backend_address_pools] == [POOL]


def test_ip_pool_body_matches_the_backend_address_pool_model():
    body = arm_bodies.ip_backend_pool_body(ip_address="10.30.3.4", virtual_network_id=VNET)
    assert _dropped(body, models.BackendAddressPool) == []
    assert _bad_enums(body) == []
    pool = models.BackendAddressPool.deserialize(body)
    (address,) = pool.load_balancer_backend_addresses
    assert address.ip_address == "10.30.3.4" and address.virtual_network.id == VNET


def test_the_check_catches_a_misspelled_or_misplaced_key():
    # The check itself can fail: what the old hand-typed bodies could get wrong.
    body = arm_bodies.vtap_body(arm_bodies.VtapParams(
        location="uksouth", destination_nic_ip_configuration_id=IPCONF))
    body["properties"]["destinationport"] = body["properties"].pop("destinationPort")
    assert _dropped(body, models.VirtualNetworkTap) == ["properties.destinationport"]
    moved = arm_bodies.ip_backend_pool_body(ip_address="10.30.3.4", virtual_network_id=VNET)
    address = moved["properties"]["loadBalancerBackendAddresses"][0]
    address["ipAddress"] = address["properties"].pop("ipAddress")
    assert _dropped(moved, models.BackendAddressPool) == [
        "properties.loadBalancerBackendAddresses[0].ipAddress"]
    nic = arm_bodies.nic_with_backend_pool(fixture("pe-nic.json"), POOL)
    nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAllocationMethod"] = "dhcp"
    assert len(_bad_enums(nic)) == 1
