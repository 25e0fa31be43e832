"""The config loader: good defaults, every stack file, and one test per bad-config case."""

from __future__ import annotations

import base64
import dataclasses
import json
from ipaddress import IPv4Address, IPv4Network

import pytest
import yaml

from vtaplab import PROJECT_ROOT, facts, plan
from vtaplab.program import config
from vtaplab.program.config import ConfigError, from_values

ROOT = PROJECT_ROOT
STACK_FILES = sorted(ROOT.glob("Pulumi.*.yaml"))


def _ssh_blob(*fields: bytes) -> str:
    return base64.b64encode(b"".join(len(f).to_bytes(4, "big") + f for f in fields)).decode()


# Built from the wire format, not copied from anywhere: a well-formed key of each kind.
ED25519_KEY = "ssh-ed25519 " + _ssh_blob(b"ssh-ed25519", bytes(range(32))) + " op@laptop"
RSA_2048_KEY = "ssh-rsa " + _ssh_blob(b"ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xc1" * 256)
RSA_1024_KEY = "ssh-rsa " + _ssh_blob(b"ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xc1" * 128)
OPERATOR = "203.0.113.7/32"
GOOD: dict[str, object] = {
    "vtaplab:scenarios": ["b2"],
    "vtaplab:operatorCidr": OPERATOR,
    "vtaplab:sshPublicKey": ED25519_KEY,
}


def load_with(**overrides: object) -> config.LabConfig:
    values = {**GOOD, **{f"vtaplab:{k}": v for k, v in overrides.items()}}
    return from_values(values, stack="test")


def rejects(key: str, value: object, *accepted: str, **overrides: object) -> str:
    """Assert that setting ``key`` to ``value`` fails naming the key, the value and ``accepted``."""
    with pytest.raises(ConfigError) as err:
        load_with(**{key: value}, **overrides)
    message = str(err.value)
    assert f"vtaplab:{key}" in message
    shown = value if isinstance(value, str) else None
    if shown is not None:
        assert shown[:30] in message
    assert "accepted" in message
    for text in accepted:
        assert text in message
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- good configs


def test_defaults_come_from_the_address_plan():
    cfg = load_with()
    assert cfg.project == "vtaplab" and cfg.stack == "test"
    assert cfg.scenarios == ("b2",)
    assert cfg.location == "uksouth"
    assert cfg.consumer.address_space == IPv4Network(plan.CONSUMER_VNET)
    assert cfg.consumer.snet_src == IPv4Network(plan.CONSUMER_SUBNETS["snet-src"])
    assert cfg.consumer.snet_ilb == IPv4Network(plan.CONSUMER_SUBNETS["snet-ilb"])
    assert cfg.consumer.snet_pe == IPv4Network(plan.CONSUMER_SUBNETS["snet-pe"])
    assert cfg.consumer.snet_proxy == IPv4Network(plan.CONSUMER_SUBNETS["snet-proxy"])
    assert cfg.consumer.vm_src_ip == IPv4Address(plan.VM_SRC_IP)
    assert cfg.consumer.vm_client_ip == IPv4Address(plan.VM_CLIENT_IP)
    assert cfg.consumer.ilb_ip == IPv4Address(plan.CONSUMER_ILB_IP)
    # Dynamic by default: a static PE address toward a customer PLS is unsupported.
    assert cfg.consumer.pe_ip is None
    assert cfg.tap_existing_source is False
    assert cfg.consumer.proxy_ip == IPv4Address(plan.VM_PROXY_IP)
    assert cfg.consumer.proxy2_ip == IPv4Address(plan.VM_PROXY2_IP)
    assert cfg.provider.address_space == IPv4Network(plan.PROVIDER_VNET)
    assert cfg.provider.snet_pls == IPv4Network(plan.PROVIDER_SUBNETS["snet-pls"])
    assert cfg.provider.snet_col == IPv4Network(plan.PROVIDER_SUBNETS["snet-col"])
    assert cfg.provider.ilb_ip == IPv4Address(plan.PROVIDER_ILB_IP)
    assert cfg.provider.nat_ips == tuple(IPv4Address(ip) for ip in plan.PLS_NAT_IPS)
    assert cfg.provider.col_ip == IPv4Address(plan.VM_COL_IP)
    assert cfg.source_vm_size == cfg.proxy_vm_size == cfg.collector_vm_size == "Standard_B2s"
    assert cfg.admin_username == "azureuser"
    assert cfg.operator_cidr == OPERATOR
    assert cfg.ssh_public_key == ED25519_KEY
    assert cfg.proxy_mode == "netdev"
    assert (cfg.capture_seconds, cfg.traffic_requests, cfg.msp_tenants) == (60, 20, 3)


def test_config_is_frozen():
    cfg = load_with()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.location = "eastus"  # type: ignore[misc]


def test_keys_without_namespace_and_pulumi_strings_are_accepted():
    cfg = from_values(
        {
            "scenarios": '["r1","b1","b2"]',  # how Pulumi hands a YAML list to the program
            "operatorCidr": OPERATOR,
            "sshPublicKey": RSA_2048_KEY,
            "captureSeconds": "120",
            "plsNatIps": '["10.40.2.10", "10.40.2.11", "10.40.2.12"]',
        },
        stack="uksouth",
    )
    assert cfg.scenarios == ("r1", "b1", "b2")
    assert cfg.capture_seconds == 120
    assert [str(ip) for ip in cfg.provider.nat_ips] == ["10.40.2.10", "10.40.2.11", "10.40.2.12"]


def test_comma_string_scenarios_keep_their_order():
    assert load_with(scenarios="b2, r1,b1").scenarios == ("b2", "r1", "b1")


def test_consumer_and_provider_address_spaces_may_overlap():
    # Private Link NATs across: a provider VNet with the customer's own numbers is fine.
    cfg = load_with(providerAddressSpace="10.30.0.0/16", providerSubnetPls="10.30.2.0/24",
                    providerSubnetCol="10.30.3.0/24", providerIlbIp="10.30.2.4",
                    plsNatIps=["10.30.2.5", "10.30.2.6"], collectorIp="10.30.3.4",
                    peIp="10.30.3.4")
    assert cfg.consumer.address_space == cfg.provider.address_space
    assert cfg.consumer.pe_ip == cfg.provider.col_ip  # same numbers, different VNets


def test_pe_ip_is_an_opt_in_and_tap_existing_source_a_boolean():
    assert load_with(peIp="10.30.3.9").consumer.pe_ip == IPv4Address("10.30.3.9")
    assert load_with(tapExistingSource="true").tap_existing_source is True
    with pytest.raises(config.ConfigError, match=r"vtaplab:tapExistingSource.*true or false"):
        load_with(tapExistingSource="yes please")


def test_scenarios_error_says_how_to_set_a_list():
    # `pulumi config set vtaplab:scenarios r1,b1` fails the CLI's type check: say what works.
    with pytest.raises(config.ConfigError) as caught:
        load_with(scenarios=[])
    assert "pulumi config set --path 'vtaplab:scenarios[0]'" in str(caught.value)


def test_scenario_a_runs_in_centralus_with_an_even_nat_count():
    cfg = load_with(scenarios=["a"], location="centralus")
    assert cfg.location == "centralus" and len(cfg.provider.nat_ips) == 2


def test_location_display_names_are_normalised():
    assert load_with(location="UK South").location == "uksouth"


def test_operator_address_without_prefix_becomes_a_host_route():
    assert load_with(operatorCidr="198.51.100.20").operator_cidr == "198.51.100.20/32"


def test_operator_cidr_can_come_from_the_environment():
    values = {k: v for k, v in GOOD.items() if k != "vtaplab:operatorCidr"}
    cfg = from_values(values, stack="b2", environ={config.OPERATOR_CIDR_ENV: "192.0.2.0/28"})
    assert cfg.operator_cidr == "192.0.2.0/28"


def test_ssh_key_falls_back_to_the_home_directory(tmp_path):
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa.pub").write_text(RSA_2048_KEY + "\n")
    values = {k: v for k, v in GOOD.items() if k != "vtaplab:sshPublicKey"}
    assert from_values(values, stack="b2", home=tmp_path).ssh_public_key == RSA_2048_KEY
    # ed25519 wins over rsa when both exist
    (tmp_path / ".ssh" / "id_ed25519.pub").write_text(ED25519_KEY + "\n")
    assert from_values(values, stack="b2", home=tmp_path).ssh_public_key == ED25519_KEY


# ----------------------------------------------------------------------------- stack files


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_every_committed_stack_file_loads(path):
    values = config.read_stack_file(path)
    stack = path.name[len("Pulumi."):-len(".yaml")]
    cfg = from_values({**values, "vtaplab:operatorCidr": OPERATOR,
                       "vtaplab:sshPublicKey": ED25519_KEY}, stack=stack)
    assert cfg.stack == stack
    assert values["azure-native:location"] == cfg.location
    # Nothing personal is committed: the operator's address and key come from elsewhere.
    assert "vtaplab:operatorCidr" not in values and "vtaplab:sshPublicKey" not in values


def test_the_expected_stack_files_exist():
    names = {p.name for p in STACK_FILES}
    assert {"Pulumi.uksouth.yaml", "Pulumi.r1.yaml", "Pulumi.b1.yaml", "Pulumi.b2.yaml",
            "Pulumi.a.yaml"} <= names
    uksouth = config.read_stack_file(ROOT / "Pulumi.uksouth.yaml")
    # the uksouth matrix starts with r1, b1, b2 (later issues append scenarios)
    assert uksouth["vtaplab:scenarios"][:3] == ["r1", "b1", "b2"]
    assert config.read_stack_file(ROOT / "Pulumi.a.yaml")["vtaplab:location"] == "centralus"


def test_stack_values_convert_to_what_pulumi_hands_the_program():
    values = config.read_stack_file(ROOT / "Pulumi.uksouth.yaml")
    as_pulumi = config.as_pulumi_config(values)
    assert as_pulumi["vtaplab:scenarios"] == json.dumps(values["vtaplab:scenarios"])
    assert as_pulumi["azure-native:location"] == "uksouth"
    assert from_values({**as_pulumi, **GOOD, "vtaplab:scenarios": as_pulumi["vtaplab:scenarios"]},
                       stack="uksouth").scenarios == tuple(values["vtaplab:scenarios"])


def test_project_file_declares_every_key_with_the_loaders_default():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "vtaplab"
    assert project["runtime"] == {"name": "python",
                                  "options": {"toolchain": "pip", "virtualenv": "venv"}}
    declared = project["config"]
    assert list(declared) == [k.name for k in config.KEYS]
    for key in config.KEYS:
        entry = declared[key.name]
        # Pulumi's project schema: only these attributes, only these types.
        assert set(entry) <= {"type", "items", "description", "default", "secret"}
        assert entry["type"] in {"string", "integer", "boolean", "array"}
        assert entry["type"] == key.type
        assert entry["description"] == key.description
        if key.type == "array":
            assert entry["items"] == {"type": "string"}
        expected = list(key.default) if isinstance(key.default, tuple) else key.default
        assert entry.get("default") == expected
        # Pulumi rejects a project whose default doesn't match the declared type.
        python_type = {"string": str, "integer": int, "boolean": bool,
                       "array": list}[entry["type"]]
        if "default" in entry:
            assert type(entry["default"]) is python_type, key.name


# ----------------------------------------------------------------------------- bad configs


def test_unknown_scenario():
    rejects("scenarios", ["b2", "b9"], "'b9'", *facts.SCENARIOS)


def test_no_scenario():
    rejects("scenarios", [], "r1, b1, b2")


def test_repeated_scenario():
    rejects("scenarios", "b2,b2", "each scenario at most once")


@pytest.mark.parametrize("region", ["westeurope", "northeurope"])
def test_region_without_vtap_preview(region):
    message = rejects("location", region, "uksouth", "centralus")
    assert "vTAP preview" in message


def test_scenario_a_outside_direct_connect_regions():
    # uksouth has vTAP but not PLS Direct Connect; eastus2 has Direct Connect but not vTAP
    message = rejects("location", "uksouth", "centralus", scenarios=["a"])
    assert "'a'" in message and "PLS Direct Connect" in message
    rejects("location", "eastus2", "centralus", scenarios=["a"])


def test_location_differs_from_the_provider_location():
    values = {**GOOD, "vtaplab:location": "uksouth", "azure-native:location": "centralus"}
    with pytest.raises(ConfigError, match=r"vtaplab:location: 'uksouth' differs from "
                                          r"azure-native:location \('centralus'\)"):
        from_values(values, stack="b2")


# One bad value each: (test id, key, value, texts the one-line error must hold). The first text
# is what is accepted; a second names the other input it clashes with or why it is refused.
REJECTED_VALUES: list[tuple[str, str, object, tuple[str, ...]]] = [
    ("malformed-location", "location", "uk-south!", ("uksouth",)),
    *((f"malformed-cidr-{v}", "consumerAddressSpace", v, ("CIDR",))
      for v in ["10.30.0.0", "10.30.0.0/33", "10.300.0.0/16", "banana/16"]),
    ("cidr-with-host-bits", "consumerSubnetSrc", "10.30.1.7/24", ("10.30.1.0/24",)),
    ("ipv6-cidr", "providerAddressSpace", "fd00::/48", ("IPv4",)),
    ("public-address-space", "consumerAddressSpace", "8.8.0.0/16", ("10.0.0.0/8",)),
    ("overlapping-subnets-in-one-vnet", "consumerSubnetPe", "10.30.1.128/25",
     ("10.30.1.0/24", "vtaplab:consumerSubnetSrc")),
    ("overlapping-provider-subnets", "providerSubnetCol", "10.40.2.0/23", ("10.40.2.0/24",)),
    ("subnet-outside-its-vnet", "consumerSubnetProxy", "10.31.4.0/24",
     ("10.30.0.0/16", "outside its VNet")),
    ("provider-subnet-outside-its-vnet", "providerSubnetPls", "10.30.2.0/24", ("10.40.0.0/16",)),
    ("subnet-smaller-than-azure-allows", "consumerSubnetSrc", "10.30.1.0/30", ("/29",)),
    ("host-outside-its-subnet", "peIp", "10.30.1.9",
     ("10.30.3.4 to 10.30.3.254", "outside its subnet")),
    *((f"host-on-an-address-azure-reserves-{v}", "peIp", v, ("10.30.3.4 to 10.30.3.254",))
      for v in ["10.30.3.0", "10.30.3.1", "10.30.3.2", "10.30.3.3", "10.30.3.255"]),
    ("host-that-is-not-an-address", "collectorIp", "vm-col", ("10.40.3.4",)),
    ("nat-ip-outside-the-pls-subnet", "plsNatIps", "10.40.3.9", ("10.40.2.4 to 10.40.2.254",)),
    ("duplicated-host-ips", "proxy2Ip", plan.VM_PROXY_IP, ("no other host", "vtaplab:proxyIp")),
    ("nat-ip-duplicating-the-ilb-frontend", "plsNatIps", [plan.PROVIDER_ILB_IP, "10.40.2.6"],
     ("no other host",)),
]


@pytest.mark.parametrize(("key", "value", "texts"), [row[1:] for row in REJECTED_VALUES],
                         ids=[row[0] for row in REJECTED_VALUES])
def test_bad_value_rejected_in_one_line(key: str, value: object, texts: tuple[str, ...]) -> None:
    rejects(key, value, *texts)


def test_direct_connect_needs_an_even_nat_count():
    rejects("plsNatIps", ["10.40.2.5", "10.40.2.6", "10.40.2.7"], "2, 4, 6, 8",
            scenarios=["a"], location="centralus")


@pytest.mark.parametrize("value", ["0.0.0.0/0", "::/0"])
def test_operator_cidr_open_to_the_world(value):
    message = rejects("operatorCidr", value, "/8 or longer")
    assert "whole internet" in message


def test_operator_cidr_too_wide():
    rejects("operatorCidr", "64.0.0.0/4", "/8 or longer")


def test_operator_cidr_ipv6():
    rejects("operatorCidr", "2001:db8::/64", "IPv4")


@pytest.mark.parametrize("value", ["*", "Internet", "my-laptop"])
def test_operator_cidr_malformed(value):
    rejects("operatorCidr", value, "203.0.113.7/32")


def test_operator_cidr_with_host_bits():
    rejects("operatorCidr", "203.0.113.7/24", "203.0.113.0/24")


def test_operator_cidr_unset_says_how_to_set_it():
    values = {k: v for k, v in GOOD.items() if k != "vtaplab:operatorCidr"}
    with pytest.raises(ConfigError) as err:
        from_values(values, stack="b2", environ={})
    message = str(err.value)
    assert message.startswith("vtaplab:operatorCidr is not set")
    assert "pulumi config set vtaplab:operatorCidr" in message
    assert config.OPERATOR_CIDR_ENV in message


def test_v6_size_for_the_tapped_vm():
    rejects("sourceVmSize", "Standard_D2s_v6", "non-v6", "Standard_B2s")


def test_v6_size_is_fine_where_nothing_is_tapped():
    assert load_with(proxyVmSize="Standard_D2s_v6").proxy_vm_size == "Standard_D2s_v6"


def test_malformed_vm_size():
    rejects("collectorVmSize", "B2s", "Standard_B2s")


def test_missing_ssh_key_names_the_paths_tried(tmp_path):
    values = {k: v for k, v in GOOD.items() if k != "vtaplab:sshPublicKey"}
    with pytest.raises(ConfigError) as err:
        from_values(values, stack="b2", home=tmp_path)
    message = str(err.value)
    assert message.startswith("vtaplab:sshPublicKey is not set")
    assert "~/.ssh/id_ed25519.pub" in message and "~/.ssh/id_rsa.pub" in message
    assert "accepted" in message


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("AAAAC3NzaC1lZDI1NTE5", "not an OpenSSH public key"),
        ("not a key", "key type 'not'"),
        ("ssh-dss AAAAB3NzaC1kc3M= old", "key type 'ssh-dss'"),
        ("ecdsa-sha2-nistp256 AAAA x", "key type 'ecdsa-sha2-nistp256'"),
        ("ssh-ed25519 !!!notbase64", "not base64"),
        ("ssh-ed25519 " + _ssh_blob(b"ssh-rsa", b"x"), "doesn't match its type"),
        ("ssh-ed25519 " + _ssh_blob(b"ssh-ed25519", b"short"), "malformed Ed25519"),
        (RSA_1024_KEY, "1024-bit RSA key"),
        (ED25519_KEY + "\n" + RSA_2048_KEY, "more than one line"),
    ],
)
def test_bad_ssh_key(value, problem):
    rejects("sshPublicKey", value, "ssh-ed25519", problem)


@pytest.mark.parametrize("value", [
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n-----END OPENSSH PRIVATE KEY-----",
])
def test_a_private_key_as_public_key_is_refused_without_showing_it(value):
    with pytest.raises(ConfigError) as err:
        load_with(sshPublicKey=value)
    message = str(err.value)
    assert "vtaplab:sshPublicKey" in message and "PRIVATE key (value not shown" in message
    assert "BEGIN" not in message and "c2Vj" not in message and "\n" not in message


def test_bad_proxy_mode():
    rejects("proxyMode", "dnat", "netdev or stateless or conntrack")


def test_proxy_probe_defaults_to_http_and_takes_tcp():
    assert load_with().proxy_probe == config.PROXY_PROBE_HTTP == "http"
    assert load_with(proxyProbe="tcp").proxy_probe == "tcp"
    assert load_with(scenarios=["b3"], proxyProbe="http").proxy_probe == "http"
    # empty is the default, as for every key with a non-empty default
    assert load_with(proxyProbe="").proxy_probe == "http"


@pytest.mark.parametrize("value", ["udp", "TCP", "tcp/22", "https", "22"])
def test_bad_proxy_probe(value):
    message = rejects("proxyProbe", value, "http or tcp")
    assert "is not a proxy probe" in message


def test_proxy_probe_that_is_no_string_names_the_key():
    rejects("proxyProbe", ["tcp"], "a single string value")


@pytest.mark.parametrize(("key", "value"), [
    ("captureSeconds", 0), ("captureSeconds", -5), ("captureSeconds", 86400),
    ("captureSeconds", "sixty"), ("captureSeconds", True), ("trafficRequests", 0),
    ("trafficRequests", 10**6), ("mspTenants", 0), ("mspTenants", 11), ("mspTenants", 2.5),
])
def test_absurd_numbers(key, value):
    message = rejects(key, value, "a whole number from")
    assert str(value).lower() in message.lower()


def test_too_many_vtaps_for_the_subscription():
    rejects("scenarios", ["b2", "msp"], "at most 10 vTAPs", mspTenants=10)


def test_reserved_admin_username():
    rejects("adminUsername", "admin", "not a reserved name")


def test_malformed_admin_username():
    rejects("adminUsername", "Azure User", "1-32 characters")


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"vtaplab:operatorCdir: unknown config key; "
                                          r"did you mean vtaplab:operatorCidr\?"):
        load_with(operatorCdir=OPERATOR)


# ----------------------------------------------------------------------------- load()


@pytest.fixture
def pulumi_config():
    from pulumi.runtime import config as runtime_config

    def set_values(values: dict[str, object], secret: tuple[str, ...] = ()) -> None:
        runtime_config.set_all_config(config.as_pulumi_config(values), list(secret))

    yield set_values
    runtime_config.set_all_config({})


def test_load_reads_the_stack_config_pulumi_hands_the_program(pulumi_config, tmp_path):
    pulumi_config({**config.read_stack_file(ROOT / "Pulumi.uksouth.yaml"),
                   "vtaplab:operatorCidr": OPERATOR, "vtaplab:mspTenants": 3})
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519.pub").write_text(ED25519_KEY + "\n")
    (tmp_path / ".ssh" / "id_ed25519").write_text("not read by load\n")
    cfg = config.load(stack="uksouth", home=tmp_path, environ={})
    assert cfg.scenarios[:3] == ("r1", "b1", "b2")
    assert cfg.msp_tenants == 3
    assert cfg.ssh_public_key == ED25519_KEY
    assert cfg.ssh_private_key_file == str(tmp_path / ".ssh" / "id_ed25519")
    assert cfg.run_id == "1"


# ----------------------------------------------------------------------------- run secrets


def test_load_needs_no_secret_for_host_keys(pulumi_config, tmp_path):
    # pulumi-tls generates each VM's host key: nothing to set before the first `pulumi up`.
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519").write_text("not read by load\n")
    pulumi_config(GOOD)
    cfg = config.load(stack="b2", environ={}, home=tmp_path)
    assert cfg.scenarios == ("b2",)
    assert "hostKeySeed" not in {key.name for key in config.KEYS}
    assert config.SECRET_KEYS == ("sshPrivateKey",)


def test_an_old_host_key_seed_says_to_remove_it_without_echoing_it():
    seed = "0123456789abcdef" * 4
    with pytest.raises(ConfigError) as caught:
        from_values({**GOOD, "vtaplab:hostKeySeed": seed}, stack="b2")
    message = str(caught.value)
    assert "vtaplab:hostKeySeed is no longer used" in message
    assert "pulumi config rm vtaplab:hostKeySeed" in message
    assert seed not in message and "\n" not in message


def test_traffic_stack_needs_a_private_key(pulumi_config, tmp_path):
    pulumi_config(GOOD)
    with pytest.raises(ConfigError, match="sshPrivateKeyFile is not set") as caught:
        config.load(stack="b2", environ={}, home=tmp_path)
    assert "~/.ssh/id_ed25519" in str(caught.value)
    # r1 makes no SSH step: no private key needed
    pulumi_config({**GOOD, "vtaplab:scenarios": ["r1"]})
    assert config.load(stack="r1", environ={}, home=tmp_path).ssh_private_key_file == ""


def test_private_key_text_must_be_secret_and_a_key(pulumi_config, tmp_path):
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
    pulumi_config({**GOOD, "vtaplab:sshPrivateKey": pem}, secret=("vtaplab:sshPrivateKey",))
    cfg = config.load(stack="b2", environ={}, home=tmp_path)
    assert cfg.ssh_private_key == pem + "\n" and "PRIVATE" not in repr(cfg)
    pulumi_config({**GOOD, "vtaplab:sshPrivateKey": pem})
    with pytest.raises(ConfigError, match="sshPrivateKey is stored in clear"):
        config.load(stack="b2", environ={}, home=tmp_path)
    with pytest.raises(ConfigError, match="not a private key") as caught:
        from_values({**GOOD, "vtaplab:sshPrivateKey": "hunter2-password"}, stack="b2")
    assert "hunter2" not in str(caught.value)


def test_private_key_file_missing_is_one_line(pulumi_config, tmp_path):
    pulumi_config({**GOOD, "vtaplab:sshPrivateKeyFile": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="is not a readable file"):
        config.load(stack="b2", environ={}, home=tmp_path)
    assert from_values({**GOOD, "vtaplab:sshPrivateKeyFile": "~/k"}, stack="b2",
                       home=tmp_path).ssh_private_key_file == str(tmp_path / "k")


@pytest.mark.parametrize("run_id", ["", "a b", "x" * 33, "1;rm"])
def test_bad_run_id(run_id):
    if run_id == "":
        assert from_values({**GOOD, "vtaplab:runId": ""}, stack="b2").run_id == "1"
        return
    rejects("runId", run_id, "1-32 characters")


def test_load_catches_a_misspelt_key(pulumi_config):
    pulumi_config({**GOOD, "vtaplab:scenario": ["b2"]})
    with pytest.raises(ConfigError, match="vtaplab:scenario: unknown config key"):
        config.load(stack="b2", environ={})


def test_load_checks_the_provider_location(pulumi_config):
    pulumi_config({**GOOD, "azure-native:location": "centralus"})
    with pytest.raises(ConfigError, match="differs from azure-native:location"):
        config.load(stack="b2", environ={})


def test_a_stack_that_sets_only_the_provider_location_is_told_about_both_keys():
    # Pulumi.yaml defaults vtaplab:location to uksouth: the mismatch is the real problem.
    values = {**GOOD, "vtaplab:scenarios": ["a"], "azure-native:location": "centralus"}
    with pytest.raises(ConfigError, match="differs from azure-native:location"):
        from_values(values, stack="a2")


def test_a_new_uksouth_stack_is_a_three_line_file(tmp_path):
    path = tmp_path / "Pulumi.b3.yaml"
    path.write_text("config:\n  azure-native:location: uksouth\n  vtaplab:scenarios: [b3]\n")
    assert len(path.read_text().splitlines()) == 3
    cfg = from_values({**config.read_stack_file(path), "vtaplab:operatorCidr": OPERATOR,
                       "vtaplab:sshPublicKey": ED25519_KEY}, stack="b3")
    assert (cfg.scenarios, cfg.location) == (("b3",), "uksouth")
