"""``python -m vtaplab graph STACK [--json|--mermaid]``: the program's resource graph, no cloud.

Runs ``__main__.py`` for ``Pulumi.<STACK>.yaml`` under Pulumi's mock runtime (no CLI, no
Azure) and records every resource exactly as the program registered it: type, name, parent
and its inputs in azure-native's wire names. The mocks answer like ARM does (ids, the NIC
ip-configuration ids, the PE's NIC, the PLS alias, public IPs from a documentation range) and
refuse any resource type or invoke they don't know, so the graph can't silently drift from
what Azure would see.

A run mutates process-global Pulumi state, so ``build_graph`` runs each stack in a fresh
interpreter (about a second); ``main`` is that fresh interpreter and builds in-process.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtaplab import PROJECT_ROOT

SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
TENANT_ID = "11111111-1111-1111-1111-111111111111"
# Stack files can't carry an operator's key or address: the mock run supplies these when the
# stack file has none. A well-formed Ed25519 key nobody holds the private half of, and a
# documentation range (RFC 5737) for the operator.
TEST_SSH_PUBLIC_KEY = (
    "ssh-ed25519 "
    + base64.b64encode(
        len(b"ssh-ed25519").to_bytes(4, "big") + b"ssh-ed25519"
        + (32).to_bytes(4, "big") + hashlib.sha256(b"vtaplab mock key").digest()
    ).decode()
    + " vtaplab-mock"
)
TEST_OPERATOR_CIDR = "203.0.113.0/24"
# The mocks' stand-in for pulumi-tls: each VM's host key (tls.PrivateKey "<vm>-hostkey")
# derives from this and the VM's name (vtaplab.azure.ssh.host_key_for), so two runs are identical.
TEST_HOST_KEY_SEED = "vtaplab-mock-host-key-seed-" + hashlib.sha256(b"seed").hexdigest()[:32]
TLS_PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
HOST_KEY_SUFFIX = "-hostkey"
# The secrets a stack file can't carry in clear: test values, handed to the program as secrets
# (so a test can check they reach no registered input except as a secret).
SECRET_CONFIG_KEYS = ("sshPrivateKey",)
MOCK_PRIVATE_KEY_FILE = "tests/fixtures/ssh/mock_operator_ed25519"


def test_ssh_private_key() -> str:
    """A fixed Ed25519 private key standing in for the operator's under mocks."""
    from vtaplab.azure.ssh import host_key_from_seed

    return host_key_from_seed(hashlib.sha256(b"vtaplab mock user key").digest()).private_pem
# Public IPs the mocks hand out: TEST-NET-2 (RFC 5737), never a real host.
MOCK_PUBLIC_RANGE = ipaddress.IPv4Network("198.51.100.0/24")


def mock_private_key(name: str, inputs: Mapping[str, Any]) -> dict[str, str]:
    """What pulumi-tls computes for a ``PrivateKey`` (the OpenSSH texts the program reads),
    fixed for ``name``: ``<vm>-hostkey`` gets ``host_key_for(TEST_HOST_KEY_SEED, vm)``."""
    from vtaplab.azure.ssh import host_key_for

    if inputs.get("algorithm") != "ED25519":
        raise GraphError(f"tls.PrivateKey {name!r}: the mocks make ED25519 keys only; "
                         f"got algorithm {inputs.get('algorithm')!r}")
    pair = host_key_for(TEST_HOST_KEY_SEED, name.removesuffix(HOST_KEY_SUFFIX))
    return {"privateKeyOpenssh": pair.private_pem,
            "publicKeyOpenssh": pair.public_line + "\n"}


class GraphError(RuntimeError):
    """The graph could not be built (unknown stack, bad config, program error): one line."""


@dataclass(frozen=True)
class AzureType:
    """How ARM names and addresses one azure-native resource type."""

    name_key: str  # the input holding the resource's Azure name
    collection: str  # "Microsoft.Network/virtualNetworks"
    scope_key: str | None = None  # parent resource name input, e.g. virtualNetworkName
    scope_collection: str | None = None  # the parent's collection
    taggable: bool = True


AZURE_TYPES: dict[str, AzureType] = {
    "azure-native:resources:ResourceGroup": AzureType("resourceGroupName", ""),
    "azure-native:network:VirtualNetwork": AzureType(
        "virtualNetworkName", "Microsoft.Network/virtualNetworks"),
    "azure-native:network:Subnet": AzureType(
        "subnetName", "subnets", "virtualNetworkName", "Microsoft.Network/virtualNetworks",
        taggable=False),
    "azure-native:network:NetworkSecurityGroup": AzureType(
        "networkSecurityGroupName", "Microsoft.Network/networkSecurityGroups"),
    "azure-native:network:PublicIPAddress": AzureType(
        "publicIpAddressName", "Microsoft.Network/publicIPAddresses"),
    "azure-native:network:NetworkInterface": AzureType(
        "networkInterfaceName", "Microsoft.Network/networkInterfaces"),
    "azure-native:network:LoadBalancer": AzureType(
        "loadBalancerName", "Microsoft.Network/loadBalancers"),
    "azure-native:network:PrivateLinkService": AzureType(
        "serviceName", "Microsoft.Network/privateLinkServices"),
    "azure-native:network:PrivateEndpoint": AzureType(
        "privateEndpointName", "Microsoft.Network/privateEndpoints"),
    "azure-native:network:VirtualNetworkTap": AzureType(
        "tapName", "Microsoft.Network/virtualNetworkTaps"),
    "azure-native:network:NetworkInterfaceTapConfiguration": AzureType(
        "tapConfigurationName", "tapConfigurations", "networkInterfaceName",
        "Microsoft.Network/networkInterfaces", taggable=False),
    "azure-native:compute:VirtualMachine": AzureType(
        "vmName", "Microsoft.Compute/virtualMachines"),
    # b4's proxy tier (components/proxy_tier.py).
    "azure-native:compute:VirtualMachineScaleSet": AzureType(
        "vmScaleSetName", "Microsoft.Compute/virtualMachineScaleSets"),
    # A VM's auto-shutdown (components/shutdown.py).
    "azure-native:devtestlab:GlobalSchedule": AzureType(
        "name", "Microsoft.DevTestLab/schedules"),
}
# Sub-resources ARM gives an id inside their parent's id.
_SUB_RESOURCES: dict[str, tuple[str, ...]] = {
    "azure-native:network:NetworkInterface": ("ipConfigurations",),
    "azure-native:network:LoadBalancer": (
        "frontendIPConfigurations", "backendAddressPools", "probes", "loadBalancingRules"),
    "azure-native:network:PrivateLinkService": ("ipConfigurations",),
}


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode()).digest()


def azure_name(type_: str, name: str, inputs: Mapping[str, Any]) -> str:
    """The Azure name a resource gets: its name input, or Pulumi's name when it has none."""
    kind = AZURE_TYPES.get(type_)
    value = inputs.get(kind.name_key) if kind else None
    return str(value) if value else name


def azure_id(type_: str, name: str, inputs: Mapping[str, Any]) -> str:
    """The ARM id of a resource, as ARM would form it."""
    kind = AZURE_TYPES[type_]
    own = azure_name(type_, name, inputs)
    group = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups"
    if type_ == "azure-native:resources:ResourceGroup":
        return f"{group}/{own}"
    base = f"{group}/{inputs.get('resourceGroupName')}/providers"
    if kind.scope_key:
        scope = inputs.get(kind.scope_key)
        return f"{base}/{kind.scope_collection}/{scope}/{kind.collection}/{own}"
    return f"{base}/{kind.collection}/{own}"


class AzureMocks:
    """ARM-shaped answers for the resources and invokes the program uses; nothing else."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (resource group, NIC name) -> the NIC as getNetworkInterface returns it
        self._nics: dict[tuple[str, str], dict[str, Any]] = {}

    # pulumi.runtime.Mocks protocol ------------------------------------------------------
    def new_resource(self, args: Any) -> tuple[str, dict[str, Any]]:
        if not args.custom:  # a component: nothing in Azure
            return "", {}
        if args.typ == TLS_PRIVATE_KEY:
            return f"{args.name}-id", {**args.inputs, **mock_private_key(args.name, args.inputs)}
        if not args.typ.startswith("azure-native:"):
            # e.g. a dynamic provider's resource (pulumi-python:dynamic:Resource): not ARM's.
            return f"{args.name}-id", dict(args.inputs)
        if args.typ not in AZURE_TYPES:
            raise GraphError(
                f"the graph mocks don't know resource type {args.typ!r}; "
                "add it to vtaplab/preflight/graph.py AZURE_TYPES"
            )
        inputs: dict[str, Any] = dict(args.inputs)
        resource_id = azure_id(args.typ, args.name, inputs)
        outputs: dict[str, Any] = {
            **inputs,
            "id": resource_id,
            "name": azure_name(args.typ, args.name, inputs),
            "provisioningState": "Succeeded",
        }
        for collection in _SUB_RESOURCES.get(args.typ, ()):
            outputs[collection] = [
                {**item, "id": f"{resource_id}/{collection}/{item.get('name')}"}
                for item in inputs.get(collection) or []
            ]
        special = getattr(self, "_" + args.typ.rsplit(":", 1)[-1], None)
        if special is not None:
            special(resource_id, inputs, outputs)
        return resource_id, outputs

    def call(self, args: Any) -> dict[str, Any]:
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "clientId": "22222222-2222-2222-2222-222222222222",
                "objectId": "33333333-3333-3333-3333-333333333333",
                "subscriptionId": SUBSCRIPTION_ID,
                "tenantId": TENANT_ID,
            }
        if args.token == "azure-native:network:getNetworkInterface":
            key = (str(args.args.get("resourceGroupName")),
                   str(args.args.get("networkInterfaceName")))
            with self._lock:
                nic = self._nics.get(key)
            if nic is None:
                raise GraphError(f"getNetworkInterface: no NIC {key[1]!r} in {key[0]!r}")
            return nic
        raise GraphError(f"the graph mocks don't answer invoke {args.token!r}")

    # per-type computed outputs -----------------------------------------------------------
    def _NetworkInterface(self, resource_id: str, inputs: dict[str, Any],
                          outputs: dict[str, Any]) -> None:
        group = str(inputs.get("resourceGroupName"))
        with self._lock:
            self._nics[(group, outputs["name"])] = {
                "id": resource_id,
                "name": outputs["name"],
                "ipConfigurations": outputs["ipConfigurations"],
            }

    def _PublicIPAddress(self, resource_id: str, inputs: dict[str, Any],
                         outputs: dict[str, Any]) -> None:
        host = 1 + _digest(resource_id)[0] % (MOCK_PUBLIC_RANGE.num_addresses - 2)
        outputs["ipAddress"] = str(MOCK_PUBLIC_RANGE[host])

    def _PrivateLinkService(self, resource_id: str, inputs: dict[str, Any],
                            outputs: dict[str, Any]) -> None:
        guid = _digest(resource_id)[:16].hex()
        guid = f"{guid[:8]}-{guid[8:12]}-{guid[12:16]}-{guid[16:20]}-{guid[20:]}"
        outputs["alias"] = (
            f"{outputs['name']}.{guid}.{inputs.get('location')}.azure.privatelinkservice"
        )

    def _PrivateEndpoint(self, resource_id: str, inputs: dict[str, Any],
                         outputs: dict[str, Any]) -> None:
        # ARM creates the PE's NIC itself, named as asked or "<pe>.nic.<guid>".
        group = str(inputs.get("resourceGroupName"))
        nic_name = inputs.get("customNetworkInterfaceName") or (
            f"{outputs['name']}.nic.{_digest(resource_id)[:16].hex()}")
        nic_id = (f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{group}/providers/"
                  f"Microsoft.Network/networkInterfaces/{nic_name}")
        static = [c.get("privateIPAddress") for c in inputs.get("ipConfigurations") or []]
        address = static[0] if static and static[0] else _first_free(inputs)
        config_name = f"privateEndpointIpConfig.{_digest(resource_id, 'ip')[:16].hex()}"
        outputs["networkInterfaces"] = [{"id": nic_id}]
        outputs["customDnsConfigs"] = [{"ipAddresses": [address]}]
        with self._lock:
            self._nics[(group, nic_name)] = {
                "id": nic_id,
                "name": nic_name,
                "ipConfigurations": [{
                    "id": f"{nic_id}/ipConfigurations/{config_name}",
                    "name": config_name,
                    "privateIPAddress": address,
                    "privateIPAllocationMethod": "Static" if static else "Dynamic",
                    "subnet": inputs.get("subnet"),
                }],
            }


def _first_free(inputs: Mapping[str, Any]) -> str:
    # Without a static IP ARM picks one from the subnet; the mocks don't know its prefix,
    # so say so loudly rather than invent one the plan might contradict.
    raise GraphError(f"private endpoint {inputs.get('privateEndpointName')!r} has no static IP")


# --------------------------------------------------------------------------- running


@dataclass
class GraphRun:
    resources: list[dict[str, Any]]
    outputs: dict[str, Any] = field(default_factory=dict)


def stack_names(root: Path | None = None) -> list[str]:
    """Every committed stack: the ``<stack>`` of each ``Pulumi.<stack>.yaml``."""
    root = root or PROJECT_ROOT
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def mock_config(stack: str, root: Path | None = None) -> dict[str, str]:
    """The config the Pulumi CLI would hand the program for ``stack``: Pulumi.yaml defaults,
    then the stack file; plus test values for the operator's key and CIDR when unset."""
    import yaml

    from vtaplab.program import config

    root = root or PROJECT_ROOT
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise GraphError(
            f"stack {stack!r}: no {path.name} in {root}; accepted: "
            + (", ".join(stack_names(root)) or "(no stack files)")
        )
    project = yaml.safe_load((root / "Pulumi.yaml").read_text(encoding="utf-8")) or {}
    namespace = str(project.get("name", config.NAMESPACE))
    defaults: dict[str, object] = {}
    for key, spec in (project.get("config") or {}).items():
        if isinstance(spec, dict) and "default" in spec:
            defaults[key if ":" in key else f"{namespace}:{key}"] = spec["default"]
    try:
        values = {**defaults, **config.read_stack_file(path)}
    except config.ConfigError as error:
        raise GraphError(str(error)) from None
    # Encrypted values can't be read here; the test values stand in for them.
    values = {k: v for k, v in values.items() if not (isinstance(v, dict) and "secure" in v)}
    for key, test_value in ((f"{namespace}:sshPublicKey", TEST_SSH_PUBLIC_KEY),
                            (f"{namespace}:operatorCidr", TEST_OPERATOR_CIDR)):
        if not values.get(key):
            values[key] = test_value
    if not values.get(f"{namespace}:sshPrivateKey") and not values.get(
            f"{namespace}:sshPrivateKeyFile"):
        # A committed key nobody uses (test_ssh_private_key(), tests check they agree):
        # a relative path, so the graph is the same on every machine.
        values[f"{namespace}:sshPrivateKeyFile"] = MOCK_PRIVATE_KEY_FILE
    return config.as_pulumi_config(values)


def secret_keys(settings: Mapping[str, str]) -> list[str]:
    """The keys of ``settings`` the program receives as secrets."""
    return [k for k in settings if k.split(":", 1)[-1] in SECRET_CONFIG_KEYS]


def run_here(stack: str, root: Path | None = None) -> GraphRun:
    """Run the program for ``stack`` in this process under mocks. Once per process."""
    import runpy

    import pulumi
    import yaml
    from pulumi.runtime import mocks, rpc
    from pulumi.runtime.settings import get_root_resource
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    root = (root or PROJECT_ROOT).resolve()
    settings = mock_config(stack, root)
    project = str(yaml.safe_load((root / "Pulumi.yaml").read_text())["name"])
    records: list[dict[str, Any]] = []

    class RecordingMonitor(mocks.MockMonitor):
        def RegisterResource(self, request: Any) -> Any:
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                inputs, secret_paths = _reveal(rpc.deserialize_properties(request.object))
                record = {
                    "urn": response.urn,
                    "type": request.type,
                    "name": request.name,
                    "parent": request.parent or None,
                    "inputs": inputs,
                    # What it waits for: depends_on plus every resource an input came from.
                    "dependencies": sorted({*request.dependencies, *(
                        urn for deps in request.propertyDependencies.values()
                        for urn in deps.urns)}),
                }
                if secret_paths:
                    record["secrets"] = secret_paths
                records.append(record)
            return response

    class Mocks(AzureMocks, mocks.Mocks):
        pass

    pulumi.runtime.set_all_config(settings, secret_keys(settings))
    monitor = RecordingMonitor(Mocks())
    pulumi.runtime.set_mocks(monitor.mocks, project=project, stack=stack, preview=False,
                             monitor=monitor)
    outputs: dict[str, Any] = {}

    def program() -> None:
        runpy.run_path(str(root / "__main__.py"), run_name="__main__")
        stack_resource = get_root_resource()
        exported = dict(getattr(stack_resource, "outputs", {}) or {})
        outputs.update(_sync_await(pulumi.Output.from_input(exported).future()) or {})

    sys.path[:0] = [str(root)]
    cwd = Path.cwd()
    os.chdir(root)
    try:
        _sync_await(run_pulumi_func(program))
    except pulumi.RunError as error:
        raise GraphError(str(error)) from None
    finally:
        os.chdir(cwd)
        sys.path.remove(str(root))
    records.sort(key=lambda r: r["urn"])
    return GraphRun(resources=_plain(records), outputs=_plain(outputs))


def _reveal(inputs: Any) -> tuple[Any, list[str]]:
    """Inputs with Pulumi's secret wrappers taken off (the graph shows what the program sent),
    and the dotted paths that were secrets (``osProfile.customData``), so a test can tell a
    value sent as a secret from one sent in clear."""
    from pulumi.runtime import rpc

    paths: list[str] = []

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
                paths.append(path)
                return walk(value.get("value"), path)
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(inputs, ""), sorted(paths)


def _plain(value: Any) -> Any:
    """JSON-able, as written: Pulumi hands back tuples, and every number as a float."""
    def whole(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, dict):
            return {key: whole(v) for key, v in item.items()}
        if isinstance(item, list):
            return [whole(v) for v in item]
        return item

    return whole(json.loads(json.dumps(value, default=str, sort_keys=True)))


def build_run(stack: str, *, root: Path | None = None) -> GraphRun:
    """``run_here`` in a fresh interpreter: the graph and the stack outputs."""
    root = (root or PROJECT_ROOT).resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    child = subprocess.run(
        [sys.executable, "-m", "vtaplab", "graph", stack, "--run", "--root", str(root)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    if child.returncode != 0:
        lines = (child.stderr or child.stdout).strip().splitlines()
        raise GraphError(lines[-1] if lines else f"graph {stack}: exit {child.returncode}")
    data = json.loads(child.stdout)
    return GraphRun(resources=data["resources"], outputs=data["outputs"])


def build_graph(stack: str, *, root: Path | None = None) -> list[dict]:
    """Every resource ``__main__.py`` registers for ``Pulumi.<stack>.yaml``, under mocks."""
    return build_run(stack, root=root).resources


# --------------------------------------------------------------------------- mermaid


def _node(kind: str, name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{kind}_{name}")


def _segment(resource_id: object, collection: str) -> str | None:
    """The name after ``/<collection>/`` in an ARM id (case-insensitive), or None."""
    match = re.search(rf"/{collection}/([^/]+)", str(resource_id or ""), re.IGNORECASE)
    return match.group(1) if match else None


def to_mermaid(graph: Sequence[Mapping[str, Any]]) -> str:
    """A flowchart: VNets as subgraphs holding VMs, PEs, LBs and PLSs; PE -> PLS -> ILB ->
    collector; the vTAP edge from each tapped VM to its destination; the proxy's rewrite."""
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for resource in graph:
        by_type.setdefault(str(resource["type"]).rsplit(":", 1)[-1], []).append(resource)

    def inputs(resource: Mapping[str, Any]) -> Mapping[str, Any]:
        return resource.get("inputs") or {}

    nics = {inputs(n).get("networkInterfaceName"): inputs(n)
            for n in by_type.get("NetworkInterface", [])}
    members: dict[str, list[str]] = {}  # vnet name -> node lines
    edges: list[str] = []
    vm_by_nic: dict[str, str] = {}
    vm_user_data: dict[str, str] = {}
    vnet_of: dict[str, str | None] = {}  # node -> its VNet's name (a rewrite stays in its VNet)

    def place(subnet_id: object, line: str) -> None:
        members.setdefault(_segment(subnet_id, "virtualNetworks") or "?", []).append(line)

    for vm in by_type.get("VirtualMachine", []):
        name = str(inputs(vm).get("vmName") or vm["name"])
        nic_name = _segment(
            ((inputs(vm).get("networkProfile") or {}).get("networkInterfaces") or [{}])[0]
            .get("id"), "networkInterfaces")
        nic = nics.get(nic_name) or {}
        config = (nic.get("ipConfigurations") or [{}])[0]
        size = (inputs(vm).get("hardwareProfile") or {}).get("vmSize", "")
        forwarding = ", IP forwarding" if nic.get("enableIPForwarding") else ""
        place((config.get("subnet") or {}).get("id"),
              f'{_node("vm", name)}["VM {name}<br/>{config.get("privateIPAddress", "")}'
              f' {size}{forwarding}"]')
        vm_by_nic[str(nic_name)] = _node("vm", name)
        vnet_of[_node("vm", name)] = _segment((config.get("subnet") or {}).get("id"),
                                              "virtualNetworks")
        custom = (inputs(vm).get("osProfile") or {}).get("customData") or ""
        try:
            vm_user_data[_node("vm", name)] = base64.b64decode(custom).decode(errors="replace")
        except ValueError:
            vm_user_data[_node("vm", name)] = ""
    for scale_set in by_type.get("VirtualMachineScaleSet", []):
        node, subnet, lines, user_data = _scale_set_node(inputs(scale_set), scale_set["name"])
        place(subnet, lines[0])
        edges.extend(lines[1:])
        vm_user_data[node] = user_data
        vnet_of[node] = _segment(subnet, "virtualNetworks")
    for lb in by_type.get("LoadBalancer", []):
        name = str(inputs(lb).get("loadBalancerName") or lb["name"])
        frontend = (inputs(lb).get("frontendIPConfigurations") or [{}])[0]
        rules = ", ".join(f'{r.get("protocol")}/{r.get("frontendPort")}'
                          for r in inputs(lb).get("loadBalancingRules") or []) or "no rules"
        place((frontend.get("subnet") or {}).get("id"),
              f'{_node("lb", name)}[/"ILB {name}<br/>{frontend.get("privateIPAddress", "")}'
              f' {rules}"/]')
    for nic_name, nic in nics.items():
        for config in nic.get("ipConfigurations") or []:
            for pool in config.get("loadBalancerBackendAddressPools") or []:
                lb_name = _segment(pool.get("id"), "loadBalancers")
                if lb_name and nic_name in vm_by_nic:
                    edges.append(f'{_node("lb", lb_name)} -->|backend pool| '
                                 f'{vm_by_nic[str(nic_name)]}')
    pe_ips: dict[str, str] = {}
    for pe in by_type.get("PrivateEndpoint", []):
        name = str(inputs(pe).get("privateEndpointName") or pe["name"])
        ip = ((inputs(pe).get("ipConfigurations") or [{}])[0]).get("privateIPAddress", "")
        pe_ips[_node("pe", name)] = str(ip)
        vnet_of[_node("pe", name)] = _segment((inputs(pe).get("subnet") or {}).get("id"),
                                              "virtualNetworks")
        place((inputs(pe).get("subnet") or {}).get("id"),
              f'{_node("pe", name)}(["PE {name}<br/>{ip}"])')
        for connection in inputs(pe).get("privateLinkServiceConnections") or []:
            pls = _segment(connection.get("privateLinkServiceId"), "privateLinkServices")
            if pls:
                edges.append(f'{_node("pe", name)} -->|Private Link| {_node("pls", pls)}')
    for pls in by_type.get("PrivateLinkService", []):
        name = str(inputs(pls).get("serviceName") or pls["name"])
        configs = inputs(pls).get("ipConfigurations") or [{}]
        nat = " ".join(str(c.get("privateIPAddress", "")) for c in configs)
        place((configs[0].get("subnet") or {}).get("id"),
              f'{_node("pls", name)}{{{{"PLS {name}<br/>NAT {nat}"}}}}')
        for frontend in inputs(pls).get("loadBalancerFrontendIpConfigurations") or []:
            lb_name = _segment(frontend.get("id"), "loadBalancers")
            if lb_name:
                edges.append(f'{_node("pls", name)} --> {_node("lb", lb_name)}')
        destination = inputs(pls).get("destinationIPAddress")
        if destination:
            for nic_name, nic in nics.items():
                addresses = {c.get("privateIPAddress") for c in nic.get("ipConfigurations") or []}
                if destination in addresses and nic_name in vm_by_nic:
                    edges.append(f'{_node("pls", name)} -->|Direct Connect {destination}| '
                                 f'{vm_by_nic[str(nic_name)]}')
    taps: dict[str, str] = {}
    for tap in by_type.get("VirtualNetworkTap", []):
        tap_inputs = inputs(tap)
        name = str(tap_inputs.get("tapName") or tap["name"])
        port = tap_inputs.get("destinationPort", "")
        nic_config = (tap_inputs.get("destinationNetworkInterfaceIPConfiguration") or {}).get("id")
        lb_frontend = (tap_inputs.get("destinationLoadBalancerFrontEndIPConfiguration")
                       or {}).get("id")
        if nic_config:
            target = vm_by_nic.get(str(_segment(nic_config, "networkInterfaces")), "unknown")
        else:
            target = _node("lb", str(_segment(lb_frontend, "loadBalancers")))
        taps[name] = f"-. vTAP {name} UDP/{port} .-> {target}"
    for config in by_type.get("NetworkInterfaceTapConfiguration", []):
        config_inputs = inputs(config)
        source = vm_by_nic.get(str(config_inputs.get("networkInterfaceName")))
        tap_name = _segment((config_inputs.get("virtualNetworkTap") or {}).get("id"),
                            "virtualNetworkTaps")
        if source and tap_name in taps:
            edges.append(f"{source} {taps[tap_name]}")
    # The proxy's rewrite lives in its cloud-init: draw it only where the user data names a PE
    # of the proxy's own VNet (msp tenants share addresses: every tenant's PE has the same IP).
    for vm_node, user_data in vm_user_data.items():
        for pe_node, ip in pe_ips.items():
            if ip and f"--target {ip}" in user_data and vnet_of.get(vm_node) == vnet_of[pe_node]:
                edges.append(f"{vm_node} -->|UDP/4789 rewritten to {ip}| {pe_node}")

    lines = ["flowchart LR"]
    for vnet in by_type.get("VirtualNetwork", []):
        name = str(inputs(vnet).get("virtualNetworkName") or vnet["name"])
        space = " ".join((inputs(vnet).get("addressSpace") or {}).get("addressPrefixes") or [])
        lines.append(f'  subgraph {_node("vnet", name)}["VNet {name} {space}"]')
        lines += [f"    {line}" for line in members.pop(name, [])]
        lines.append("  end")
    for leftover in members.values():
        lines += [f"  {line}" for line in leftover]
    lines += [f"  {edge}" for edge in edges]
    return "\n".join(lines) + "\n"


def _scale_set_node(scale_set: Mapping[str, Any], fallback: str
                    ) -> tuple[str, object, list[str], str]:
    """A scale set's node (name, size x capacity, zones, IP forwarding), the subnet it sits
    in, its node line followed by its backend-pool edges, and its user data (the rewrite)."""
    name = str(scale_set.get("vmScaleSetName") or fallback)
    node = _node("vmss", name)
    sku = scale_set.get("sku") or {}
    profile = scale_set.get("virtualMachineProfile") or {}
    configs = (profile.get("networkProfile") or {}).get("networkInterfaceConfigurations") or [{}]
    ip_config = (configs[0].get("ipConfigurations") or [{}])[0]
    subnet = (ip_config.get("subnet") or {}).get("id")
    zones = ",".join(scale_set.get("zones") or []) or "regional"
    forwarding = ", IP forwarding" if configs[0].get("enableIPForwarding") else ""
    lines = [f'{node}[["VM scale set {name}<br/>{sku.get("capacity", "?")} x '
             f'{sku.get("name", "")}, zones {zones}{forwarding}"]]']
    for pool in ip_config.get("loadBalancerBackendAddressPools") or []:
        lb_name = _segment(pool.get("id"), "loadBalancers")
        if lb_name:
            lines.append(f'{_node("lb", lb_name)} -->|backend pool| {node}')
    custom = (profile.get("osProfile") or {}).get("customData") or ""
    try:
        user_data = base64.b64decode(custom).decode(errors="replace")
    except ValueError:
        user_data = ""
    return node, subnet, lines, user_data


# --------------------------------------------------------------------------- CLI


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vtaplab graph",
        description="Print a stack's resource graph, built by running the program under "
                    "Pulumi mocks (no cloud, no Pulumi CLI).",
    )
    parser.add_argument("stack", nargs="?", help="stack name: the STACK of a Pulumi.STACK.yaml")
    parser.add_argument("--update-snapshots", action="store_true",
                        help="rewrite tests/snapshots, docs/graphs and the README's diagrams "
                             "for every committed stack")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="resources as JSON (default)")
    form.add_argument("--mermaid", action="store_true", help="a mermaid flowchart")
    form.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.update_snapshots:
        from vtaplab.preflight import snapshots

        return snapshots.main(["--update"])
    if not args.stack:
        print("vtaplab graph: name a STACK (a Pulumi.STACK.yaml), or --update-snapshots",
              file=sys.stderr)
        return 2
    try:
        run = run_here(args.stack, args.root)
    except GraphError as error:
        print(f"vtaplab graph: {error}", file=sys.stderr)
        return 2
    if args.run:
        print(json.dumps({"resources": run.resources, "outputs": run.outputs}))
    elif args.mermaid:
        sys.stdout.write(to_mermaid(run.resources))
    else:
        print(json.dumps(run.resources, indent=2, sort_keys=True))
    return 0
