"""The one validated config loader: stack config in, a frozen ``LabConfig`` out.

``load()`` reads the ``vtaplab:`` namespace of Pulumi config once and hands the raw values to
``from_values()``, the pure core, which applies the defaults of ``vtaplab.plan``, checks every
value against ``vtaplab.facts`` and either returns a ``LabConfig`` or raises ``ConfigError``
with a one-line message naming the key, the bad value and what would be accepted. The program
calls it before declaring any resource, so a bad stack file never gets as far as Azure.

Keys are flat camelCase strings, integers or lists because Pulumi.yaml's config schema types
are only ``string``, ``integer``, ``boolean`` and ``array``: a flat key is typed and
defaulted by Pulumi itself, and ``pulumi config set vtaplab:peIp 10.30.3.9`` just works.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vtaplab import facts, plan

if TYPE_CHECKING:
    import pulumi

NAMESPACE = "vtaplab"
# Where ``sshPublicKey`` falls back to, in order, relative to the user's home.
SSH_KEY_FALLBACKS: tuple[str, ...] = (".ssh/id_ed25519.pub", ".ssh/id_rsa.pub")
# The private halves, in the same order: what the SSH steps of a run log in with.
SSH_PRIVATE_KEY_FALLBACKS: tuple[str, ...] = (".ssh/id_ed25519", ".ssh/id_rsa")
# Keys whose value must be stored encrypted (pulumi config set --secret).
SECRET_KEYS: tuple[str, ...] = ("hostKeySeed", "sshPrivateKey")
HOST_KEY_SEED_MIN = 32
HOST_KEY_SEED_HINT = 'pulumi config set --secret vtaplab:hostKeySeed "$(openssl rand -hex 32)"'
# Scenarios whose run logs in to the VMs (capture, traffic, fetch): they need a private key.
TRAFFIC_SCENARIOS: tuple[str, ...] = ("b2", "a", "b3", "msp")
_RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
# Auto-shutdown (HHMM, UTC) and the expires-on tag's UTC time (vtaplab matrix writes it).
_SHUTDOWN_TIME = re.compile(r"^([01][0-9]|2[0-3])[0-5][0-9]$")
AUTO_SHUTDOWN_OFF = "off"
_EXPIRES_ON = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\dZ$")
# The operator CIDR may also come from the environment, so one `export` serves every stack
# and no stack file ever has to carry somebody's address.
OPERATOR_CIDR_ENV = "VTAPLAB_OPERATOR_CIDR"
OPERATOR_CIDR_HINT = (
    f"export {OPERATOR_CIDR_ENV}=$(curl -s https://api.ipify.org)/32 (every stack, no file "
    "changes), or pulumi config set vtaplab:operatorCidr <your IPv4>/32 (this stack only; "
    "it writes your address into the committed stack file)"
)
# Shorter than this, an SSH rule stops being "the operator" and becomes "a continent".
OPERATOR_MIN_PREFIX = 8
PROXY_MODES: tuple[str, ...] = ("netdev", "stateless", "conntrack")
# Inclusive bounds: generous enough for any real run, tight enough to catch a typo (60000 s).
CAPTURE_SECONDS_RANGE = (10, 3600)
TRAFFIC_REQUESTS_RANGE = (1, 10000)
MSP_TENANTS_RANGE = (1, facts.MAX_VTAPS_PER_SUBSCRIPTION)
# Azure: the smallest subnet is a /29 (5 addresses reserved, 3 usable).
SMALLEST_SUBNET_PREFIX = 29
# Address ranges a VNet may use here: RFC 1918 and the shared (CGNAT) range.
PRIVATE_RANGES: tuple[IPv4Network, ...] = tuple(
    IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)
# Azure refuses these as a Linux admin username.
RESERVED_USERNAMES: frozenset[str] = frozenset(
    {
        "1", "123", "a", "actuser", "adm", "admin", "admin1", "admin2", "administrator",
        "aspnet", "backup", "console", "david", "guest", "john", "owner", "root", "server",
        "sql", "support", "support_388945a0", "sys", "test", "test1", "test2", "test3",
        "user", "user1", "user2", "user3", "user4", "user5",
    }
)
_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_VM_SIZE = re.compile(r"^Standard_[A-Za-z0-9_]+$")
_REGION = re.compile(r"^[a-z][a-z0-9]+$")
# Azure Linux VMs take RSA (>= 2048 bits) and Ed25519 public keys, nothing else.
SSH_KEY_TYPES: tuple[str, ...] = ("ssh-ed25519", "ssh-rsa")
SSH_RSA_MIN_BITS = 2048


class ConfigError(ValueError):
    """A config value the lab can't use; the message names key, value and what is accepted."""


@dataclass(frozen=True)
class ConsumerPlan:
    """One consumer VNet (``SourceVnet``); every scenario gets its own, with these numbers."""

    address_space: IPv4Network
    snet_src: IPv4Network
    snet_ilb: IPv4Network
    snet_pe: IPv4Network
    snet_proxy: IPv4Network
    vm_src_ip: IPv4Address
    vm_client_ip: IPv4Address
    ilb_ip: IPv4Address
    pe_ip: IPv4Address
    proxy_ip: IPv4Address
    proxy2_ip: IPv4Address


@dataclass(frozen=True)
class ProviderPlan:
    """The provider VNet (``CollectorService``), one per stack."""

    address_space: IPv4Network
    snet_pls: IPv4Network
    snet_col: IPv4Network
    ilb_ip: IPv4Address
    nat_ips: tuple[IPv4Address, ...]
    col_ip: IPv4Address


@dataclass(frozen=True)
class LabConfig:
    """Everything the program needs from a stack's config, validated."""

    project: str
    stack: str
    scenarios: tuple[str, ...]
    location: str
    consumer: ConsumerPlan
    provider: ProviderPlan
    source_vm_size: str
    proxy_vm_size: str
    collector_vm_size: str
    admin_username: str
    operator_cidr: str
    ssh_public_key: str
    proxy_mode: str
    capture_seconds: int
    traffic_requests: int
    msp_tenants: int
    # Secrets: never in a repr, a log line or a traceback.
    host_key_seed: str = field(default="", repr=False)
    """Derives every VM's SSH host key (vtaplab.ssh.host_key_for); empty: not set."""
    ssh_private_key: str = field(default="", repr=False)
    """PEM text from vtaplab:sshPrivateKey; empty: use ``ssh_private_key_file``."""
    ssh_private_key_file: str = ""
    """Path of the private key file the run's SSH steps use; empty: none found."""
    run_id: str = "1"
    """Changing it re-runs capture, traffic and fetch without touching the VMs."""
    auto_shutdown_time: str = "1900"
    """Daily VM shutdown, HHMM UTC, or "off" (components/shutdown.py)."""
    expires_on: str = ""
    """The expires-on tag's value (YYYY-MM-DDTHH:MMZ); empty: not set (tag "unset")."""


@dataclass(frozen=True)
class Key:
    """One config key: its Pulumi.yaml type, its default (None: none) and what it means."""

    name: str
    type: str  # "string" | "integer" | "array" (of strings)
    default: str | int | tuple[str, ...] | None
    description: str


KEYS: tuple[Key, ...] = (
    Key("scenarios", "array", None,
        "Scenarios this stack runs, from: " + ", ".join(facts.SCENARIOS)
        + ". A YAML list in the stack file, e.g. [r1, b1, b2]."),
    Key("location", "string", "uksouth",
        "Azure region for every resource; must offer vTAP preview (and, for scenario a, "
        "PLS Direct Connect). Must equal azure-native:location when that is set."),
    Key("consumerAddressSpace", "string", plan.CONSUMER_VNET,
        "Address space of each consumer VNet (one per scenario; they may repeat and may "
        "overlap the provider's)."),
    Key("consumerSubnetSrc", "string", plan.CONSUMER_SUBNETS["snet-src"],
        "snet-src: the tapped VM (nginx) and the traffic client."),
    Key("consumerSubnetIlb", "string", plan.CONSUMER_SUBNETS["snet-ilb"],
        "snet-ilb: the consumer-side internal load balancer (b1, b3)."),
    Key("consumerSubnetPe", "string", plan.CONSUMER_SUBNETS["snet-pe"],
        "snet-pe: the Private Endpoint to the provider's Private Link Service."),
    Key("consumerSubnetProxy", "string", plan.CONSUMER_SUBNETS["snet-proxy"],
        "snet-proxy: the proxy VM(s) that rewrite UDP/4789 to the PE."),
    Key("vmSrcIp", "string", plan.VM_SRC_IP, "Static IP of vm-src (tapped, runs nginx)."),
    Key("vmClientIp", "string", plan.VM_CLIENT_IP,
        "Static IP of vm-client (curls vm-src to make traffic)."),
    Key("consumerIlbIp", "string", plan.CONSUMER_ILB_IP,
        "Frontend IP of the consumer-side internal load balancer (b1, b3)."),
    Key("peIp", "string", plan.PE_IP, "Static IP of the Private Endpoint."),
    Key("proxyIp", "string", plan.VM_PROXY_IP, "Static IP of vm-proxy."),
    Key("proxy2Ip", "string", plan.VM_PROXY2_IP, "Static IP of the second proxy (b3)."),
    Key("providerAddressSpace", "string", plan.PROVIDER_VNET,
        "Address space of the provider (collector) VNet."),
    Key("providerSubnetPls", "string", plan.PROVIDER_SUBNETS["snet-pls"],
        "snet-pls: provider ILB frontend and PLS NAT IPs (PLS network policies off)."),
    Key("providerSubnetCol", "string", plan.PROVIDER_SUBNETS["snet-col"],
        "snet-col: the collector VM(s)."),
    Key("providerIlbIp", "string", plan.PROVIDER_ILB_IP,
        "Frontend IP of the provider's internal load balancer (UDP/4789)."),
    Key("plsNatIps", "array", plan.PLS_NAT_IPS,
        "PLS NAT IPs in snet-pls; the collector sees these as the source. Scenario a needs "
        "2, 4, 6 or 8 of them."),
    Key("collectorIp", "string", plan.VM_COL_IP, "Static IP of vm-col (captures UDP/4789)."),
    Key("sourceVmSize", "string", "Standard_B2s",
        "Size of the tapped VM (and the client); never a v6 size (vTAP can't tap v6)."),
    Key("proxyVmSize", "string", "Standard_B2s", "Size of the proxy VM(s)."),
    Key("collectorVmSize", "string", "Standard_B2s", "Size of the collector VM(s)."),
    Key("adminUsername", "string", "azureuser", "Linux admin user on every VM (key-only)."),
    Key("operatorCidr", "string", "",
        "IPv4 CIDR allowed to SSH to the lab's VMs, /8 or longer (e.g. your IP/32). "
        f"Empty: taken from ${OPERATOR_CIDR_ENV}; one of the two must be set."),
    Key("sshPublicKey", "string", "",
        "OpenSSH public key (ssh-ed25519, or ssh-rsa >= 2048 bits) for adminUsername. "
        "Empty: read from ~/.ssh/id_ed25519.pub, then ~/.ssh/id_rsa.pub."),
    Key("proxyMode", "string", "netdev",
        "How vm-proxy rewrites UDP/4789 to the PE: netdev (nftables ingress + fwd, fastest, "
        "no conntrack), stateless (nftables, no conntrack) or conntrack (iptables DNAT, as the "
        "reference lab)."),
    Key("captureSeconds", "integer", 60,
        f"How long the collector captures, {CAPTURE_SECONDS_RANGE[0]}-"
        f"{CAPTURE_SECONDS_RANGE[1]} s."),
    Key("trafficRequests", "integer", 20,
        f"HTTP requests vm-client makes to vm-src per run, {TRAFFIC_REQUESTS_RANGE[0]}-"
        f"{TRAFFIC_REQUESTS_RANGE[1]}."),
    Key("mspTenants", "integer", 3,
        f"Tenants (consumer VNets) in scenario msp, {MSP_TENANTS_RANGE[0]}-"
        f"{MSP_TENANTS_RANGE[1]} (vTAP preview allows about "
        f"{facts.MAX_VTAPS_PER_SUBSCRIPTION} per subscription)."),
    Key("hostKeySeed", "string", "",
        "SECRET, required: derives every VM's SSH host key, so host keys are pinned before "
        f"the VMs exist. Set once per stack: {HOST_KEY_SEED_HINT}"),
    Key("sshPrivateKey", "string", "",
        "SECRET, optional: the private key (PEM/OpenSSH text) of sshPublicKey, for the run's "
        "SSH steps (pulumi config set --secret vtaplab:sshPrivateKey < ~/.ssh/id_ed25519). "
        "Empty: sshPrivateKeyFile."),
    Key("sshPrivateKeyFile", "string", "",
        "Path of the private key of sshPublicKey, for the run's SSH steps. Empty: "
        "~/.ssh/id_ed25519, then ~/.ssh/id_rsa."),
    Key("runId", "string", "1",
        "Change it (e.g. 2) to re-run capture, traffic and fetch on the next pulumi up "
        "without touching the VMs."),
    Key("autoShutdownTime", "string", "1900",
        "Daily auto-shutdown of every VM, HHMM in UTC (a DevTest Labs schedule "
        "shutdown-computevm-<vm>); off: none. A stopped VM bills no compute."),
    Key("expiresOn", "string", "",
        "When the lab may be deleted, UTC YYYY-MM-DDTHH:MMZ: the expires-on tag of every VM "
        "and its NIC, NSG, public IP and schedule. python -m vtaplab matrix sets it for its "
        "run (start + 8 h, rounded up to the hour); empty: the tag says unset."),
)
KEYS_BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}


# ----------------------------------------------------------------------------- helpers


def _fail(key: str, value: object, problem: str, accepted: str) -> ConfigError:
    shown = value if isinstance(value, str) else json.dumps(value, default=str)
    return ConfigError(f"{NAMESPACE}:{key}: {shown!r} {problem}; accepted: {accepted}")


def _raw(values: Mapping[str, object], key: str) -> object:
    default = KEYS_BY_NAME[key].default
    value = values.get(key)
    if value is None or (isinstance(value, str) and not value.strip() and default != ""):
        return list(default) if isinstance(default, tuple) else default
    return value


def _text(values: Mapping[str, object], key: str) -> str:
    value = _raw(values, key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(key, value, "is not a string", "a single string value")
    return value.strip()


def _list(values: Mapping[str, object], key: str) -> list[str]:
    value = _raw(values, key)
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        # Pulumi hands the program a YAML list as its JSON text.
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise _fail(key, text, "is not a valid list",
                            "a YAML list or a comma-separated string") from None
        else:
            value = [part for part in re.split(r"[,\s]+", text) if part]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _fail(key, value, "is not a list of strings",
                    "a YAML list or a comma-separated string")
    return [v.strip() for v in value]


def _int(values: Mapping[str, object], key: str, bounds: tuple[int, int]) -> int:
    value = _raw(values, key)
    low, high = bounds
    accepted = f"a whole number from {low} to {high}"
    if isinstance(value, bool):
        raise _fail(key, value, "is not a number", accepted)
    if isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise _fail(key, value, "is not a whole number", accepted) from None
    elif isinstance(value, int):
        number = value
    else:
        raise _fail(key, value, "is not a whole number", accepted)
    if not low <= number <= high:
        raise _fail(key, value, "is out of range", accepted)
    return number


def _network(values: Mapping[str, object], key: str) -> IPv4Network:
    text = _text(values, key)
    example = KEYS_BY_NAME[key].default
    accepted = f"an IPv4 network in CIDR form, e.g. {example}"
    if "/" not in text:
        raise _fail(key, text, "is not in CIDR form (no /prefix)", accepted)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _fail(key, text, "is not a valid CIDR", accepted) from None
    if not isinstance(network, IPv4Network):
        raise _fail(key, text, "is IPv6 (vTAP and Private Link here are IPv4 only)", accepted)
    if str(network) != text:
        raise _fail(key, text, f"has host bits set (the network is {network})", accepted)
    if not any(network.subnet_of(r) for r in PRIVATE_RANGES):
        raise _fail(key, text, "is not a private range",
                    "a network inside " + ", ".join(map(str, PRIVATE_RANGES)))
    return network


def _subnet(values: Mapping[str, object], key: str, vnet: IPv4Network,
            vnet_key: str) -> IPv4Network:
    subnet = _network(values, key)
    if subnet.prefixlen > SMALLEST_SUBNET_PREFIX:
        raise _fail(key, str(subnet), "is smaller than Azure's smallest subnet",
                    f"a prefix of /{SMALLEST_SUBNET_PREFIX} or shorter")
    if not subnet.subnet_of(vnet):
        raise _fail(key, str(subnet), f"is outside its VNet ({NAMESPACE}:{vnet_key} = {vnet})",
                    f"a subnet inside {vnet}")
    return subnet


def _no_overlap(subnets: Mapping[str, IPv4Network]) -> None:
    seen: list[tuple[str, IPv4Network]] = []
    for key, subnet in subnets.items():
        for other_key, other in seen:
            if subnet.overlaps(other):
                raise _fail(key, str(subnet),
                            f"overlaps {NAMESPACE}:{other_key} ({other}) in the same VNet",
                            f"a range disjoint from {other}")
        seen.append((key, subnet))


def _usable(subnet: IPv4Network) -> tuple[IPv4Address, IPv4Address]:
    # Azure keeps the first four addresses (network, gateway, 2x DNS) and the last one.
    return subnet[4], subnet[-2]


def _host(value: object, key: str, subnet: IPv4Network, subnet_key: str) -> IPv4Address:
    first, last = _usable(subnet)
    accepted = f"an IPv4 address from {first} to {last} ({NAMESPACE}:{subnet_key} = {subnet})"
    if not isinstance(value, str):
        raise _fail(key, value, "is not an IP address", accepted)
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise _fail(key, value, "is not an IP address", accepted) from None
    if not isinstance(address, IPv4Address):
        raise _fail(key, value, "is IPv6", accepted)
    if address not in subnet:
        raise _fail(key, value, "is outside its subnet", accepted)
    if not first <= address <= last:
        raise _fail(key, value, "is an address Azure reserves in its subnet", accepted)
    return address


def _unique(hosts: Iterable[tuple[str, IPv4Address]]) -> None:
    owner: dict[IPv4Address, str] = {}
    for key, address in hosts:
        if address in owner:
            raise _fail(key, str(address), f"is already {NAMESPACE}:{owner[address]}",
                        "an address no other host of this VNet uses")
        owner[address] = key


def _location(values: Mapping[str, object], scenarios: tuple[str, ...]) -> str:
    raw = _text(values, "location")
    location = raw.lower().replace(" ", "")
    if not _REGION.match(location):
        raise _fail("location", raw, "is not an Azure region name",
                    "a region name such as " + ", ".join(sorted(facts.VTAP_REGIONS)))
    provider_location = values.get("azure-native:location")
    if isinstance(provider_location, str) and provider_location.strip():
        normalised = provider_location.strip().lower().replace(" ", "")
        if normalised != location:
            raise _fail("location", raw,
                        f"differs from azure-native:location ({provider_location!r})",
                        "the same region in both keys")
    for scenario_id in scenarios:
        scenario = facts.SCENARIOS[scenario_id]
        if location not in scenario.regions:
            needs = "vTAP preview"
            if scenario.regions != facts.VTAP_REGIONS:
                needs += " and PLS Direct Connect"
            raise _fail("location", raw,
                        f"can't run scenario {scenario_id!r} (it needs {needs})",
                        ", ".join(sorted(scenario.regions)))
    return location


def _scenarios(values: Mapping[str, object]) -> tuple[str, ...]:
    ids = _list(values, "scenarios")
    known = ", ".join(facts.SCENARIOS)
    if not ids:
        raise _fail("scenarios", values.get("scenarios") or "",
                    "names no scenario (set it in the stack file)", f"a list from {known}")
    for scenario_id in ids:
        if scenario_id not in facts.SCENARIOS:
            raise _fail("scenarios", scenario_id, "is not a known scenario", known)
    duplicates = sorted({s for s in ids if ids.count(s) > 1})
    if duplicates:
        raise _fail("scenarios", ",".join(ids), f"repeats {', '.join(duplicates)}",
                    "each scenario at most once")
    return tuple(ids)


def _vm_size(values: Mapping[str, object], key: str, *, tapped: bool) -> str:
    size = _text(values, key)
    if not _VM_SIZE.match(size):
        raise _fail(key, size, "is not an Azure VM size", "a size such as Standard_B2s")
    if tapped and facts.is_v6_size(size):
        raise _fail(key, size, "is a v6 size, which vTAP can't use as a source",
                    "a non-v6 size such as Standard_B2s or Standard_D2s_v5")
    return size


def _username(values: Mapping[str, object]) -> str:
    name = _text(values, "adminUsername")
    accepted = "1-32 characters of a-z 0-9 _ -, starting with a letter or _, not a reserved name"
    if not _USERNAME.match(name):
        raise _fail("adminUsername", name, "is not a valid Linux user name", accepted)
    if name in RESERVED_USERNAMES:
        raise _fail("adminUsername", name, "is a name Azure reserves", accepted)
    return name


def _operator_cidr(values: Mapping[str, object], environ: Mapping[str, str] | None) -> str:
    text = _text(values, "operatorCidr")
    key = "operatorCidr"
    if not text and environ is not None and environ.get(OPERATOR_CIDR_ENV, "").strip():
        text = environ[OPERATOR_CIDR_ENV].strip()
        key = f"operatorCidr (from ${OPERATOR_CIDR_ENV})"
    accepted = f"an IPv4 CIDR of /{OPERATOR_MIN_PREFIX} or longer, e.g. 203.0.113.7/32"
    if not text:
        raise ConfigError(
            f"{NAMESPACE}:operatorCidr is not set: SSH to the lab's VMs is allowed only from "
            f"it; accepted: {OPERATOR_CIDR_HINT}"
        )
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _fail(key, text, "is not an IP address or CIDR", accepted) from None
    if network.prefixlen == 0:
        raise _fail(key, text, "would open SSH to the whole internet", accepted)
    if not isinstance(network, IPv4Network):
        raise _fail(key, text, "is IPv6 (the lab's VMs have IPv4 public addresses only)",
                    accepted)
    if network.prefixlen < OPERATOR_MIN_PREFIX:
        raise _fail(key, text, "is too wide to stand for one operator", accepted)
    if "/" in text and str(network) != text:
        raise _fail(key, text, f"has host bits set (did you mean {network}?)", accepted)
    if network.is_loopback or network.is_multicast or network.is_link_local or (
        network.is_reserved or network.is_unspecified
    ):
        raise _fail(key, text, "can't be where an SSH client comes from", accepted)
    return str(network)


def _read_key_files(home: Path | None) -> tuple[str, str]:
    if home is None:
        return "", ""
    for relative in SSH_KEY_FALLBACKS:
        path = home / relative
        if path.is_file():
            return path.read_text(encoding="utf-8", errors="replace").strip(), str(path)
    return "", ""


def _ssh_key(values: Mapping[str, object], home: Path | None) -> str:
    text = _text(values, "sshPublicKey")
    key = "sshPublicKey"
    if not text:
        text, source = _read_key_files(home)
        if not text:
            tried = ", ".join(f"~/{p}" for p in SSH_KEY_FALLBACKS) if home else "none"
            raise ConfigError(
                f"{NAMESPACE}:sshPublicKey is not set and no key file was found "
                f"(tried: {tried}); accepted: an OpenSSH public key, e.g. "
                "pulumi config set vtaplab:sshPublicKey \"$(cat ~/.ssh/id_ed25519.pub)\""
            )
        key = f"sshPublicKey (from {source})"
    problem = _ssh_key_problem(text)
    if problem:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise _fail(key, shown, problem,
                    f"one OpenSSH public key line: {' or '.join(SSH_KEY_TYPES)} "
                    f"(RSA >= {SSH_RSA_MIN_BITS} bits)")
    return text


def _ssh_key_problem(text: str) -> str:
    """Why ``text`` isn't a usable OpenSSH public key, or "" when it is."""
    if "\n" in text or "\r" in text:
        return "has more than one line"
    if "PRIVATE KEY" in text:
        return "is a PRIVATE key (never put it in config)"
    parts = text.split()
    if len(parts) < 2:
        return "is not an OpenSSH public key"
    kind, body = parts[0], parts[1]
    if kind not in SSH_KEY_TYPES:
        return f"has key type {kind!r}, which Azure Linux VMs don't take"
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return "has a key body that is not base64"
    fields = _ssh_wire_fields(blob)
    if not fields or fields[0] != kind.encode():
        return "has a key body that doesn't match its type"
    if kind == "ssh-ed25519" and (len(fields) != 2 or len(fields[1]) != 32):
        return "has a malformed Ed25519 key body"
    if kind == "ssh-rsa":
        if len(fields) != 3:
            return "has a malformed RSA key body"
        bits = int.from_bytes(fields[2], "big").bit_length()
        if bits < SSH_RSA_MIN_BITS:
            return f"is a {bits}-bit RSA key (too short)"
    return ""


def _ssh_wire_fields(blob: bytes) -> list[bytes]:
    """Split an SSH wire-format blob into its length-prefixed fields ([] when malformed)."""
    fields: list[bytes] = []
    offset = 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            return []
        length = int.from_bytes(blob[offset:offset + 4], "big")
        offset += 4
        if offset + length > len(blob):
            return []
        fields.append(blob[offset:offset + length])
        offset += length
    return fields


def _unknown_keys(values: Mapping[str, object]) -> None:
    for key in values:
        if ":" in key:  # other namespaces (azure-native:location, ...) aren't ours
            continue
        if key not in KEYS_BY_NAME:
            close = difflib.get_close_matches(key, KEYS_BY_NAME, n=1)
            hint = f"did you mean {NAMESPACE}:{close[0]}? " if close else ""
            raise ConfigError(
                f"{NAMESPACE}:{key}: unknown config key; {hint}accepted keys: "
                + ", ".join(KEYS_BY_NAME)
            )


def _strip_namespace(values: Mapping[str, object]) -> dict[str, object]:
    prefix = NAMESPACE + ":"
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in values.items()}


# ----------------------------------------------------------------------------- the loader


def _consumer(values: Mapping[str, object]) -> ConsumerPlan:
    vnet = _network(values, "consumerAddressSpace")
    subnet_keys = ("consumerSubnetSrc", "consumerSubnetIlb", "consumerSubnetPe",
                   "consumerSubnetProxy")
    subnets = {k: _subnet(values, k, vnet, "consumerAddressSpace") for k in subnet_keys}
    _no_overlap(subnets)
    host_subnet = {
        "vmSrcIp": "consumerSubnetSrc",
        "vmClientIp": "consumerSubnetSrc",
        "consumerIlbIp": "consumerSubnetIlb",
        "peIp": "consumerSubnetPe",
        "proxyIp": "consumerSubnetProxy",
        "proxy2Ip": "consumerSubnetProxy",
    }
    hosts = {
        k: _host(_raw(values, k), k, subnets[s], s) for k, s in host_subnet.items()
    }
    _unique(hosts.items())
    return ConsumerPlan(
        address_space=vnet,
        snet_src=subnets["consumerSubnetSrc"],
        snet_ilb=subnets["consumerSubnetIlb"],
        snet_pe=subnets["consumerSubnetPe"],
        snet_proxy=subnets["consumerSubnetProxy"],
        vm_src_ip=hosts["vmSrcIp"],
        vm_client_ip=hosts["vmClientIp"],
        ilb_ip=hosts["consumerIlbIp"],
        pe_ip=hosts["peIp"],
        proxy_ip=hosts["proxyIp"],
        proxy2_ip=hosts["proxy2Ip"],
    )


def _provider(values: Mapping[str, object], scenarios: tuple[str, ...]) -> ProviderPlan:
    vnet = _network(values, "providerAddressSpace")
    subnet_keys = ("providerSubnetPls", "providerSubnetCol")
    subnets = {k: _subnet(values, k, vnet, "providerAddressSpace") for k in subnet_keys}
    _no_overlap(subnets)
    pls = subnets["providerSubnetPls"]
    ilb_ip = _host(_raw(values, "providerIlbIp"), "providerIlbIp", pls, "providerSubnetPls")
    col_ip = _host(_raw(values, "collectorIp"), "collectorIp",
                   subnets["providerSubnetCol"], "providerSubnetCol")
    nat_texts = _list(values, "plsNatIps")
    nat_ips = tuple(_host(t, "plsNatIps", pls, "providerSubnetPls") for t in nat_texts)
    allowed_counts = (
        sorted(facts.PLS_DIRECT_CONNECT_NAT_IP_COUNTS) if "a" in scenarios else list(range(1, 9))
    )
    if len(nat_ips) not in allowed_counts:
        why = " (scenario a: Direct Connect)" if "a" in scenarios else ""
        raise _fail("plsNatIps", nat_texts, f"has {len(nat_ips)} addresses{why}",
                    "a list of " + ", ".join(map(str, allowed_counts)) + " addresses")
    _unique([("providerIlbIp", ilb_ip), *(("plsNatIps", ip) for ip in nat_ips),
             ("collectorIp", col_ip)])
    return ProviderPlan(address_space=vnet, snet_pls=pls, snet_col=subnets["providerSubnetCol"],
                        ilb_ip=ilb_ip, nat_ips=nat_ips, col_ip=col_ip)


def _vtap_budget(scenarios: tuple[str, ...], msp_tenants: int) -> None:
    # Each scenario (even the rejected attempts) needs one vTAP, msp one per tenant.
    count = sum(msp_tenants if s == "msp" else 1 for s in scenarios if s != "c1")
    if count > facts.MAX_VTAPS_PER_SUBSCRIPTION:
        raise _fail("scenarios", ",".join(scenarios),
                    f"needs {count} vTAPs (with mspTenants={msp_tenants})",
                    f"at most {facts.MAX_VTAPS_PER_SUBSCRIPTION} vTAPs per subscription "
                    "during preview")


def from_values(
    values: Mapping[str, object],
    *,
    stack: str,
    project: str = NAMESPACE,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> LabConfig:
    """Validate raw config ``values`` (keys with or without ``vtaplab:``) into a ``LabConfig``.

    Pure unless asked: ``home`` enables the ~/.ssh key fallback and ``environ`` the
    ``$VTAPLAB_OPERATOR_CIDR`` fallback; ``load()`` passes both, tests pass what they need.
    """
    values = _strip_namespace(values)
    _unknown_keys(values)
    scenarios = _scenarios(values)
    location = _location(values, scenarios)
    consumer = _consumer(values)
    provider = _provider(values, scenarios)
    msp_tenants = _int(values, "mspTenants", MSP_TENANTS_RANGE)
    _vtap_budget(scenarios, msp_tenants)
    proxy_mode = _text(values, "proxyMode")
    if proxy_mode not in PROXY_MODES:
        raise _fail("proxyMode", proxy_mode, "is not a proxy mode", " or ".join(PROXY_MODES))
    return LabConfig(
        project=project,
        stack=stack,
        scenarios=scenarios,
        location=location,
        consumer=consumer,
        provider=provider,
        source_vm_size=_vm_size(values, "sourceVmSize", tapped=True),
        proxy_vm_size=_vm_size(values, "proxyVmSize", tapped=False),
        collector_vm_size=_vm_size(values, "collectorVmSize", tapped=False),
        admin_username=_username(values),
        operator_cidr=_operator_cidr(values, environ),
        ssh_public_key=_ssh_key(values, home),
        proxy_mode=proxy_mode,
        capture_seconds=_int(values, "captureSeconds", CAPTURE_SECONDS_RANGE),
        traffic_requests=_int(values, "trafficRequests", TRAFFIC_REQUESTS_RANGE),
        msp_tenants=msp_tenants,
        host_key_seed=_host_key_seed(values),
        ssh_private_key=_ssh_private_key(values),
        ssh_private_key_file=_ssh_private_key_file(values, home),
        run_id=_run_id(values),
        auto_shutdown_time=shutdown_settings(values)[0],
        expires_on=shutdown_settings(values)[1],
    )


def shutdown_settings(values: Mapping[str, object]) -> tuple[str, str]:
    """(autoShutdownTime, expiresOn) validated; pure (components/shutdown.py calls it too)."""
    values = _strip_namespace(values)
    time = _text(values, "autoShutdownTime")
    # YAML 1.1 readers (PyYAML) turn an unquoted off into false: both mean off.
    if time.lower() in (AUTO_SHUTDOWN_OFF, "false"):
        time = AUTO_SHUTDOWN_OFF
    elif not _SHUTDOWN_TIME.match(time):
        raise _fail("autoShutdownTime", time, "is not a time of day",
                    f"HHMM in UTC from 0000 to 2359, e.g. 1900, or {AUTO_SHUTDOWN_OFF}")
    expires = _text(values, "expiresOn")
    if expires and not _EXPIRES_ON.match(expires):
        raise _fail("expiresOn", expires, "is not a UTC time",
                    "YYYY-MM-DDTHH:MMZ, e.g. 2026-11-27T07:00Z, or empty")
    return time, expires


def _host_key_seed(values: Mapping[str, object]) -> str:
    seed = _text(values, "hostKeySeed")
    if seed and len(seed) < HOST_KEY_SEED_MIN:
        # Never echo a secret, not even a bad one.
        raise ConfigError(
            f"{NAMESPACE}:hostKeySeed: {len(seed)} characters is too short to keep host keys "
            f"unguessable; accepted: {HOST_KEY_SEED_MIN} or more, e.g. {HOST_KEY_SEED_HINT}")
    return seed


def _ssh_private_key(values: Mapping[str, object]) -> str:
    text = _text(values, "sshPrivateKey")
    if text and not ("-----BEGIN" in text and "PRIVATE KEY-----" in text):
        raise ConfigError(
            f"{NAMESPACE}:sshPrivateKey: not a private key (value not shown); accepted: the "
            "text of an unencrypted OpenSSH/PEM private key file, set with --secret")
    return text + "\n" if text else ""


def _ssh_private_key_file(values: Mapping[str, object], home: Path | None) -> str:
    text = _text(values, "sshPrivateKeyFile")
    if text:
        if text.startswith("~") and home is not None:
            text = str(home / text[1:].lstrip("/"))
        return text
    if home is None:
        return ""
    for relative in SSH_PRIVATE_KEY_FALLBACKS:
        if (home / relative).is_file():
            return str(home / relative)
    return ""


def _run_id(values: Mapping[str, object]) -> str:
    run_id = _text(values, "runId")
    if not _RUN_ID.match(run_id):
        raise _fail("runId", run_id, "is not a run id", "1-32 characters of A-Z a-z 0-9 . _ -")
    return run_id


def require_run_secrets(cfg: LabConfig, *, is_secret: Callable[[str], bool]) -> None:
    """What a real ``pulumi up`` needs beyond ``from_values``: the host-key seed (always:
    every VM gets pinned host keys), stored encrypted; and, for a stack that runs traffic, a
    private key. ``is_secret(key)`` says whether ``vtaplab:<key>`` is stored as a secret."""
    if not cfg.host_key_seed:
        raise ConfigError(
            f"{NAMESPACE}:hostKeySeed is not set: every VM's SSH host key derives from it "
            f"(pinned, never trusted on first use); accepted: a secret of "
            f"{HOST_KEY_SEED_MIN}+ characters, set once per stack: {HOST_KEY_SEED_HINT}")
    for key in SECRET_KEYS:
        value = cfg.host_key_seed if key == "hostKeySeed" else cfg.ssh_private_key
        if value and not is_secret(key):
            raise ConfigError(
                f"{NAMESPACE}:{key} is stored in clear in the stack file; accepted: an "
                f"encrypted value: pulumi config rm vtaplab:{key}, then set it again with "
                "pulumi config set --secret")
    if any(s in TRAFFIC_SCENARIOS for s in cfg.scenarios) and not (
            cfg.ssh_private_key or cfg.ssh_private_key_file):
        tried = ", ".join(f"~/{p}" for p in SSH_PRIVATE_KEY_FALLBACKS)
        raise ConfigError(
            f"{NAMESPACE}:sshPrivateKeyFile is not set and no key file was found (tried: "
            f"{tried}); scenarios {', '.join(cfg.scenarios)} log in to the VMs to run "
            "traffic and fetch evidence; accepted: pulumi config set vtaplab:sshPrivateKeyFile "
            "PATH, or pulumi config set --secret vtaplab:sshPrivateKey < PATH")
    if cfg.ssh_private_key_file and not cfg.ssh_private_key and any(
            s in TRAFFIC_SCENARIOS for s in cfg.scenarios) and not Path(
            cfg.ssh_private_key_file).is_file():
        raise ConfigError(
            f"{NAMESPACE}:sshPrivateKeyFile: {cfg.ssh_private_key_file!r} is not a readable "
            "file; accepted: the path of the private key of sshPublicKey")


def _all_set_keys() -> list[str]:
    """Every config key the Pulumi runtime holds (to catch typos such as vtaplab:scenario)."""
    from pulumi.runtime import config as runtime_config

    keys = set(runtime_config.CONFIG.get())
    keys |= set(runtime_config.get_config_env())
    return sorted(keys)


def load(
    config: pulumi.Config | None = None,
    *,
    stack: str | None = None,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> LabConfig:
    """Read the ``vtaplab:`` config of the running stack once and validate it."""
    import pulumi

    config = config or pulumi.Config(NAMESPACE)
    values: dict[str, object] = {}
    for key in KEYS:
        raw = config.get(key.name)
        if raw is not None:
            values[key.name] = raw
    prefix = config.name + ":"
    for full_key in _all_set_keys():
        if full_key.startswith(prefix) and full_key[len(prefix):] not in values:
            values[full_key[len(prefix):]] = pulumi.runtime.get_config(full_key)
    provider_location = pulumi.Config("azure-native").get("location")
    if provider_location:
        values["azure-native:location"] = provider_location
    cfg = from_values(
        values,
        stack=stack or pulumi.get_stack(),
        project=config.name,
        home=home if home is not None else Path.home(),
        environ=environ if environ is not None else os.environ,
    )
    require_run_secrets(
        cfg, is_secret=lambda key: pulumi.runtime.is_config_secret(f"{config.name}:{key}"))
    return cfg


# ----------------------------------------------------------------------------- stack files


def read_stack_file(path: Path) -> dict[str, object]:
    """The ``config:`` map of a ``Pulumi.<stack>.yaml``, values as YAML gives them."""
    import yaml

    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
        raise ConfigError(f"{path}: not a Pulumi stack file (no 'config:' map)")
    return dict(document.get("config") or {})


def as_pulumi_config(values: Mapping[str, object]) -> dict[str, str]:
    """Stack-file values as the Pulumi engine hands them to a program: strings, lists as JSON.

    Use with ``pulumi.runtime.set_all_config`` to run the program under mocks.
    """
    converters: dict[type, Callable[[Any], str]] = {
        str: str, bool: lambda v: "true" if v else "false", int: str, float: str,
    }
    out: dict[str, str] = {}
    for key, value in values.items():
        full_key = key if ":" in key else f"{NAMESPACE}:{key}"
        convert = converters.get(type(value))
        out[full_key] = convert(value) if convert else json.dumps(value)
    return out
