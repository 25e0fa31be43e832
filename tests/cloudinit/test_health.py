"""vtap-health.py, the proxy's health endpoint, run for real in namespaces this test makes.

The load balancer's probe must take a proxy out when its rewrite is gone: an HTTP probe of
this endpoint does (within one probe interval); a TCP/22 probe does not (the port stays open).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from vtaplab import PROJECT_ROOT
from vtaplab.emulator.netns import Lab

HEALTH = PROJECT_ROOT / "cloudinit" / "vtap-health.py"
PROXY = PROJECT_ROOT / "cloudinit" / "vtap-proxy.sh"
PROXY_IP, GW_IP, PE_IP = "10.30.4.5", "10.30.4.1", "10.30.3.4"
PORT = 8080
# The test's probe interval (Azure's default is 5 s; scaled down here, the endpoint caches its
# checks for half of it).
INTERVAL_S = 1.0

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

LISTENER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16); s.settimeout(0.5)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        c, _ = s.accept(); c.close()
    except OSError:
        pass
"""


def test_health_script_compiles_and_refuses_bad_input():
    done = subprocess.run([sys.executable, str(HEALTH), "--target", "10.0.0.999"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--target" in done.stderr and "accepted" in done.stderr
    assert os.access(HEALTH, os.X_OK)


@pytest.fixture
def proxy(lab: Lab) -> Iterator[tuple[Lab, str, str]]:
    """A proxy namespace (its NIC 10.30.4.5/24, a route to the PE's subnet) and the LB side
    (10.30.4.1) that probes it; the health endpoint and a TCP/22 listener (sshd's stand-in)
    run in the proxy for at most 60 s and are stopped by pid."""
    ns, lb = lab.add_ns("prx"), lab.add_ns("lb")
    lab.add_veth(ns, lab.ifname("prx"), lb, lab.ifname("lb"))
    lab.add_addr(ns, lab.ifname("prx"), f"{PROXY_IP}/24")
    lab.add_addr(lb, lab.ifname("lb"), f"{GW_IP}/24")
    lab.up(ns, lab.ifname("prx"))
    lab.up(lb, lab.ifname("lb"))
    lab.add_route(ns, "10.30.3.0/24", GW_IP)
    lab.exec(ns, [str(PROXY), "apply", "--mode", "netdev", "--target", PE_IP])
    procs = [
        lab.popen(ns, [sys.executable, str(HEALTH), "--target", PE_IP, "--bind", PROXY_IP,
                       "--port", str(PORT), "--proxy-script", str(PROXY),
                       "--cache-seconds", str(INTERVAL_S / 2), "--lifetime-seconds", "60"],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE),
        lab.popen(ns, [sys.executable, "-c", LISTENER, PROXY_IP, "22", "60"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        yield lab, ns, lb
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


def http_probe(lab: Lab, lb: str) -> bool:
    """Azure's HTTP probe: healthy only on a 200 within the timeout."""
    done = lab.exec(lb, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "1",
                         f"http://{PROXY_IP}:{PORT}/health"], check=False)
    return done.stdout.strip() == "200"


def tcp22_probe(lab: Lab, lb: str) -> bool:
    """Azure's TCP probe: healthy when the handshake completes."""
    done = lab.exec(lb, [sys.executable, "-c",
                         f"import socket; socket.create_connection(('{PROXY_IP}', 22), 1)"],
                    check=False)
    return done.returncode == 0


def _healthy_until(probe: Callable[[], bool], seconds: float) -> bool:
    """True while the probe keeps saying healthy for ``seconds`` (polled every 0.1 s)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not probe():
            return False
        time.sleep(0.1)
    return True


def _wait_healthy(probe: Callable[[], bool]) -> None:
    for _ in range(50):  # the endpoint starts within 5 s
        if probe():
            return
        time.sleep(0.1)
    pytest.fail("the proxy never became healthy")


@needs_root
def test_http_probe_takes_out_a_proxy_whose_rewrite_is_gone(proxy):
    lab, ns, lb = proxy
    probe = lambda: http_probe(lab, lb)  # noqa: E731
    _wait_healthy(probe)
    lab.exec(ns, [str(PROXY), "remove"])
    assert not _healthy_until(probe, INTERVAL_S), "still healthy one interval after remove"
    lab.exec(ns, [str(PROXY), "apply", "--mode", "netdev", "--target", PE_IP])
    _wait_healthy(probe)


@needs_root
def test_http_probe_takes_out_a_proxy_without_a_route_to_the_pe(proxy):
    lab, ns, lb = proxy
    probe = lambda: http_probe(lab, lb)  # noqa: E731
    _wait_healthy(probe)
    lab.exec(ns, ["ip", "route", "replace", "unreachable", "10.30.3.0/24"])
    assert not _healthy_until(probe, INTERVAL_S)


@needs_root
def test_tcp22_probe_misses_the_same_failure(proxy):
    """Today's probe: the same check as above, answered wrongly — the port stays open, so
    the proxy stays in the pool while it forwards nothing."""
    lab, ns, lb = proxy
    probe = lambda: tcp22_probe(lab, lb)  # noqa: E731
    _wait_healthy(probe)
    lab.exec(ns, [str(PROXY), "remove"])
    assert _healthy_until(probe, INTERVAL_S), "a TCP/22 probe does not see the rewrite"
