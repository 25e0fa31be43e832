"""The program under mocks: ``__main__.py`` for ``Pulumi.<STACK>.yaml`` run by Pulumi's mock
runtime (no CLI, no Azure), every resource recorded exactly as the program registered it: type,
name, parent and its inputs in azure-native's wire names. The mocks answer like ARM does (ids,
the NIC ip-configuration ids, the PE's NIC, the PLS alias, public IPs from a documentation range)
and refuse any resource type or invoke they don't know, so the graph can't silently drift from
what Azure would see.

A run mutates process-global Pulumi state, so ``build_graph`` runs each stack in a fresh
interpreter (about a second) through ``python -m vtaplab graph --run``. ``overrides`` (``graph
--set KEY=VALUE``) put config values on top of the stack file's, checked by the config loader
before the program runs, so a variant (``proxyProbe=tcp``) needs no stack file of its own.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import runpy
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.mocks import Mocks as PulumiMocks
from pulumi.runtime.settings import get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from vtaplab import PROJECT_ROOT, arm_ids, facts
from vtaplab.azure.ssh import host_key_for, host_key_from_seed
from vtaplab.program import config

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
NIC = "azure-native:network:NetworkInterface"
HOST_KEY_SUFFIX = "-hostkey"
# The secrets a stack file can't carry in clear: test values, handed to the program as secrets
# (so a test can check they reach no registered input except as a secret).
SECRET_CONFIG_KEYS = ("sshPrivateKey",)
MOCK_PRIVATE_KEY_FILE = "tests/fixtures/ssh/mock_operator_ed25519"


def test_ssh_private_key() -> str:
    """A fixed Ed25519 private key standing in for the operator's under mocks."""
    return host_key_from_seed(hashlib.sha256(b"vtaplab mock user key").digest()).private_pem


# Public IPs the mocks hand out: TEST-NET-2 (RFC 5737), never a real host.
MOCK_PUBLIC_RANGE = ipaddress.IPv4Network("198.51.100.0/24")


def mock_private_key(name: str, inputs: Mapping[str, Any]) -> dict[str, str]:
    """What pulumi-tls computes for a ``PrivateKey`` (the OpenSSH texts the program reads),
    fixed for ``name``: ``<vm>-hostkey`` gets ``host_key_for(TEST_HOST_KEY_SEED, vm)``."""
    if inputs.get("algorithm") != "ED25519":
        raise GraphError(f"tls.PrivateKey {name!r}: the mocks make ED25519 keys only; "
                         f"got algorithm {inputs.get('algorithm')!r}")
    pair = host_key_for(TEST_HOST_KEY_SEED, name.removesuffix(HOST_KEY_SUFFIX))
    return {"privateKeyOpenssh": pair.private_pem,
            "publicKeyOpenssh": pair.public_line + "\n"}


class GraphError(RuntimeError):
    """The graph could not be built (unknown stack, bad config, program error): one line."""


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode()).digest()


def azure_id(type_: str, name: str, inputs: Mapping[str, Any]) -> str:
    """The ARM id of a resource under the mocks, as ARM would form it."""
    return arm_ids.id_from_inputs(SUBSCRIPTION_ID, type_, name, inputs)


class AzureMocks:
    """ARM-shaped answers for the resources and invokes the program uses; nothing else."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (resource group, NIC name) -> the NIC as getNetworkInterface returns it
        self._nics: dict[tuple[str, str], dict[str, Any]] = {}
        # subnet id -> its address prefix: where a dynamic address is allocated from
        self._subnet_prefixes: dict[str, str] = {}

    # pulumi.runtime.Mocks protocol ------------------------------------------------------
    def new_resource(self, args: Any) -> tuple[str, dict[str, Any]]:
        if not args.custom:  # a component: nothing in Azure
            return "", {}
        if args.typ == TLS_PRIVATE_KEY:
            return f"{args.name}-id", {**args.inputs, **mock_private_key(args.name, args.inputs)}
        if not args.typ.startswith("azure-native:"):
            # e.g. a dynamic provider's resource (pulumi-python:dynamic:Resource): not ARM's.
            return f"{args.name}-id", dict(args.inputs)
        kind = arm_ids.BY_TOKEN.get(args.typ)
        if kind is None:
            raise GraphError(
                f"the graph mocks don't know resource type {args.typ!r}; "
                "add its row to vtaplab/arm_ids.py TYPES"
            )
        inputs: dict[str, Any] = dict(args.inputs)
        resource_id = azure_id(args.typ, args.name, inputs)
        outputs: dict[str, Any] = {
            **inputs,
            "id": resource_id,
            "name": arm_ids.azure_name(args.typ, args.name, inputs),
            "provisioningState": "Succeeded",
        }
        for collection in kind.sub_resources:
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

    def _Subnet(self, resource_id: str, inputs: dict[str, Any],
                outputs: dict[str, Any]) -> None:
        with self._lock:
            self._subnet_prefixes[resource_id] = str(inputs.get("addressPrefix"))

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
        nic_id = arm_ids.build(SUBSCRIPTION_ID, group, NIC, nic_name)
        static = [c.get("privateIPAddress") for c in inputs.get("ipConfigurations") or []]
        with self._lock:
            prefix = self._subnet_prefixes.get(str((inputs.get("subnet") or {}).get("id")))
        address = static[0] if static and static[0] else _first_free(inputs, prefix)
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


def _first_free(inputs: Mapping[str, Any], prefix: str | None) -> str:
    """A dynamic address as ARM allocates one in a subnet with nothing else in it: the first
    host after the four Azure keeps (network, gateway, 2x DNS)."""
    if not prefix:
        raise GraphError(f"private endpoint {inputs.get('privateEndpointName')!r}: no static "
                         "IP and its subnet is not one the program declared")
    return str(ipaddress.ip_network(prefix, strict=False)[facts.DYNAMIC_FIRST_HOST])


# --------------------------------------------------------------------------- running


@dataclass
class GraphRun:
    resources: list[dict[str, Any]]
    outputs: dict[str, Any] = field(default_factory=dict)


def stack_names(root: Path | None = None) -> list[str]:
    """Every committed stack: the ``<stack>`` of each ``Pulumi.<stack>.yaml``."""
    root = root or PROJECT_ROOT
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def read_project(root: Path) -> dict[str, Any]:
    """``Pulumi.yaml``: the project's name and its config defaults."""
    project = yaml.safe_load((root / "Pulumi.yaml").read_text(encoding="utf-8")) or {}
    if not isinstance(project, dict) or "name" not in project:
        raise GraphError(f"{root / 'Pulumi.yaml'}: not a Pulumi project file (no 'name:')")
    return project


# What --set KEY=VALUE looks like in a one-line error's "accepted".
SET_ACCEPTED = ("KEY=VALUE with KEY a vtaplab config key, with or without the vtaplab: prefix, "
                "e.g. --set proxyProbe=tcp")


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` arguments as ``{KEY: VALUE}`` (KEY as written; ``normalise_overrides``
    checks it). GraphError, one line, for an argument without ``=`` or a key given twice."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise GraphError(f"--set {pair!r}: not KEY=VALUE; accepted: {SET_ACCEPTED}")
        name = key.strip().removeprefix(config.NAMESPACE + ":")
        if any(k.removeprefix(config.NAMESPACE + ":") == name for k in out):
            # The key only: the value may be one a command line should never have carried.
            raise GraphError(f"--set {key.strip()}=...: {config.NAMESPACE}:{name} is set "
                             "twice; accepted: each key once")
        out[key.strip()] = value
    return out


def normalise_overrides(overrides: Mapping[str, str] | None) -> dict[str, str]:
    """``overrides`` keyed without the ``vtaplab:`` prefix, sorted: the same values spelled
    either way are one graph (and one cache entry). GraphError, one line, for a key that is no
    vtaplab key, a secret (a command line is no place for one) or a value that is no string."""
    out: dict[str, str] = {}
    for key, value in (overrides or {}).items():
        name = str(key).strip().removeprefix(config.NAMESPACE + ":")
        if name in config.SECRET_KEYS:
            raise GraphError(f"--set {key}=(value not shown): {config.NAMESPACE}:{name} is a "
                             f"secret; accepted: pulumi config set --secret "
                             f"{config.NAMESPACE}:{name} in the stack, not --set")
        shown = f"--set {key}={value}"
        if not isinstance(value, str):
            raise GraphError(f"{shown}: the value {value!r} is not text; accepted: "
                             f"{SET_ACCEPTED}")
        if ":" in name:
            raise GraphError(f"{shown}: {name.split(':', 1)[0]!r} is not the "
                             f"{config.NAMESPACE} namespace; accepted: {SET_ACCEPTED}")
        try:
            config.check_keys({name: value})
        except config.ConfigError as error:
            raise GraphError(f"{shown}: {error}") from None
        if name in out:
            raise GraphError(f"{shown}: {config.NAMESPACE}:{name} is set twice; "
                             "accepted: each key once")
        out[name] = value
    return dict(sorted(out.items()))


def mock_config(stack: str, root: Path | None = None,
                overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The config the Pulumi CLI would hand the program for ``stack``: Pulumi.yaml defaults,
    then the stack file, then ``overrides`` (``graph --set``; checked by the config loader
    first: a bad one is a one-line GraphError naming it); plus test values for the operator's
    key and CIDR when unset."""
    root = root or PROJECT_ROOT
    extra = normalise_overrides(overrides)
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise GraphError(
            f"stack {stack!r}: no {path.name} in {root}; accepted: "
            + (", ".join(stack_names(root)) or "(no stack files)")
        )
    project = read_project(root)
    namespace = str(project.get("name", config.NAMESPACE))
    defaults: dict[str, object] = {}
    for key, spec in (project.get("config") or {}).items():
        if isinstance(spec, dict) and "default" in spec:
            defaults[key if ":" in key else f"{namespace}:{key}"] = spec["default"]
    try:
        stack_values = {**defaults, **config.read_stack_file(path)}
        values = {**stack_values, **{f"{namespace}:{k}": v for k, v in extra.items()}}
        # What pulumi up would refuse before the stand-ins below hide it (one path: config's).
        config.check_stand_ins(values, environ=os.environ)
    except config.ConfigError as error:
        raise GraphError(str(error)) from None
    values = _with_stand_ins(values, namespace)
    if extra:
        _check_overrides(stack, values, _with_stand_ins(stack_values, namespace), extra)
    return config.as_pulumi_config(values)


def _with_stand_ins(values: Mapping[str, object], namespace: str) -> dict[str, object]:
    """``values`` with test values for what a stack file can't carry or hasn't set."""
    # Encrypted values can't be read here; the test values stand in for them.
    out = {k: v for k, v in values.items() if not (isinstance(v, dict) and "secure" in v)}
    for key, test_value in ((f"{namespace}:sshPublicKey", TEST_SSH_PUBLIC_KEY),
                            (f"{namespace}:operatorCidr", TEST_OPERATOR_CIDR)):
        if not out.get(key):
            out[key] = test_value
    if not out.get(f"{namespace}:sshPrivateKey") and not out.get(
            f"{namespace}:sshPrivateKeyFile"):
        # A committed key nobody uses (test_ssh_private_key(), tests check they agree):
        # a relative path, so the graph is the same on every machine.
        out[f"{namespace}:sshPrivateKeyFile"] = MOCK_PRIVATE_KEY_FILE
    return out


def _check_overrides(stack: str, values: Mapping[str, object],
                     stack_values: Mapping[str, object], extra: Mapping[str, str]) -> None:
    """Run the config loader on ``values`` (the stack's with ``extra`` in) before any program
    run: a value it refuses is one line naming the ``--set`` that brought it. When the stack
    file alone (``stack_values``) is refused too, that is left to the program's run, which
    reports it as it would without --set."""
    shown = " ".join(f"--set {k}={v}" for k, v in extra.items())
    try:
        config.from_values(config.as_pulumi_config(values), stack=stack)
    except config.ConfigError as error:
        try:
            config.from_values(config.as_pulumi_config(stack_values), stack=stack)
        except config.ConfigError:
            return   # the stack file's own problem
        raise GraphError(f"with {shown}: {error}") from None


def secret_keys(settings: Mapping[str, str]) -> list[str]:
    """The keys of ``settings`` the program receives as secrets."""
    return [k for k in settings if k.split(":", 1)[-1] in SECRET_CONFIG_KEYS]


def run_here(stack: str, root: Path | None = None,
             overrides: Mapping[str, str] | None = None) -> GraphRun:
    """Run the program for ``stack`` (with ``overrides``: see ``mock_config``) in this process
    under mocks. Once per process."""
    root = (root or PROJECT_ROOT).resolve()
    settings = mock_config(stack, root, overrides)
    project = str(read_project(root)["name"])
    records: list[dict[str, Any]] = []

    class RecordingMonitor(MockMonitor):
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
                options = _options(request)
                if options:
                    record["options"] = options
                records.append(record)
            return response

    class Mocks(AzureMocks, PulumiMocks):
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


def _options(request: Any) -> dict[str, Any]:
    """The resource options a real engine acts on at update time (replace rules, ignored
    diffs, timeouts); only those set, so most records carry none."""
    options: dict[str, Any] = {}
    if list(request.replaceOnChanges):
        options["replaceOnChanges"] = sorted(request.replaceOnChanges)
    if request.deleteBeforeReplace:
        options["deleteBeforeReplace"] = True
    if list(request.ignoreChanges):
        options["ignoreChanges"] = sorted(request.ignoreChanges)
    timeouts = request.customTimeouts
    if timeouts is not None and (timeouts.create or timeouts.update or timeouts.delete):
        options["customTimeouts"] = {k: v for k in ("create", "update", "delete")
                                     if (v := getattr(timeouts, k))}
    return options


def _reveal(inputs: Any) -> tuple[Any, list[str]]:
    """Inputs with Pulumi's secret wrappers taken off (the graph shows what the program sent),
    and the dotted paths that were secrets (``osProfile.customData``), so a test can tell a
    value sent as a secret from one sent in clear."""
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


# One graph per stack and process: (stack, root, the stack file's and Pulumi.yaml's text, the
# overrides) -> the fresh interpreter's JSON. A changed stack file is another key, so it is
# never stale.
_RUNS: dict[tuple[str, str, str, str, tuple[tuple[str, str], ...]], str] = {}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def build_run(stack: str, *, root: Path | None = None, cached: bool = True,
              overrides: Mapping[str, str] | None = None) -> GraphRun:
    """``run_here`` in a fresh interpreter: the graph and the stack outputs. Built once per
    stack, overrides and process (``cached=False``: run again); each call gets its own copy.
    ``overrides`` (config key -> value, with or without ``vtaplab:``) go on top of the stack
    file, as ``graph --set``; a bad one raises GraphError (one line) before anything runs."""
    root = (root or PROJECT_ROOT).resolve()
    extra = normalise_overrides(overrides)
    if extra:
        mock_config(stack, root, extra)   # a bad value: one line here, no interpreter started
    key = (stack, str(root), _text(root / f"Pulumi.{stack}.yaml"), _text(root / "Pulumi.yaml"),
           tuple(extra.items()))
    if not cached or key not in _RUNS:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        child = subprocess.run(
            [sys.executable, "-m", "vtaplab", "graph", stack, "--run", "--root", str(root),
             *(arg for k, v in extra.items() for arg in ("--set", f"{k}={v}"))],
            capture_output=True, text=True, env=env, timeout=300, check=False,
        )
        if child.returncode != 0:
            lines = (child.stderr or child.stdout).strip().splitlines()
            raise GraphError(lines[-1] if lines else f"graph {stack}: exit {child.returncode}")
        _RUNS[key] = child.stdout
    data = json.loads(_RUNS[key])
    return GraphRun(resources=data["resources"], outputs=data["outputs"])


def build_graph(stack: str, *, root: Path | None = None, cached: bool = True,
                overrides: Mapping[str, str] | None = None) -> list[dict]:
    """Every resource ``__main__.py`` registers for ``Pulumi.<stack>.yaml`` (plus
    ``overrides``, as ``build_run``), under mocks."""
    return build_run(stack, root=root, cached=cached, overrides=overrides).resources
