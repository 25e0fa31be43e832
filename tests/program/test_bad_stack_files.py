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


def v(id_: str, key: str, written: str, shown: str | None = None, **kw: object) -> Case:
    """The common case: one ``vtaplab:`` key set to ``written``; the line must name that key and
    show ``shown`` (by default the value as written), so key and value are written once."""
    return c(id_, f"  vtaplab:{key}: {written}", f"vtaplab:{key}",
             written if shown is None else shown, **kw)


CASES: list[Case] = [
    # --- scenarios --------------------------------------------------------------------------
    v("scenario-unknown", "scenarios", "[b2, zz]", "zz", base=False),
    v("scenario-number", "scenarios", "42", base=False),
    v("scenario-repeated", "scenarios", "[b2, b2]", "b2,b2", base=False),
    v("scenario-empty", "scenarios", "[]", "", base=False),
    v("scenario-yes", "scenarios", "yes", base=False),
    v("scenario-typo-key", "scenario", "[b2]", "", base=False),
    v("retired-key", "hostKeySeed", "abc", ""),
    # --- location ---------------------------------------------------------------------------
    v("location-no-vtap", "location", "westeurope"),
    v("location-not-a-name", "location", "East US!"),
    v("location-norway", "location", "no"),
    c("location-a-needs-direct-connect", "  vtaplab:scenarios: [a]\n"
      "  vtaplab:location: uksouth", "vtaplab:location", "uksouth", base=False),
    c("location-differs-from-provider", "  vtaplab:location: uksouth\n"
      "  azure-native:location: eastus", "vtaplab:location", "eastus"),
    # --- address plan: types, ranges, overlaps ----------------------------------------------
    v("vnet-no-prefix", "consumerAddressSpace", "10.30.0.0"),
    v("vnet-host-bits", "consumerAddressSpace", "10.30.0.1/16"),
    v("vnet-public", "consumerAddressSpace", "8.8.0.0/16"),
    v("vnet-ipv6", "consumerAddressSpace", "fd00::/48"),
    v("vnet-prefix-33", "consumerAddressSpace", "10.30.0.0/33"),
    v("vnet-a-number", "providerAddressSpace", "10"),
    v("provider-vnet-host-bits", "providerAddressSpace", "10.40.0.0/8"),
    v("subnet-outside-vnet", "consumerSubnetSrc", "10.31.1.0/24"),
    v("subnet-too-small", "consumerSubnetSrc", "10.30.1.0/30"),
    v("subnet-overlap", "consumerSubnetIlb", "10.30.1.0/25"),
    v("subnet-is-the-vnet", "consumerSubnetPe", "10.30.0.0/16"),
    v("provider-subnet-overlap", "providerSubnetCol", "10.40.2.128/25"),
    v("host-outside-subnet", "vmSrcIp", "10.30.2.4"),
    v("host-gateway", "vmSrcIp", "10.30.1.1"),
    v("host-broadcast", "vmSrcIp", "10.30.1.255"),
    v("host-not-an-ip", "vmSrcIp", "vm-src"),
    v("host-a-list", "vmSrcIp", "[10.30.1.4]", "10.30.1.4"),
    v("host-twice", "vmClientIp", "10.30.1.4"),
    v("host-ipv6", "peIp", "fd00::4"),
    v("proxy2-is-proxy", "proxy2Ip", "10.30.4.4"),
    v("ilb-outside-subnet", "providerIlbIp", "10.40.3.4"),
    v("collector-outside-subnet", "collectorIp", "10.40.2.9"),
    v("nat-ip-twice", "plsNatIps", "[10.40.2.5, 10.40.2.5]", "10.40.2.5"),
    v("nat-ip-is-ilb", "plsNatIps", "[10.40.2.4]", "10.40.2.4"),
    v("nat-ips-none", "plsNatIps", "[]", ""),
    c("nat-ips-nine", "  vtaplab:plsNatIps: [" + ", ".join(f"10.40.2.{i}" for i in range(5, 14))
      + "]", "vtaplab:plsNatIps", "10.40.2.13"),
    c("nat-ips-direct-connect-three", "  vtaplab:scenarios: [a]\n  vtaplab:location: centralus\n"
      "  vtaplab:plsNatIps: [10.40.2.5, 10.40.2.6, 10.40.2.7]", "vtaplab:plsNatIps",
      "10.40.2.7", base=False),
    v("nat-ip-bad-octet", "plsNatIps", "10.40.2.5,10.40.2.300", "10.40.2.300"),
    # --- VMs, users -------------------------------------------------------------------------
    v("size-v6-tapped", "sourceVmSize", "Standard_D2s_v6"),
    v("size-not-a-size", "proxyVmSize", "B2s"),
    v("size-a-number", "collectorVmSize", "42"),
    v("user-reserved", "adminUsername", "root"),
    v("user-with-space", "adminUsername", "Admin User"),
    c("user-too-long", "  vtaplab:adminUsername: " + "u" * 40, "vtaplab:adminUsername",
      "u" * 40),
    # --- open to the internet ---------------------------------------------------------------
    v("operator-whole-internet", "operatorCidr", "0.0.0.0/0"),
    v("operator-half-internet", "operatorCidr", "0.0.0.0/1"),
    v("operator-star", "operatorCidr", "'*'", "*"),
    v("operator-service-tag", "operatorCidr", "Internet"),
    v("operator-ipv6-any", "operatorCidr", "::/0"),
    v("operator-loopback", "operatorCidr", "127.0.0.1/32"),
    v("operator-host-bits", "operatorCidr", "203.0.113.7/24"),
    c("operator-env-whole-internet", "", "VTAPLAB_OPERATOR_CIDR", "0.0.0.0/0",
      env={"VTAPLAB_OPERATOR_CIDR": "0.0.0.0/0"}),
    c("operator-env-any", "", "VTAPLAB_OPERATOR_CIDR", "any",
      env={"VTAPLAB_OPERATOR_CIDR": "any"}),
    # --- keys and secrets -------------------------------------------------------------------
    v("pubkey-dss", "sshPublicKey", "ssh-dss AAAAB3NzaC1kc3M=", "ssh-dss"),
    c("pubkey-rsa-1024", f"  vtaplab:sshPublicKey: {RSA_1024}", "vtaplab:sshPublicKey",
      RSA_1024[:30]),
    v("pubkey-not-base64", "sshPublicKey", "ssh-ed25519 not/base64!!"),
    c("pubkey-is-private", f"  vtaplab:sshPublicKey: |\n    {PRIVATE_KEY}",
      "vtaplab:sshPublicKey", "", secret="PRIVATE KEY-----\\n"),
    c("private-key-in-clear", f"  vtaplab:sshPrivateKey: |\n    {PRIVATE_KEY}",
      "vtaplab:sshPrivateKey", "", secret=SECRET_TEXT),
    v("private-key-in-clear-short", "sshPrivateKey", "hunter2", "", secret="hunter2"),
    v("private-key-file-missing", "sshPrivateKeyFile", "/nonexistent/id_ed25519"),
    # --- proxy, run ---------------------------------------------------------------------------
    v("proxy-mode-unknown", "proxyMode", "fast"),
    v("proxy-mode-on", "proxyMode", "on"),
    v("proxy-probe-udp", "proxyProbe", "udp"),
    v("capture-too-short", "captureSeconds", "5"),
    v("capture-too-long", "captureSeconds", "60000"),
    v("capture-words", "captureSeconds", "sixty"),
    v("capture-fraction", "captureSeconds", "60.5"),
    v("capture-hex", "captureSeconds", "0x3C"),
    v("capture-underscore", "captureSeconds", "1_000"),
    v("requests-zero", "trafficRequests", "0"),
    v("requests-true", "trafficRequests", "true"),
    v("requests-negative", "trafficRequests", "-3"),
    c("tenants-eleven", "  vtaplab:scenarios: [msp]\n  vtaplab:mspTenants: 11",
      "vtaplab:mspTenants", "11", base=False),
    c("tenants-zero", "  vtaplab:scenarios: [msp]\n  vtaplab:mspTenants: 0",
      "vtaplab:mspTenants", "0", base=False),
    v("tenants-over-vtap-budget", "scenarios", "[b2, msp]\n  vtaplab:mspTenants: 10", "b2,msp",
      base=False),
    v("run-id-space", "runId", "run 2"),
    c("run-id-too-long", "  vtaplab:runId: " + "r" * 33, "vtaplab:runId", "r" * 33),
    # --- YAML pitfalls ------------------------------------------------------------------------
    v("shutdown-octal", "autoShutdownTime", "0700"),
    v("shutdown-base-60", "autoShutdownTime", "19:00"),
    v("shutdown-2400", "autoShutdownTime", "'2400'", "2400"),
    v("shutdown-7pm", "autoShutdownTime", "7pm"),
    v("expires-impossible-date", "expiresOn", "2026-02-30T07:00Z"),
    v("expires-month-13", "expiresOn", "2026-13-01T07:00Z"),
    v("expires-unquoted-date", "expiresOn", "2026-11-27"),
    v("expires-unquoted-timestamp", "expiresOn", "2026-11-27 07:00:00"),
    v("date-in-another-key", "runId", "2026-11-27"),
    v("expires-words", "expiresOn", "tomorrow"),
    c("value-missing", "  vtaplab:peIp:", "vtaplab:peIp", ""),
    v("value-tilde", "peIp", "~"),
    v("key-twice", "peIp", "10.30.3.4\n  vtaplab:peIp: 10.30.3.5", ""),
    v("binary-tag", "peIp", "!!binary MTAuMzAuMy40", "binary"),
    v("python-tag", "peIp", "!!python/object:os.system {}", "python"),
    c("key-a-number", "  12: x", "12", ""),
    v("bool-spelled-oddly", "trafficRequests", "TrUe"),
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
