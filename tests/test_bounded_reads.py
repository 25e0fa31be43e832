"""Issue 13 items 11-12: whole-file reads of files a user names stop at a bound and say what
was too large; ``decode --traffic-log`` refuses a missing or unreadable log in one line."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from vtaplab import cli

DEV_ZERO = Path("/dev/zero")


def vtaplab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vtaplab", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def empty_pcap(tmp_path: Path) -> Path:
    path = tmp_path / "empty.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    return path


def test_bounded_read_stops_one_byte_past_the_bound(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert cli.read_bytes_bounded(path, limit=10, what="thing") == b"x" * 10
    with pytest.raises(cli.InputTooLarge, match=r"thing .*/f: larger than 9 bytes"):
        cli.read_bytes_bounded(path, limit=9, what="thing")
    with pytest.raises(cli.InputTooLarge, match="larger than 1 MB"):
        cli.read_bytes_bounded(DEV_ZERO, limit=1 << 20, what="thing")


def test_decode_traffic_log_from_dev_zero_stops_at_the_bound(empty_pcap):
    proc = vtaplab("decode", str(empty_pcap), "--traffic-log", str(DEV_ZERO))
    assert proc.returncode == 2
    line = one_line(proc)
    assert "--traffic-log" in line and "/dev/zero" in line
    assert f"larger than {cli.MAX_TRAFFIC_LOG_BYTES >> 20} MB" in line


@pytest.mark.parametrize("kind", ["missing", "a directory", "not a traffic log"])
def test_decode_refuses_a_bad_traffic_log_in_one_line(empty_pcap, tmp_path, kind):
    log = {"missing": tmp_path / "nope.log", "a directory": tmp_path,
           "not a traffic log": empty_pcap}[kind]
    proc = vtaplab("decode", str(empty_pcap), "--traffic-log", str(log))
    assert proc.returncode == 2
    line = one_line(proc)
    assert str(log) in line
    assert proc.stdout == ""


def test_check_graph_from_dev_zero_stops_at_the_bound():
    proc = vtaplab("check", "--graph", str(DEV_ZERO))
    assert proc.returncode == 2
    line = one_line(proc)
    assert "graph file /dev/zero" in line and f"{cli.MAX_GRAPH_BYTES >> 20} MB" in line


def test_check_graph_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "g.json"
    path.write_bytes(b"\xff\xfe[]")
    proc = vtaplab("check", "--graph", str(path))
    assert proc.returncode == 2
    assert "not UTF-8" in one_line(proc)


def test_evidence_outputs_from_dev_zero_stops_at_the_bound():
    proc = vtaplab("evidence", "b2", "--outputs", str(DEV_ZERO))
    assert proc.returncode == 2
    line = one_line(proc)
    assert "/dev/zero" in line and f"{cli.MAX_OUTPUTS_BYTES >> 20} MB" in line
