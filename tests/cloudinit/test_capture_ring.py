"""vtap-capture.sh --ring-files/--ring-mb and --snaplen on a real tcpdump, read back by decode.

The traffic is UDP/4789 on the loopback of a namespace these tests create (deleted by name
afterwards); every datagram carries its sequence number, so the order the decoder reads the
ring in can be checked packet by packet.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.netns import ns_run

from vtaplab import PROJECT_ROOT
from vtaplab.emulator.netns import Lab, Runner, list_namespaces, new_prefix
from vtaplab.judge import decode

CAPTURE = PROJECT_ROOT / "cloudinit" / "vtap-capture.sh"
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tcpdump") is None,
                                reason="needs root (namespaces) and tcpdump")

# VXLAN header (flags I, VNI 7), then the sequence number, padded to SIZE bytes.
SENDER = """
import socket, struct, sys
count, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for n in range(count):
    s.sendto(bytes([8, 0, 0, 0, 0, 0, 7, 0]) + struct.pack("!I", n) + bytes(size - 12),
             ("127.0.0.1", 4789))
"""


@pytest.fixture
def ns() -> Iterator[str]:
    lab = Lab(new_prefix(list_namespaces()), Runner())
    try:
        yield lab.add_ns("col")
    finally:
        assert lab.teardown() == []


def sequence_numbers(files: list[Path]) -> list[int]:
    """The sequence number of every captured datagram, file after file."""
    seen = []
    for path in files:
        for _ts, _linktype, frame in decode.read_records(path, decode.ReadState()):
            # Ethernet (lo: zeros) + IPv4 (20) + UDP (8) + VXLAN (8) + our counter.
            seen.append(struct.unpack("!I", frame[14 + 20 + 8 + 8:14 + 20 + 8 + 12])[0])
    return seen


@needs_root
def test_ring_is_bounded_wraps_and_decodes_in_rotation_order(ns, tmp_path):
    out, pidfile = tmp_path / "collector.pcap", tmp_path / "c.pid"
    started = ns_run(ns, str(CAPTURE), "start", "--out", str(out), "--iface", "lo",
                  "--duration", "120", "--pidfile", str(pidfile),
                  "--ring-files", "3", "--ring-mb", "1")
    assert "3 files x 1 MB" in started.stdout
    # 4,300 records of 1,058 bytes: 946 fit a file, so files 0, 1, 2, 0, then 1 is written
    # last: the ring wrapped and its oldest data is in file 2, not file 0.
    sent = 4300
    ns_run(ns, sys.executable, "-c", SENDER, str(sent), "1000")
    ns_run(ns, str(CAPTURE), "stop", "--pidfile", str(pidfile))
    assert not out.exists()
    members = decode.ring_members(out)
    assert [p.name for p in members] == ["collector.pcap0", "collector.pcap1",
                                         "collector.pcap2"]
    for path in members:
        # tcpdump rotates once a file passes M MB: at most one packet over.
        assert path.stat().st_size <= 1_000_000 + 1100, path
    summary = decode.decode_capture(out)
    ordered = [Path(f) for f in summary.files]
    assert sorted(ordered) == members
    seq = sequence_numbers(ordered)
    # Rotation order: one contiguous, increasing run ending with the last datagram sent,
    # starting after the ones the ring overwrote.
    assert seq == list(range(seq[0], sent)), (seq[:3], seq[-3:])
    assert seq[0] > 0
    assert summary.vxlan_packets == len(seq) and sorted(summary.vnis) == [7]
    # Index order is not rotation order once the ring wrapped.
    assert [p.name for p in ordered] == ["collector.pcap2", "collector.pcap0",
                                         "collector.pcap1"]
    assert sequence_numbers(members) != seq


@needs_root
def test_snaplen_cuts_records_and_the_decoder_counts_them(ns, tmp_path):
    out, pidfile = tmp_path / "s.pcap", tmp_path / "s.pid"
    ns_run(ns, str(CAPTURE), "start", "--out", str(out), "--iface", "lo", "--duration", "60",
        "--pidfile", str(pidfile), "--snaplen", "96")
    ns_run(ns, sys.executable, "-c", SENDER, "20", "1000")
    ns_run(ns, str(CAPTURE), "stop", "--pidfile", str(pidfile))
    lengths = [len(frame) for _ts, _lt, frame in decode.read_records(out, decode.ReadState())]
    assert lengths == [96] * 20
    summary = decode.decode_capture(out)
    assert summary.snapped_frames == 20 and summary.vxlan_packets == 20


@pytest.mark.parametrize(("args", "needle"), [
    (["--ring-files", "3"], "--ring-files and --ring-mb go together"),
    (["--ring-mb", "10"], "--ring-files and --ring-mb go together"),
    (["--ring-files", "1", "--ring-mb", "10"], "--ring-files '1'"),
    (["--ring-files", "4", "--ring-mb", "0"], "--ring-mb '0'"),
    (["--ring-files", "many", "--ring-mb", "10"], "--ring-files 'many'"),
    (["--snaplen", "10"], "--snaplen '10'"),
])
def test_ring_bad_input_is_one_line(tmp_path, args, needle):
    proc = subprocess.run([str(CAPTURE), "start", "--out", str(tmp_path / "x.pcap"), *args],
                          capture_output=True, text=True, check=False, timeout=30)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []


@needs_root
def test_unit_mode_hands_the_ring_to_tcpdump(ns, tmp_path, monkeypatch):
    """--unit (the VMs' way) with a ring: systemd stand-ins from test_capture_unit."""
    import json

    from helpers.systemd import SYSTEMCTL, SYSTEMD_RUN

    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("systemd-run", SYSTEMD_RUN), ("systemctl", SYSTEMCTL)):
        (bin_dir / name).write_text(text.replace("PYTHON", sys.executable, 1))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("STUB_STATE", str(state))
    out = tmp_path / "caps" / "collector.pcap"
    out.parent.mkdir()
    started = ns_run(ns, str(CAPTURE), "start", "--out", str(out), "--iface", "lo",
                  "--unit", "vtaplab-ring", "--ring-files", "4", "--ring-mb", "2",
                  "--snaplen", "2048")
    assert "(unit vtaplab-ring)" in started.stdout and "4 files x 2 MB" in started.stdout
    cmd = json.loads((state / "vtaplab-ring.json").read_text())["cmd"]
    assert cmd[0] == "tcpdump"
    at = cmd.index("-C")
    assert cmd[at:at + 4] == ["-C", "2", "-W", "4"] and cmd[cmd.index("-s") + 1] == "2048"
    ns_run(ns, sys.executable, "-c", SENDER, "30", "500")
    ns_run(ns, str(CAPTURE), "stop", "--unit", "vtaplab-ring")
    assert [p.name for p in decode.ring_members(out)] == ["collector.pcap0"]
    assert decode.decode_capture(out).vxlan_packets == 30
