"""The run on Azure as the program declares it, under mocks: the command chain, its inputs,
no secret in clear, and the rejected attempts of r1/b1.

The mocks record each registration's dependencies (``depends_on`` plus the resources its
inputs came from: ``RegisterResourceRequest.dependencies``/``propertyDependencies``) and the
input paths sent as secrets; nothing here runs a command.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.evidence_run import parse_summary
from vtaplab import PROJECT_ROOT, facts
from vtaplab.azure.ssh import host_key_for
from vtaplab.preflight import mocks
from vtaplab.program import budget

ROOT = PROJECT_ROOT
TRAFFIC_STACKS = [s for s in ("b2", "a", "b3") if (ROOT / f"Pulumi.{s}.yaml").is_file()]
MSP_STACKS = [s for s in ("msp",) if (ROOT / f"Pulumi.{s}.yaml").is_file()]
PROXIES = {"b2": ["b2-proxy"], "a": ["a-proxy"], "b3": ["b3-proxy1", "b3-proxy2"]}
LOCAL, REMOTE = "command:local:Command", "command:remote:Command"


class Graph:
    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.resources = resources
        self.by_urn = {r["urn"]: r for r in resources}
        self.by_name = {r["name"]: r for r in resources if r["type"] != "vtaplab:index:LinuxVm"}

    def deps(self, name: str) -> set[str]:
        return {self.by_urn[u]["name"] for u in self.by_name[name]["dependencies"]}

    def reaches(self, start: str, goal: str) -> bool:
        """``start`` waits, directly or through others, for ``goal``."""
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name == goal:
                return True
            if name not in seen:
                seen.add(name)
                todo.extend(self.deps(name))
        return False

    def commands(self, run: str, typ: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["type"] in (typ or LOCAL, typ or REMOTE)
                and r["name"].startswith(run + "-")]


@pytest.fixture(params=TRAFFIC_STACKS)
def traffic(request, graph_of) -> tuple[str, Graph]:
    return request.param, Graph(graph_of(request.param))


def test_the_chain_vtap_tap_configuration_vm_readiness_settle_capture_traffic_stop_fetch(
        traffic):
    scenario, g = traffic
    run = f"{scenario}-run"
    src, col, client = f"{scenario}-src", "provider-col", f"{scenario}-client"
    settle = f"{run}-settle"
    tap_configs = [r["name"] for r in g.resources
                   if r["type"] == "azure-native:network:NetworkInterfaceTapConfiguration"]
    assert tap_configs
    # The documented order, no restart: vTAP -> the source NIC's tap configuration -> the VM
    # (its first boot follows both) -> readiness.
    vtap = f"{scenario}-tap-vtap"
    assert vtap in g.deps(tap_configs[0]) and f"{src}-nic" in g.deps(tap_configs[0])
    assert set(tap_configs) <= g.deps(f"{src}-vm")
    assert not g.reaches(vtap, f"{src}-vm")
    assert [c["name"] for c in g.commands(run) if "-fastpath-" in c["name"]] == []
    # readiness and the tap configuration -> the settle wait (the documented 60 s blip)
    assert f"{run}-ready-{src}" in g.deps(settle)
    assert set(tap_configs) <= g.deps(settle)
    assert g.by_name[settle]["type"] == LOCAL
    assert g.by_name[settle]["inputs"]["create"] == f"sleep {facts.VTAP_SOURCE_BLIP_SECONDS}"
    # settle -> capture start on the collector and on every proxy
    starts = [f"{run}-capture-start-{vm}" for vm in (col, *PROXIES[scenario])]
    for start in starts:
        assert settle in g.deps(start)
    # capture start (both) -> traffic on the client
    traffic_cmd = f"{run}-traffic"
    assert set(starts) <= g.deps(traffic_cmd)
    assert f"{run}-ready-{client}" in g.deps(traffic_cmd)
    # traffic -> capture stop (both) -> fetch
    stops = [f"{run}-capture-stop-{vm}" for vm in (col, *PROXIES[scenario])]
    for stop in stops:
        assert traffic_cmd in g.deps(stop)
    assert set(stops) <= g.deps(f"{run}-fetch")
    assert g.by_name[f"{run}-fetch"]["type"] == LOCAL
    # and transitively the whole way
    assert g.reaches(f"{run}-fetch", f"{run}-ready-{src}")
    assert g.reaches(f"{run}-fetch", tap_configs[0])
    # never backwards
    assert not g.reaches(settle, traffic_cmd)
    assert not g.reaches(starts[0], stops[0])


def _with_config(tmp_path: Path, stack: str, extra: str) -> Path:
    """A project root whose Pulumi.<stack>.yaml adds ``extra`` (the program is ROOT's)."""
    for name in ("__main__.py", "Pulumi.yaml", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(
        (ROOT / f"Pulumi.{stack}.yaml").read_text() + extra)
    return tmp_path


@pytest.mark.skipif("b2" not in TRAFFIC_STACKS, reason="no Pulumi.b2.yaml committed")
def test_a_source_that_already_ran_is_tapped_then_restarted(tmp_path):
    # vtaplab:tapExistingSource: the documented deallocate/start for a VM that booted before
    # its tap configuration existed ("NIC is not on fastpath" otherwise).
    root = _with_config(tmp_path, "b2", "  vtaplab:tapExistingSource: true\n")
    g = Graph(mocks.build_graph("b2", root=root))
    run, src = "b2-run", "b2-src"
    fastpath = f"{run}-fastpath-{src}"
    [tap_config] = [r["name"] for r in g.resources
                    if r["type"] == "azure-native:network:NetworkInterfaceTapConfiguration"]
    assert g.reaches(tap_config, f"{src}-vm")  # the VM first, then its tap configuration
    assert {f"{run}-ready-{src}", tap_config} <= g.deps(fastpath)
    assert g.by_name[fastpath]["type"] == LOCAL
    assert fastpath in g.deps(f"{run}-settle")
    create = g.by_name[fastpath]["inputs"]["create"]
    assert " -m vtaplab fastpath /subscriptions/" in create
    assert f"/virtualMachines/{src} " in create
    assert "--ssh-key-file .vtaplab/keys/b2" in create


def test_every_remote_command_waits_for_its_vms_readiness(traffic):
    scenario, g = traffic
    run = f"{scenario}-run"
    remote = g.commands(run, REMOTE)
    ready = {r["inputs"]["connection"]["host"]: r["name"] for r in remote
             if r["name"].startswith(f"{run}-ready-")}
    # collector, the proxies, vm-src, vm-client
    assert len(ready) == 3 + len(PROXIES[scenario])
    for command in remote:
        host = command["inputs"]["connection"]["host"]
        if command["name"] != ready[host]:
            assert ready[host] in g.deps(command["name"]), command["name"]
    for host, name in ready.items():
        vm_name = name[len(f"{run}-ready-"):]
        # readiness waits for the VM itself, and checks what cloud-init said
        assert f"{vm_name}-vm" in g.deps(name)
        inputs = g.by_name[name]["inputs"]
        assert inputs["create"].startswith(
            f"timeout -k 10 {budget.READY_SECONDS} sh -c 'cloud-init status --wait")
        # bounded: an unreachable VM fails its step instead of hanging `pulumi up`
        assert 0 < inputs["connection"]["dialErrorLimit"] == budget.dial_limit(
            budget.READY_SECONDS)
        assert host.count(".") == 3  # an address, not user@address


def test_connections_pin_the_host_keys_derived_from_the_seed(traffic):
    scenario, g = traffic
    run = f"{scenario}-run"
    remote = g.commands(run, REMOTE)
    vm_of = {r["inputs"]["connection"]["host"]: r["name"][len(f"{run}-ready-"):]
             for r in remote if r["name"].startswith(f"{run}-ready-")}
    for command in remote:
        vm_name = vm_of[command["inputs"]["connection"]["host"]]
        pinned = command["inputs"]["connection"]["hostKey"]
        assert pinned == host_key_for(mocks.TEST_HOST_KEY_SEED, vm_name).public_line
        assert command["inputs"]["connection"]["user"] == "azureuser"
    fetch = g.by_name[f"{scenario}-run-fetch"]["inputs"]["create"]
    # the hosts it fetches from: collector, the proxies, client (traffic.log)
    assert fetch.count("--known-host ") == 2 + len(PROXIES[scenario])
    assert "ssh-ed25519 AAAA" in fetch


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value
        if path.endswith("customData"):
            yield path, base64.b64decode(value).decode(errors="replace")


@pytest.mark.parametrize("stack", [*TRAFFIC_STACKS, *MSP_STACKS, "r1", "b1"])
def test_no_secret_reaches_an_input_in_clear(stack, graph_of):
    resources = graph_of(stack)
    fake_key = (ROOT / mocks.MOCK_PRIVATE_KEY_FILE).read_text()
    host_keys = [host_key_for(mocks.TEST_HOST_KEY_SEED, r["name"][:-len("-vm")]).private_pem
                 for r in resources if r["type"] == "azure-native:compute:VirtualMachine"]
    # compared without whitespace: cloud-init's YAML indents the PEM lines
    secrets = {what: "".join(text.split()) for what, text in (
        ("operator private key", fake_key), ("host key seed", mocks.TEST_HOST_KEY_SEED),
        *((f"host key {i}", k) for i, k in enumerate(host_keys)))}
    found_as_secret = set()
    for resource in resources:
        secret_paths = resource.get("secrets", [])
        for path, text in _strings(resource["inputs"]):
            squeezed = "".join(text.split())
            for what, secret in secrets.items():
                if secret in squeezed:
                    assert any(path == p or path.startswith(p + ".") or
                               path.startswith(p + "[") for p in secret_paths), (
                        f"{what} in clear in {resource['name']} {path}")
                    found_as_secret.add(what)
            if resource["type"] in (LOCAL, REMOTE) and (
                    path.startswith("create") or path.startswith("environment")):
                assert "PRIVATE KEY" not in text and mocks.TEST_HOST_KEY_SEED not in text
    # every VM got its host key (in its secret user data); the seed itself goes nowhere
    assert {f"host key {i}" for i in range(len(host_keys))} <= found_as_secret
    assert "host key seed" not in found_as_secret
    if stack in (*TRAFFIC_STACKS, *MSP_STACKS):
        assert "operator private key" in found_as_secret  # as connection.privateKey only


def assert_secrets_only_in_connections_and_user_data(resources: list[dict[str, Any]]) -> None:
    """The one place secrets may sit, for the traffic runs and the msp run alike: a remote
    command's SSH connection, a VM's user data (osProfile), a dynamic provider's pickle; a local
    command gets none (no secrets, no environment)."""
    for resource in resources:
        for path in resource.get("secrets", []):
            assert path in {"connection", "osProfile", "__provider"}, (resource["name"], path)
        if resource["type"] == REMOTE:
            assert "connection" in resource["secrets"]
        if resource["type"] == LOCAL:
            assert "secrets" not in resource
            assert "environment" not in resource["inputs"]


def test_secret_paths_are_the_connection_and_the_user_data(traffic):
    _scenario, g = traffic
    assert_secrets_only_in_connections_and_user_data(g.resources)


def test_run_id_triggers_only_capture_traffic_and_fetch(traffic):
    scenario, g = traffic
    for command in g.commands(f"{scenario}-run"):
        step = command["name"][len(f"{scenario}-run-"):]
        if step.startswith(("ready-", "fastpath-", "settle")):
            assert not command["inputs"].get("triggers"), step  # the VMs are left alone
        else:
            assert command["inputs"]["triggers"] == ["1"], step


def test_fastpath_and_fetch_call_the_projects_modules(traffic):
    scenario, g = traffic
    fetch = g.by_name[f"{scenario}-run-fetch"]["inputs"]["create"]
    assert f"-m vtaplab fetch --stack {scenario} --scenario {scenario}" in fetch
    names = ["collector.pcap", "proxy.pcap", "traffic.log"]
    if len(PROXIES[scenario]) == 2:
        names.append("proxy2.pcap")
    for name in names:
        assert f"--file {name}=" in fetch and f"/var/lib/vtaplab/{scenario}/{name}" in fetch
    traffic_cmd = g.by_name[f"{scenario}-run-traffic"]["inputs"]["create"]
    assert "vtap-traffic.sh --url http://10.30.1.4/ --url http://10.30.1.4/big.bin" in traffic_cmd
    assert "--count 20" in traffic_cmd
    start = g.by_name[f"{scenario}-run-capture-start-provider-col"]["inputs"]["create"]
    assert f"--unit vtaplab-capture-{scenario}" in start and "--duration 60" in start


def test_stack_outputs_per_scenario(run_of):
    for stack in TRAFFIC_STACKS:
        out = run_of(stack).outputs["scenarios"][stack]
        assert out["result"] == {}  # the fetch has not run under mocks
        proxies = {"proxy", "proxy2"} if stack == "b3" else {"proxy"}
        assert set(out["host_keys"]) == {"collector", "vm_src", "vm_client", *proxies}
        assert all(v.startswith("ssh-ed25519 ") for v in out["host_keys"].values())
    for stack in ("r1", "b1"):
        out = run_of(stack).outputs["scenarios"][stack]
        assert set(out["result"]) == {"outcome", "matches_expected", "arm_codes", "verdict",
                                      "files"}
        attempts = {"r1": {"vtap-pe-destination"}, "b1": {"nic-pool", "ip-pool"}}[stack]
        assert set(out["attempts"]) == attempts


def test_rejected_attempts_are_declared_with_the_consumers_ids(graph_of):
    r1 = [r for r in graph_of("r1") if "dynamic" in r["type"]]
    assert [r["inputs"]["attempt"] for r in r1] == ["vtap-pe-destination"]
    assert r1[0]["inputs"]["target_id"].endswith("/virtualNetworkTaps/r1-vtap")
    assert r1[0]["inputs"]["private_endpoint_id"].endswith("/privateEndpoints/r1-pe")
    b1 = {r["inputs"]["attempt"]: r for r in graph_of("b1") if "dynamic" in r["type"]}
    assert set(b1) == {"nic-pool", "ip-pool"}
    assert b1["nic-pool"]["inputs"]["target_id"].endswith("/backendAddressPools/be")
    assert b1["ip-pool"]["inputs"]["target_id"].endswith("/backendAddressPools/pe-ip")
    # one at a time: each rewrites the scenario's verdict
    assert b1["nic-pool"]["urn"] in b1["ip-pool"]["dependencies"]


def test_the_vtap_comes_from_the_shared_arm_body_builder(graph_of):
    from vtaplab.azure.arm_bodies import VtapParams, vtap_body

    tap = next(r for r in graph_of("b2") if r["type"] == "azure-native:network:VirtualNetworkTap")
    body = vtap_body(VtapParams(
        location="uksouth", port=4789, tags=tap["inputs"]["tags"],
        destination_nic_ip_configuration_id=tap["inputs"][
            "destinationNetworkInterfaceIPConfiguration"]["id"]))
    assert body["properties"] == {k: tap["inputs"][k] for k in body["properties"]}
    assert body["location"] == tap["inputs"]["location"] and body["tags"] == tap["inputs"]["tags"]


def test_parse_summary_keeps_outputs_small():
    assert parse_summary(None) == {} and parse_summary("") == {}
    line = ('{"scenario": "b2", "outcome": "delivered", "matches_expected": true, '
            '"reason": null, "verdict": "evidence/b2/b2/verdict.json", "files": ["a"], '
            '"fetched": {"huge": 1}}')
    assert parse_summary("noise\n" + line) == {
        "outcome": "delivered", "matches_expected": True, "reason": None,
        "verdict": "evidence/b2/b2/verdict.json", "files": ["a"]}
    assert parse_summary("not json")["outcome"] == "error"
    assert parse_summary("not json", "b2") == {
        "outcome": "error", "matches_expected": None,
        "reason": "the fetch printed no JSON summary"}
    assert parse_summary("[1]", "b2")["reason"] == "the fetch's summary is not a JSON object"


def test_mock_operator_key_is_the_derived_test_key():
    assert (ROOT / mocks.MOCK_PRIVATE_KEY_FILE).read_text() == mocks.test_ssh_private_key()


def test_private_key_text_is_written_0600_for_the_local_commands(tmp_path, monkeypatch,
                                                                  lab_config_of):
    import dataclasses

    from vtaplab.program import stack

    pem = mocks.test_ssh_private_key()
    cfg = dataclasses.replace(lab_config_of("b2"), ssh_private_key=pem, ssh_private_key_file="")
    monkeypatch.chdir(tmp_path)
    keys = stack._run_keys(cfg)
    assert keys is not None and keys.private_key_file == ".vtaplab/keys/b2"
    written = tmp_path / ".vtaplab" / "keys" / "b2"
    assert written.read_text() == pem and written.stat().st_mode & 0o777 == 0o600
    # a stack without traffic needs no key at all
    assert stack._run_keys(dataclasses.replace(cfg, scenarios=("r1",))) is None


def test_combined_outcome_never_hides_an_error():
    from vtaplab.program.stack import combined_outcome

    assert combined_outcome(["rejected", "rejected"]) == "rejected"
    # The scenario's own attempt decides, as in its verdict.json (one judge for both): an
    # accepted ride-along attempt is a warning there, not the scenario's outcome.
    assert combined_outcome(["rejected", "accepted"]) == "rejected"
    assert combined_outcome(["accepted", "rejected"]) == "accepted"
    assert combined_outcome(["accepted", "error"]) == "error"
    assert combined_outcome(["rejected", "error"]) == "error"
    assert combined_outcome([None]) is None


def test_runs_on_one_collector_take_turns(graph_of):
    g = Graph(graph_of("uksouth"))
    runs = [r["name"][:-len("-run-fetch")] for r in g.resources
            if r["name"].endswith("-run-fetch")]
    assert sorted(runs) == ["b2", "b3"]
    # b3's captures start only after b2's evidence is fetched: no capture mixes the two
    assert "b2-run-fetch" in g.deps("b3-run-capture-start-provider-col")
    assert not g.reaches("b2-run-fetch", "b3-run-fetch")


# ----------------------------------------------------------------------------- msp: one run
# over every tenant (one collector capture, every tenant's client inside it)


@pytest.fixture(params=MSP_STACKS)
def msp(request, graph_of, lab_config_of) -> tuple[int, Graph]:
    return lab_config_of(request.param).msp_tenants, Graph(graph_of(request.param))


def test_msp_chain_taps_vms_readiness_settle_capture_every_tenants_traffic_stop_fetch(msp):
    tenants, g = msp
    run = "msp-run"
    assert tenants >= 2  # else "every tenant" proves nothing
    labels = [f"t{i}" for i in range(1, tenants + 1)]
    # one run, one collector capture (plus each tenant's proxy), one fetch
    assert [r["name"] for r in g.resources if r["name"].endswith("-run-fetch")] == [
        f"{run}-fetch"]
    col_start, col_stop = f"{run}-capture-start-provider-col", f"{run}-capture-stop-provider-col"
    starts = [col_start, *[f"{run}-capture-start-msp-{t}-proxy" for t in labels]]
    stops = [col_stop, *[f"{run}-capture-stop-msp-{t}-proxy" for t in labels]]
    assert {r["name"] for r in g.commands(run) if "-capture-start-" in r["name"]} == set(starts)
    taps = {r["name"]: r for r in g.resources
            if r["type"] == "azure-native:network:NetworkInterfaceTapConfiguration"}
    assert len(taps) == tenants
    fastpaths = []
    settle = f"{run}-settle"
    for t in labels:
        # its tenant's vTAP -> tap configuration -> vm-src (no restart) -> readiness -> settle
        own_tap = [name for name in taps if name.startswith(f"msp-{t}-")]
        assert len(own_tap) == 1 and own_tap[0] in g.deps(f"msp-{t}-src-vm")
        assert f"msp-{t}-tap-vtap" in g.deps(own_tap[0])
        assert {f"{run}-ready-msp-{t}-src", own_tap[0]} <= g.deps(settle)
        fastpaths += [c["name"] for c in g.commands(run) if "-fastpath-" in c["name"]]
    assert fastpaths == []
    # the settle wait -> every capture start
    for start in starts:
        assert settle in g.deps(start)
    # capture start -> every tenant's traffic (from its own client) -> capture stop -> fetch
    traffic = [f"{run}-traffic-{t}" for t in labels]
    assert {r["name"] for r in g.commands(run, REMOTE) if "-traffic" in r["name"]} == set(
        traffic)
    for t, cmd in zip(labels, traffic, strict=True):
        assert set(starts) <= g.deps(cmd)
        assert f"{run}-ready-msp-{t}-client" in g.deps(cmd)
    for stop in stops:
        assert set(traffic) <= g.deps(stop)
    assert set(stops) <= g.deps(f"{run}-fetch")
    for tap in taps:
        assert g.reaches(f"{run}-fetch", tap)
    # never backwards
    for cmd in traffic:
        assert not g.reaches(col_start, cmd) and not g.reaches(cmd, col_stop)


def test_msp_each_tenants_client_logs_its_own_traffic_and_the_fetch_judges_by_vni(msp):
    from vtaplab import plan

    tenants, g = msp
    run = "msp-run"
    hosts = {r["inputs"]["connection"]["host"]: r["name"][len(f"{run}-ready-"):]
             for r in g.commands(run, REMOTE) if r["name"].startswith(f"{run}-ready-")}
    fetch = g.by_name[f"{run}-fetch"]["inputs"]["create"]
    assert "-m vtaplab fetch --stack msp --scenario msp" in fetch
    for i in range(1, tenants + 1):
        cmd = g.by_name[f"{run}-traffic-t{i}"]["inputs"]
        # from the tenant's own client, to its own vm-src (the same address in every tenant)
        assert hosts[cmd["connection"]["host"]] == f"msp-t{i}-client"
        assert cmd["connection"]["hostKey"] == host_key_for(
            mocks.TEST_HOST_KEY_SEED, f"msp-t{i}-client").public_line
        assert "--url http://10.30.1.4/ --url http://10.30.1.4/big.bin" in cmd["create"]
        assert f"--log /var/lib/vtaplab/msp/traffic-t{i}.log " in cmd["create"]
        assert cmd["triggers"] == ["1"]
        assert f"--tenant t{i}={plan.tenant_vni(i)}" in fetch
        client_ip = cmd["connection"]["host"]
        assert (f"--file traffic-t{i}.log={client_ip}:/var/lib/vtaplab/msp/traffic-t{i}.log"
                in fetch)
        assert f"--file proxy-t{i}.pcap=" in fetch
    assert fetch.count("--tenant ") == tenants
    assert fetch.count("--file collector.pcap=") == 1
    assert fetch.count("--file traffic.log=") == 0
    # every host fetched from is pinned: collector, each tenant's proxy and client
    assert fetch.count("--known-host ") == 1 + 2 * tenants


def test_msp_outputs_carry_the_run_result_and_every_tenants_host_keys(run_of):
    for stack in MSP_STACKS:
        out = run_of(stack).outputs["scenarios"]["msp"]
        assert out["result"] == {}  # the fetch has not run under mocks
        for tenant in out["tenants"]:
            assert set(tenant["host_keys"]) == {"collector", "vm_src", "vm_client", "proxy"}


def test_msp_secrets_only_in_connections_and_user_data(msp):
    _tenants, g = msp
    assert_secrets_only_in_connections_and_user_data(g.resources)


# ----------------------------------------------------------------------------- msp: the fetch
# judges the tenants apart (vtaplab.judge.tenants.separate_tenants, as the emulator does)


class FakeHost:
    """An "SSH session" serving local files by remote path (missing: RemoteFileMissing)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def connect(self) -> FakeHost:
        return self

    def fetch(self, remote: str, local: Path):
        import hashlib
        import shutil

        from vtaplab.azure.ssh import FetchResult, RemoteFileMissing

        if remote not in self.files:
            raise RemoteFileMissing(f"{remote}: no such file")
        shutil.copyfile(self.files[remote], local)
        data = Path(local).read_bytes()
        return FetchResult(remote, Path(local), len(data), hashlib.sha256(data).hexdigest())

    def close(self) -> None:
        pass


def _traffic_log(path: Path, requests: int) -> Path:
    rows = ["# vtap-traffic v1"] + [f"{n}\thttp://10.30.1.4/\t200\t612\t0.01"
                                    for n in range(1, requests + 1)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _msp_capture(path: Path, per_vni: dict[int, int]) -> Path:
    """A collector capture: ``per_vni`` VNI -> GET exchanges, every tenant with the same inner
    addresses and the same outer source (the PLS NAT IP): only the VNI tells them apart."""
    from vtaplab.bench import pcapgen

    pairs = []
    for vni, count in per_vni.items():
        for n in range(count):
            pairs.append((pcapgen.Outer(src="10.50.2.4", dst="10.50.3.4", vni=vni,
                                        sport=50000 + n),
                          pcapgen.HttpExchange(client_port=41000 + n, messages=[
                              (pcapgen.http_get("/"), pcapgen.http_ok(b"x" * 612))])))
    pcapgen.write_capture(path, pcapgen.http_capture_frames(pairs))
    return path


def _fetch_msp(tmp_path: Path, per_vni: dict[int, int], sent: dict[str, int],
               tenants: dict[str, int]) -> dict[str, Any]:
    from vtaplab.azure import fetch

    src = tmp_path / "remote"
    src.mkdir()
    col = _msp_capture(src / "collector.pcap", per_vni)
    hosts = {"203.0.113.1": FakeHost({"/var/lib/vtaplab/msp/collector.pcap": col})}
    files = [fetch.RemoteFile("collector.pcap", "203.0.113.1",
                              "/var/lib/vtaplab/msp/collector.pcap")]
    for i, (tenant, count) in enumerate(sent.items(), 2):
        remote = f"/var/lib/vtaplab/msp/traffic-{tenant}.log"
        hosts[f"203.0.113.{i}"] = FakeHost(
            {remote: _traffic_log(src / f"traffic-{tenant}.log", count)})
        files.append(fetch.RemoteFile(f"traffic-{tenant}.log", f"203.0.113.{i}", remote))
    return fetch.fetch_scenario(stack="msp", scenario="msp", files=files,
                                connect=lambda host: hosts[host],  # type: ignore[arg-type,return-value]
                                root=tmp_path, tenants=tenants)


def test_msp_fetch_tells_tenants_apart_by_vni(tmp_path):
    from vtaplab import plan
    from vtaplab.azure import fetch

    tenants = {f"t{i}": plan.tenant_vni(i) for i in (1, 2, 3)}
    verdict = _fetch_msp(tmp_path, {1001: 2, 1002: 3, 1003: 1}, {"t1": 2, "t2": 3, "t3": 1},
                         tenants)
    assert verdict["outcome"] == "delivered" and verdict["tenants_told_apart"] is True
    assert [(r["tenant"], r["vni"], r["sent"], r["requests"]) for r in verdict["tenant_table"]
            ] == [("t1", 1001, 2, 2), ("t2", 1002, 3, 3), ("t3", 1003, 1, 1)]
    out = tmp_path / "evidence" / "msp" / "msp"
    assert {"traffic-t1.log", "traffic-t2.log", "traffic-t3.log"} <= set(verdict["fetched"])
    # the tenant logs merged for the loss figures: 6 sent, 6 seen
    assert verdict["traffic"]["requests"] == 6
    assert verdict["loss"]["requests_sent"] == 6 and verdict["loss"]["requests_not_seen"] == 0
    assert (out / "traffic.log").read_text().splitlines()[6].startswith("6\t")
    assert json.loads((out / "verdict.json").read_text())["tenants_told_apart"] is True
    summary = fetch.outputs_summary(verdict, stack="msp")
    assert summary["tenants_told_apart"] is True
    assert [t["vni"] for t in summary["tenants"]] == [1001, 1002, 1003]
    assert parse_summary(json.dumps(summary))["tenants"] == summary["tenants"]


def test_msp_fetch_fails_when_two_tenants_share_a_vni(tmp_path):
    # t1's and t2's requests all on VNI 1001 (as if both proxies stamped it): 5 > 2 sent
    verdict = _fetch_msp(tmp_path, {1001: 5, 1003: 1}, {"t1": 2, "t2": 3, "t3": 1},
                         {"t1": 1001, "t2": 1002, "t3": 1003})
    assert verdict["tenants_told_apart"] is False
    assert verdict["outcome"] == "not-delivered"
    assert "can't be told apart" in verdict["reason"] and "VNI 1002" in verdict["reason"]


def test_msp_fetch_without_a_tenant_log_judges_on_vnis_alone(tmp_path):
    verdict = _fetch_msp(tmp_path, {1001: 1, 1002: 1}, {"t1": 1},
                         {"t1": 1001, "t2": 1002})
    assert verdict["outcome"] == "delivered"
    assert [r["sent"] for r in verdict["tenant_table"]] == [1, None]
    assert "traffic-t2.log" not in verdict["fetched"] and "missing" not in verdict


@pytest.mark.parametrize("spec", ["t1", "t1=0", "t1=16777216", "t1=x", "=5", "a/b=5"])
def test_fetch_cli_bad_tenant_is_one_line(spec, capsys, tmp_path):
    from vtaplab.azure import fetch

    code = fetch.main(["--stack", "msp", "--scenario", "msp", "--key-file", str(tmp_path / "k"),
                       "--known-host", "1.2.3.4=ssh-ed25519 AAAA",
                       "--file", "collector.pcap=1.2.3.4:/x", "--tenant", spec])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("vtaplab fetch: --tenant")


# --- one run plan, two drivers ------------------------------------------------------------------
def _planned_runs(run_of) -> Iterator[tuple[str, str, Any]]:
    from vtaplab.azure import collect

    for stack in mocks.stack_names(ROOT):
        outputs = run_of(stack).outputs
        for scenario in collect.traffic_scenarios(outputs):
            yield stack, scenario, collect.scenario_plan(outputs, scenario)


def test_both_drivers_run_the_one_plan_of_every_traffic_scenario(run_of, lab_config_of):
    """pulumi up's commands (the graph) and ``python -m vtaplab evidence``'s plan (the stack's
    run_plan output, read back as the SSH driver reads it): same VMs, files and commands."""
    checked = set()
    for stack, scenario, plan in _planned_runs(run_of):
        cfg = lab_config_of(stack)
        g = Graph(run_of(stack).resources)
        run = f"{scenario}-run"
        remote = {r["name"]: r["inputs"] for r in g.commands(run, REMOTE)}
        # the same VMs, at the same addresses, with the same pinned host keys
        ready = {name[len(f"{run}-ready-"):]: inputs["connection"]
                 for name, inputs in remote.items() if name.startswith(f"{run}-ready-")}
        assert {vm.name: (vm.host, vm.user, vm.host_key) for vm in plan.vms} == {
            name: (c["host"], c["user"], c["hostKey"]) for name, c in ready.items()}, stack
        # the same commands on the same VMs
        for vm_name, command in plan.commands(cfg.capture_seconds, cfg.traffic_requests):
            if "vtap-capture.sh start" in command:
                name = f"{run}-capture-start-{vm_name}"
            elif "vtap-traffic.sh" in command:
                step = next(t for t in plan.traffic if t.client.name == vm_name)
                name = f"{run}-traffic" + (f"-{step.tenant}" if step.tenant else "")
            else:
                name = f"{run}-capture-stop-{vm_name}"
            # pulumi-command bounds each step on the VM (timeout ... sh -c COMMAND); the SSH
            # driver bounds it with its session timeout: the command inside is the same.
            words = shlex.split(remote[name]["create"])
            assert words[:3] == ["timeout", "-k", "10"] and words[4:6] == ["sh", "-c"], name
            assert words[6] == command, (stack, name)
            assert remote[name]["connection"]["host"] == ready[vm_name]["host"]
        # the same files, fetched from the same hosts and paths
        fetch = g.by_name[f"{run}-fetch"]["inputs"]["create"]
        specs = re.findall(r"--file '?([^' ]+)", fetch)
        assert specs == [f"{name}={vm.host}:{plan.remote_dir}/{name}"
                         for name, vm in plan.files()], stack
        tenants = re.findall(r"--tenant '?([^' ]+)", fetch)
        assert tenants == [f"{t}={vni}" for t, vni in plan.tenants]
        checked.add(scenario)
    assert checked == {"b2", "a", "b3", "msp", "b4"}


def test_msp_names_each_tenants_proxy_capture_after_the_tenant(run_of):
    plans = {scenario: plan for _stack, scenario, plan in _planned_runs(run_of)}
    msp = plans["msp"]
    assert [c.file for c in msp.captures] == [
        "collector.pcap", *[f"proxy-{t}.pcap" for t, _ in msp.tenants]]
    assert [t.log for t in msp.traffic] == [f"traffic-{t}.log" for t, _ in msp.tenants]
    assert [c.file for c in plans["b3"].captures] == ["collector.pcap", "proxy.pcap",
                                                      "proxy2.pcap"]


def test_the_plan_survives_the_stack_outputs_round_trip(run_of):
    from vtaplab.azure.run import RunPlan

    for _stack, _scenario, plan in _planned_runs(run_of):
        assert RunPlan.from_json(plan.to_json()) == plan
