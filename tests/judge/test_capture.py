"""The capture readers: compressed files, corrupt pcapng blocks, pipes and FIFOs."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from vtaplab import PROJECT_ROOT
from vtaplab.bench import pcapgen
from vtaplab.bench.pcapgen import HttpExchange, Outer, http_get, http_ok
from vtaplab.judge import capture, decode

SMALL = http_ok(pcapgen.body_of(612, 2))
BIG = http_ok(pcapgen.body_of(200_000, 1))
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}


def frames() -> list[bytes]:
    exchange = HttpExchange(messages=[(http_get("/big.bin"), BIG), (http_get("/"), SMALL)])
    return list(pcapgen.http_capture_frames([(Outer(), exchange)]))


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vtaplab", "decode", *args],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=timeout,
                          check=False)


def comparable(summary: decode.CaptureSummary) -> dict[str, object]:
    got = summary.to_dict()
    got.pop("compression")
    return got


# --- compressed captures ------------------------------------------------------------------------
@pytest.mark.parametrize("pcapng", [False, True])
@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_a_compressed_capture_decodes_like_the_plain_one(tmp_path, compression, pcapng):
    plain = tmp_path / "c.pcap"
    pcapgen.write_capture(plain, frames(), pcapng=pcapng)
    packed = tmp_path / f"c.pcap.{compression}"
    packed.write_bytes(COMPRESSORS[compression](plain.read_bytes()))
    want = decode.decode_capture(plain)
    got = decode.decode_capture(packed)
    assert got.compression == [compression] and want.compression == []
    assert comparable(got) == comparable(want) and got.delivered
    assert not got.truncated


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_gzip_written_by_pcapgen_is_read_by_tshark_too(tmp_path):
    path = tmp_path / "c.pcap.gz"
    count = pcapgen.write_capture(path, frames(), gzipped=True)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    s = decode.decode_capture(path)
    listed = subprocess.run(["tshark", "-r", str(path)], capture_output=True, text=True,
                            timeout=120, check=True).stdout.splitlines()
    assert s.frames == len(listed) == count and s.compression == ["gzip"]


def test_a_cut_gzip_stream_decodes_what_came_before_with_a_note(tmp_path):
    path = tmp_path / "c.pcap.gz"
    pcapgen.write_capture(path, frames(), gzipped=True)
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) * 2 // 3])
    s = decode.decode_capture(path)
    assert s.truncated and 0 < s.frames < len(frames())
    assert any(note.startswith("gzip stream corrupt or cut") for note in s.notes)
    # Corrupt in the middle: the reader stops at the first thing that doesn't hold (the
    # inflated garbage, or the inflater itself), having decoded what came before.
    corrupt = bytearray(whole)
    corrupt[len(corrupt) // 2:len(corrupt) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(corrupt))
    s = decode.decode_capture(path)
    assert s.truncated and 0 < s.frames < len(frames()) and s.notes


def test_compressed_non_captures_and_unread_compressions_are_one_line(tmp_path):
    text = tmp_path / "notes.gz"
    text.write_bytes(gzip.compress(b"just some notes\n"))
    zstd = tmp_path / "c.pcap.zst"
    zstd.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(20))
    junk = tmp_path / "junk.gz"
    junk.write_bytes(b"\x1f\x8b" + bytes(30))
    expected = {text: "gzip-compressed file starts with 6a757374",
                zstd: "compressed with zstd, which this reader does not decompress; "
                      "run 'zstd -d' on it first",
                junk: "gzip-compressed, but nothing in it could be decompressed"}
    for path, message in expected.items():
        with pytest.raises(decode.CaptureError, match=message):
            decode.decode_capture(path)
        done = cli(str(path))
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


# --- pcapng blocks shorter than their fixed fields ----------------------------------------------
def block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


SHB = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
IDB = block(1, struct.pack("<HHI", 1, 0, 0))


def epb(frame: bytes, n: int) -> bytes:
    stamp = 1_700_000_000_000_000 + n * 1000
    return block(6, struct.pack("<IIIII", 0, stamp >> 32, stamp & 0xFFFFFFFF, len(frame),
                                len(frame)) + frame)


SHORT_BLOCKS = {
    "interface description": block(1, b"\1\0\0\0"),   # 4 of 8
    "enhanced packet": block(6, bytes(12)),            # 12 of 20
    "packet": block(2, bytes(16)),                     # 16 of 20
    "simple packet": block(3, b""),                    # 0 of 4
}


@pytest.mark.parametrize("name", sorted(SHORT_BLOCKS))
def test_a_pcapng_block_shorter_than_its_fixed_fields_is_one_line_or_a_note(tmp_path, name):
    bad = SHORT_BLOCKS[name]
    first = tmp_path / "first.pcapng"
    first.write_bytes(SHB + IDB + bad + epb(frames()[0], 0))
    with pytest.raises(decode.CaptureError, match=rf"block 3 \({name}\) has a \d+-byte body, "
                                                  r"shorter than its \d+ bytes of fixed fields"):
        decode.decode_capture(first)
    done = cli(str(first))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "first.pcapng" in done.stderr
    # After packets: what came before is decoded, the file is marked truncated, with a note.
    good = frames()
    later = tmp_path / "later.pcapng"
    later.write_bytes(SHB + IDB + b"".join(epb(f, n) for n, f in enumerate(good)) + bad
                      + epb(good[0], len(good)))
    s = decode.decode_capture(later)
    assert s.frames == len(good) and s.delivered and s.truncated
    assert any(f"({name}) has a" in note and note.endswith("stopped there") for note in s.notes)
    done = cli(str(later), "--json")
    assert done.returncode == 0 and "Traceback" not in done.stderr


def test_an_if_tsresol_option_cut_off_is_no_crash(tmp_path):
    # Option 9 (if_tsresol) says 1 byte of value, but the options end before it.
    idb = struct.pack("<II", 1, 24) + struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 1) \
        + struct.pack("<I", 24)
    path = tmp_path / "x.pcapng"
    path.write_bytes(SHB + idb + epb(frames()[0], 0))
    s = decode.decode_capture(path)
    assert s.frames == 1 and s.first_ts == pytest.approx(1_700_000_000.0)


# --- pipes and FIFOs: read once ------------------------------------------------------------------
def feed(fifo: Path, source: Path) -> subprocess.Popen[bytes]:
    """A writer for ``fifo`` in its own process (opening a FIFO blocks until both ends are)."""
    return subprocess.Popen(["sh", "-c", 'exec cat "$1" > "$2"', "sh", str(source), str(fifo)])


@pytest.mark.parametrize("gzipped", [False, True])
def test_decode_fifo_and_another_file_reads_the_fifo_once(tmp_path, gzipped):
    good = frames()
    half = len(good) // 2
    early, late = tmp_path / "early.pcap", tmp_path / "late.pcap"
    pcapgen.write_capture(early, good[:half], gzipped=gzipped)
    pcapgen.write_capture(late, good[half:], start=1_700_000_000.0 + half * 0.0001)
    whole = tmp_path / "whole.pcap"
    pcapgen.write_capture(whole, good)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = feed(fifo, early)
    try:
        # The FIFO holds the older half and is named last: it must still come first.
        done = cli(str(late), str(fifo), "--json", timeout=60)
        assert writer.wait(timeout=10) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
    assert done.returncode == 0, done.stderr
    assert '"outcome": "delivered"' in done.stdout
    assert f'"{fifo}",\n' in done.stdout  # listed first among the files
    writer = feed(fifo, early)
    try:
        s = decode.decode_capture([late, fifo])
    finally:
        writer.wait(timeout=10)
    assert s.files == [str(fifo), str(late)]
    got = s.to_dict()
    want = decode.decode_capture(whole).to_dict()
    for key in ("files", "compression"):
        got.pop(key, None)
        want.pop(key, None)
    assert got == want


def test_a_bad_member_after_a_fifo_closes_the_fifo_and_is_one_line(tmp_path):
    source = tmp_path / "a.pcap"
    pcapgen.write_capture(source, frames())
    bad = tmp_path / "bad.pcap"
    bad.write_text("not a capture")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = feed(fifo, source)
    try:
        with pytest.raises(decode.CaptureError, match=r"bad\.pcap: not a capture"):
            decode.decode_capture([fifo, bad])
    finally:
        # The reader closed the FIFO: the writer ends (done, or a broken pipe), never hangs.
        writer.wait(timeout=10)


def test_open_members_orders_by_first_packet_and_leaves_regular_files_unopened(tmp_path):
    good = frames()
    paths = []
    for n, chunk in enumerate((good[4:], good[:4])):
        path = tmp_path / f"m{n}.pcap"
        pcapgen.write_capture(path, chunk, start=1_700_000_000.0 + (0 if n else 1.0))
        paths.append(path)
    members = capture.open_members(paths)
    try:
        assert [m.path for m in members] == [paths[1], paths[0]]
        assert all(m.state.format == "" for m in members)  # not read yet: opened in turn
    finally:
        for member in members:
            member.close()
