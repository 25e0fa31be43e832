"""cloudinit/vtap-decap.sh: one VXLAN decap interface per tenant VNI on the collector.

Runs in a namespace of its own (per-run name, deleted after); end to end (each tenant's
packets on its own interface) is in test_emulator's msp run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from vtaplab import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "cloudinit" / "vtap-decap.sh"

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="needs root and iproute2 (a network namespace)")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean():
    proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout


@pytest.fixture
def netns() -> Iterator[str]:
    name = "vl" + secrets.token_hex(2) + "-dc"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def decap(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, str(SCRIPT), *args],
                          capture_output=True, text=True, timeout=30, check=False)


def status(ns: str) -> list[tuple[str, int]]:
    return [(line.split()[0], int(line.split()[1])) for line in
            decap(ns, "status").stdout.splitlines()]


@needs_root
def test_apply_is_idempotent_and_makes_exactly_the_vnis_given(netns):
    assert decap(netns, "status").returncode == 1
    for _ in range(2):
        proc = decap(netns, "apply", "--vni", "1001,1002,1003")
        assert proc.returncode == 0, proc.stderr
    assert status(netns) == [("vtap1001", 1001), ("vtap1002", 1002), ("vtap1003", 1003)]
    link = subprocess.run(["ip", "-n", netns, "-d", "-o", "link", "show", "vtap1002"],
                          capture_output=True, text=True, check=True).stdout
    assert "vxlan id 1002" in link and "dstport 4789" in link and "UP" in link
    assert decap(netns, "apply", "--vni", "1002").returncode == 0
    assert status(netns) == [("vtap1002", 1002)]
    assert decap(netns, "apply", "--vni", "1002", "--port", "4790").returncode == 0
    link = subprocess.run(["ip", "-n", netns, "-d", "-o", "link", "show", "vtap1002"],
                          capture_output=True, text=True, check=True).stdout
    assert "dstport 4790" in link


@needs_root
def test_remove_deletes_only_its_own_devices(netns):
    # A VXLAN device that is not ours (another name) survives remove.
    subprocess.run(["ip", "-n", netns, "link", "add", "other7", "type", "vxlan", "id", "7",
                    "dstport", "4789"], check=True)
    assert decap(netns, "apply", "--vni", "1001").returncode == 0
    for _ in range(2):
        assert decap(netns, "remove").returncode == 0
    assert decap(netns, "status").returncode == 1
    assert subprocess.run(["ip", "-n", netns, "link", "show", "other7"],
                          capture_output=True, check=False).returncode == 0


@needs_root
@pytest.mark.parametrize(("args", "needle"), [
    (["apply"], "apply needs --vni"),
    (["apply", "--vni", "x"], "--vni 'x' is not accepted"),
    (["apply", "--vni", "16777216"], "--vni '16777216' is not accepted"),
    (["apply", "--vni", "1", "--port", "0"], "--port '0' is not accepted"),
    (["apply", "--vni", "1", "--prefix", "../x"], "--prefix '../x' is not accepted"),
    (["apply", "--vni", "1", "--frob"], "unknown option '--frob'"),
])
def test_bad_input_is_one_line(netns, args, needle):
    proc = decap(netns, *args)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert decap(netns, "status").returncode == 1   # nothing was made
