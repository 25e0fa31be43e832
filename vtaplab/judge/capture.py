"""Capture files in, (timestamp, link type, frame) records out: pcap, pcapng, tcpdump rings.

The readers yield one record at a time and never hold more than one record in memory; what
they learn about the file itself (format, truncation, snapped records) goes into a ReadState.
A capture may be several files: a ring written by ``tcpdump -w PREFIX -C MB -W N`` (files
PREFIX0..PREFIX<N-1>, zero-padded to the width of N-1) or files named one by one;
``capture_files`` puts them in tcpdump's rotation order.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

ACCEPTED = "pcap or pcapng"

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL2 = 276
# DLT_RAW is 12 (most systems) or 14 (OpenBSD) in files written by old libpcaps; every link
# type not named in the hot loop is read as raw IP.
LINKTYPES: dict[int, str] = {
    LINKTYPE_NULL: "null/loopback",
    LINKTYPE_ETHERNET: "ethernet",
    LINKTYPE_LINUX_SLL: "linux-sll",
    LINKTYPE_LINUX_SLL2: "linux-sll2",
    LINKTYPE_RAW: "raw-ip",
    LINKTYPE_IPV4: "raw-ipv4",
    12: "raw-ip",
    14: "raw-ip",
}
ACCEPTED_LINKTYPES = "ethernet (1), linux-sll (113), linux-sll2 (276), raw IP (101/228/12/14)"

MAX_RECORD = 0x4000000             # a pcap record claiming more than 64 MiB is corruption
_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


class CaptureError(ValueError):
    """The file is not a capture this decoder reads (or can't be read at all)."""


# --------------------------------------------------------------------------------------------
# Readers: (timestamp, linktype, frame bytes) per record; what they learn about the file
# itself (format, truncation, snapped records) goes into a ReadState.


@dataclass
class ReadState:
    """What the reader learned about the file itself."""

    format: str = ""
    linktypes: set[int] = field(default_factory=set)
    truncated: bool = False
    notes: list[str] = field(default_factory=list)
    snapped: int = 0   # records cut shorter than the packet by the snap length


Record = tuple[float, int, bytes]


def open_capture(path: Path) -> tuple[BinaryIO, bytes]:
    try:
        fh = path.open("rb", buffering=1 << 20)
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture; accepted: {ACCEPTED}")\
            from None
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read ({exc.strerror}); accepted: {ACCEPTED}")\
            from None
    return fh, fh.read(4)


def read_records(path: Path, state: ReadState) -> Iterator[Record]:
    """Yield the capture's records; raise CaptureError when it isn't pcap or pcapng."""
    fh, magic = open_capture(path)
    with fh:
        if not magic:
            state.format = "empty"
            state.notes.append("the file is empty (0 bytes): no capture header, no packets")
            return
        if magic in _PCAP_MAGIC:
            yield from _read_pcap(path, fh, magic, state)
        elif magic == _PCAPNG_SHB:
            yield from _read_pcapng(path, fh, magic, state)
        else:
            raise CaptureError(f"{path}: not a capture file (starts with {magic.hex()}); "
                               f"accepted: {ACCEPTED}")


def _check_linktype(path: Path, linktype: int) -> None:
    if linktype not in LINKTYPES:
        raise CaptureError(f"{path}: link type {linktype} is not supported; accepted: "
                           f"{ACCEPTED_LINKTYPES}")


def _read_pcap(path: Path, fh: BinaryIO, magic: bytes, state: ReadState) -> Iterator[Record]:
    order, scale = _PCAP_MAGIC[magic]
    header = fh.read(20)
    if len(header) < 20:
        raise CaptureError(f"{path}: truncated pcap header ({4 + len(header)} of 24 bytes); "
                           f"accepted: {ACCEPTED}")
    _major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack(order + "HHiIII", header)
    linktype = network & 0x0FFFFFFF  # the top bits may carry FCS information
    _check_linktype(path, linktype)
    state.format = "pcap"
    state.linktypes.add(linktype)
    record = struct.Struct(order + "IIII")
    unpack, read = record.unpack, fh.read
    number = 0
    while True:
        head = read(16)
        if len(head) < 16:
            if head:
                state.truncated = True
                state.notes.append(f"record {number + 1}: header cut after {len(head)} of 16 "
                                   "bytes (file truncated)")
            return
        number += 1
        sec, frac, incl, orig = unpack(head)
        if incl > MAX_RECORD:
            state.truncated = True
            state.notes.append(f"record {number}: claims {incl} bytes; the rest of the file "
                               "is not readable as pcap records")
            return
        data = read(incl)
        if len(data) < incl:
            state.truncated = True
            state.notes.append(f"record {number}: cut after {len(data)} of {incl} bytes "
                               "(file truncated); decoded what is there")
            if data:
                yield sec + frac * scale, linktype, data
            return
        if orig > incl:
            state.snapped += 1
        yield sec + frac * scale, linktype, data


def _read_pcapng(path: Path, fh: BinaryIO, magic: bytes, state: ReadState) -> Iterator[Record]:
    state.format = "pcapng"
    order = "<"
    interfaces: list[tuple[int, float, int]] = []  # (linktype, seconds per tick, snaplen)
    block_head = magic + fh.read(4)
    number = 0
    while True:
        if len(block_head) < 8:
            if block_head:
                state.truncated = True
                state.notes.append(f"block {number + 1}: header cut (file truncated)")
            return
        number += 1
        if block_head[:4] == _PCAPNG_SHB:
            bom = fh.read(4)
            if bom == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                order = ">"
            elif number == 1:
                raise CaptureError(f"{path}: bad pcapng section header; accepted: {ACCEPTED}")
            else:
                state.truncated = True
                state.notes.append(f"block {number}: bad section header; stopped there")
                return
            length = struct.unpack(order + "I", block_head[4:8])[0]
            rest = fh.read(length - 12) if 28 <= length <= MAX_RECORD else b""
            if len(rest) < length - 12 or length < 28 or length % 4:
                if number == 1:
                    raise CaptureError(f"{path}: bad or truncated pcapng section header; accepted: "
                                       f"{ACCEPTED}")
                state.truncated = True
                state.notes.append(f"block {number}: section header bad or cut (file truncated?)")
                return
            interfaces = []
            block_head = fh.read(8)
            continue
        btype, length = struct.unpack(order + "II", block_head)
        if length < 12 or length % 4 or length > MAX_RECORD:
            state.truncated = True
            state.notes.append(f"block {number}: impossible length {length}; stopped there")
            return
        body = fh.read(length - 8)
        cut = len(body) < length - 8
        body = body[:length - 12]
        if btype == 1 and not cut:  # interface description
            linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body)
            interfaces.append((linktype, _tsresol(body[8:], order), snaplen))
            if linktype in LINKTYPES:
                state.linktypes.add(linktype)
            else:
                state.notes.append(f"interface {len(interfaces) - 1}: link type {linktype} "
                                   f"not supported (accepted: {ACCEPTED_LINKTYPES}); skipped")
        elif btype in (6, 2) and len(body) >= 20:  # enhanced / obsolete packet block
            if btype == 6:
                iface, hi, lo, incl, orig = struct.unpack_from(order + "IIIII", body)
            else:
                iface, _drops, hi, lo, incl, orig = struct.unpack_from(order + "HHIIII", body)
            if iface < len(interfaces) and interfaces[iface][0] in LINKTYPES:
                linktype, tick, _snap = interfaces[iface]
                data = body[20:20 + incl]
                if orig > incl:
                    state.snapped += 1
                if data:
                    yield ((hi << 32) | lo) * tick, linktype, data
        elif btype == 3 and len(body) >= 4 and interfaces:  # simple packet block
            linktype, _tick, snaplen = interfaces[0]
            orig = struct.unpack_from(order + "I", body)[0]
            incl = min(orig, snaplen) if snaplen else orig
            if linktype in LINKTYPES:
                if orig > incl:
                    state.snapped += 1
                yield 0.0, linktype, body[4:4 + incl]
        if cut:
            state.truncated = True
            state.notes.append(f"block {number}: cut after {len(body) + 8} of {length} bytes "
                               "(file truncated); decoded what is there")
            return
        block_head = fh.read(8)


def _tsresol(options: bytes, order: str) -> float:
    """Seconds per timestamp tick from an IDB's options (if_tsresol, code 9); default 1 us."""
    offset = 0
    while offset + 4 <= len(options):
        code, length = struct.unpack_from(order + "HH", options, offset)
        if code == 0:
            break
        if code == 9 and length >= 1:
            value = options[offset + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0 ** -value
        offset += 4 + length + (-length % 4)
    return 1e-6


def ring_members(prefix: Path) -> list[Path]:
    """The files tcpdump -C/-W wrote for ``-w PREFIX``: PREFIX + digits, in index order."""
    prefix = Path(prefix)
    pattern = re.compile(re.escape(prefix.name) + r"(\d+)")
    try:
        entries = list(prefix.parent.iterdir()) if prefix.parent.is_dir() else []
    except OSError:
        entries = []
    members = []
    for entry in entries:
        found = pattern.fullmatch(entry.name)
        if found and entry.is_file():
            members.append((int(found.group(1)), entry))
    return [entry for _index, entry in sorted(members)]


def _first_timestamp(path: Path) -> float | None:
    records = read_records(path, ReadState())
    try:
        for ts, _linktype, _data in records:
            return ts
    except OSError as exc:
        raise CaptureError(f"{path}: read failed "
                           f"({exc.strerror or exc}); accepted: {ACCEPTED}") from None
    finally:
        records.close()
    return None


def capture_files(path: Path | Sequence[Path]) -> list[Path]:
    """The files to decode as one capture, in order; raise CaptureError when there are none.

    A file is itself. A path that is no file but the prefix of a tcpdump ring (``-w PREFIX
    -C MB -W N``) is the ring's members. Several paths are those files. More than one file are
    put in tcpdump's rotation order: by the timestamp of each file's first packet (a ring that
    wrapped starts after the newest file), files without packets last, ties in index order.
    Modification times are not used: they are lost when files are copied off a VM.
    """
    if isinstance(path, (str, Path)):
        one = Path(path)
        if one.exists():
            return [one]
        files = ring_members(one)
        if not files:
            raise CaptureError(f"{one}: cannot read (no such file, nor a ring {one.name}0, "
                               f"{one.name}1, ... as tcpdump -w {one.name} -C MB -W N "
                               f"writes); accepted: {ACCEPTED}")
    else:
        files = [Path(p) for p in path]
        if not files:
            raise CaptureError(f"no capture files given; accepted: {ACCEPTED}")
    if len(files) == 1:
        return files
    keyed = []
    for index, member in enumerate(files):
        ts = _first_timestamp(member)
        keyed.append((ts is None, ts if ts is not None else 0.0, index, member))
    return [member for *_key, member in sorted(keyed, key=lambda k: k[:3])]


def _merge_state(into: ReadState, part: ReadState, path: Path, *, several: bool) -> None:
    into.format = into.format if into.format not in ("", "empty") else part.format
    into.linktypes |= part.linktypes
    into.truncated = into.truncated or part.truncated
    into.snapped += part.snapped
    into.notes += [f"{path.name}: {note}" if several else note for note in part.notes]
