"""``python -m vtaplab graph``: the command line, the mermaid picture and the mocks' honesty."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from vtaplab import PROJECT_ROOT
from vtaplab.preflight import diagrams, graph, mocks

ROOT = PROJECT_ROOT


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vtaplab", "graph", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def test_json_lists_every_registered_resource_with_its_inputs(graph_of):
    child = run_cli("b2", "--json")
    assert child.returncode == 0, child.stderr
    resources = json.loads(child.stdout)
    assert resources == graph_of("b2")
    # "dependencies": what each waits for; "secrets": input paths sent as secrets (if any);
    # "options": the replace/ignore/timeout options a real engine acts on (if any)
    assert all({"urn", "type", "name", "parent", "inputs", "dependencies"} <= set(r)
               <= {"urn", "type", "name", "parent", "inputs", "dependencies", "secrets",
                   "options"}
               for r in resources)
    urns = {r["urn"] for r in resources}
    assert all(set(r["dependencies"]) <= urns for r in resources)
    vm = next(r for r in resources if r["type"] == "azure-native:compute:VirtualMachine")
    # the engine marks the whole osProfile secret when customData inside it is one
    assert any("osProfile.customData".startswith(p) for p in vm["secrets"])
    assert any(d.endswith("NetworkInterface::b2-src-nic") for d in
               next(r for r in resources if r["name"] == "b2-src-vm")["dependencies"])
    tap = next(r for r in resources if r["type"] == "azure-native:network:VirtualNetworkTap")
    # wire names, as the program sent them to the engine
    assert "destinationNetworkInterfaceIPConfiguration" in tap["inputs"]


def test_mermaid_draws_vnets_vms_the_private_link_chain_and_the_tap():
    child = run_cli("b2", "--mermaid")
    assert child.returncode == 0, child.stderr
    text = child.stdout
    assert text.startswith("flowchart LR\n")
    assert 'subgraph vnet_b2_vnet["VNet b2-vnet 10.30.0.0/16"]' in text
    assert 'subgraph vnet_provider_vnet["VNet provider-vnet 10.40.0.0/16"]' in text
    for edge in (
        "pe_b2_pe -->|Private Link| pls_provider_pls",
        "pls_provider_pls --> lb_provider_ilb",
        "lb_provider_ilb -->|backend pool| vm_provider_col",
        "vm_b2_src -. vTAP b2-tap-vtap UDP/4789 .-> vm_b2_proxy",
        "vm_b2_proxy -->|UDP/4789 rewritten to the PE| pe_b2_pe",
    ):
        assert edge in text
    # every VM sits inside its VNet's subgraph
    b2_block = text.split('subgraph vnet_b2_vnet')[1].split("end")[0]
    for vm in ("vm_b2_src", "vm_b2_client", "vm_b2_proxy", "pe_b2_pe"):
        assert vm in b2_block


def test_mermaid_of_direct_connect_goes_from_pls_to_the_collector(graph_of):
    text = diagrams.to_mermaid(graph_of("a"))
    assert "pls_provider_pls -->|Direct Connect 10.40.3.4| vm_provider_col" in text
    assert "lb_provider" not in text


def test_unknown_stack_is_one_line_naming_the_accepted_ones():
    child = run_cli("nosuchstack")
    assert child.returncode == 2
    lines = child.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "'nosuchstack'" in lines[0]
    for stack in mocks.stack_names(ROOT):
        assert stack in lines[0]


def test_bad_stack_config_is_one_line_from_the_program(tmp_path):
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "Pulumi.bad.yaml").write_text("config:\n  vtaplab:scenarios: [zz]\n")
    with pytest.raises(mocks.GraphError) as err:
        mocks.build_graph("bad", root=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "vtaplab:scenarios" in message and "'zz'" in message and "accepted" in message


def test_mock_config_supplies_test_key_and_cidr_only_when_absent():
    values = mocks.mock_config("b2", ROOT)
    assert values["vtaplab:sshPublicKey"] == mocks.TEST_SSH_PUBLIC_KEY
    assert values["vtaplab:operatorCidr"] == mocks.TEST_OPERATOR_CIDR
    assert json.loads(values["vtaplab:scenarios"]) == ["b2"]


def test_mocks_refuse_invokes_and_types_they_do_not_know():
    azure = mocks.AzureMocks()
    with pytest.raises(mocks.GraphError, match="getVirtualNetwork"):
        azure.call(SimpleNamespace(token="azure-native:network:getVirtualNetwork", args={}))
    with pytest.raises(mocks.GraphError, match="NatGateway"):
        azure.new_resource(SimpleNamespace(typ="azure-native:network:NatGateway", name="n",
                                           inputs={}, custom=True))
    # not ARM's (a dynamic provider's resource): echoed, not refused
    assert azure.new_resource(SimpleNamespace(typ="pulumi-python:dynamic:Resource", name="d",
                                              inputs={"k": "v"}, custom=True)) == (
        "d-id", {"k": "v"})
    with pytest.raises(mocks.GraphError, match="no NIC"):
        azure.call(SimpleNamespace(token="azure-native:network:getNetworkInterface",
                                   args={"resourceGroupName": "rg",
                                         "networkInterfaceName": "missing"}))


def test_mocks_answer_like_arm():
    azure = mocks.AzureMocks()
    nic_id, nic = azure.new_resource(SimpleNamespace(
        typ="azure-native:network:NetworkInterface", name="x-nic", custom=True,
        inputs={"resourceGroupName": "rg", "networkInterfaceName": "vm-nic",
                "ipConfigurations": [{"name": "ipconfig1", "privateIPAddress": "10.0.0.4"}]}))
    assert nic_id == ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg"
                      "/providers/Microsoft.Network/networkInterfaces/vm-nic")
    assert nic["ipConfigurations"][0]["id"] == nic_id + "/ipConfigurations/ipconfig1"
    looked_up = azure.call(SimpleNamespace(
        token="azure-native:network:getNetworkInterface",
        args={"resourceGroupName": "rg", "networkInterfaceName": "vm-nic"}))
    assert looked_up["ipConfigurations"][0]["privateIPAddress"] == "10.0.0.4"
    subnet_id, _ = azure.new_resource(SimpleNamespace(
        typ="azure-native:network:Subnet", name="s", custom=True,
        inputs={"resourceGroupName": "rg", "virtualNetworkName": "v", "subnetName": "snet-a"}))
    assert subnet_id.endswith("/virtualNetworks/v/subnets/snet-a")


# --- host keys: pulumi-tls, one per VM --------------------------------------------------------
def test_every_vm_has_its_own_tls_host_key_in_its_secret_user_data(committed_stack, graph_of):
    import base64

    from vtaplab.azure.ssh import host_key_for

    resources = graph_of(committed_stack)
    vms = [r for r in resources if r["type"] == "azure-native:compute:VirtualMachine"]
    keys = {r["name"]: r for r in resources if r["type"] == mocks.TLS_PRIVATE_KEY}
    # b4's scale set: one key for the tier (every instance boots from the same user data).
    scale_sets = [r for r in resources
                  if r["type"] == "azure-native:compute:VirtualMachineScaleSet"]
    assert vms and len(keys) == len(vms) + len(scale_sets)
    for scale_set in scale_sets:
        tier = scale_set["parent"].rsplit("::", 1)[1]
        key = keys[f"{tier}{mocks.HOST_KEY_SUFFIX}"]
        assert key["parent"] == scale_set["parent"] and key["inputs"] == {"algorithm": "ED25519"}
        user_data = base64.b64decode(scale_set["inputs"]["virtualMachineProfile"]["osProfile"]
                                     ["customData"]).decode()
        pair = host_key_for(mocks.TEST_HOST_KEY_SEED, tier)
        assert f"  ed25519_public: {pair.public_line}\n" in user_data
    for vm in vms:
        name = vm["name"].removesuffix("-vm")
        key = keys[f"{name}{mocks.HOST_KEY_SUFFIX}"]
        # a child of the VM's own LinuxVm, an Ed25519 key, nothing else asked of the provider
        assert key["parent"] == vm["parent"] and key["parent"].endswith(f"LinuxVm::{name}")
        assert key["inputs"] == {"algorithm": "ED25519"}
        assert any("osProfile.customData".startswith(p) for p in vm["secrets"])
        user_data = base64.b64decode(vm["inputs"]["osProfile"]["customData"]).decode()
        pair = host_key_for(mocks.TEST_HOST_KEY_SEED, name)  # what the mocks' tls answers
        assert f"  ed25519_public: {pair.public_line}\n" in user_data
        assert user_data.count("BEGIN OPENSSH PRIVATE KEY") == 1


def test_mock_tls_keys_are_fixed_per_name_and_ed25519_only():
    first = mocks.mock_private_key("b2-src-hostkey", {"algorithm": "ED25519"})
    assert first == mocks.mock_private_key("b2-src-hostkey", {"algorithm": "ED25519"})
    assert first != mocks.mock_private_key("b2-proxy-hostkey", {"algorithm": "ED25519"})
    assert first["publicKeyOpenssh"].startswith("ssh-ed25519 AAAA")
    assert first["privateKeyOpenssh"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    with pytest.raises(mocks.GraphError, match="ED25519"):
        mocks.mock_private_key("b2-src-hostkey", {"algorithm": "RSA"})


def test_host_key_outputs_are_the_keys_the_vms_boot_with(run_of):
    from vtaplab.azure.ssh import host_key_for

    out = run_of("b2").outputs["scenarios"]["b2"]["host_keys"]
    expected = {"collector": "provider-col", "vm_src": "b2-src", "vm_client": "b2-client",
                "proxy": "b2-proxy"}
    assert out == {role: host_key_for(mocks.TEST_HOST_KEY_SEED, vm).public_line
                   for role, vm in expected.items()}


def test_graph_without_a_stack_is_one_line(capsys):

    assert graph.main([]) == 2
    assert "name a STACK" in capsys.readouterr().err


def test_update_snapshots_flag_rewrites_through_the_snapshot_module(monkeypatch):
    from vtaplab.preflight import snapshots

    calls = []
    monkeypatch.setattr(snapshots, "main", lambda argv: calls.append(argv) or 0)
    assert graph.main(["--update-snapshots"]) == 0
    assert calls == [["--update"]]
