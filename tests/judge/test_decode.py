"""The decoder on captures these tests write (pcapgen) and on one tcpdump writes for real."""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vtaplab import PROJECT_ROOT
from vtaplab.bench import pcapgen
from vtaplab.bench.pcapgen import HttpExchange, Outer, http_get, http_ok
from vtaplab.judge import decode

ROOT = PROJECT_ROOT
SMALL = http_ok(pcapgen.body_of(612, 2))
BIG_BODY = pcapgen.body_of(200_000, 1)
BIG = http_ok(BIG_BODY)


def b2_exchange(**kwargs: object) -> HttpExchange:
    exchange = HttpExchange(**kwargs)  # type: ignore[arg-type]
    if not exchange.messages:
        exchange.messages = [(http_get("/"), SMALL)]
    return exchange


def write(tmp_path: Path, frames: list[bytes], name: str = "c.pcap", **kwargs: object) -> Path:
    path = tmp_path / name
    pcapgen.write_capture(path, frames, **kwargs)  # type: ignore[arg-type]
    return path


def frames_of(*pairs: tuple[Outer, HttpExchange]) -> list[bytes]:
    return list(pcapgen.http_capture_frames(pairs))


def test_one_get_and_200_through_vxlan(tmp_path):
    frames = frames_of((Outer(vni=77, sport=50000), b2_exchange()))
    # handshake (3), request, response, its ACK, FIN/FIN/ACK (3): none needs fragmenting
    assert len(frames) == 9
    s = decode.decode_capture(write(tmp_path, frames))
    assert s.format == "pcap" and s.linktypes == ["ethernet"]
    assert s.vxlan_packets == 9 and s.frames == 9 and s.non_vxlan_packets == 0
    assert sorted(s.vnis) == [77]
    assert s.outer_sources == {"10.40.2.5": 9}
    assert s.outer_udp_source_ports == 1
    assert s.requests == {"GET /": 1}
    assert s.responses == {"HTTP/1.1 200 OK": 1}
    assert s.delivered
    [body] = s.bodies
    assert body["length"] == 612
    assert body["sha256"] == hashlib.sha256(pcapgen.body_of(612, 2)).hexdigest()
    assert body["request"] == "GET /"
    [sample] = s.body_samples
    assert sample["flow"] == "10.30.1.4:80 -> 10.30.1.5:40000" and sample["vni"] == 77
    assert (sample["length"], sample["sha256"]) == (body["length"], body["sha256"])


def test_fragmented_outer_packets_reassemble_and_the_200kb_body_hashes(tmp_path):
    exchange = b2_exchange(messages=[(http_get("/big.bin"), BIG)])
    path = write(tmp_path, frames_of((Outer(), exchange)))
    s = decode.decode_capture(path)
    frags = s.fragments
    assert frags["reassembled"] > 100 and frags["frames"] == 2 * frags["reassembled"]
    assert frags["incomplete"] == 0
    [body] = s.bodies
    assert (body["length"], body["sha256"]) == (200_000, hashlib.sha256(BIG_BODY).hexdigest())
    assert s.incomplete_body_count == 0


def test_lost_fragment_is_counted_incomplete_and_leaves_a_hole(tmp_path):
    exchange = b2_exchange(messages=[(http_get("/big.bin"), BIG), (http_get("/"), SMALL)])
    frames = frames_of((Outer(), exchange))
    # Drop the second fragment of the 40th frame's datagram: one inner segment is lost.
    fragment_frames = [i for i, f in enumerate(frames) if f[20] & 0x3F or f[21]]
    del frames[fragment_frames[40]]
    s = decode.decode_capture(write(tmp_path, frames))
    assert s.fragments["incomplete"] == 1
    assert s.inner["tcp_holes"] == 1 and s.inner["tcp_missing_bytes"] == 1460
    assert s.incomplete_body_count == 1
    # The message length says where the next response starts: keep-alive still decodes.
    assert s.requests == {"GET /big.bin": 1, "GET /": 1}
    assert s.responses == {"HTTP/1.1 200 OK": 2}
    assert [b["request"] for b in s.bodies] == ["GET /"]


def test_several_vnis_are_told_apart(tmp_path):
    pairs = []
    for n, vni in enumerate((300, 100, 200, 100)):
        pairs.append((Outer(vni=vni, sport=40000 + n, ident=n * 100),
                      b2_exchange(client_port=41000 + n)))
    s = decode.decode_capture(write(tmp_path, frames_of(*pairs)))
    d = s.to_dict()
    assert d["vnis"] == [100, 200, 300]
    assert d["per_vni"]["100"]["requests"] == 2 and d["per_vni"]["300"]["responses"] == 1
    assert d["outer_udp_source_ports"] == 4


def test_same_addresses_in_two_vnis_are_separate_streams(tmp_path):
    # msp: tenants share an address space, so only the VNI separates their connections.
    frames = []
    a = list(pcapgen.http_capture_frames([(Outer(vni=1), b2_exchange())]))
    b = list(pcapgen.http_capture_frames([(Outer(vni=2, ident=500), b2_exchange())]))
    for fa, fb in zip(a, b, strict=True):
        frames += [fa, fb]
    s = decode.decode_capture(write(tmp_path, frames))
    assert s.request_count == 2 and s.response_count == 2
    assert s.inner["tcp_duplicates"] == 0


def test_inner_vlan_tag(tmp_path):
    s = decode.decode_capture(write(tmp_path, frames_of((Outer(), b2_exchange(vlan=42)))))
    assert s.inner["vlan_tagged"] == s.vxlan_packets > 0
    assert s.requests == {"GET /": 1} and s.delivered


def test_non_http_inner_traffic_is_not_delivery(tmp_path):
    ssh = b2_exchange(server_port=22, messages=[(b"SSH-2.0-OpenSSH_9.2\r\n" + b"x" * 500,
                                                 b"SSH-2.0-dropbear\r\n" + b"y" * 900)])
    path = write(tmp_path, frames_of((Outer(), ssh)))
    s = decode.decode_capture(path)
    assert s.vxlan_packets > 0 and s.request_count == 0 and s.response_count == 0
    assert not s.delivered


@pytest.mark.parametrize("pcapng", [False, True])
@pytest.mark.parametrize("linktype", [pcapgen.LINKTYPE_ETHERNET, pcapgen.LINKTYPE_LINUX_SLL2,
                                      pcapgen.LINKTYPE_LINUX_SLL, pcapgen.LINKTYPE_RAW])
def test_formats_and_link_types_decode_alike(tmp_path, pcapng, linktype):
    exchange = b2_exchange(messages=[(http_get("/big.bin"), BIG)])
    path = write(tmp_path, frames_of((Outer(), exchange)), pcapng=pcapng, linktype=linktype)
    s = decode.decode_capture(path)
    assert s.format == ("pcapng" if pcapng else "pcap")
    assert s.linktypes == [decode.LINKTYPES[linktype]]
    assert [(b["length"], b["sha256"]) for b in s.bodies] == [
        (200_000, hashlib.sha256(BIG_BODY).hexdigest())]
    assert s.first_ts == pytest.approx(1_700_000_000.0001)


def test_truncated_last_record_decodes_what_is_there(tmp_path):
    path = write(tmp_path, frames_of((Outer(), b2_exchange())))
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    s = decode.decode_capture(path)
    assert s.truncated
    assert any("truncated" in note for note in s.notes)
    assert s.delivered  # the exchange was over before the cut
    cut = tmp_path / "cut.pcapng"
    pcapgen.write_capture(cut, frames_of((Outer(), b2_exchange())), pcapng=True)
    cut.write_bytes(cut.read_bytes()[:-7])
    assert decode.decode_capture(cut).truncated


def test_truncated_header_and_non_capture_are_capture_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a capture\n")
    with pytest.raises(decode.CaptureError, match=r"notes\.txt.*pcap or pcapng"):
        decode.decode_capture(text)
    short = tmp_path / "short.pcap"
    short.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00")
    with pytest.raises(decode.CaptureError, match="truncated pcap header"):
        decode.decode_capture(short)
    with pytest.raises(decode.CaptureError, match="directory"):
        decode.decode_capture(tmp_path)
    with pytest.raises(decode.CaptureError, match="cannot read"):
        decode.decode_capture(tmp_path / "missing.pcap")
    odd = tmp_path / "odd.pcap"
    odd.write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(16) + (147).to_bytes(4, "little"))
    with pytest.raises(decode.CaptureError, match="link type 147"):
        decode.decode_capture(odd)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a capture")
    done = subprocess.run([sys.executable, "-m", "vtaplab", "decode", str(text)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "notes.txt" in done.stderr and "pcap or pcapng" in done.stderr


def test_empty_captures_are_honestly_not_delivered(tmp_path):
    header_only = write(tmp_path, [], name="h.pcap")
    zero = tmp_path / "zero.pcap"
    zero.write_bytes(b"")
    for path in (header_only, zero):
        s = decode.decode_capture(path)
        assert s.frames == 0 and not s.delivered
    done = subprocess.run([sys.executable, "-m", "vtaplab", "decode", str(zero), "--json"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0
    assert '"outcome": "not-delivered"' in done.stdout and "no packets" in done.stdout


def test_http_lines_spanning_segments(tmp_path):
    exchange = b2_exchange(mss=5)  # every line is cut into 5-byte segments
    s = decode.decode_capture(write(tmp_path, frames_of((Outer(), exchange))))
    assert s.requests == {"GET /": 1} and s.responses == {"HTTP/1.1 200 OK": 1}
    assert s.bodies[0]["sha256"] == hashlib.sha256(pcapgen.body_of(612, 2)).hexdigest()


def test_duplicates_and_reordering_are_tolerated(tmp_path):
    exchange = b2_exchange(mss=700, messages=[(http_get("/a"), BIG), (http_get("/b"), SMALL)])
    inner = list(exchange.frames())
    # Swap two body segments, then the tap sees everything twice.
    inner[10], inner[11] = inner[11], inner[10]
    frames: list[bytes] = []
    outer = Outer()
    for frame in inner:
        wrapped = outer.wrap(frame)
        frames += wrapped + wrapped
    s = decode.decode_capture(write(tmp_path, frames))
    assert s.requests == {"GET /a": 1, "GET /b": 1}
    assert s.responses == {"HTTP/1.1 200 OK": 2}
    assert s.inner["tcp_duplicates"] > 0 and s.inner["tcp_out_of_order"] >= 1
    assert {(b["request"], b["length"]) for b in s.bodies} == {("GET /a", 200_000),
                                                               ("GET /b", 612)}
    assert s.incomplete_body_count == 0


def test_chunked_response_body(tmp_path):
    payload = b"hello chunked world" * 50
    chunks = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n"
                      for c in (payload[:300], payload[300:]))
    response = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks +
                b"0\r\n\r\n")
    exchange = b2_exchange(mss=100, messages=[(http_get("/c"), response), (http_get("/"), SMALL)])
    s = decode.decode_capture(write(tmp_path, frames_of((Outer(), exchange))))
    assert {(b["request"], b["sha256"]) for b in s.bodies} == {
        ("GET /c", hashlib.sha256(payload).hexdigest()),
        ("GET /", hashlib.sha256(pcapgen.body_of(612, 2)).hexdigest())}


def test_capture_starting_mid_connection_resynchronises(tmp_path):
    exchange = b2_exchange(messages=[(http_get("/big.bin"), BIG), (http_get("/"), SMALL)])
    frames = frames_of((Outer(mtu=9000), exchange))
    s = decode.decode_capture(write(tmp_path, frames[40:]))  # mid-way through the big body
    assert s.requests == {"GET /": 1} and s.responses == {"HTTP/1.1 200 OK": 1}
    assert [b["request"] for b in s.bodies] == ["GET /"]


def test_other_vxlan_port(tmp_path):
    path = write(tmp_path, frames_of((Outer(dport=8472), b2_exchange())))
    assert decode.decode_capture(path).vxlan_packets == 0
    assert decode.decode_capture(path, port=8472).delivered


def test_unmatched_fragments_keep_memory_bounded():
    decoder = decode.Decoder()
    outer = Outer(mtu=600)
    big_inner = pcapgen.ethernet(pcapgen.ipv4("10.0.0.1", "10.0.0.2", 17, b"\0" * 1000))
    for n in range(decode.MAX_PENDING_DATAGRAMS * 3):
        first = outer.wrap(big_inner)[0]  # the later fragments never come
        decoder.frame(1.0 + n * 1e-4, 1, first)
        assert len(decoder.pending) <= decode.MAX_PENDING_DATAGRAMS
    summary = decoder.finish(Path("x"), decode.ReadState())
    assert summary.fragments["incomplete"] == decode.MAX_PENDING_DATAGRAMS * 3
    assert summary.fragments["reassembled"] == 0 and summary.vxlan_packets == 0


def test_out_of_order_buffer_is_capped():
    decoder = decode.Decoder()
    exchange = b2_exchange(messages=[(http_get("/big.bin"), BIG * 5)])
    inner = list(exchange.frames())
    outer = Outer(mtu=9000)
    # Lose the first response segment: everything after it waits for a hole that never fills.
    del inner[4]
    for n, frame in enumerate(inner):
        for piece in outer.wrap(frame):
            decoder.frame(n * 1e-4, 1, piece)
            assert decoder.ooo_total <= decode.MAX_OOO_PER_STREAM + 1460
    summary = decoder.finish(Path("x"), decode.ReadState())
    assert summary.inner["tcp_holes"] >= 1
    assert summary.request_count == 1


def test_garbage_after_a_good_record_is_not_a_crash(tmp_path):
    path = write(tmp_path, frames_of((Outer(), b2_exchange())))
    with path.open("ab") as fh:
        fh.write(b"\xff" * 40)
    s = decode.decode_capture(path)
    assert s.truncated and s.delivered


def _have_netns_and_tcpdump() -> bool:
    return (os.geteuid() == 0 and shutil.which("ip") is not None
            and shutil.which("tcpdump") is not None)


SENDER = """
import socket, sys, time
from pathlib import Path
from vtaplab.judge.decode import ReadState, read_records
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((sys.argv[2], 0))
for _ts, _lt, frame in read_records(Path(sys.argv[1]), ReadState()):
    sock.send(frame)
    time.sleep(0.0005)  # paced: a burst overruns the capture's ring on a 2-core machine
"""


@pytest.mark.skipif(not _have_netns_and_tcpdump(), reason="needs root, ip netns and tcpdump")
def test_live_tcpdump_capture_on_a_veth_pair(tmp_path):
    """Frames sent through a veth pair in throwaway namespaces, captured by tcpdump -i any."""
    prefix = "vd" + secrets.token_hex(2)
    ns_a, ns_b = f"{prefix}a", f"{prefix}b"
    veth_a, veth_b = f"{prefix}va", f"{prefix}vb"
    created: list[str] = []

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    tcpdump = None
    try:
        for ns in (ns_a, ns_b):
            ip("netns", "add", ns)
            created.append(ns)
        ip("link", "add", veth_a, "netns", ns_a, "type", "veth", "peer", "name", veth_b,
           "netns", ns_b)
        ip("-n", ns_a, "addr", "add", "192.0.2.1/24", "dev", veth_a)
        ip("-n", ns_b, "addr", "add", "192.0.2.2/24", "dev", veth_b)
        ip("-n", ns_a, "link", "set", veth_a, "up")
        ip("-n", ns_b, "link", "set", veth_b, "up")
        mac_b = subprocess.run(["ip", "-n", ns_b, "-br", "link", "show", veth_b],
                               capture_output=True, text=True, check=True,
                               timeout=10).stdout.split()[2]
        outer = Outer(src="192.0.2.1", dst="192.0.2.2", vni=4242)
        exchange = b2_exchange(messages=[(http_get("/big.bin"), BIG), (http_get("/"), SMALL)])
        frames = [bytes.fromhex(mac_b.replace(":", "")) + f[6:]
                  for f in frames_of((outer, exchange))]
        source = write(tmp_path, frames, name="send.pcap")
        out = tmp_path / "live.pcap"
        tcpdump = subprocess.Popen(
            ["ip", "netns", "exec", ns_b, "tcpdump", "-i", "any", "--immediate-mode",
             "-B", "8192", "-U", "-w", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        assert tcpdump.stderr is not None
        os.set_blocking(tcpdump.stderr.fileno(), False)
        seen = b""
        while b"listening" not in seen and time.monotonic() < deadline:
            seen += tcpdump.stderr.read() or b""
            time.sleep(0.05)
        assert b"listening" in seen, seen
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(["ip", "netns", "exec", ns_a, sys.executable, "-c", SENDER, str(source),
                        veth_a], check=True, timeout=60, env=env)
        # Without --immediate-mode tcpdump reads its ring in 1 s blocks and a stop before the
        # block timeout loses the packets ("296 received by filter, 0 captured").
        time.sleep(0.5)
        tcpdump.terminate()
        tcpdump.wait(timeout=10)
        tcpdump = None
        s = decode.decode_capture(out)
        assert s.linktypes == ["linux-sll2"]  # what tcpdump -i any writes on this kernel
        assert s.vnis.keys() == {4242} and list(s.outer_sources) == ["192.0.2.1"]
        assert s.fragments["reassembled"] > 100 and s.fragments["incomplete"] == 0
        assert s.requests == {"GET /big.bin": 1, "GET /": 1}
        assert {(b["request"], b["length"], b["sha256"]) for b in s.bodies} == {
            ("GET /big.bin", 200_000, hashlib.sha256(BIG_BODY).hexdigest()),
            ("GET /", 612, hashlib.sha256(pcapgen.body_of(612, 2)).hexdigest())}
    finally:
        if tcpdump is not None:
            tcpdump.kill()
            tcpdump.wait(timeout=10)
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10,
                           check=False)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=10, check=False).stdout
    assert prefix not in listed


def test_port_reuse_by_a_new_connection_starts_a_new_stream(tmp_path):
    first = b2_exchange()
    second = b2_exchange(messages=[(http_get("/again"), SMALL)])
    frames = list(first.frames())
    # Same 4-tuple, new initial sequence numbers: shift the second connection's by 7919.
    for frame in second.frames():
        tcp_at = 14 + 20
        seq = int.from_bytes(frame[tcp_at + 4:tcp_at + 8], "big") + 7919
        frames.append(frame[:tcp_at + 4] + seq.to_bytes(4, "big") + frame[tcp_at + 8:])
    outer = Outer()
    wrapped = [piece for frame in frames for piece in outer.wrap(frame)]
    s = decode.decode_capture(write(tmp_path, wrapped))
    assert s.requests == {"GET /": 1, "GET /again": 1}
    assert s.inner["tcp_streams"] == 4 and s.inner["tcp_holes"] == 0


@pytest.mark.parametrize("udp_length_too", [False, True])
def test_gso_super_packet_with_zero_ip_length(tmp_path, udp_length_too):
    exchange = b2_exchange()
    frames = []
    for frame in exchange.frames():
        # Captured before segmentation offload: the outer IPv4 total length reads 0 (and the
        # UDP length too, when the super-packet is longer than it can say).
        [outer_frame] = Outer(mtu=65535).wrap(frame)
        outer_frame = outer_frame[:16] + b"\0\0" + outer_frame[18:]
        if udp_length_too:
            outer_frame = outer_frame[:38] + b"\0\0" + outer_frame[40:]
        frames.append(outer_frame)
    s = decode.decode_capture(write(tmp_path, frames))
    assert s.delivered and s.malformed_frames == 0 and s.vxlan_malformed == 0


def test_timeline_shows_a_gap(tmp_path):
    exchange = b2_exchange(messages=[(http_get("/"), SMALL)] * 4)
    frames = frames_of((Outer(), exchange))
    path = tmp_path / "gap.pcap"
    with path.open("wb") as fh:
        writer = pcapgen.PcapWriter(fh)
        for n, frame in enumerate(frames):
            writer.write(100.0 + n * 0.01 + (5.0 if n >= 10 else 0.0), frame)
    s = decode.decode_capture(path)
    assert s.largest_vxlan_gap == {"seconds": pytest.approx(5.01), "after": pytest.approx(100.09)}
    counts = s.timeline["vxlan_packets"]
    assert sum(counts) == s.vxlan_packets and counts[1:5] == [0, 0, 0, 0]


def test_long_captures_get_wider_timeline_buckets():
    decoder = decode.Decoder()
    frame = Outer().wrap(next(iter(b2_exchange().frames())))[0]
    for n in range(decode.TIMELINE_BUCKETS * 3):
        decoder.frame(float(n), 1, frame)
    summary = decoder.finish(Path("x"), decode.ReadState())
    assert summary.timeline["bucket_seconds"] == 4.0
    assert len(summary.timeline["vxlan_packets"]) <= decode.TIMELINE_BUCKETS
    assert sum(summary.timeline["vxlan_packets"]) == decode.TIMELINE_BUCKETS * 3


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_tshark_agrees_on_vnis_http_lines_and_bodies(tmp_path):
    """An independent decoder as the oracle: tshark's vxlan/http dissectors and its export."""
    pairs = []
    for n, vni in enumerate((5, 6, 7)):
        exchange = b2_exchange(client_port=42000 + n, vlan=10 if vni == 6 else None,
                               messages=[(http_get("/big.bin"), BIG),
                                         (http_get(f"/p{n}"), http_ok(pcapgen.body_of(900, n)))])
        pairs.append((Outer(vni=vni, sport=33000 + n, ident=n * 1000), exchange))
    path = write(tmp_path, frames_of(*pairs))
    s = decode.decode_capture(path)

    def tshark(*args: str) -> list[str]:
        done = subprocess.run(["tshark", "-r", str(path), "-d", "udp.port==4789,vxlan", *args],
                              capture_output=True, text=True, timeout=120, check=True)
        return done.stdout.splitlines()

    vnis = tshark("-Y", "vxlan", "-T", "fields", "-e", "vxlan.vni")
    assert {int(v): vnis.count(v) for v in set(vnis)} == {
        int(v): stats["packets"] for v, stats in s.to_dict()["per_vni"].items()}
    lines = tshark("-Y", "http.request", "-T", "fields", "-e", "http.request.method",
                   "-e", "http.request.uri")
    assert sorted(" ".join(line.split("\t")) for line in lines) == sorted(
        line for line, n in s.requests.items() for _ in range(n))
    assert len(tshark("-Y", "http.response.code == 200")) == s.responses["HTTP/1.1 200 OK"]
    objects = tmp_path / "objects"
    tshark("--export-objects", f"http,{objects}")
    exported = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in objects.iterdir())
    ours = sorted(b["sha256"] for b in s.bodies for _ in range(b["count"]))
    assert exported == ours and len(ours) == 6


def _records(frames: list[bytes], order: str, ticks: int) -> bytes:
    out = b""
    for n, frame in enumerate(frames):
        stamp = 1_700_000_000 * ticks + (n + 1) * ticks // 1000  # one frame per millisecond
        out += struct.pack(order + "IIII", stamp // ticks, stamp % ticks, len(frame),
                           len(frame)) + frame
    return out


@pytest.mark.parametrize(("magic", "order", "ticks"), [
    (0xA1B2C3D4, ">", 1_000_000),      # big-endian, microseconds
    (0xA1B23C4D, "<", 1_000_000_000),  # little-endian, nanoseconds (tcpdump --nano)
    (0xA1B23C4D, ">", 1_000_000_000),
])
def test_pcap_byte_orders_and_nanosecond_timestamps(tmp_path, magic, order, ticks):
    frames = frames_of((Outer(), b2_exchange()))
    header = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    path = tmp_path / "x.pcap"
    path.write_bytes(header + _records(frames, order, ticks))
    s = decode.decode_capture(path)
    assert s.delivered and s.vxlan_packets == len(frames)
    assert s.first_ts == pytest.approx(1_700_000_000.001)
    assert s.last_ts == pytest.approx(1_700_000_000 + len(frames) / 1000)


def test_pcapng_big_endian_nanosecond_interface_and_unknown_blocks(tmp_path):
    frames = frames_of((Outer(), b2_exchange()))

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack(">II", kind, 12 + len(body)) + body + struct.pack(">I", 12 + len(body))

    tsresol = struct.pack(">HH", 9, 1) + bytes([9]) + b"\0\0\0" + struct.pack(">HH", 0, 0)
    out = block(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack(">HHI", 147, 0, 0))  # an interface we can't read
    out += block(1, struct.pack(">HHI", 1, 0, 0) + tsresol)
    out += block(0x0BAD, b"vendor block")
    for n, frame in enumerate(frames):
        stamp = 1_700_000_000 * 10**9 + (n + 1) * 10**6
        out += block(6, struct.pack(">IIIII", 1, stamp >> 32, stamp & 0xFFFFFFFF, len(frame),
                                    len(frame)) + frame)
        out += block(6, struct.pack(">IIIII", 0, 0, 0, 4, 4) + b"\0\0\0\0")  # on iface 0
    path = tmp_path / "x.pcapng"
    path.write_bytes(out)
    s = decode.decode_capture(path)
    assert s.format == "pcapng" and s.delivered and s.vxlan_packets == len(frames)
    assert s.first_ts == pytest.approx(1_700_000_000.001)
    assert any("link type 147" in note for note in s.notes)


def test_mangled_frames_and_files_never_raise_anything_but_capture_error(tmp_path):
    rnd = random.Random(1234)
    exchange = b2_exchange(mss=300, messages=[
        (http_get("/a"), http_ok(pcapgen.body_of(5000))),
        (http_get("/c"), b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                         b"0\r\n\r\n")])
    frames = frames_of((Outer(mtu=400), exchange))
    for _ in range(300):
        mangled = []
        for frame in frames:
            raw = bytearray(frame)
            roll = rnd.random()
            if roll < 0.1:
                for _ in range(rnd.randint(1, 5)):
                    raw[rnd.randrange(len(raw))] = rnd.randrange(256)
            elif roll < 0.15:
                raw = raw[:rnd.randrange(len(raw))]
            elif roll < 0.18:
                continue
            mangled.append(bytes(raw))
        if rnd.random() < 0.3:
            rnd.shuffle(mangled)
        decoder = decode.Decoder()
        linktype = rnd.choice([1, 276, 113, 101, 0])
        decoder.run((n * 0.001, linktype, f) for n, f in enumerate(mangled))
        decoder.finish(Path("x"), decode.ReadState()).to_dict()
    for pcapng in (False, True):
        good = write(tmp_path, frames, name="good", pcapng=pcapng).read_bytes()
        bad = tmp_path / "bad"
        for _ in range(150):
            raw = bytearray(good)
            for _ in range(rnd.randint(1, 8)):
                raw[rnd.randrange(len(raw))] = rnd.randrange(256)
            bad.write_bytes(bytes(raw[:rnd.randrange(len(raw))] if rnd.random() < 0.3
                                  else raw))
            try:
                decode.decode_capture(bad).to_dict()
            except decode.CaptureError:
                pass


def test_cli_output_into_a_closed_pipe_is_no_traceback(tmp_path):
    path = write(tmp_path, frames_of((Outer(), b2_exchange())))
    reader = subprocess.Popen([sys.executable, "-m", "vtaplab", "decode", str(path), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()  # like `| head -0`
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 0 and "Traceback" not in err


def test_overlapping_fragment_junk_is_bounded_per_datagram_and_in_total(monkeypatch):
    monkeypatch.setattr(decode, "MAX_PENDING_BYTES", 1_000_000)
    decoder = decode.Decoder()
    payload = b"\0" * 1480
    for n in range(3000):
        # Datagram ids repeat 200 times with a new offset each time, never the last fragment;
        # from n = 2000 on every fragment has an id of its own.
        ident = n // 200 if n < 2000 else n
        frame = pcapgen.ethernet(pcapgen.ipv4("10.0.0.1", "10.0.0.2", 17, payload,
                                              ident=ident, flags_offset=0x2000 | n % 200))
        decoder.frame(n * 1e-4, 1, frame)
        assert all(e[3] <= decode.MAX_DATAGRAM_HELD for e in decoder.pending.values())
        assert decoder.pending_bytes == sum(e[3] for e in decoder.pending.values())
        assert decoder.pending_bytes <= 1_000_000
    summary = decoder.finish(Path("x"), decode.ReadState())
    assert summary.fragments["frames"] == 3000 and summary.fragments["reassembled"] == 0
    assert summary.fragments["incomplete"] > 1000 and summary.vxlan_packets == 0


def test_body_until_close_is_whole_only_without_a_missing_tail(tmp_path):
    body = pcapgen.body_of(3000, 9)
    response = b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\n" + body
    exchange = b2_exchange(mss=1000, messages=[(http_get("/old"), response)])
    inner = list(exchange.frames())
    outer = Outer(mtu=9000)
    whole = [f for frame in inner for f in outer.wrap(frame)]
    s = decode.decode_capture(write(tmp_path, whole, name="whole.pcap"))
    assert [(b["request"], b["length"], b["sha256"]) for b in s.bodies] == [
        ("GET /old", 3000, hashlib.sha256(body).hexdigest())]
    # Lose the response's last data segment (the one before the client's ACK).
    last_data = max(i for i, f in enumerate(inner) if len(f) > 100 and f[34 + 1] == 80)
    cut = [f for i, frame in enumerate(inner) if i != last_data for f in outer.wrap(frame)]
    s = decode.decode_capture(write(tmp_path, cut, name="cut.pcap"))
    assert s.bodies == [] and s.incomplete_body_count == 1
    assert s.incomplete_bodies[0]["received"] < 3000


def test_interim_and_bodiless_responses(tmp_path):
    post = (b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            b"hello")
    final = http_ok(b"stored")
    exchange = b2_exchange(messages=[
        (post, b"HTTP/1.1 100 Continue\r\n\r\n" + final),
        (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
         b"HTTP/1.1 200 OK\r\nContent-Length: 612\r\n\r\n"),   # HEAD: no body follows
        (http_get("/gone"), b"HTTP/1.1 304 Not Modified\r\n\r\n"),
        (http_get("/"), SMALL)])
    s = decode.decode_capture(write(tmp_path, frames_of((Outer(), exchange))))
    assert s.requests == {"POST /up": 1, "HEAD /": 1, "GET /gone": 1, "GET /": 1}
    assert s.responses == {"HTTP/1.1 100 Continue": 1, "HTTP/1.1 200 OK": 3,
                           "HTTP/1.1 304 Not Modified": 1}
    assert {(b["request"], b["length"]) for b in s.bodies} == {("POST /up", 6), ("GET /", 612)}
    assert s.incomplete_body_count == 0


# --- rings: several files decoded as one capture, in tcpdump's rotation order -------------------
def _split_into_ring(tmp_path: Path, frames: list[bytes], order: list[int],
                     prefix: str = "ring.pcap") -> list[Path]:
    """Write ``frames`` as len(order) consecutive parts; part k goes to file PREFIX<order[k]>.

    order [2, 0, 1]: the ring wrapped (the oldest part is in file 2, the newest in file 1).
    """
    size = -(-len(frames) // len(order))
    paths = []
    for part, index in enumerate(order):
        chunk = frames[part * size:(part + 1) * size]
        path = tmp_path / f"{prefix}{index}"
        # Continuous timestamps across the parts (write_capture numbers frames from 1).
        pcapgen.write_capture(path, chunk, start=1_700_000_000.0 + part * size * 0.0001)
        paths.append(path)
    return paths


def _comparable(summary: decode.CaptureSummary) -> dict[str, object]:
    got = summary.to_dict()
    got.pop("files", None)
    return got


def test_a_wrapped_ring_decodes_like_the_whole_capture(tmp_path):
    # A 200 kB body: its segments and outer fragments straddle every rotation.
    frames = frames_of((Outer(vni=5), b2_exchange(messages=[(http_get("/big.bin"), BIG)])),
                       (Outer(vni=6, sport=40000), b2_exchange()))
    whole = decode.decode_capture(write(tmp_path, frames, name="whole.pcap"))
    assert whole.delivered and whole.fragments["reassembled"] > 0
    paths = _split_into_ring(tmp_path, frames, order=[2, 0, 1])
    ring = decode.decode_capture(tmp_path / "ring.pcap")
    assert ring.files == [str(p) for p in paths]        # file 2, then 0, then 1
    assert _comparable(ring) == _comparable(whole)
    assert ring.to_dict()["files"] == ring.files
    assert [b["length"] for b in ring.bodies if b["request"] == "GET /big.bin"] == [200_000]
    # Named one by one, in any order: the same stream.
    shuffled = decode.decode_capture([paths[1], paths[2], paths[0]])
    assert shuffled.files == ring.files and _comparable(shuffled) == _comparable(whole)
    # Read in index order instead, the body would be cut: the order is what joins it.
    naive = decode.Decoder()
    for path in sorted(paths):
        naive.run(decode.read_records(path, decode.ReadState()))
    assert naive.finish(tmp_path / "x", decode.ReadState()).to_dict() != whole.to_dict()


def test_ring_names_padded_and_an_empty_newest_file_goes_last(tmp_path):
    frames = frames_of((Outer(), b2_exchange()))
    paths = _split_into_ring(tmp_path, frames, order=[8, 9, 10], prefix="c.pcap")
    # tcpdump -W 12 pads to two digits; a file just opened holds only its header.
    padded = []
    for path in paths:
        new = path.with_name(f"c.pcap{int(path.name[6:]):02d}")
        path.rename(new)
        padded.append(new)
    header_only = tmp_path / "c.pcap00"
    pcapgen.write_capture(header_only, [])
    (tmp_path / "c.pcap.log").write_text("tcpdump: listening\n")   # not a member
    (tmp_path / "c.pcapx1").write_text("nor this")
    assert decode.ring_members(tmp_path / "c.pcap") == [header_only, *padded]
    s = decode.decode_capture(tmp_path / "c.pcap")
    assert s.files == [str(p) for p in (*padded, header_only)]
    assert s.delivered and s.frames == len(frames) and s.path == str(tmp_path / "c.pcap")


def test_a_bad_ring_member_is_a_capture_error_naming_it(tmp_path):
    frames = frames_of((Outer(), b2_exchange()))
    _split_into_ring(tmp_path, frames, order=[0, 1])
    (tmp_path / "ring.pcap2").write_text("not a capture")
    with pytest.raises(decode.CaptureError, match=r"ring\.pcap2: not a capture"):
        decode.decode_capture(tmp_path / "ring.pcap")
    with pytest.raises(decode.CaptureError, match=r"no such file, nor a ring nothing\.pcap0"):
        decode.decode_capture(tmp_path / "nothing.pcap")
    with pytest.raises(decode.CaptureError, match="no capture files given"):
        decode.decode_capture([])


def test_a_truncated_member_marks_the_ring_truncated_and_says_which(tmp_path):
    frames = frames_of((Outer(), b2_exchange()))
    paths = _split_into_ring(tmp_path, frames, order=[0, 1])
    paths[1].write_bytes(paths[1].read_bytes()[:-20])
    s = decode.decode_capture(tmp_path / "ring.pcap")
    assert s.truncated
    assert any(note.startswith("ring.pcap1: ") and "truncated" in note for note in s.notes)


def test_cli_reads_a_ring_prefix_and_several_files(tmp_path):
    frames = frames_of((Outer(vni=9), b2_exchange()))
    paths = _split_into_ring(tmp_path, frames, order=[1, 0])
    for argv in ([str(tmp_path / "ring.pcap")], [str(paths[1]), str(paths[0])]):
        proc = subprocess.run([sys.executable, "-m", "vtaplab", "decode", *argv, "--json"],
                              capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["outcome"] == "delivered"
        assert result["capture"]["frames"] == len(frames)
        assert result["capture"]["files"] == [str(p) for p in paths]
    proc = subprocess.run([sys.executable, "-m", "vtaplab", "decode", str(tmp_path / "none")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


# --- what a collector meets beyond the emulator's traffic (issue 13, items 1-5) -----------------
def _tshark(path: Path, *args: str) -> list[str]:
    done = subprocess.run(["tshark", "-r", str(path), "-d", "udp.port==4789,vxlan", *args],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.splitlines()


def _tshark_count(path: Path, display_filter: str) -> int:
    return len(_tshark(path, "-Y", display_filter))


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")


@pytest.mark.parametrize("split_at", [2, 3, 4, 9])
def test_a_stream_begun_before_the_capture_is_followed_from_its_first_segment(tmp_path,
                                                                               split_at):
    # A keep-alive connection captured after its handshake; each request is two segments,
    # the first as short as "GE" (too short to tell it is HTTP on its own).
    second = http_ok(pcapgen.body_of(900, 5))
    exchange = b2_exchange(split_at=split_at, messages=[(http_get("/a"), SMALL),
                                                        (http_get("/b"), second)])
    frames = frames_of((Outer(), exchange))[3:]  # no SYN, SYN-ACK, ACK
    path = write(tmp_path, frames)
    s = decode.decode_capture(path)
    assert s.requests == {"GET /a": 1, "GET /b": 1}
    assert s.responses == {"HTTP/1.1 200 OK": 2}
    assert {(b["request"], b["sha256"]) for b in s.bodies} == {
        ("GET /a", hashlib.sha256(pcapgen.body_of(612, 2)).hexdigest()),
        ("GET /b", hashlib.sha256(pcapgen.body_of(900, 5)).hexdigest())}
    if shutil.which("tshark"):
        uris = _tshark(path, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri")
        assert sorted(uris) == ["/a", "/b"]


def test_a_stream_begun_mid_body_still_skips_to_the_next_message(tmp_path):
    # What must not change: bytes that can't start a message are skipped, not parsed.
    exchange = b2_exchange(mss=100, messages=[(http_get("/a"), BIG), (http_get("/b"), SMALL)])
    frames = frames_of((Outer(mtu=9000), exchange))
    s = decode.decode_capture(write(tmp_path, frames[10:]))
    assert s.requests == {"GET /b": 1} and s.responses == {"HTTP/1.1 200 OK": 1}
    assert [b["request"] for b in s.bodies] == ["GET /b"]


def test_data_in_a_syn_tcp_fast_open_is_decoded(tmp_path):
    exchange = b2_exchange(fast_open=True, messages=[(http_get("/tfo"), SMALL),
                                                     (http_get("/next"), SMALL)])
    frames = frames_of((Outer(), exchange))
    path = write(tmp_path, frames)
    s = decode.decode_capture(path)
    assert s.requests == {"GET /tfo": 1, "GET /next": 1}
    assert [b["request"] for b in s.bodies] == ["GET /tfo", "GET /next"]
    # A retransmitted SYN with the same data is a duplicate, not a second request.
    again = write(tmp_path, [frames[0], *frames], name="again.pcap")
    s = decode.decode_capture(again)
    assert s.requests == {"GET /tfo": 1, "GET /next": 1} and s.inner["tcp_duplicates"] == 1
    if shutil.which("tshark"):
        uris = _tshark(path, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri")
        assert uris == ["/tfo", "/next"]


def _with_hop_by_hop(frame: bytes) -> bytes:
    """Insert an 8-byte hop-by-hop options header (PadN) after an inner IPv6 header."""
    ip = frame[14:]
    payload_length = int.from_bytes(ip[4:6], "big") + 8
    header = ip[:4] + payload_length.to_bytes(2, "big") + b"\0" + ip[7:40]
    options = bytes([ip[6], 0, 1, 4, 0, 0, 0, 0])  # next header, length 0, PadN of 4
    return frame[:14] + header + options + ip[40:]


@pytest.mark.parametrize("extension", [False, True])
def test_inner_ipv6_decodes_like_ipv4(tmp_path, extension):
    v6 = b2_exchange(client="fd00:30::5", server="fd00:30::4",
                     messages=[(http_get("/big.bin"), BIG), (http_get("/six"), SMALL)])
    v4 = b2_exchange(client_port=41000, messages=[(http_get("/four"), SMALL)])
    inner = list(v6.frames())
    if extension:
        inner = [_with_hop_by_hop(f) for f in inner]
    frames = [piece for f in inner for piece in Outer(vni=6).wrap(f)]
    frames += frames_of((Outer(vni=4, ident=9000), v4))
    path = write(tmp_path, frames)
    s = decode.decode_capture(path)
    assert s.requests == {"GET /big.bin": 1, "GET /six": 1, "GET /four": 1}
    assert {(b["request"], b["length"], b["sha256"]) for b in s.bodies} == {
        ("GET /big.bin", 200_000, hashlib.sha256(BIG_BODY).hexdigest()),
        ("GET /six", 612, hashlib.sha256(pcapgen.body_of(612, 2)).hexdigest()),
        ("GET /four", 612, hashlib.sha256(pcapgen.body_of(612, 2)).hexdigest())}
    d = s.to_dict()
    assert d["per_vni"]["6"]["delivered"] and d["per_vni"]["4"]["delivered"]
    assert s.inner["ipv6"] == len(inner) and s.inner["non_ip"] == 0
    assert s.inner["non_ipv4"] == s.inner["ipv6"]  # the key keeps its meaning: not IPv4
    assert s.body_samples[0]["flow"] == "[fd00:30::4]:80 -> [fd00:30::5]:40000"
    if shutil.which("tshark"):
        uris = _tshark(path, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri")
        assert sorted(uris) == ["/big.bin", "/four", "/six"]
        objects = tmp_path / "objects"
        _tshark(path, "--export-objects", f"http,{objects}")
        assert sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in objects.iterdir()) \
            == sorted(b["sha256"] for b in s.bodies for _ in range(b["count"]))


def test_inner_ipv6_fragments_and_other_protocols_are_counted_not_decoded(tmp_path):
    udp6 = pcapgen.ipv6("fd00::1", "fd00::2", 17, pcapgen.udp(1, 2, b"x" * 20))
    frag_header = bytes([6, 0]) + (0x0001).to_bytes(2, "big") + (7).to_bytes(4, "big")
    fragment6 = pcapgen.ipv6("fd00::1", "fd00::2", 44, frag_header + b"y" * 32)
    outer = Outer()
    frames = [piece for packet in (udp6, fragment6)
              for piece in outer.wrap(pcapgen.ethernet(packet, ethertype=0x86DD))]
    frames += outer.wrap(pcapgen.ethernet(b"\0" * 28, ethertype=0x0806))  # ARP
    s = decode.decode_capture(write(tmp_path, frames))
    assert s.inner["ipv6"] == 2 and s.inner["non_ip"] == 1 and s.inner["non_ipv4"] == 3
    assert s.inner["non_tcp"] == 1 and s.inner["ip_fragments"] == 1
    assert s.inner["tcp_segments"] == 0 and s.malformed_frames == 0


@needs_tshark
def test_udp_to_the_vxlan_port_too_short_for_a_header_is_malformed_not_vxlan(tmp_path):
    stray = Outer(src="10.9.9.9", sport=1234)
    shorts = [stray.short(), stray.short(b"\x08\0\0"), stray.short(b"\x08\0\0\0\0\0\x07")]
    good = frames_of((Outer(vni=100), b2_exchange()))
    path = write(tmp_path, [*shorts[:2], *good, *shorts[2:]])
    assert all(len(f) == pcapgen.ETHERNET_MIN_FRAME for f in shorts)  # padded
    s = decode.decode_capture(path)
    d = s.to_dict()
    assert d["vxlan_malformed"] == 3 and d["vxlan_packets"] == len(good)
    assert d["vnis"] == [100] and d["outer_sources"] == ["10.40.2.5"]
    assert d["outer_udp_source_ports"] == 1
    assert sum(d["timeline"]["vxlan_packets"]) == len(good)
    assert s.delivered and any("too short for a VXLAN header" in n for n in s.notes)
    # tshark: a datagram with no room for the header is not VXLAN, or is "Malformed Packet".
    assert _tshark_count(path, "vxlan && !_ws.malformed") == d["vxlan_packets"]
    assert _tshark_count(path, "udp.dstport == 4789 && !(vxlan && !_ws.malformed)") == 3


@needs_tshark
def test_vxlan_with_the_i_flag_clear_is_invalid_not_a_tenant(tmp_path):
    invalid = frames_of((Outer(vni=7, flags=0), b2_exchange(messages=[(http_get("/i"),
                                                                        SMALL)])))
    valid = frames_of((Outer(vni=8, ident=5000), b2_exchange(client_port=41000)))
    path = write(tmp_path, [*invalid, *valid])
    s = decode.decode_capture(path)
    d = s.to_dict()
    assert d["vxlan_invalid"] == len(invalid) and d["vxlan_packets"] == len(valid)
    assert d["vxlan_bad_flags"] == d["vxlan_invalid"]  # the older key, kept
    assert d["vnis"] == [8] and list(d["per_vni"]) == ["8"]
    assert s.requests == {"GET /": 1}
    assert any("I flag clear" in note for note in s.notes)
    assert _tshark_count(path, "vxlan.flag_i == 0") == d["vxlan_invalid"]
    assert _tshark_count(path, "vxlan.flag_i == 1") == d["vxlan_packets"]
