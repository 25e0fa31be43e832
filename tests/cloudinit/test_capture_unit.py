"""vtap-capture.sh --unit: the capture as a transient systemd unit (how the VMs run it).

This machine's PID 1 is not systemd, so ``systemd-run``/``systemctl`` are stand-ins put first
on PATH: they start the command detached, record its pid under the unit's name, and answer
``is-active``/``stop``/``reset-failed`` from it. What is proven here is the script's side
(arguments it hands systemd, readiness wait, idempotent start, stop, errors); that systemd
honours RuntimeMaxSec and StandardError=file: is systemd's documented behaviour, proven only
on a real VM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.systemd import SYSTEMCTL, SYSTEMD_RUN

from vtaplab import PROJECT_ROOT

CAPTURE = PROJECT_ROOT / "cloudinit" / "vtap-capture.sh"
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tcpdump") is None,
                                reason="needs root and tcpdump")




@pytest.fixture
def stubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("systemd-run", SYSTEMD_RUN), ("systemctl", SYSTEMCTL)):
        path = bin_dir / name
        path.write_text(text.replace("PYTHON", sys.executable, 1))
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("STUB_STATE", str(state))
    return state



def run(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, str(CAPTURE), *argv],
                          capture_output=True, text=True, timeout=30, check=False,
                          env=os.environ.copy())


@needs_root
def test_unit_start_is_idempotent_and_stop_flushes(lab, stubs, tmp_path):
    import json

    ns = lab.add_ns("col")
    pcap = tmp_path / "collector.pcap"
    start = ["start", "--out", str(pcap), "--iface", "lo", "--duration", "45",
             "--unit", "vtaplab-capture-b2"]
    first = run(ns, *start)
    assert first.returncode == 0, first.stderr
    assert "(unit vtaplab-capture-b2)" in first.stdout
    record = json.loads((stubs / "vtaplab-capture-b2.json").read_text())
    assert record["props"]["RuntimeMaxSec"] == "45"
    assert record["props"]["StandardError"] == f"file:{pcap}.log"
    assert record["cmd"][0] == "tcpdump" and str(pcap) in record["cmd"]
    again = run(ns, *start)
    assert again.returncode == 0 and "already running" in again.stdout
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                    "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                    "[s.sendto(bytes(n), ('127.0.0.1', p)) for n, p in ((100, 4789), "
                    "(100, 53))]"], check=True, timeout=10)
    time.sleep(0.2)
    stop = run(ns, "stop", "--unit", "vtaplab-capture-b2")
    assert stop.returncode == 0 and "stopped (unit vtaplab-capture-b2)" in stop.stdout
    read = subprocess.run(["tcpdump", "-nr", str(pcap)], capture_output=True, text=True,
                          check=True)
    assert read.stdout.count(".4789:") == 1 and ".53:" not in read.stdout
    assert "not running" in run(ns, "stop", "--unit", "vtaplab-capture-b2").stdout


@needs_root
def test_unit_start_reports_a_tcpdump_that_dies(lab, stubs, tmp_path):
    ns = lab.add_ns("col")
    bad = run(ns, "start", "--out", str(tmp_path / "x.pcap"), "--iface", "nosuchif0",
              "--unit", "vtaplab-capture-x")
    assert bad.returncode == 2
    assert "tcpdump exited at start (unit vtaplab-capture-x)" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "needle"), [
    (["start", "--out", "/tmp/x.pcap", "--unit", "bad name"], "--unit 'bad name'"),
    (["start", "--out", "/tmp/x.pcap", "--unit", "u", "--pidfile", "/tmp/p"],
     "not accepted together"),
    (["stop", "--unit", "x.service"], "--unit 'x.service'"),
])
def test_unit_bad_input_is_one_line(args, needle):
    proc = subprocess.run([str(CAPTURE), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
