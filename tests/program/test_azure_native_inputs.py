"""Every azure-native resource's inputs, in every committed stack, recursively against
azure-native's own input types: the ``<Resource>Args`` class and the nested ``*Args`` input
classes of the installed ``pulumi_azure_native`` package (their wire names, nesting and enum
values). An unknown or misspelled key anywhere fails here, not in a deployment.

The mocks accept any input, and ARM ignores many unknown properties silently: this is the
only place a typo such as ``privateIpAddress`` for ``privateIPAddress`` would show.
"""

from __future__ import annotations

import collections.abc
import enum
import importlib
import sys
import typing
from functools import cache
from typing import Any

import pytest

AnyType = Any


@cache
def _wire_fields(cls: type) -> dict[str, Any]:
    """An input class's wire names -> their annotations (``pulumi.getter(name=...)``)."""
    fields: dict[str, Any] = {}
    for klass in cls.__mro__:
        for prop in vars(klass).values():
            if isinstance(prop, property) and prop.fget is not None:
                wire = getattr(prop.fget, "_pulumi_name", None)
                if wire is not None and wire not in fields:
                    fields[wire] = prop.fget.__annotations__.get("return")
    return fields


def _resolve(ref: typing.ForwardRef, module: str) -> Any:
    name = ref.__forward_arg__
    if name.startswith("Output["):
        return None  # an Output of the same thing: nothing new to check
    for place in (module, module.rsplit(".", 1)[0], module.rsplit(".", 1)[0] + "._inputs",
                  module.rsplit(".", 1)[0] + "._enums"):
        found = getattr(sys.modules.get(place) or importlib.import_module(place), name, None)
        if found is not None:
            return found
    raise AssertionError(f"azure-native type {name!r} not found near {module}")


def _alternatives(annotation: Any, module: str) -> list[Any]:
    """The concrete shapes an annotation allows: input classes, enums, scalars,
    ("list", item alternatives), ("map", value alternatives)."""
    if annotation is None or annotation is type(None):
        return []
    if isinstance(annotation, typing.ForwardRef):
        resolved = _resolve(annotation, module)
        return [] if resolved is None else _alternatives(resolved, module)
    if isinstance(annotation, str):
        return _alternatives(typing.ForwardRef(annotation), module)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:
        return [alt for arg in args for alt in _alternatives(arg, module)]
    if origin is collections.abc.Awaitable:
        return _alternatives(args[0], module)
    if origin in (collections.abc.Sequence, list):
        return [("list", tuple(_alternatives(args[0], module)))]
    if origin in (collections.abc.Mapping, dict):
        return [("map", tuple(_alternatives(args[1], module)))]
    if annotation is Any:
        return [Any]
    return [annotation]


def check(value: Any, alternatives: list[Any], path: str, module: str) -> list[str]:
    """Problems of ``value`` against the shapes ``alternatives`` ([] when it fits one)."""
    if not alternatives or Any in alternatives:
        return []
    if isinstance(value, dict):
        best: list[str] | None = None
        for alt in alternatives:
            if isinstance(alt, tuple) and alt[0] == "map":
                return [p for key, item in value.items()
                        for p in check(item, list(alt[1]), f"{path}.{key}", module)]
            if isinstance(alt, type) and _wire_fields(alt):
                problems = check_object(value, alt, path)
                if not problems:
                    return []
                best = problems if best is None or len(problems) < len(best) else best
        return best if best is not None else [f"{path}: an object where azure-native wants "
                                              f"{alternatives}"]
    if isinstance(value, list):
        for alt in alternatives:
            if isinstance(alt, tuple) and alt[0] == "list":
                return [p for index, item in enumerate(value)
                        for p in check(item, list(alt[1]), f"{path}[{index}]", module)]
        return [f"{path}: a list where azure-native wants {alternatives}"]
    if isinstance(value, str):
        enums = [a for a in alternatives if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums:
            allowed = {str(member.value) for e in enums for member in e}
            if value not in allowed:
                return [f"{path}: {value!r} is not one of azure-native's values "
                        f"{sorted(allowed)}"]
            return []
        if str in alternatives:
            return []
        return [f"{path}: a string where azure-native wants {alternatives}"]
    scalar = {bool: (bool,), int: (int, float), float: (float, int)}.get(type(value))
    if scalar and any(a in scalar for a in alternatives):
        return []
    return [f"{path}: {value!r} where azure-native wants {alternatives}"]


def check_object(inputs: dict[str, Any], cls: type, path: str) -> list[str]:
    fields = _wire_fields(cls)
    problems = []
    for key, value in inputs.items():
        if key not in fields:
            problems.append(f"{path}.{key}: unknown to azure-native's {cls.__name__} "
                            f"(known: {', '.join(sorted(fields))})")
            continue
        problems += check(value, _alternatives(fields[key], cls.__module__), f"{path}.{key}",
                          cls.__module__)
    return problems


def args_class(type_token: str) -> type:
    """``azure-native:network:NetworkInterface`` -> the resource's own args class, in the
    resource's module: ``NetworkInterfaceArgs``, or ``<Name>InitArgs`` where a nested input
    type already took the name (``PrivateLinkServiceArgs`` is the PE's reference type)."""
    _, module, name = type_token.split(":")
    resource = getattr(importlib.import_module(f"pulumi_azure_native.{module}"), name)
    own = sys.modules[resource.__module__]
    found = getattr(own, f"{name}InitArgs", None) or getattr(own, f"{name}Args", None)
    assert found is not None, f"no args class for {type_token} in {own.__name__}"
    return found


def check_resource(resource: dict[str, Any]) -> list[str]:
    return check_object(resource["inputs"], args_class(resource["type"]), resource["name"])


# ----------------------------------------------------------------------------- the stacks


def test_every_input_of_every_resource_is_azure_natives(committed_stack, graph_of):
    resources = [r for r in graph_of(committed_stack) if r["type"].startswith("azure-native:")]
    assert resources
    problems = [p for r in resources for p in check_resource(r)]
    assert problems == []


# ----------------------------------------------------------------------------- the checker


NIC = {
    "type": "azure-native:network:NetworkInterface",
    "name": "vm-nic",
    "inputs": {
        "networkInterfaceName": "vm-nic",
        "resourceGroupName": "rg",
        "enableIPForwarding": True,
        "ipConfigurations": [{
            "name": "ipconfig1",
            "privateIPAllocationMethod": "Static",
            "privateIPAddress": "10.30.1.4",
            "subnet": {"id": "/subscriptions/x/resourceGroups/rg/providers/"
                             "Microsoft.Network/virtualNetworks/v/subnets/s"},
        }],
        "tags": {"project": "vtaplab"},
    },
}


def _nic_with(path: list[str | int], key: str, value: Any) -> dict[str, Any]:
    import copy

    nic = copy.deepcopy(NIC)
    target: Any = nic["inputs"]
    for part in path:
        target = target[part]
    target[key] = value
    return nic


def test_a_well_formed_nic_passes():
    assert check_resource(NIC) == []


@pytest.mark.parametrize(("path", "key", "value", "wanted"), [
    # a misspelled top-level key (the wire name is enableIPForwarding)
    ([], "enableIpForwarding", True, "vm-nic.enableIpForwarding: unknown"),
    # nested, two levels down: privateIPAddress misspelled
    (["ipConfigurations", 0], "privateIpAddress", "10.30.1.9",
     "vm-nic.ipConfigurations[0].privateIpAddress: unknown"),
    # three levels down, inside a sub-resource reference
    (["ipConfigurations", 0, "subnet"], "idd", "x", "vm-nic.ipConfigurations[0].subnet.idd"),
    # an enum value azure-native doesn't have
    (["ipConfigurations", 0], "privateIPAllocationMethod", "Fixed",
     "privateIPAllocationMethod: 'Fixed' is not one of"),
    # a list where an object belongs
    ([], "networkSecurityGroup", [{"id": "x"}], "networkSecurityGroup: a list"),
])
def test_a_deliberate_mistake_anywhere_fails(path, key, value, wanted):
    problems = check_resource(_nic_with(path, key, value))
    assert any(wanted in p for p in problems), problems


def test_the_load_balancer_rule_protocol_is_checked_against_azure_natives_enum():
    lb = {"type": "azure-native:network:LoadBalancer", "name": "ilb",
          "inputs": {"resourceGroupName": "rg",
                     "loadBalancingRules": [{"name": "r", "protocol": "Any",
                                             "frontendPort": 0, "backendPort": 0}]}}
    assert any("'Any' is not one of" in p for p in check_resource(lb))
    lb["inputs"]["loadBalancingRules"][0]["protocol"] = "All"
    assert check_resource(lb) == []
