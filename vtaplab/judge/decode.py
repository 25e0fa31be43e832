"""``python -m vtaplab decode PCAP``: what a collector's capture proves, as a verdict.

One pass over the file, constant memory in the number of packets:

  records (capture.py) -> link layer (Ethernet, Linux SLL/SLL2, raw IP)
    -> outer IPv4 (fragments reassembled in a bounded table) -> UDP to the VXLAN port
    -> VXLAN (VNI; datagrams too short for the header counted as malformed, the I flag clear
       as invalid: neither is a VXLAN packet nor a tenant's)
    -> inner Ethernet (802.1Q tags) -> inner IPv4 or IPv6 -> TCP
    -> per-direction byte stream, ordered by sequence number, followed from the SYN (its data
       too: TCP Fast Open) or from the first segment seen (duplicates and retransmissions
       dropped, out-of-order data buffered up to a cap, holes skipped and counted)
    -> HTTP/1.x start lines, headers, and response bodies (length + incremental sha256).

Headers are read with ``struct``/indexing on the raw bytes: no per-layer objects. A dpkt
per-layer parse runs at about 0.65x tshark's time; this keeps the common path (an inner ACK,
a body segment) to a few dozen bytecodes so ``bench decode`` can compare.

A capture may be several files (a tcpdump ring, or files named one by one): they are decoded as
one stream, in the order ``capture.open_members`` gives, so flows, fragments and HTTP messages
that span a rotation are still joined.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import struct
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtaplab import facts

# CaptureError, ReadState, read_records and ring_members are also this module's interface
# (the emulator, the verdict, ssh and the tests import them from here).
from vtaplab.judge.capture import (
    ACCEPTED,
    LINKTYPES,
    CaptureError,
    ReadState,
    Record,
    _merge_state,
    open_members,
    read_records,  # noqa: F401 (re-exported)
    ring_members,  # noqa: F401 (re-exported)
)

# Bounds that keep memory constant whatever the capture holds.
MAX_PENDING_DATAGRAMS = 4096       # outer IPv4 datagrams waiting for fragments
MAX_DATAGRAM_HELD = 2 * 65535      # bytes held for one datagram (overlaps included)
MAX_PENDING_BYTES = 32 * 1024 * 1024  # bytes held over all of them
FRAGMENT_TIMEOUT = 30.0            # seconds of capture time, as Linux's ipfrag_time
MAX_STREAMS = 20000                # inner TCP flow directions tracked at once
STREAM_IDLE = 300.0                # seconds of capture time before an idle stream is dropped
FIN_IDLE = 10.0                    # ... once it sent its FIN (late duplicates come within ms)
MAX_OOO_PER_STREAM = 512 * 1024    # out-of-order bytes buffered per direction
MAX_OOO_TOTAL = 32 * 1024 * 1024   # ... and over all directions
MAX_HEAD = 32 * 1024               # HTTP start line + headers
MAX_DISTINCT = 256                 # distinct request/status lines and bodies kept (VNIs and
                                   # outer sources: 16 times as many)
MAX_SAMPLES = 20                   # bodies (whole, incomplete) listed one by one
TIMELINE_BUCKETS = 3600            # VXLAN packets per second; wider for longer (must be even)

HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ",
                b"CONNECT ", b"TRACE ")
_START_PREFIXES = (*HTTP_METHODS, b"HTTP/")
_LONGEST_START = max(map(len, _START_PREFIXES))

# Inner IPv6 (RFC 8200 section 4): extension headers a TCP header may follow. Hop-by-hop,
# routing and destination options give their length in 8-octet units past the first 8; AH
# (RFC 4302) in 4-octet units past the first 8; a fragment header is 8 octets.
_IPV6_OPTION_HEADERS = frozenset({0, 43, 60})
_IPV6_FRAGMENT_HEADER = 44
_IPV6_AH = 51
MAX_IPV6_EXTENSIONS = 8   # headers walked before the packet counts as not TCP
IPV6_FRAGMENT = -1        # _ipv6_transport: a fragment (offset or more-fragments set)
IPV6_NOT_TCP = -2         # ... no TCP header

_U32 = struct.Struct("!I")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*chunked", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Inner TCP streams and HTTP.

# Stream parser states.
S_HEAD, S_BODY, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_CRLF, S_TRAILER, S_CLOSE, S_OTHER, \
    S_RESYNC = range(9)


class Stream:
    """One direction of one inner TCP connection: ordered bytes in, HTTP messages out."""

    __slots__ = ("body_expected", "body_got", "body_label", "broken", "buf", "fin", "fin_seq",
                 "hasher",
                 "isn", "key", "last_ts", "left", "next_seq", "ooo", "ooo_bytes", "pending",
                 "state", "vni")

    def __init__(self, key: bytes, vni: int, ts: float) -> None:
        self.key = key
        self.vni = vni
        self.next_seq: int | None = None
        self.isn: int | None = None
        self.ooo: dict[int, bytes] = {}
        self.ooo_bytes = 0
        self.state = S_HEAD
        self.buf = bytearray()
        self.left = 0
        self.hasher: Any = None
        self.body_got = 0
        self.body_expected: int | None = None
        self.body_label: tuple[str, str] = ("", "")
        self.broken = False
        self.fin = False
        self.fin_seq: int | None = None  # sequence number just after the last byte
        self.last_ts = ts
        self.pending: deque[str] | None = None  # request lines awaiting a response


@dataclass
class CaptureSummary:
    """Everything the decoder counts; ``to_dict()`` is what lands in the verdict."""

    path: str
    port: int
    format: str = ""
    compression: list[str] = field(default_factory=list)
    linktypes: list[str] = field(default_factory=list)
    frames: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    truncated: bool = False
    notes: list[str] = field(default_factory=list)
    snapped_frames: int = 0
    malformed_frames: int = 0
    non_vxlan_packets: int = 0
    vxlan_packets: int = 0
    vxlan_bad_flags: int = 0
    vxlan_malformed: int = 0
    vxlan_invalid: int = 0
    vnis: dict[int, dict[str, Any]] = field(default_factory=dict)
    outer_sources: dict[str, int] = field(default_factory=dict)
    outer_udp_source_ports: int = 0
    fragments: dict[str, int] = field(default_factory=dict)
    inner: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    responses: dict[str, int] = field(default_factory=dict)
    request_count: int = 0
    response_count: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    body_samples: list[dict[str, Any]] = field(default_factory=list)
    incomplete_bodies: list[dict[str, Any]] = field(default_factory=list)
    incomplete_body_count: int = 0
    largest_vxlan_gap: dict[str, float] | None = None
    timeline: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)   # decoded in this order

    @property
    def delivered(self) -> bool:
        return self.vxlan_packets > 0 and self.request_count > 0 and self.response_count > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "compression": self.compression,
            "linktypes": self.linktypes,
            "frames": self.frames,
            "first_timestamp": self.first_ts,
            "last_timestamp": self.last_ts,
            "truncated": self.truncated,
            "notes": self.notes,
            "snapped_frames": self.snapped_frames,
            "malformed_frames": self.malformed_frames,
            "non_vxlan_packets": self.non_vxlan_packets,
            "vxlan_port": self.port,
            "vxlan_packets": self.vxlan_packets,
            "vxlan_bad_flags": self.vxlan_bad_flags,
            "vxlan_malformed": self.vxlan_malformed,
            "vxlan_invalid": self.vxlan_invalid,
            "vnis": sorted(self.vnis),
            "per_vni": {str(v): s for v, s in sorted(self.vnis.items())},
            "outer_sources": sorted(self.outer_sources, key=_ip_sort_key),
            "outer_source_packets": dict(sorted(self.outer_sources.items(),
                                                key=lambda kv: _ip_sort_key(kv[0]))),
            "outer_udp_source_ports": self.outer_udp_source_ports,
            "fragments": self.fragments,
            "inner": self.inner,
            "inner_http": {
                "requests": list(self.requests),
                "responses": list(self.responses),
                "request_count": self.request_count,
                "response_count": self.response_count,
                "request_lines": self.requests,
                "response_lines": self.responses,
                "bodies": self.bodies,
                "body_samples": self.body_samples,
                "incomplete_bodies": self.incomplete_body_count,
                "incomplete_body_samples": self.incomplete_bodies,
            },
            "largest_vxlan_gap": self.largest_vxlan_gap,
            "timeline": self.timeline,
        } | ({"files": self.files} if len(self.files) > 1 else {})


def _ip_sort_key(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return (1 << 30,)


def _ip_text(raw: bytes) -> str:
    if len(raw) == 16:
        return str(ipaddress.IPv6Address(raw))
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def _ipv6_transport(data: bytes, q: int) -> int:
    """Offset of the TCP header of the IPv6 packet at ``q``, past its extension headers, or
    IPV6_FRAGMENT / IPV6_NOT_TCP. Raises IndexError when the headers run past the data."""
    next_header = data[q + 6]
    at = q + 40
    for _ in range(MAX_IPV6_EXTENSIONS):
        if next_header == 6:
            return at
        if next_header in _IPV6_OPTION_HEADERS:
            next_header, at = data[at], at + ((data[at + 1] + 1) << 3)
        elif next_header == _IPV6_FRAGMENT_HEADER:
            if ((data[at + 2] << 8) | data[at + 3]) & 0xFFF9:  # offset, or more to come
                return IPV6_FRAGMENT
            # An atomic fragment (RFC 6946): offset 0, no more fragments - the whole packet.
            next_header, at = data[at], at + 8
        elif next_header == _IPV6_AH:
            next_header, at = data[at], at + ((data[at + 1] + 2) << 2)
        else:
            return IPV6_NOT_TCP
    return IPV6_NOT_TCP


class Decoder:
    """Feed it records; read ``summary`` after ``finish()``."""

    def __init__(self, port: int = facts.VXLAN_PORT) -> None:
        self.port = port
        # outer
        self.frames = 0
        self.malformed = 0
        self.non_vxlan = 0
        self.vxlan = 0
        self.vxlan_short = 0     # UDP to the VXLAN port with no room for a VXLAN header
        self.vxlan_invalid = 0   # VXLAN with the I flag clear
        self.sources: dict[bytes, int] = {}
        self.sources_overflow = 0
        self.sports = bytearray(65536)  # 1 where an outer UDP source port was seen
        self.vnis: dict[int, list[Any]] = {}   # vni -> [packets, requests, responses, ...]
        self.vni_overflow = 0
        self.first_ts: float | None = None
        self.last_ts = 0.0
        self.last_vxlan_ts = 0.0
        self.gap_seconds = 0.0  # the largest gap between VXLAN packets, seconds
        self.gap_after = 0.0    # ... starting at this packet's time
        self.timeline: list[int] = []   # VXLAN packets per closed bucket from the first one
        self.bucket = 1.0               # bucket width, seconds
        self.bucket_end = float("-inf")
        self.bucket_count = 0           # packets in the open bucket
        # fragments
        self.pending: dict[bytes, list[Any]] = {}
        self.pending_bytes = 0
        self.frag_frames = 0
        self.reassembled = 0
        self.frag_incomplete = 0
        self.frag_overlaps = 0
        self.frag_since_sweep = 0
        # inner
        self.inner_frames = 0
        self.inner_ipv6 = 0
        self.inner_non_ip = 0
        self.inner_non_tcp = 0
        self.inner_fragments = 0
        self.vlan_tagged = 0
        self.tcp_segments = 0
        self.tcp_duplicates = 0
        self.tcp_out_of_order = 0
        self.tcp_holes = 0
        self.tcp_missing_bytes = 0
        self.streams: dict[bytes, Stream] = {}
        self.streams_seen = 0
        self.streams_evicted = 0
        self.ooo_total = 0
        self.since_sweep = 0
        # http
        self.requests: dict[str, int] = {}
        self.responses: dict[str, int] = {}
        self.request_count = 0
        self.response_count = 0
        self.other_lines = 0
        self.bodies: dict[tuple[str, str, int, str], int] = {}
        self.body_samples: list[dict[str, Any]] = []   # the first bodies, one by one
        self.incomplete: list[dict[str, Any]] = []
        self.incomplete_count = 0

    # -- outer layers ---------------------------------------------------------------------

    def frame(self, ts: float, linktype: int, data: bytes) -> None:
        """Decode one record (tests and callers with their own reader use this)."""
        self.run(((ts, linktype, data),))

    def run(self, records: Iterable[Record]) -> None:
        """Decode records: the hot loop, outer layers to the inner TCP header, inline.

        Plain counters live in locals for the loop and are added to the attributes at the
        end (method calls and attribute stores per packet cost more than the parsing). The
        order-dependent state (timeline, gaps, streams, fragments) stays on ``self``.
        """
        port = self.port
        sports = self.sports
        # Outer sources come in long runs of the same address: count the run in a local and
        # add it to the table when the address changes.
        run_src = b""
        run_count = 0
        vnis = self.vnis
        streams_get = self.streams.get
        fragment = self._fragment
        frames = malformed = non_vxlan = vxlan = vxlan_short = vxlan_invalid = 0
        inner_frames = vlan_tagged = ipv6 = non_ip = non_tcp = inner_fragments = segments = 0
        ts = self.last_ts
        for ts, linktype, data in records:
            frames += 1
            try:
                # -- link layer -> outer IPv4
                if linktype == 1:
                    etype = (data[12] << 8) | data[13]
                    off = 14
                    while etype == 0x8100 or etype == 0x88A8:
                        etype = (data[off + 2] << 8) | data[off + 3]
                        off += 4
                elif linktype == 276:
                    etype = (data[0] << 8) | data[1]
                    off = 20
                elif linktype == 113:
                    etype = (data[14] << 8) | data[15]
                    off = 16
                elif linktype == 0:
                    family = data[0] | data[3]  # AF_INET is 2 in either byte order
                    etype = 0x0800 if family == 2 else 0
                    off = 4
                else:
                    etype = 0x0800 if data[0] >> 4 == 4 else 0
                    off = 0
                if etype != 0x0800 or data[off] >> 4 != 4:
                    non_vxlan += 1
                    continue
                ihl = (data[off] & 0x0F) << 2
                end = off + ((data[off + 2] << 8) | data[off + 3])
                if end > len(data) or end == off:  # total length 0: a GSO super-packet
                    end = len(data)
                if data[off + 9] != 17:
                    non_vxlan += 1
                    continue
                src = data[off + 12:off + 16]
                if (data[off + 6] & 0x3F) or data[off + 7]:  # MF set or offset != 0
                    datagram = fragment(ts, data, off, ihl, end)
                    if datagram is None:
                        continue
                    data, u, end = datagram, 0, len(datagram)
                else:
                    u = off + ihl
                # -- UDP -> VXLAN
                if ((data[u + 2] << 8) | data[u + 3]) != port:
                    non_vxlan += 1
                    continue
                p = u + 8
                # The VXLAN header must fit in the datagram the IP total length bounds: past
                # it is Ethernet padding (or nothing), not a VNI. (The UDP length is not read:
                # checking it too costs about 3% of this loop, and only a corrupt datagram,
                # whose IP and UDP lengths disagree, would be caught by it.)
                if end - p < 8:
                    vxlan_short += 1
                    continue
                if not data[p] & 0x08:
                    # I flag clear: RFC 7348 section 5 makes the VNI invalid and Linux's vxlan
                    # driver drops the packet, so no tenant (VNI) ever receives it.
                    vxlan_invalid += 1
                    continue
                vxlan += 1
                if ts < self.bucket_end:
                    self.bucket_count += 1
                else:
                    self._timeline_roll(ts)
                if ts - self.last_vxlan_ts > self.gap_seconds:
                    self.gap_seconds = ts - self.last_vxlan_ts
                    self.gap_after = self.last_vxlan_ts
                self.last_vxlan_ts = ts
                if src == run_src:
                    run_count += 1
                else:
                    if run_count:
                        self._count_source(run_src, run_count)
                    run_src = src
                    run_count = 1
                sports[(data[u] << 8) | data[u + 1]] = 1
                vni = (data[p + 4] << 16) | (data[p + 5] << 8) | data[p + 6]
                stats = vnis.get(vni)
                if stats is None:
                    if len(vnis) >= MAX_DISTINCT * 16:
                        self.vni_overflow += 1
                        continue
                    # [packets, requests, responses, last outer source, outer sources]
                    stats = vnis[vni] = [0, 0, 0, b"", set()]
                stats[0] += 1
                if src != stats[3]:
                    stats[3] = src
                    if len(stats[4]) < MAX_DISTINCT:
                        stats[4].add(src)
                # -- inner Ethernet (802.1Q) -> IPv4 -> TCP
                e = p + 8
                inner_frames += 1
                etype = (data[e + 12] << 8) | data[e + 13]
                q = e + 14
                if etype == 0x8100 or etype == 0x88A8:
                    vlan_tagged += 1
                    while etype == 0x8100 or etype == 0x88A8:
                        etype = (data[q + 2] << 8) | data[q + 3]
                        q += 4
                if etype == 0x0800:
                    if data[q + 9] != 6:
                        non_tcp += 1
                        continue
                    if (data[q + 6] & 0x3F) or data[q + 7]:
                        inner_fragments += 1
                        continue
                    stop = q + ((data[q + 2] << 8) | data[q + 3])
                    if stop > end or stop == q:
                        stop = end
                    t = q + ((data[q] & 0x0F) << 2)
                elif etype == 0x86DD:
                    ipv6 += 1
                    stop = q + 40 + ((data[q + 4] << 8) | data[q + 5])
                    if stop > end or stop == q + 40:  # payload length 0: a jumbogram
                        stop = end
                    t = _ipv6_transport(data, q)
                    if t < 0:
                        if t == IPV6_FRAGMENT:
                            inner_fragments += 1
                        else:
                            non_tcp += 1
                        continue
                else:
                    non_ip += 1
                    continue
                flags = data[t + 13]
                payload_at = t + ((data[t + 12] >> 4) << 2)
                segments += 1
                if payload_at >= stop and not flags & 0x03:
                    continue  # a pure ACK: nothing for the streams
                # source and destination addresses, ports, VNI
                key = ((data[q + 12:q + 20] if etype == 0x0800 else data[q + 8:q + 40])
                       + data[t:t + 4] + data[p + 4:p + 7])
                stream = streams_get(key)
                if stream is None and payload_at >= stop and not flags & 0x02:
                    continue  # a bare FIN of a stream we never saw
                self._tcp(ts, vni, key, stream, _U32.unpack_from(data, t + 4)[0], flags,
                          data[payload_at:stop] if payload_at < stop else b"")
            except (IndexError, struct.error):
                malformed += 1
        if run_count:
            self._count_source(run_src, run_count)
        self.last_ts = ts
        # The loop counts in locals (attribute writes per frame are what it cannot afford);
        # they are folded into the totals once per batch, by counter name.
        batch = {"frames": frames, "malformed": malformed, "non_vxlan": non_vxlan,
                 "vxlan": vxlan, "vxlan_short": vxlan_short, "vxlan_invalid": vxlan_invalid,
                 "inner_frames": inner_frames, "vlan_tagged": vlan_tagged, "inner_ipv6": ipv6,
                 "inner_non_ip": non_ip, "inner_non_tcp": non_tcp,
                 "inner_fragments": inner_fragments, "tcp_segments": segments}
        for counter, count in batch.items():
            setattr(self, counter, getattr(self, counter) + count)

    def _count_source(self, src: bytes, count: int) -> None:
        sources = self.sources
        if src in sources:
            sources[src] += count
        elif len(sources) < MAX_DISTINCT * 16:
            sources[src] = count
        else:
            self.sources_overflow += count

    def _timeline_roll(self, ts: float) -> None:
        """The packet at ``ts`` falls after the current bucket: close buckets up to it."""
        if self.first_ts is None:
            self.first_ts = self.last_vxlan_ts = ts
            self.bucket_end = ts + self.bucket
            self.bucket_count = 1
            return
        timeline = self.timeline
        while ts >= self.bucket_end:
            timeline.append(self.bucket_count)
            self.bucket_count = 0
            self.bucket_end += self.bucket
            if len(timeline) >= TIMELINE_BUCKETS:  # always even here: see the constant
                # Too long a capture for this width: merge neighbours, double the width (the
                # open bucket, just started, widens with them). Even a jump of years ends
                # after a few dozen doublings.
                timeline[:] = [timeline[i] + timeline[i + 1]
                               for i in range(0, len(timeline), 2)]
                self.bucket_end += self.bucket
                self.bucket *= 2
        self.bucket_count += 1

    def _fragment(self, ts: float, data: bytes, off: int, ihl: int, end: int) -> bytes | None:
        """Hold one outer IPv4 fragment; return the datagram's payload once it is whole."""
        self.frag_frames += 1
        self.frag_since_sweep += 1
        if self.frag_since_sweep >= 4096:
            self._sweep_fragments(ts)
        key = data[off + 4:off + 6] + data[off + 12:off + 20]
        word = (data[off + 6] << 8) | data[off + 7]
        start = (word & 0x1FFF) << 3
        payload = data[off + ihl:end]
        entry = self.pending.get(key)
        if entry is None:
            if len(self.pending) >= MAX_PENDING_DATAGRAMS:
                self._sweep_fragments(ts, force=True)
            # [first ts, total length or -1, {offset: bytes}, bytes held]
            entry = self.pending[key] = [ts, -1, {}, 0]
        pieces = entry[2]
        old = pieces.get(start)
        if old is not None:
            entry[3] -= len(old)  # a duplicate fragment: keep one copy
            self.pending_bytes -= len(old)
        pieces[start] = payload
        entry[3] += len(payload)
        self.pending_bytes += len(payload)
        if entry[3] > MAX_DATAGRAM_HELD:
            # More than any IPv4 datagram can carry: overlapping junk. Drop it.
            self._drop_datagram(key)
            return None
        if self.pending_bytes > MAX_PENDING_BYTES:
            self._sweep_fragments(ts, force=True)
            if key not in self.pending:
                return None
        if not word & 0x2000:
            entry[1] = start + len(payload)
        total = entry[1]
        if total < 0 or entry[3] < total:
            return None
        position = 0
        parts = []
        for offset in sorted(pieces):
            piece = pieces[offset]
            if offset > position:
                return None  # a hole: the bytes held include overlaps
            if offset < position:
                self.frag_overlaps += 1
                piece = piece[position - offset:]
            parts.append(piece)
            position += len(piece)
        if position < total:
            return None
        self.pending_bytes -= self.pending.pop(key)[3]
        self.reassembled += 1
        return b"".join(parts)[:total]

    def _drop_datagram(self, key: bytes) -> None:
        self.pending_bytes -= self.pending.pop(key)[3]
        self.frag_incomplete += 1

    def _sweep_fragments(self, ts: float, *, force: bool = False) -> None:
        """Drop datagrams older than the timeout; ``force``: at least the oldest eighth."""
        self.frag_since_sweep = 0
        stale = [k for k, e in self.pending.items() if ts - e[0] > FRAGMENT_TIMEOUT]
        if force and not stale:
            stale = list(self.pending)[:max(1, len(self.pending) // 8)]
        for key in stale:
            self._drop_datagram(key)

    # -- inner TCP ------------------------------------------------------------------------

    def _tcp(self, ts: float, vni: int, key: bytes, stream: Stream | None, seq: int,
             flags: int, payload: bytes) -> None:
        if stream is None:
            stream = self._new_stream(key, vni, ts)
        stream.last_ts = ts
        if flags & 0x02:  # SYN: data starts at seq + 1
            if stream.isn != seq:
                if stream.isn is not None or stream.next_seq is not None:
                    # The 4-tuple is reused by a new connection: close the old one.
                    self._close_stream(stream)
                    stream = self.streams[key] = Stream(key, vni, ts)
                    self.streams_seen += 1
                stream.isn = seq
                stream.next_seq = (seq + 1) & 0xFFFFFFFF
            if not payload:
                return
            # TCP Fast Open (RFC 7413): the SYN carries the first bytes of the stream.
            seq = (seq + 1) & 0xFFFFFFFF
        if payload:
            if seq == stream.next_seq and not stream.ooo:
                self._deliver(stream, payload)  # in order, nothing waiting: the usual case
            else:
                self._segment(stream, seq, payload)
        if flags & 0x01:
            stream.fin = True
            stream.fin_seq = (seq + len(payload)) & 0xFFFFFFFF
            if stream.state == S_CLOSE and not stream.ooo:
                # A body "until close" is whole only if no byte before the FIN is missing.
                self._finish_body(stream, complete=stream.fin_seq == stream.next_seq)

    def _new_stream(self, key: bytes, vni: int, ts: float) -> Stream:
        self.since_sweep += 1
        if len(self.streams) >= MAX_STREAMS or self.since_sweep >= 4096:
            self._sweep_streams(ts)
        stream = self.streams[key] = Stream(key, vni, ts)
        self.streams_seen += 1
        return stream

    def _sweep_streams(self, ts: float) -> None:
        self.since_sweep = 0
        idle = [s for s in self.streams.values()
                if ts - s.last_ts > (FIN_IDLE if s.fin else STREAM_IDLE)]
        if len(self.streams) - len(idle) >= MAX_STREAMS:
            ordered = sorted(self.streams.values(), key=lambda s: s.last_ts)
            idle = ordered[:len(ordered) // 4]
        for stream in idle:
            self._close_stream(stream)
            del self.streams[stream.key]
            self.streams_evicted += 1

    def _segment(self, stream: Stream, seq: int, payload: bytes) -> None:
        nxt = stream.next_seq
        if nxt is None:
            # The connection began before the capture: read from here, but only trust data
            # once a segment starts with an HTTP start line.
            stream.next_seq = nxt = seq
            stream.state = S_RESYNC
        delta = (seq - nxt) & 0xFFFFFFFF
        if delta == 0:
            self._deliver(stream, payload)
            if stream.ooo:
                self._drain(stream)
            return
        if delta >= 0x80000000:  # starts before what we have: duplicate or overlap
            behind = 0x100000000 - delta
            if behind >= len(payload):
                self.tcp_duplicates += 1
                return
            self._deliver(stream, payload[behind:])
            if stream.ooo:
                self._drain(stream)
            return
        # A segment from the future: hold it until the hole before it fills.
        self.tcp_out_of_order += 1
        old = stream.ooo.get(seq)
        if old is not None:
            if len(old) >= len(payload):
                self.tcp_duplicates += 1
                return
            stream.ooo_bytes -= len(old)
            self.ooo_total -= len(old)
        stream.ooo[seq] = payload
        stream.ooo_bytes += len(payload)
        self.ooo_total += len(payload)
        if stream.ooo_bytes > MAX_OOO_PER_STREAM:
            self._skip_hole(stream)
        if self.ooo_total > MAX_OOO_TOTAL:
            for other in list(self.streams.values()):
                while other.ooo:
                    self._skip_hole(other)

    def _drain(self, stream: Stream) -> None:
        """Deliver buffered segments that now follow on."""
        ooo = stream.ooo
        while ooo:
            nxt = stream.next_seq
            assert nxt is not None
            exact = ooo.pop(nxt, None)
            if exact is not None:  # the usual case: the segment that starts right here
                stream.ooo_bytes -= len(exact)
                self.ooo_total -= len(exact)
                self._deliver(stream, exact)
                continue
            progressed = False
            for seq in list(ooo):
                delta = (seq - nxt) & 0xFFFFFFFF
                if delta == 0 or delta >= 0x80000000:
                    payload = ooo.pop(seq)
                    stream.ooo_bytes -= len(payload)
                    self.ooo_total -= len(payload)
                    behind = (0x100000000 - delta) & 0xFFFFFFFF
                    if behind < len(payload):
                        self._deliver(stream, payload[behind:] if behind else payload)
                        progressed = True
                        break
                    self.tcp_duplicates += 1
                    progressed = True
                    break
            if not progressed:
                return

    def _skip_hole(self, stream: Stream) -> None:
        """Give up on the bytes before the earliest buffered segment: they are lost."""
        nxt = stream.next_seq
        assert nxt is not None
        first = min(stream.ooo, key=lambda s: (s - nxt) & 0xFFFFFFFF)
        hole = (first - nxt) & 0xFFFFFFFF
        self.tcp_holes += 1
        self.tcp_missing_bytes += hole
        self._gap(stream, hole)
        stream.next_seq = first
        self._drain(stream)

    # -- HTTP -----------------------------------------------------------------------------

    def _deliver(self, stream: Stream, data: bytes) -> None:
        stream.next_seq = ((stream.next_seq or 0) + len(data)) & 0xFFFFFFFF
        while data:
            state = stream.state
            if state == S_BODY:
                take = stream.left
                if take > len(data):
                    take = len(data)
                if stream.hasher is not None:
                    stream.hasher.update(data[:take] if take < len(data) else data)
                stream.body_got += take
                stream.left -= take
                data = data[take:]
                if stream.left == 0:
                    self._finish_body(stream, complete=not stream.broken)
            elif state == S_HEAD:
                data = self._head(stream, data)
            elif state == S_OTHER:
                return
            elif state == S_RESYNC:
                data = self._resync(stream, data)
            elif state == S_CLOSE:
                if stream.hasher is not None:
                    stream.hasher.update(data)
                stream.body_got += len(data)
                return
            else:
                data = self._chunked(stream, data)

    def _resync(self, stream: Stream, data: bytes) -> bytes:
        """Out of step (the stream began before the capture, or bytes went missing): skip
        data until a segment starts with an HTTP start line. A segment too short to tell
        ("GE", "HTTP") is held until the next one says, as a stream followed from its start
        would be; returns what to parse as a head, or b"" to skip."""
        buf = stream.buf
        candidates = (bytes(buf) + data, data) if buf else (data,)
        buf.clear()
        for candidate in candidates:
            if candidate.startswith(_START_PREFIXES):
                stream.state = S_HEAD
                return candidate
        for candidate in candidates:
            if len(candidate) < _LONGEST_START and any(
                    prefix.startswith(candidate) for prefix in _START_PREFIXES):
                buf += candidate
                break
        return b""

    def _head(self, stream: Stream, data: bytes) -> bytes:
        buf = stream.buf
        if not buf:
            # The common case: a whole head in one segment, no copying into the buffer.
            end = data.find(b"\r\n\r\n")
            if end >= 0 and data.startswith(_START_PREFIXES):
                self._message(stream, data[:end])
                return data[end + 4:]
        scan_from = max(0, len(buf) - 3)
        buf += data
        if len(buf) >= 8 and not buf.startswith(_START_PREFIXES):
            stream.state = S_OTHER  # not HTTP: ignore this direction from now on
            buf.clear()
            return b""
        end = buf.find(b"\r\n\r\n", scan_from)
        if end < 0:
            if len(buf) > MAX_HEAD:
                stream.state = S_OTHER
                buf.clear()
            return b""
        head = bytes(buf[:end])
        rest = bytes(buf[end + 4:])
        buf.clear()
        self._message(stream, head)
        return rest

    def _message(self, stream: Stream, head: bytes) -> None:
        eol = head.find(b"\r\n")
        start = (head[:eol] if eol >= 0 else head).decode("latin-1").strip()
        found = _CONTENT_LENGTH.search(head)
        length = int(found.group(1)) if found else None
        chunked = b"hunked" in head and _CHUNKED.search(head) is not None
        stats = self.vnis.get(stream.vni)
        if start.startswith("HTTP/"):
            self.response_count += 1
            _count(self.responses, start)
            if stats is not None:
                stats[2] += 1
            reverse = self.streams.get(_reverse_key(stream.key))
            request = reverse.pending.popleft() if reverse and reverse.pending else ""
            parts = start.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if 100 <= status < 200 and reverse is not None and reverse.pending is not None:
                reverse.pending.appendleft(request)  # interim: the final response follows
            no_body = request.startswith("HEAD ") or 100 <= status < 200 or status in (204, 304)
            stream.body_label = (request, start)
            stream.hasher = hashlib.sha256()
            stream.body_got = 0
            stream.broken = False
            if no_body:
                stream.state = S_HEAD
            elif chunked:
                stream.body_expected = None
                stream.state = S_CHUNK_SIZE
            elif length is not None:
                stream.body_expected = length
                stream.left = length
                stream.state = S_BODY
                if length == 0:
                    self._finish_body(stream, complete=True)
            else:
                stream.body_expected = None
                stream.state = S_CLOSE
        else:
            request = " ".join(start.split(" ")[:2])[:200]
            self.request_count += 1
            _count(self.requests, request)
            if stats is not None:
                stats[1] += 1
            if stream.pending is None:
                stream.pending = deque(maxlen=64)
            stream.pending.append(request)
            # Request bodies are skipped, not reported.
            stream.hasher = None
            stream.body_label = (request, "")
            if chunked:
                stream.state = S_CHUNK_SIZE
            elif length:
                stream.left = length
                stream.body_expected = length
                stream.state = S_BODY
            else:
                stream.state = S_HEAD

    def _chunked(self, stream: Stream, data: bytes) -> bytes:
        state = stream.state
        if state == S_CHUNK_DATA:
            take = min(stream.left, len(data))
            if stream.hasher is not None:
                stream.hasher.update(data[:take])
            stream.body_got += take
            stream.left -= take
            if stream.left == 0:
                stream.state = S_CHUNK_CRLF
            return data[take:]
        buf = stream.buf
        buf += data
        newline = buf.find(b"\n")
        if newline < 0:
            if len(buf) > MAX_HEAD:
                self._gap(stream, 0)
            return b""
        line = bytes(buf[:newline]).strip()
        rest = bytes(buf[newline + 1:])
        buf.clear()
        if state == S_CHUNK_CRLF:
            stream.state = S_CHUNK_SIZE
            if line:
                self._gap(stream, 0)
                return b""
            return rest
        if state == S_CHUNK_SIZE:
            digits = line.split(b";")[0].strip()
            if not digits or digits.strip(b"0123456789abcdefABCDEF"):
                self._gap(stream, 0)  # not a chunk size: lost sync
                return b""
            size = int(digits, 16)
            if size == 0:
                stream.state = S_TRAILER
            else:
                stream.left = size
                stream.state = S_CHUNK_DATA
            return rest
        # S_TRAILER: header lines until an empty one
        if not line:
            self._finish_body(stream, complete=not stream.broken)
        return rest

    def _finish_body(self, stream: Stream, *, complete: bool) -> None:
        request, status = stream.body_label
        if stream.hasher is not None:
            if complete:
                digest = stream.hasher.hexdigest()
                key = (request, status, stream.body_got, digest)
                if key in self.bodies or len(self.bodies) < MAX_DISTINCT:
                    self.bodies[key] = self.bodies.get(key, 0) + 1
                if len(self.body_samples) < MAX_SAMPLES:
                    self.body_samples.append({
                        "flow": _flow_text(stream.key), "vni": stream.vni, "request": request,
                        "response": status, "length": stream.body_got, "sha256": digest})
            else:
                self.incomplete_count += 1
                if len(self.incomplete) < MAX_SAMPLES:
                    self.incomplete.append({
                        "flow": _flow_text(stream.key), "vni": stream.vni, "request": request,
                        "response": status, "expected_length": stream.body_expected,
                        "received": stream.body_got})
        stream.hasher = None
        stream.broken = False
        stream.state = S_HEAD
        stream.buf.clear()

    def _gap(self, stream: Stream, hole: int) -> None:
        """Bytes of this direction are missing: resynchronise as well as possible."""
        state = stream.state
        if state == S_BODY and 0 < hole < stream.left:
            # The message length says where the next message starts: keep counting.
            stream.left -= hole
            stream.broken = True
            return
        if state in (S_BODY, S_CLOSE, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_CRLF, S_TRAILER):
            self._finish_body(stream, complete=False)
        if stream.state != S_OTHER:
            stream.state = S_RESYNC
            stream.buf.clear()

    def _close_stream(self, stream: Stream) -> None:
        while stream.ooo:
            self._skip_hole(stream)
        if stream.state == S_CLOSE:
            self._finish_body(stream, complete=stream.fin_seq is not None
                              and stream.fin_seq == stream.next_seq)
        elif stream.state in (S_BODY, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_CRLF, S_TRAILER):
            self._finish_body(stream, complete=False)

    # -- result ---------------------------------------------------------------------------

    def finish(self, path: Path, state: ReadState) -> CaptureSummary:
        for stream in list(self.streams.values()):
            self._close_stream(stream)
        self.frag_incomplete += len(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        summary = CaptureSummary(path=str(path), port=self.port)
        summary.format = state.format
        summary.compression = sorted(state.compression)
        summary.linktypes = [LINKTYPES.get(t, str(t)) for t in sorted(state.linktypes)]
        summary.frames = self.frames
        summary.first_ts = self.first_ts
        summary.last_ts = self.last_vxlan_ts if self.first_ts is not None else None
        summary.truncated = state.truncated
        summary.notes = list(state.notes)
        summary.snapped_frames = state.snapped
        summary.malformed_frames = self.malformed
        summary.non_vxlan_packets = self.non_vxlan
        summary.vxlan_packets = self.vxlan
        # The I flag is the only flag RFC 7348 defines: "bad flags" are invalid packets.
        summary.vxlan_bad_flags = summary.vxlan_invalid = self.vxlan_invalid
        summary.vxlan_malformed = self.vxlan_short
        summary.vnis = {
            v: {"packets": s[0], "requests": s[1], "responses": s[2],
                "delivered": s[1] > 0 and s[2] > 0,
                "outer_sources": sorted((_ip_text(a) for a in s[4]), key=_ip_sort_key)}
            for v, s in self.vnis.items()}
        summary.outer_sources = {_ip_text(k): n for k, n in self.sources.items()}
        summary.outer_udp_source_ports = sum(self.sports)
        summary.fragments = {"frames": self.frag_frames, "reassembled": self.reassembled,
                             "incomplete": self.frag_incomplete, "overlaps": self.frag_overlaps}
        summary.inner = {
            "frames": self.inner_frames, "vlan_tagged": self.vlan_tagged,
            "non_ipv4": self.inner_ipv6 + self.inner_non_ip, "ipv6": self.inner_ipv6,
            "non_ip": self.inner_non_ip, "non_tcp": self.inner_non_tcp,
            "ip_fragments": self.inner_fragments, "tcp_segments": self.tcp_segments,
            "tcp_streams": self.streams_seen, "tcp_duplicates": self.tcp_duplicates,
            "tcp_out_of_order": self.tcp_out_of_order, "tcp_holes": self.tcp_holes,
            "tcp_missing_bytes": self.tcp_missing_bytes,
        }
        summary.requests = self.requests
        summary.responses = self.responses
        summary.request_count = self.request_count
        summary.response_count = self.response_count
        summary.bodies = [
            {"request": r, "response": s, "length": n, "sha256": h, "count": c}
            for (r, s, n, h), c in self.bodies.items()]
        summary.body_samples = self.body_samples
        summary.incomplete_bodies = self.incomplete
        summary.incomplete_body_count = self.incomplete_count
        if self.gap_seconds > 0:
            summary.largest_vxlan_gap = {"seconds": round(self.gap_seconds, 6),
                                         "after": round(self.gap_after, 6)}
        summary.timeline = {"start": self.first_ts, "bucket_seconds": self.bucket,
                            "vxlan_packets": [*self.timeline, self.bucket_count]
                            if self.first_ts is not None else []}
        if self.sources_overflow or self.vni_overflow:
            summary.notes.append(f"too many distinct outer sources/VNIs: "
                                 f"{self.sources_overflow + self.vni_overflow} packets not "
                                 "itemised")
        if self.malformed:
            summary.notes.append(f"{self.malformed} frames too short for their headers")
        if self.vxlan_short:
            summary.notes.append(f"{self.vxlan_short} UDP/{self.port} datagrams too short for a "
                                 "VXLAN header (8 bytes): malformed, not counted as VXLAN")
        if self.vxlan_invalid:
            summary.notes.append(f"{self.vxlan_invalid} VXLAN packets with the I flag clear "
                                 "(RFC 7348: VNI invalid; Linux drops them): not counted as "
                                 "VXLAN nor as any VNI's")
        return summary


def _count(table: dict[str, int], line: str) -> None:
    if line in table:
        table[line] += 1
    elif len(table) < MAX_DISTINCT:
        table[line] = 1
    else:
        table["(other)"] = table.get("(other)", 0) + 1


def _flow_text(key: bytes) -> str:
    """A stream key as 'src:port -> dst:port' (IPv6: '[src]:port -> [dst]:port')."""
    n = (len(key) - 7) // 2
    src, dst = _ip_text(key[0:n]), _ip_text(key[n:2 * n])
    if n == 16:
        src, dst = f"[{src}]", f"[{dst}]"
    return (f"{src}:{int.from_bytes(key[2 * n:2 * n + 2], 'big')} -> "
            f"{dst}:{int.from_bytes(key[2 * n + 2:2 * n + 4], 'big')}")


def _reverse_key(key: bytes) -> bytes:
    # key = src(n) dst(n) sport(2) dport(2) vni(3); n is 4 (IPv4) or 16 (IPv6)
    n = (len(key) - 7) // 2
    return (key[n:2 * n] + key[0:n] + key[2 * n + 2:2 * n + 4] + key[2 * n:2 * n + 2]
            + key[2 * n + 4:])


def decode_capture(path: Path | Sequence[Path], *,
                   port: int = facts.VXLAN_PORT) -> CaptureSummary:
    """Decode a capture in one streaming pass; raise CaptureError if it isn't one.

    ``path`` is a capture file, the prefix of a tcpdump ring, or a sequence of files; several
    files are decoded as one stream in rotation order (see ``capture.open_members``).
    """
    members = open_members(path)
    several = len(members) > 1
    state = ReadState()
    decoder = Decoder(port)
    try:
        for member in members:
            # One run() per file: the decoder's state carries over, the hot loop stays as is.
            try:
                decoder.run(member.records)
            except OSError as exc:  # EIO and friends, mid-file
                raise CaptureError(f"{member.path}: read failed "
                                   f"({exc.strerror or exc}); accepted: {ACCEPTED}") from None
            _merge_state(state, member.state, member.path, several=several)
    finally:
        for member in members:
            member.close()
    files = [member.path for member in members]
    label = Path(path) if isinstance(path, (str, Path)) else files[0]
    summary = decoder.finish(label, state)
    summary.files = [str(member) for member in files]
    return summary


# --------------------------------------------------------------------------------------------
# CLI


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}; accepted: 1-65535")
    return value


def main(argv: list[str]) -> int:
    from vtaplab.judge import verdict

    parser = argparse.ArgumentParser(
        prog="python -m vtaplab decode",
        description="Decode a collector capture (pcap or pcapng) into a verdict.")
    parser.add_argument("pcap", type=Path, nargs="+",
                        help="capture file (pcap or pcapng); several files, or the prefix of "
                             "a tcpdump ring (-w PREFIX -C MB -W N), are read as one capture "
                             "in rotation order")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument("--port", type=_port, default=facts.VXLAN_PORT,
                        help=f"VXLAN UDP port (default {facts.VXLAN_PORT})")
    parser.add_argument("--scenario", choices=sorted(facts.SCENARIOS),
                        help="judge against this scenario's expected outcome")
    parser.add_argument("--traffic-log", type=Path, metavar="FILE",
                        help="the run's traffic log (# vtap-traffic v1), for the loss figures")
    args = parser.parse_args(argv)
    if args.traffic_log is not None:
        # Bad input is refused before the (long) decode, in one line: missing, unreadable,
        # too large or not a traffic log.
        try:
            verdict.parse_traffic_log(args.traffic_log)
        except verdict.TrafficLogError as exc:
            print(f"vtaplab decode: --traffic-log {exc}", file=sys.stderr)
            return 2
    capture = args.pcap[0] if len(args.pcap) == 1 else args.pcap
    try:
        summary = decode_capture(capture, port=args.port)
    except CaptureError as exc:
        print(f"vtaplab decode: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vtaplab decode: interrupted while reading {' '.join(map(str, args.pcap))}",
              file=sys.stderr)
        return 130
    files = [Path(f) for f in summary.files] + ([args.traffic_log] if args.traffic_log else [])
    result = verdict.verdict_from_summary(scenario=args.scenario, summary=summary, files=files,
                                          traffic_log=args.traffic_log)
    text = json.dumps(result, indent=2) if args.json else verdict.format_table(result)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # The reader left early (`| head`): not an error of ours, and no traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
