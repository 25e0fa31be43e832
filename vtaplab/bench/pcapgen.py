"""Synthetic VXLAN captures: the decoder's tests and ``bench decode`` write their input here.

Packets are built byte by byte with ``struct`` (scapy builds ~800 packets/s here, far too slow
for a 100k-packet bench). The shapes follow what a vTAP collector sees: an outer
Ethernet/IPv4/UDP(4789)/VXLAN datagram, fragmented by IP when it exceeds the MTU, carrying the
tapped VM's inner Ethernet/IPv4 (or IPv6)/TCP frames of HTTP/1.1 conversations. The odd shapes
a real collector also meets are here too: connections whose start was not captured (slice the
frames), data in a SYN (TCP Fast Open), VXLAN with the I flag clear, UDP datagrams to the VXLAN
port too short for a VXLAN header (padded to Ethernet's minimum frame), gzip'ed files.
"""

from __future__ import annotations

import array
import gzip
import ipaddress
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from vtaplab import facts

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ETHERTYPE_IPV4, ETHERTYPE_IPV6 = 0x0800, 0x86DD
ETHERNET_MIN_FRAME = 60    # without the FCS: shorter frames are padded with zeros on the wire
VXLAN_FLAG_I = 0x08        # RFC 7348 section 5: "I" set = the VNI is valid
TCP_OPTION_FAST_OPEN = 34  # RFC 7413 section 4.1.1


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071), summed with ``array`` so big segments stay cheap."""
    if len(data) % 2:
        data += b"\0"
    words = array.array("H", data)
    if sys.byteorder == "little":
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip4(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


def ip6(address: str) -> bytes:
    return ipaddress.IPv6Address(address).packed


def is_ipv6(address: str) -> bool:
    return ":" in address


def ethernet(payload: bytes, *, ethertype: int = ETHERTYPE_IPV4, vlan: int | None = None,
             src: bytes = MAC_A, dst: bytes = MAC_B, pad: bool = False) -> bytes:
    """An Ethernet frame; ``pad``: zero-filled to the 60-byte minimum, as a NIC sends it."""
    tag = struct.pack("!HH", 0x8100, vlan & 0x0FFF) if vlan is not None else b""
    frame = dst + src + tag + struct.pack("!H", ethertype) + payload
    if pad and len(frame) < ETHERNET_MIN_FRAME:
        frame += b"\0" * (ETHERNET_MIN_FRAME - len(frame))
    return frame


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ident: int = 0,
         flags_offset: int = 0, ttl: int = 64, total_length: int | None = None) -> bytes:
    length = 20 + len(payload) if total_length is None else total_length
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, ident & 0xFFFF, flags_offset, ttl,
                         proto, 0, ip4(src), ip4(dst))
    checksum = _checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, *, hop_limit: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, hop_limit, ip6(src),
                       ip6(dst)) + payload


def ip_packet(src: str, dst: str, proto: int, payload: bytes) -> tuple[int, bytes]:
    """(ethertype, packet): IPv6 when the addresses are, IPv4 otherwise."""
    if is_ipv6(src):
        return ETHERTYPE_IPV6, ipv6(src, dst, proto, payload)
    return ETHERTYPE_IPV4, ipv4(src, dst, proto, payload)


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    # Checksum 0 ("none") is legal for UDP over IPv4 and what many VTEPs send.
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
        payload: bytes = b"", window: int = 65535, options: bytes = b"") -> bytes:
    """A TCP segment with a valid checksum over the IPv4 or IPv6 pseudo-header."""
    options += b"\x01" * (-len(options) % 4)  # NOP-padded to whole words
    header = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                         (5 + len(options) // 4) << 4, flags, window, 0, 0) + options
    length = len(header) + len(payload)
    if is_ipv6(src):
        pseudo = ip6(src) + ip6(dst) + struct.pack("!IxxxB", length, 6)
    else:
        pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, 6, length)
    checksum = _checksum(pseudo + header + payload)
    return header[:16] + struct.pack("!H", checksum) + header[18:] + payload


def vxlan(vni: int, inner_frame: bytes, *, flags: int = VXLAN_FLAG_I) -> bytes:
    return struct.pack("!II", flags << 24, (vni & 0xFFFFFF) << 8) + inner_frame


def fragment(ip_packet: bytes, mtu: int) -> list[bytes]:
    """Split an IPv4 packet (20-byte header) into fragments no larger than ``mtu``."""
    if len(ip_packet) <= mtu:
        return [ip_packet]
    header, payload = ip_packet[:20], ip_packet[20:]
    src, dst = header[12:16], header[16:20]
    ident, proto, ttl = struct.unpack_from("!H", header, 4)[0], header[9], header[8]
    step = (mtu - 20) // 8 * 8
    pieces = []
    for offset in range(0, len(payload), step):
        chunk = payload[offset:offset + step]
        more = 0x2000 if offset + step < len(payload) else 0
        raw = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(chunk), ident, more | offset // 8,
                          ttl, proto, 0, src, dst)
        raw = raw[:10] + struct.pack("!H", _checksum(raw)) + raw[12:]
        pieces.append(raw + chunk)
    return pieces


@dataclass
class Outer:
    """How the VTEP wraps inner frames: outer addresses, VNI, source port, MTU."""

    src: str = "10.40.2.5"
    dst: str = "10.40.3.4"
    vni: int = 100
    sport: int = 49152
    dport: int = facts.VXLAN_PORT
    mtu: int = 1500
    ident: int = 1
    flags: int = VXLAN_FLAG_I

    def wrap(self, inner_frame: bytes) -> list[bytes]:
        """Inner Ethernet frame -> outer Ethernet frames (several when fragmented)."""
        datagram = ipv4(self.src, self.dst, 17, udp(self.sport, self.dport,
                                                   vxlan(self.vni, inner_frame,
                                                         flags=self.flags)),
                        ident=self.ident)
        self.ident = (self.ident + 1) & 0xFFFF
        return [ethernet(piece) for piece in fragment(datagram, self.mtu)]

    def short(self, payload: bytes = b"") -> bytes:
        """A UDP datagram to the VXLAN port with ``payload`` (under 8 bytes: no room for a
        VXLAN header), in a frame padded to Ethernet's minimum, as it arrives on the wire."""
        datagram = ipv4(self.src, self.dst, 17, udp(self.sport, self.dport, payload),
                        ident=self.ident)
        self.ident = (self.ident + 1) & 0xFFFF
        return ethernet(datagram, pad=True)


@dataclass
class HttpExchange:
    """One HTTP/1.1 connection: requests and their responses, segmented at ``mss``.

    Addresses may be IPv4 or IPv6. ``fast_open``: the first request rides in the SYN, with a
    TCP Fast Open cookie (RFC 7413), as a client that connected before sends it.
    ``split_at``: every request is sent as two segments, cut after that many bytes.
    """

    client: str = "10.30.1.5"
    server: str = "10.30.1.4"
    client_port: int = 40000
    server_port: int = 80
    mss: int = 1460
    vlan: int | None = None
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    fast_open: bool = False
    split_at: int | None = None

    def frames(self) -> Iterator[bytes]:
        """Inner Ethernet frames in wire order: handshake, request/response pairs, FINs."""
        c, s = self.client, self.server
        cseq, sseq = 1000, 5000

        def seg(from_client: bool, flags: int, payload: bytes = b"",
                options: bytes = b"") -> bytes:
            if from_client:
                body = tcp(c, s, self.client_port, self.server_port, cseq, sseq, flags, payload,
                           options=options)
                ethertype, packet = ip_packet(c, s, 6, body)
                return ethernet(packet, ethertype=ethertype, vlan=self.vlan, src=MAC_A,
                                dst=MAC_B)
            body = tcp(s, c, self.server_port, self.client_port, sseq, cseq, flags, payload,
                       options=options)
            ethertype, packet = ip_packet(s, c, 6, body)
            return ethernet(packet, ethertype=ethertype, vlan=self.vlan, src=MAC_B, dst=MAC_A)

        messages = list(self.messages)
        if self.fast_open and messages:
            request, response = messages.pop(0)
            cookie = bytes(range(1, 9))
            yield seg(True, TCP_SYN, request,
                      options=bytes([TCP_OPTION_FAST_OPEN, 2 + len(cookie)]) + cookie)
            cseq += 1 + len(request)
            messages.insert(0, (b"", response))
        else:
            yield seg(True, TCP_SYN)
            cseq += 1
        yield seg(False, TCP_SYN | TCP_ACK)
        sseq += 1
        yield seg(True, TCP_ACK)
        for request, response in messages:
            cut = self.split_at
            pieces = ([c for c in (request[:cut], request[cut:]) if c] if cut is not None
                      else _chunks(request, self.mss))
            for chunk in pieces:
                yield seg(True, TCP_PSH | TCP_ACK, chunk)
                cseq += len(chunk)
            for chunk in _chunks(response, self.mss):
                yield seg(False, TCP_ACK, chunk)
                sseq += len(chunk)
            yield seg(True, TCP_ACK)
        yield seg(True, TCP_FIN | TCP_ACK)
        cseq += 1
        yield seg(False, TCP_FIN | TCP_ACK)
        sseq += 1
        yield seg(True, TCP_ACK)


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


def http_get(path: str = "/", host: str = "10.30.1.4") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: vtaplab\r\n\r\n".encode()


def http_ok(body: bytes, status: str = "200 OK") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nServer: vtaplab\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def body_of(size: int, seed: int = 0) -> bytes:
    """A deterministic, not-too-compressible body of ``size`` bytes."""
    block = bytes((i * 131 + seed * 7 + (i >> 8)) & 0xFF for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


class PcapWriter:
    """Classic pcap (microsecond timestamps), any link type."""

    def __init__(self, fh: BinaryIO, linktype: int = LINKTYPE_ETHERNET,
                 snaplen: int = 262144) -> None:
        self.fh = fh
        self.snaplen = snaplen
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))

    def write(self, ts: float, frame: bytes) -> None:
        sec = int(ts)
        usec = round((ts - sec) * 1_000_000)
        kept = frame[:self.snaplen]
        self.fh.write(struct.pack("<IIII", sec, usec, len(kept), len(frame)) + kept)


class PcapngWriter:
    """pcapng: one section, one interface, enhanced packet blocks (microsecond resolution)."""

    def __init__(self, fh: BinaryIO, linktype: int = LINKTYPE_ETHERNET,
                 snaplen: int = 262144) -> None:
        self.fh = fh
        self.snaplen = snaplen
        shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        fh.write(_block(0x0A0D0D0A, shb_body))
        fh.write(_block(1, struct.pack("<HHI", linktype, 0, snaplen)))

    def write(self, ts: float, frame: bytes) -> None:
        stamp = round(ts * 1_000_000)
        kept = frame[:self.snaplen]
        body = struct.pack("<IIIII", 0, stamp >> 32, stamp & 0xFFFFFFFF, len(kept),
                           len(frame)) + kept + b"\0" * (-len(kept) % 4)
        self.fh.write(_block(6, body))


def _block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def to_sll2(ethernet_frame: bytes, ifindex: int = 2) -> bytes:
    """Re-frame an Ethernet frame the way ``tcpdump -i any`` writes it (LINKTYPE_LINUX_SLL2)."""
    ethertype = ethernet_frame[12:14]
    header = ethertype + b"\0\0" + struct.pack("!iHBB", ifindex, 1, 0, 6) + ethernet_frame[6:12]
    return header + b"\0\0" + ethernet_frame[14:]


def to_sll(ethernet_frame: bytes) -> bytes:
    """Re-frame an Ethernet frame as LINKTYPE_LINUX_SLL (``tcpdump -i any`` before SLL2)."""
    header = struct.pack("!HHH", 0, 1, 6) + ethernet_frame[6:12] + b"\0\0"
    return header + ethernet_frame[12:14] + ethernet_frame[14:]


def write_capture(path: Path, frames: Iterable[bytes], *, pcapng: bool = False,
                  linktype: int = LINKTYPE_ETHERNET, start: float = 1_700_000_000.0,
                  step: float = 0.0001, snaplen: int = 262144, gzipped: bool = False) -> int:
    """Write Ethernet ``frames`` (re-framed for ``linktype``) to ``path``; returns the count.

    ``gzipped``: the file is gzip-compressed, as ``tcpdump -z gzip`` leaves ring members.
    """
    reframe = {LINKTYPE_ETHERNET: None, LINKTYPE_LINUX_SLL2: to_sll2,
               LINKTYPE_LINUX_SLL: to_sll, LINKTYPE_RAW: lambda f: f[14:]}[linktype]
    count = 0
    opener = gzip.open if gzipped else Path.open
    with opener(path, "wb") as fh:
        writer = (PcapngWriter if pcapng else PcapWriter)(fh, linktype, snaplen)
        for count, frame in enumerate(frames, 1):
            writer.write(start + count * step, reframe(frame) if reframe else frame)
    return count


def http_capture_frames(exchanges: Iterable[tuple[Outer, HttpExchange]]) -> Iterator[bytes]:
    """Outer frames for each (outer, exchange) pair, one exchange after another."""
    for outer, exchange in exchanges:
        for inner in exchange.frames():
            yield from outer.wrap(inner)


def bench_frames(packets: int, *, big_body: int = 200_000, small_body: int = 612,
                 vnis: tuple[int, ...] = (100, 101, 102)) -> Iterator[bytes]:
    """About ``packets`` outer frames of a mixed collector capture, generated lazily.

    Connections rotate over ``vnis`` and outer source ports; every fourth fetches a
    ``big_body`` file with full-size segments (their VXLAN datagrams exceed 1500 bytes and are
    fragmented), the rest fetch a small page over a smaller MSS (no fragmentation). A little
    non-HTTP inner traffic (an SSH-like stream) and non-VXLAN outer traffic are mixed in.
    """
    big = http_ok(body_of(big_body, 1))
    small = http_ok(body_of(small_body, 2))
    written = 0
    conn = 0
    while written < packets:
        vni = vnis[conn % len(vnis)]
        outer = Outer(vni=vni, sport=49152 + conn % 64, ident=conn * 251)
        exchange = HttpExchange(client_port=32768 + conn % 28000, mss=1460 if conn % 4 == 0
                                else 1200)
        if conn % 4 == 0:
            exchange.messages = [(http_get("/big.bin"), big)]
        elif conn % 17 == 5:
            exchange.server_port = 22
            exchange.messages = [(b"SSH-2.0-OpenSSH_9.2\r\n" + body_of(300, 3), body_of(900, 4))]
        else:
            exchange.messages = [(http_get("/"), small), (http_get("/index.html"), small)]
        for inner in exchange.frames():
            for frame in outer.wrap(inner):
                if written >= packets:
                    return
                yield frame
                written += 1
        if conn % 10 == 3 and written < packets:
            # Non-VXLAN noise on the collector's NIC: a DNS-ish UDP datagram.
            yield ethernet(ipv4("10.40.3.4", "168.63.129.16", 17, udp(53000, 53, b"\0" * 40)))
            written += 1
        conn += 1
