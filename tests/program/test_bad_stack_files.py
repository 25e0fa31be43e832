"""A table of bad stack files (issue 13): each one, run through preflight's path (the stack-file
reader, then the program under Pulumi mocks, as ``graph``/``check``/``cost`` run it), must end
in ONE line naming the key (or the file and line) and the value as written, with no traceback
and nothing declared: not one resource registered.

All cases run in one fresh interpreter (Pulumi's runtime is process global) that counts every
``RegisterResource`` the mocks see.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vtaplab import PROJECT_ROOT


def _ssh_blob(*fields: bytes) -> str:
    return base64.b64encode(b"".join(len(f).to_bytes(4, "big") + f for f in fields)).decode()


RSA_1024 = "ssh-rsa " + _ssh_blob(b"ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xc1" * 128)
PRIVATE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n    c2VjcmV0LWtleS1ib2R5\n"
               "    -----END OPENSSH PRIVATE KEY-----")
SECRET_TEXT = "c2VjcmV0LWtleS1ib2R5"
BASE = "  vtaplab:scenarios: [b2]\n"


@dataclass(frozen=True)
class Case:
    id: str
    config: str                 # the lines under config:, indented two spaces
    key: str                    # what the line must name (a key, or the file)
    value: str                  # the value as written (empty: nothing to check)
    env: dict[str, str] = field(default_factory=dict)
    secret: str = ""            # text that must NOT appear in the line
    base: bool = True           # prepend BASE (scenarios: [b2])
    raw: str | None = None      # the whole file, instead of config: + lines


def c(id_: str, line: str, key: str, value: str, **kw: object) -> Case:
    return Case(id_, line if line.endswith("\n") else line + "\n", key, value, **kw)  # type: ignore[arg-type]


CASES: list[Case] = [
    # --- scenarios --------------------------------------------------------------------------
    c("scenario-unknown", "  vtaplab:scenarios: [b2, zz]", "vtaplab:scenarios", "zz",
      base=False),
    c("scenario-number", "  vtaplab:scenarios: 42", "vtaplab:scenarios", "42", base=False),
    c("scenario-repeated", "  vtaplab:scenarios: [b2, b2]", "vtaplab:scenarios", "b2,b2",
      base=False),
    c("scenario-empty", "  vtaplab:scenarios: []", "vtaplab:scenarios", "", base=False),
    c("scenario-yes", "  vtaplab:scenarios: yes", "vtaplab:scenarios", "yes", base=False),
    c("scenario-typo-key", "  vtaplab:scenario: [b2]", "vtaplab:scenario", "", base=False),
    c("retired-key", "  vtaplab:hostKeySeed: abc", "vtaplab:hostKeySeed", ""),
    # --- location ---------------------------------------------------------------------------
    c("location-no-vtap", "  vtaplab:location: westeurope", "vtaplab:location", "westeurope"),
    c("location-not-a-name", "  vtaplab:location: East US!", "vtaplab:location", "East US!"),
    c("location-norway", "  vtaplab:location: no", "vtaplab:location", "no"),
    c("location-a-needs-direct-connect", "  vtaplab:scenarios: [a]\n"
      "  vtaplab:location: uksouth", "vtaplab:location", "uksouth", base=False),
    c("location-differs-from-provider", "  vtaplab:location: uksouth\n"
      "  azure-native:location: eastus", "vtaplab:location", "eastus"),
    # --- address plan: types, ranges, overlaps ----------------------------------------------
    c("vnet-no-prefix", "  vtaplab:consumerAddressSpace: 10.30.0.0",
      "vtaplab:consumerAddressSpace", "10.30.0.0"),
    c("vnet-host-bits", "  vtaplab:consumerAddressSpace: 10.30.0.1/16",
      "vtaplab:consumerAddressSpace", "10.30.0.1/16"),
    c("vnet-public", "  vtaplab:consumerAddressSpace: 8.8.0.0/16",
      "vtaplab:consumerAddressSpace", "8.8.0.0/16"),
    c("vnet-ipv6", "  vtaplab:consumerAddressSpace: fd00::/48",
      "vtaplab:consumerAddressSpace", "fd00::/48"),
    c("vnet-prefix-33", "  vtaplab:consumerAddressSpace: 10.30.0.0/33",
      "vtaplab:consumerAddressSpace", "10.30.0.0/33"),
    c("vnet-a-number", "  vtaplab:providerAddressSpace: 10",
      "vtaplab:providerAddressSpace", "10"),
    c("provider-vnet-host-bits", "  vtaplab:providerAddressSpace: 10.40.0.0/8",
      "vtaplab:providerAddressSpace", "10.40.0.0/8"),
    c("subnet-outside-vnet", "  vtaplab:consumerSubnetSrc: 10.31.1.0/24",
      "vtaplab:consumerSubnetSrc", "10.31.1.0/24"),
    c("subnet-too-small", "  vtaplab:consumerSubnetSrc: 10.30.1.0/30",
      "vtaplab:consumerSubnetSrc", "10.30.1.0/30"),
    c("subnet-overlap", "  vtaplab:consumerSubnetIlb: 10.30.1.0/25",
      "vtaplab:consumerSubnetIlb", "10.30.1.0/25"),
    c("subnet-is-the-vnet", "  vtaplab:consumerSubnetPe: 10.30.0.0/16",
      "vtaplab:consumerSubnetPe", "10.30.0.0/16"),
    c("provider-subnet-overlap", "  vtaplab:providerSubnetCol: 10.40.2.128/25",
      "vtaplab:providerSubnetCol", "10.40.2.128/25"),
    c("host-outside-subnet", "  vtaplab:vmSrcIp: 10.30.2.4", "vtaplab:vmSrcIp", "10.30.2.4"),
    c("host-gateway", "  vtaplab:vmSrcIp: 10.30.1.1", "vtaplab:vmSrcIp", "10.30.1.1"),
    c("host-broadcast", "  vtaplab:vmSrcIp: 10.30.1.255", "vtaplab:vmSrcIp", "10.30.1.255"),
    c("host-not-an-ip", "  vtaplab:vmSrcIp: vm-src", "vtaplab:vmSrcIp", "vm-src"),
    c("host-a-list", "  vtaplab:vmSrcIp: [10.30.1.4]", "vtaplab:vmSrcIp", "10.30.1.4"),
    c("host-twice", "  vtaplab:vmClientIp: 10.30.1.4", "vtaplab:vmClientIp", "10.30.1.4"),
    c("host-ipv6", "  vtaplab:peIp: fd00::4", "vtaplab:peIp", "fd00::4"),
    c("proxy2-is-proxy", "  vtaplab:proxy2Ip: 10.30.4.4", "vtaplab:proxy2Ip", "10.30.4.4"),
    c("ilb-outside-subnet", "  vtaplab:providerIlbIp: 10.40.3.4", "vtaplab:providerIlbIp",
      "10.40.3.4"),
    c("collector-outside-subnet", "  vtaplab:collectorIp: 10.40.2.9", "vtaplab:collectorIp",
      "10.40.2.9"),
    c("nat-ip-twice", "  vtaplab:plsNatIps: [10.40.2.5, 10.40.2.5]", "vtaplab:plsNatIps",
      "10.40.2.5"),
    c("nat-ip-is-ilb", "  vtaplab:plsNatIps: [10.40.2.4]", "vtaplab:plsNatIps", "10.40.2.4"),
    c("nat-ips-none", "  vtaplab:plsNatIps: []", "vtaplab:plsNatIps", ""),
    c("nat-ips-nine", "  vtaplab:plsNatIps: [" + ", ".join(f"10.40.2.{i}" for i in range(5, 14))
      + "]", "vtaplab:plsNatIps", "10.40.2.13"),
    c("nat-ips-direct-connect-three", "  vtaplab:scenarios: [a]\n  vtaplab:location: centralus\n"
      "  vtaplab:plsNatIps: [10.40.2.5, 10.40.2.6, 10.40.2.7]", "vtaplab:plsNatIps",
      "10.40.2.7", base=False),
    c("nat-ip-bad-octet", "  vtaplab:plsNatIps: 10.40.2.5,10.40.2.300", "vtaplab:plsNatIps",
      "10.40.2.300"),
    # --- VMs, users -------------------------------------------------------------------------
    c("size-v6-tapped", "  vtaplab:sourceVmSize: Standard_D2s_v6", "vtaplab:sourceVmSize",
      "Standard_D2s_v6"),
    c("size-not-a-size", "  vtaplab:proxyVmSize: B2s", "vtaplab:proxyVmSize", "B2s"),
    c("size-a-number", "  vtaplab:collectorVmSize: 42", "vtaplab:collectorVmSize", "42"),
    c("user-reserved", "  vtaplab:adminUsername: root", "vtaplab:adminUsername", "root"),
    c("user-with-space", "  vtaplab:adminUsername: Admin User", "vtaplab:adminUsername",
      "Admin User"),
    c("user-too-long", "  vtaplab:adminUsername: " + "u" * 40, "vtaplab:adminUsername",
      "u" * 40),
    # --- open to the internet ---------------------------------------------------------------
    c("operator-whole-internet", "  vtaplab:operatorCidr: 0.0.0.0/0", "vtaplab:operatorCidr",
      "0.0.0.0/0"),
    c("operator-half-internet", "  vtaplab:operatorCidr: 0.0.0.0/1", "vtaplab:operatorCidr",
      "0.0.0.0/1"),
    c("operator-star", "  vtaplab:operatorCidr: '*'", "vtaplab:operatorCidr", "*"),
    c("operator-service-tag", "  vtaplab:operatorCidr: Internet", "vtaplab:operatorCidr",
      "Internet"),
    c("operator-ipv6-any", "  vtaplab:operatorCidr: ::/0", "vtaplab:operatorCidr", "::/0"),
    c("operator-loopback", "  vtaplab:operatorCidr: 127.0.0.1/32", "vtaplab:operatorCidr",
      "127.0.0.1/32"),
    c("operator-host-bits", "  vtaplab:operatorCidr: 203.0.113.7/24", "vtaplab:operatorCidr",
      "203.0.113.7/24"),
    c("operator-env-whole-internet", "", "VTAPLAB_OPERATOR_CIDR", "0.0.0.0/0",
      env={"VTAPLAB_OPERATOR_CIDR": "0.0.0.0/0"}),
    c("operator-env-any", "", "VTAPLAB_OPERATOR_CIDR", "any",
      env={"VTAPLAB_OPERATOR_CIDR": "any"}),
    # --- keys and secrets -------------------------------------------------------------------
    c("pubkey-dss", "  vtaplab:sshPublicKey: ssh-dss AAAAB3NzaC1kc3M=", "vtaplab:sshPublicKey",
      "ssh-dss"),
    c("pubkey-rsa-1024", f"  vtaplab:sshPublicKey: {RSA_1024}", "vtaplab:sshPublicKey",
      RSA_1024[:30]),
    c("pubkey-not-base64", "  vtaplab:sshPublicKey: ssh-ed25519 not/base64!!",
      "vtaplab:sshPublicKey", "ssh-ed25519 not/base64!!"),
    c("pubkey-is-private", f"  vtaplab:sshPublicKey: |\n    {PRIVATE_KEY}",
      "vtaplab:sshPublicKey", "", secret="PRIVATE KEY-----\\n"),
    c("private-key-in-clear", f"  vtaplab:sshPrivateKey: |\n    {PRIVATE_KEY}",
      "vtaplab:sshPrivateKey", "", secret=SECRET_TEXT),
    c("private-key-in-clear-short", "  vtaplab:sshPrivateKey: hunter2",
      "vtaplab:sshPrivateKey", "", secret="hunter2"),
    c("private-key-file-missing", "  vtaplab:sshPrivateKeyFile: /nonexistent/id_ed25519",
      "vtaplab:sshPrivateKeyFile", "/nonexistent/id_ed25519"),
    # --- proxy, run ---------------------------------------------------------------------------
    c("proxy-mode-unknown", "  vtaplab:proxyMode: fast", "vtaplab:proxyMode", "fast"),
    c("proxy-mode-on", "  vtaplab:proxyMode: on", "vtaplab:proxyMode", "on"),
    c("capture-too-short", "  vtaplab:captureSeconds: 5", "vtaplab:captureSeconds", "5"),
    c("capture-too-long", "  vtaplab:captureSeconds: 60000", "vtaplab:captureSeconds",
      "60000"),
    c("capture-words", "  vtaplab:captureSeconds: sixty", "vtaplab:captureSeconds", "sixty"),
    c("capture-fraction", "  vtaplab:captureSeconds: 60.5", "vtaplab:captureSeconds", "60.5"),
    c("capture-hex", "  vtaplab:captureSeconds: 0x3C", "vtaplab:captureSeconds", "0x3C"),
    c("capture-underscore", "  vtaplab:captureSeconds: 1_000", "vtaplab:captureSeconds",
      "1_000"),
    c("requests-zero", "  vtaplab:trafficRequests: 0", "vtaplab:trafficRequests", "0"),
    c("requests-true", "  vtaplab:trafficRequests: true", "vtaplab:trafficRequests", "true"),
    c("requests-negative", "  vtaplab:trafficRequests: -3", "vtaplab:trafficRequests", "-3"),
    c("tenants-eleven", "  vtaplab:scenarios: [msp]\n  vtaplab:mspTenants: 11",
      "vtaplab:mspTenants", "11", base=False),
    c("tenants-zero", "  vtaplab:scenarios: [msp]\n  vtaplab:mspTenants: 0",
      "vtaplab:mspTenants", "0", base=False),
    c("tenants-over-vtap-budget", "  vtaplab:scenarios: [b2, msp]\n  vtaplab:mspTenants: 10",
      "vtaplab:scenarios", "b2,msp", base=False),
    c("run-id-space", "  vtaplab:runId: run 2", "vtaplab:runId", "run 2"),
    c("run-id-too-long", "  vtaplab:runId: " + "r" * 33, "vtaplab:runId", "r" * 33),
    # --- YAML pitfalls ------------------------------------------------------------------------
    c("shutdown-octal", "  vtaplab:autoShutdownTime: 0700", "vtaplab:autoShutdownTime", "0700"),
    c("shutdown-base-60", "  vtaplab:autoShutdownTime: 19:00", "vtaplab:autoShutdownTime",
      "19:00"),
    c("shutdown-2400", "  vtaplab:autoShutdownTime: '2400'", "vtaplab:autoShutdownTime",
      "2400"),
    c("shutdown-7pm", "  vtaplab:autoShutdownTime: 7pm", "vtaplab:autoShutdownTime", "7pm"),
    c("expires-impossible-date", "  vtaplab:expiresOn: 2026-02-30T07:00Z",
      "vtaplab:expiresOn", "2026-02-30T07:00Z"),
    c("expires-month-13", "  vtaplab:expiresOn: 2026-13-01T07:00Z", "vtaplab:expiresOn",
      "2026-13-01T07:00Z"),
    c("expires-unquoted-date", "  vtaplab:expiresOn: 2026-11-27", "vtaplab:expiresOn",
      "2026-11-27"),
    c("expires-unquoted-timestamp", "  vtaplab:expiresOn: 2026-11-27 07:00:00",
      "vtaplab:expiresOn", "2026-11-27 07:00:00"),
    c("date-in-another-key", "  vtaplab:runId: 2026-11-27", "vtaplab:runId", "2026-11-27"),
    c("expires-words", "  vtaplab:expiresOn: tomorrow", "vtaplab:expiresOn", "tomorrow"),
    c("value-missing", "  vtaplab:peIp:", "vtaplab:peIp", ""),
    c("value-tilde", "  vtaplab:peIp: ~", "vtaplab:peIp", "~"),
    c("key-twice", "  vtaplab:peIp: 10.30.3.4\n  vtaplab:peIp: 10.30.3.5", "vtaplab:peIp", ""),
    c("binary-tag", "  vtaplab:peIp: !!binary MTAuMzAuMy40", "vtaplab:peIp", "binary"),
    c("python-tag", "  vtaplab:peIp: !!python/object:os.system {}", "vtaplab:peIp", "python"),
    c("key-a-number", "  12: x", "12", ""),
    c("bool-spelled-oddly", "  vtaplab:trafficRequests: TrUe", "vtaplab:trafficRequests",
      "TrUe"),
    Case("syntax-unclosed-list", "", "Pulumi.syntax-unclosed-list.yaml:3", "",
         raw="config:\n  vtaplab:scenarios: [b2\n"),
    Case("syntax-tab", "", "Pulumi.syntax-tab.yaml:2", "",
         raw="config:\n\tvtaplab:scenarios: [b2]\n"),
    Case("syntax-bad-indent", "", "Pulumi.syntax-bad-indent.yaml", "",
         raw="config:\n  vtaplab:scenarios: [b2]\n vtaplab:peIp: 10.30.3.4\n"),
    Case("config-a-list", "", "config", "", raw="config:\n  - vtaplab:scenarios\n"),
    Case("top-a-list", "", "Pulumi.top-a-list.yaml", "", raw="- config\n"),
    Case("alias-bomb", "", "Pulumi.alias-bomb.yaml", "", raw=(
        "config:\n  vtaplab:scenarios: [b2]\n  x0: &a0 [b2, b2, b2, b2, b2, b2, b2, b2]\n"
        + "".join(f"  x{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1},"
                  f" *a{i - 1}, *a{i - 1}, *a{i - 1}]\n" for i in range(1, 9)))),
]

# The control: the same path on a good file declares resources and says nothing.
GOOD = Case("good", "", "", "")

DRIVER = r"""
import json, os, sys, traceback
from pathlib import Path
from pulumi.runtime import mocks
from vtaplab.preflight import mocks

registered = [0]
original = mocks.MockMonitor.RegisterResource

def counting(self, request):
    if request.type != "pulumi:pulumi:Stack":
        registered[0] += 1
    return original(self, request)

mocks.MockMonitor.RegisterResource = counting
root = Path(sys.argv[1])
cases = json.loads(sys.argv[2])
os.environ.pop("VTAPLAB_OPERATOR_CIDR", None)
out = {}
for stack, env in cases.items():
    os.environ.update(env)
    registered[0] = 0
    result = {}
    try:
        mocks.run_here(stack, root)
        result["error"] = None
    except mocks.GraphError as error:
        result["error"] = str(error)
    except BaseException:
        result["traceback"] = traceback.format_exc()
    finally:
        for key in env:
            os.environ.pop(key, None)
    result["registered"] = registered[0]
    out[stack] = result
print(json.dumps(out))
"""


def _file_text(case: Case) -> str:
    if case.raw is not None:
        return case.raw
    return "config:\n" + (BASE if case.base else "") + case.config


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("bad-stacks")
    # A project folder whose stack files are the cases: the program and its files are ours.
    for name in ("Pulumi.yaml", "__main__.py", "components", "cloudinit", "tests"):
        (root / name).symlink_to(PROJECT_ROOT / name)
    for case in [*CASES, GOOD]:
        (root / f"Pulumi.{case.id}.yaml").write_text(_file_text(case), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "VTAPLAB_OPERATOR_CIDR"}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(root),
         json.dumps({case.id: case.env for case in [*CASES, GOOD]})],
        capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_there_are_at_least_60_distinct_bad_inputs():
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)
    assert len({_file_text(case) + json.dumps(case.env) for case in CASES}) == len(CASES)


def test_a_good_file_declares_resources_on_the_same_path(results):
    assert results["good"] == {"error": None, "registered": results["good"]["registered"]}
    assert results["good"]["registered"] > 10


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_stack_file_is_one_line_naming_key_and_value_and_declares_nothing(case, results):
    result = results[case.id]
    assert "traceback" not in result, result.get("traceback")
    message = result["error"]
    assert message, f"{case.id}: accepted, but it should be refused"
    assert "\n" not in message and "Traceback" not in message
    assert case.key in message, message
    if case.value:
        assert case.value in message, message
    if case.secret:
        assert case.secret not in message, message
    assert "accepted" in message, message
    assert result["registered"] == 0, f"{case.id}: {result['registered']} resources declared"


# --- the commands: one line each, where today there is a bare '^' or a traceback -------------

def _cli_root(tmp_path: Path, stack: str, text: str) -> Path:
    for name in ("Pulumi.yaml", "__main__.py", "components", "cloudinit", "tests"):
        (tmp_path / name).symlink_to(PROJECT_ROOT / name)
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def _vtaplab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "VTAPLAB_OPERATOR_CIDR"}
    return subprocess.run([sys.executable, "-m", "vtaplab", *args], capture_output=True,
                          text=True, timeout=300, env={**base, **(env or {})}, check=False,
                          cwd=PROJECT_ROOT)


@pytest.mark.parametrize("command", ["graph", "check", "cost"])
def test_a_yaml_syntax_error_is_one_line_in_every_command(tmp_path, command):
    root = _cli_root(tmp_path, "bad", "config:\n  vtaplab:scenarios: [b2\n")
    proc = _vtaplab(command, "bad", "--root", str(root))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{root}/Pulumi.bad.yaml:3:1: not valid YAML" in lines[0]
    assert lines[0].strip() != "^"


def test_check_refuses_a_private_key_in_clear_as_pulumi_up_does(tmp_path):
    root = _cli_root(tmp_path, "k", "config:\n  vtaplab:scenarios: [b2]\n"
                                    "  vtaplab:sshPrivateKey: |\n"
                                    f"    {PRIVATE_KEY}\n")
    proc = _vtaplab("check", "k", "--root", str(root))
    assert proc.returncode == 2, proc.stdout
    [line] = proc.stderr.strip().splitlines()
    assert "vtaplab:sshPrivateKey is stored in clear" in line and SECRET_TEXT not in line


def test_check_refuses_an_operator_cidr_from_the_environment_open_to_the_internet(tmp_path):
    root = _cli_root(tmp_path, "e", "config:\n  vtaplab:scenarios: [b2]\n")
    proc = _vtaplab("check", "e", "--root", str(root),
                    env={"VTAPLAB_OPERATOR_CIDR": "0.0.0.0/0"})
    assert proc.returncode == 2, proc.stdout
    [line] = proc.stderr.strip().splitlines()
    assert "$VTAPLAB_OPERATOR_CIDR" in line and "'0.0.0.0/0'" in line
