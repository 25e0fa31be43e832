"""b4's proxy tier as the preflight tools see it: the scale set the program registers, the
rules that read it (forwarding, health signal, probe protocol, password), its cost and its
place in the diagram; and the HTTP probe b3 and b4 share."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from vtaplab import facts
from vtaplab.preflight import cost, diagrams, mocks, rules
from vtaplab.program import config

T_VMSS = "azure-native:compute:VirtualMachineScaleSet"
T_LB = "azure-native:network:LoadBalancer"
T_NSG = "azure-native:network:NetworkSecurityGroup"


def one(g: list[dict], typ: str, name: str | None = None) -> dict[str, Any]:
    found = [e for e in g if e["type"] == typ and (name is None or e["name"] == name)]
    assert len(found) == 1, [e["name"] for e in found]
    return found[0]


def findings(g: list[dict]) -> list[str]:
    return [f.rule for f in rules.run_rules(g)]


@pytest.fixture
def b4(graph_of) -> list[dict]:
    return copy.deepcopy(graph_of("b4"))


def test_b4_registers_a_flexible_zonal_scale_set_of_proxy_count_instances(b4, lab_config_of):
    cfg = lab_config_of("b4")
    vmss = one(b4, T_VMSS)["inputs"]
    assert cfg.proxy_count == 2
    assert vmss["orchestrationMode"] == "Flexible"
    assert vmss["sku"] == {"name": cfg.proxy_vm_size, "tier": "Standard",
                           "capacity": cfg.proxy_count}
    assert vmss["zones"] == list(facts.AVAILABILITY_ZONES)  # uksouth has zones
    assert vmss["platformFaultDomainCount"] == facts.VMSS_FLEX_ZONAL_FAULT_DOMAINS
    policy = vmss["upgradePolicy"]
    assert policy["mode"] == "Rolling"
    assert policy["automaticOSUpgradePolicy"]["enableAutomaticOSUpgrade"] is True
    profile = vmss["virtualMachineProfile"]
    assert profile["storageProfile"]["imageReference"] == facts.AUTO_OS_UPGRADE_IMAGE
    network = profile["networkProfile"]
    assert network["networkApiVersion"] == facts.VMSS_FLEX_NETWORK_API_VERSION
    nic = network["networkInterfaceConfigurations"][0]
    assert nic["enableIPForwarding"] is True
    pools = nic["ipConfigurations"][0]["loadBalancerBackendAddressPools"]
    assert [p["id"].rsplit("/loadBalancers/", 1)[1] for p in pools] == [
        "b4-ilb/backendAddressPools/be"]
    [extension] = profile["extensionProfile"]["extensions"]
    assert (extension["publisher"], extension["type"], extension["typeHandlerVersion"]) == \
        facts.APP_HEALTH_EXTENSION
    assert extension["settings"] == {"protocol": "http", "port": facts.HEALTH_PORT,
                                     "requestPath": facts.HEALTH_PATH}


def test_b4_instances_boot_with_the_rewrite_and_the_health_endpoint_as_a_secret(b4):
    entry = one(b4, T_VMSS)
    # Sent as a secret (Pulumi marks the whole top-level input that holds it).
    path = "virtualMachineProfile.osProfile.customData"
    assert any(path == s or path.startswith(s + ".") for s in entry.get("secrets", []))
    text = base64.b64decode(entry["inputs"]["virtualMachineProfile"]["osProfile"]
                            ["customData"]).decode()
    assert "vtap-proxy.sh apply --mode netdev --target 10.30.3.4" in text
    assert (f"/usr/local/sbin/vtap-health.py --target 10.30.3.4 --port {facts.HEALTH_PORT}"
            in text)
    assert "ssh_keys:" in text  # the tier's pinned host key


@pytest.mark.parametrize("stack", ["b3", "b4"])
def test_the_proxies_lb_probes_the_health_endpoint_over_http(stack, graph_of):
    lb = one(graph_of(stack), T_LB, f"{stack}-ilb")["inputs"]
    [probe] = lb["probes"]
    assert (probe["protocol"], probe["port"], probe["requestPath"]) == (
        "Http", facts.HEALTH_PORT, facts.HEALTH_PATH)
    [rule] = lb["loadBalancingRules"]
    assert (rule["protocol"], rule["frontendPort"]) == ("All", 0)
    assert rule["probe"]["id"].endswith(f"/probes/{probe['name']}")


@pytest.mark.parametrize(("stack", "nsgs"), [("b3", ["b3-proxy1-nsg", "b3-proxy2-nsg"]),
                                             ("b4", ["b4-tier-nsg"])])
def test_only_the_probe_source_reaches_the_health_port(stack, nsgs, graph_of):
    g = graph_of(stack)
    for name in nsgs:
        health = [r for r in one(g, T_NSG, name)["inputs"]["securityRules"]
                  if r["destinationPortRange"] == str(facts.HEALTH_PORT)]
        ordered = sorted(health, key=lambda r: r["priority"])
        assert [(r["access"], r["sourceAddressPrefix"]) for r in ordered] == [
            ("Allow", facts.HEALTH_PROBE_SOURCE), ("Deny", "VirtualNetwork")], name


def test_a_proxy_the_vtap_points_at_directly_has_no_health_port(graph_of):
    rules_ = one(graph_of("b2"), T_NSG, "b2-proxy-nsg")["inputs"]["securityRules"]
    assert str(facts.HEALTH_PORT) not in {r["destinationPortRange"] for r in rules_}


def test_b4_is_clean_and_the_rules_see_inside_the_scale_set(b4):
    assert findings(b4) == []
    nic = one(b4, T_VMSS)["inputs"]["virtualMachineProfile"]["networkProfile"][
        "networkInterfaceConfigurations"][0]
    nic["enableIPForwarding"] = False
    assert findings(b4) == ["VTAP020"]
    nic["enableIPForwarding"] = True
    os_profile = one(b4, T_VMSS)["inputs"]["virtualMachineProfile"]["osProfile"]
    os_profile["linuxConfiguration"]["disablePasswordAuthentication"] = False
    assert findings(b4) == ["VTAP041"]


def test_a_flexible_scale_set_upgraded_without_the_health_extension_is_refused(b4):
    vmss = one(b4, T_VMSS)
    profile = vmss["inputs"]["virtualMachineProfile"]
    profile["extensionProfile"]["extensions"] = []
    found = rules.run_rules(b4)
    assert [f.rule for f in found] == ["VTAP025"]
    assert "Flexible" in found[0].message and found[0].severity == rules.MANDATORY
    profile["storageProfile"]["imageReference"]["version"] = "22.04.202611010"
    assert findings(b4) == ["VTAP025", "VTAP025"]


def test_a_tcp_probe_on_the_vtaps_lb_is_reported(b4):
    lb = one(b4, T_LB, "b4-ilb")["inputs"]
    lb["probes"][0].update(protocol="Tcp", port=22)
    lb["probes"][0].pop("requestPath")
    found = rules.run_rules(b4)
    assert [f.rule for f in found] == ["VTAP024"]
    assert "rewrite failed" in found[0].message


def test_scale_set_instances_cost_like_vms_of_their_size(b4, graph_of):
    vmss = one(b4, T_VMSS)["inputs"]
    per_instance = (cost.VM_SIZES[vmss["sku"]["name"]] + cost.PRICES["disk-standard-hdd-32"]
                    + cost.PRICES["public-ip-standard"])
    tier = [i for i in cost.estimate(b4, stack="b4").items if i.type == T_VMSS]
    assert len([i for i in tier if i.what.startswith("VM ")]) == vmss["sku"]["capacity"]
    assert sum(i.hourly for i in tier) == pytest.approx(per_instance * vmss["sku"]["capacity"])
    vmss["sku"]["capacity"] = 5
    tier5 = [i for i in cost.estimate(b4, stack="b4").items if i.type == T_VMSS]
    assert sum(i.hourly for i in tier5) == pytest.approx(per_instance * 5)
    # b4 costs what b3 costs: two proxies either way
    assert cost.estimate(graph_of("b4"), stack="b4").hourly == pytest.approx(
        cost.estimate(graph_of("b3"), stack="b3").hourly)


def test_the_diagram_shows_the_scale_set_its_pool_and_its_rewrite(b4):
    text = diagrams.to_mermaid(b4)
    assert 'vmss_b4_tier_vmss[["VM scale set b4-tier-vmss<br/>2 x Standard_B2s, zones 1,2,3' \
        in text
    assert "lb_b4_ilb -->|backend pool| vmss_b4_tier_vmss" in text
    assert "vmss_b4_tier_vmss -->|UDP/4789 rewritten to the PE| pe_b4_pe" in text
    assert "vm_b4_src -. vTAP b4-tap-vtap UDP/4789 .-> lb_b4_ilb" in text


@pytest.mark.parametrize("value", [0, 11, "two", True])
def test_proxy_count_out_of_bounds_is_one_line(value):
    values = {"scenarios": ["b4"], "operatorCidr": "203.0.113.7/32",
              "sshPublicKey": mocks.TEST_SSH_PUBLIC_KEY, "proxyCount": value}
    with pytest.raises(config.ConfigError) as info:
        config.from_values(values, stack="b4")
    message = str(info.value)
    assert message.startswith("vtaplab:proxyCount: ") and "\n" not in message
    assert "accepted: a whole number from 1 to 10" in message


def test_proxy_count_is_read():
    values = {"scenarios": ["b4"], "operatorCidr": "203.0.113.7/32",
              "sshPublicKey": mocks.TEST_SSH_PUBLIC_KEY, "proxyCount": "3"}
    assert config.from_values(values, stack="b4").proxy_count == 3
    assert config.KEYS_BY_NAME["proxyCount"].default == 2
    assert (config.PROXY_COUNT_RANGE, facts.PROXY_COUNT_RANGE) == ((1, 10), (1, 10))


def test_every_tier_fact_has_a_source():
    ids = [f.id for f in facts.PROXY_TIER_FACTS]
    assert len(ids) == len(set(ids))
    for fact in facts.PROXY_TIER_FACTS:
        assert fact.statement and fact.source, fact.id
        assert fact.source.startswith("assumption:") == fact.assumption, fact.id


def test_offline_matrix_runs_b4_and_a_pending_scenario_is_said_so(monkeypatch):
    from vtaplab import PROJECT_ROOT, matrix

    # The twin builds b4's scale set: the offline matrix runs it, with its two variants.
    assert "b4" in matrix._offline_scenarios(None, PROJECT_ROOT)
    assert matrix._offline_scenarios("b4", PROJECT_ROOT) == ["b4"]
    assert matrix.VARIANTS["b4"] == ("no-proxy-rule", "rolling-upgrade")
    # A scenario the twin doesn't build yet is left out, and asking for it is one line.
    monkeypatch.setattr(matrix, "OFFLINE_PENDING", ("b4",))
    assert "b4" not in matrix._offline_scenarios(None, PROJECT_ROOT)
    with pytest.raises(ValueError, match=r"'b4' needs b4, which the emulator doesn't build "
                                         r"yet; accepted: r1, b1"):
        matrix._offline_scenarios("b4", PROJECT_ROOT)
