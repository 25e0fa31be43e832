"""The shell commands of a run on the VMs, in ONE place.

``components/evidence_run.py`` (pulumi-command, during ``pulumi up``) and ``vtaplab.azure.collect``
(paramiko, ``python -m vtaplab evidence`` on a deployed stack) send exactly these strings.
They call the scripts cloud-init installed from ``cloudinit/`` (the ones the emulator runs),
print one line or nothing, and never carry a secret.
"""

from __future__ import annotations

import ipaddress
import re

from vtaplab import facts

REMOTE_DIR = "/var/lib/vtaplab"
# Mirrored packets still in flight when the client's last request returns.
DRAIN_SECONDS = 5
TRAFFIC_TIMEOUT = 10
TRAFFIC_LOG = "traffic.log"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _name(what: str, value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r}: accepted: 1-64 characters of A-Z a-z 0-9 . _ -")
    return value


def remote_dir(scenario: str, base: str = REMOTE_DIR) -> str:
    return f"{base}/{_name('scenario', scenario)}"


def capture_unit(scenario: str) -> str:
    """The transient systemd unit of a scenario's capture (one per VM)."""
    return f"vtaplab-capture-{_name('scenario', scenario)}"


def capture_start(scenario: str, file_name: str, seconds: int, *,
                  base: str = REMOTE_DIR) -> str:
    """Start (or restart) the capture into ``<dir>/<file_name>`` for at most ``seconds``."""
    directory, unit = remote_dir(scenario, base), capture_unit(scenario)
    out = f"{directory}/{_name('file name', file_name)}"
    return " && ".join([
        f"sudo mkdir -p {directory}",
        # A capture of an earlier run ends first: its file is replaced, never appended to.
        f"sudo vtap-capture.sh stop --unit {unit} >/dev/null",
        f"sudo rm -f {out} {out}.log",
        f"sudo vtap-capture.sh start --out {out} --duration {int(seconds)} "
        f"--port {facts.VXLAN_PORT} --unit {unit}"])


def capture_stop(scenario: str) -> str:
    return f"sudo vtap-capture.sh stop --unit {capture_unit(scenario)}"


def traffic_log_name(tenant: str | None = None) -> str:
    """The traffic log's file name: ``traffic.log``, or ``traffic-<tenant>.log`` (msp: one
    client per tenant)."""
    return TRAFFIC_LOG if tenant is None else f"traffic-{_name('tenant', tenant)}.log"


def traffic(scenario: str, target_ip: str, count: int, *, base: str = REMOTE_DIR,
            drain_seconds: int = DRAIN_SECONDS, log_name: str = "traffic.log") -> str:
    """``count`` rounds of GET / and GET /big.bin to vm-src's nginx, logged into
    ``<dir>/<log_name>``; then a pause so the last mirrored packets reach the collector before
    the capture stops. Exit 1 of the script (some requests failed) is evidence for the
    verdict, not a failed step."""
    ip = str(ipaddress.IPv4Address(str(target_ip).strip()))
    directory = remote_dir(scenario, base)
    log = f"{directory}/{_name('log name', log_name)}"
    return " && ".join([
        f"sudo mkdir -p {directory}",
        f"{{ sudo vtap-traffic.sh --url http://{ip}/ --url http://{ip}/big.bin "
        f"--count {int(count)} --log {log} --timeout {TRAFFIC_TIMEOUT} "
        "|| [ $? -eq 1 ]; }",
        f"sleep {int(drain_seconds)}"])


def captured_files(proxies: int) -> list[str]:
    """The capture files of a run: the collector's, then one per proxy."""
    return ["collector.pcap"] + [
        "proxy.pcap" if i == 0 else f"proxy{i + 1}.pcap" for i in range(proxies)]
