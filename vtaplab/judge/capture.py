"""Capture files in, (timestamp, link type, frame) records out: pcap, pcapng, tcpdump rings.

The readers yield one record at a time and never hold more than one record in memory; what
they learn about the file itself (format, compression, truncation, snapped records) goes into
a ReadState. A file compressed with gzip (as ``tcpdump -z gzip`` leaves ring members), bzip2
or xz is decompressed while it is read; a corrupt block ends the file with a note, or is one
line of error when nothing came before it. A capture may be several files: a ring written by
``tcpdump -w PREFIX -C MB -W N`` (files PREFIX0..PREFIX<N-1>, zero-padded to the width of N-1)
or files named one by one; ``open_members`` puts them in tcpdump's rotation order and reads a
pipe or FIFO only once.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import stat
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

ACCEPTED = "pcap or pcapng (plain, gzip, bzip2 or xz)"

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

# Compressed files, by their first bytes: those read through the standard library, and those
# named so the user knows what to run (zstd and lz4 need packages the lab doesn't install).
_DECOMPRESSORS: dict[bytes, tuple[str, Callable[[BinaryIO], BinaryIO]]] = {
    b"\x1f\x8b": ("gzip", lambda fh: gzip.GzipFile(fileobj=fh, mode="rb")),
    b"BZh": ("bzip2", lambda fh: bz2.BZ2File(fh, mode="rb")),
    b"\xfd7zX": ("xz", lambda fh: lzma.LZMAFile(fh, mode="rb")),
}
_OTHER_COMPRESSION = {b"\x28\xb5\x2f\xfd": "zstd", b"\x04\x22\x4d\x18": "lz4"}
# What a corrupt or cut compressed stream raises (BadGzipFile is an OSError).
_DECOMPRESS_ERRORS = (EOFError, zlib.error, lzma.LZMAError, OSError)

# pcapng blocks (the block definitions of draft-ietf-opsawg-pcapng; the obsolete Packet Block
# in its appendix): type -> (name, bytes of fixed fields in the body). A shorter body is
# corruption, not a packet.
PCAPNG_IDB, PCAPNG_SPB, PCAPNG_OPB, PCAPNG_EPB = 1, 3, 2, 6
_PCAPNG_FIXED = {
    PCAPNG_IDB: ("interface description", 8),
    PCAPNG_SPB: ("simple packet", 4),
    PCAPNG_OPB: ("packet", 20),
    PCAPNG_EPB: ("enhanced packet", 20),
}


class CaptureError(ValueError):
    """The file is not a capture this decoder reads (or can't be read at all)."""


# --------------------------------------------------------------------------------------------
# Readers: (timestamp, linktype, frame bytes) per record; what they learn about the file
# itself (format, truncation, snapped records) goes into a ReadState.


@dataclass
class ReadState:
    """What the reader learned about the file itself."""

    format: str = ""
    compression: set[str] = field(default_factory=set)   # "gzip", "bzip2", "xz"; none: plain
    linktypes: set[int] = field(default_factory=set)
    truncated: bool = False
    notes: list[str] = field(default_factory=list)
    snapped: int = 0   # records cut shorter than the packet by the snap length


Record = tuple[float, int, bytes]


def open_capture(path: Path, state: ReadState) -> tuple[BinaryIO, bytes]:
    """The file, decompressed if it is compressed, and its first four bytes."""
    try:
        fh: BinaryIO = path.open("rb", buffering=1 << 20)
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture; accepted: {ACCEPTED}")\
            from None
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read ({exc.strerror}); accepted: {ACCEPTED}")\
            from None
    magic = fh.read(4)
    for start, (name, opener) in _DECOMPRESSORS.items():
        if magic.startswith(start):
            # A pipe can't seek back: hand the decompressor the bytes already read.
            raw = _Prepended(magic, fh)
            fh = _Decompressed(opener(raw), raw, name, path, state)  # type: ignore[arg-type]
            state.compression.add(name)
            magic = fh.read(4)
            if not magic:
                fh.close()
                raise CaptureError(f"{path}: {name}-compressed, but nothing in it could be "
                                   f"decompressed; accepted: {ACCEPTED}")
            break
    for start, name in _OTHER_COMPRESSION.items():
        if magic.startswith(start):
            fh.close()
            raise CaptureError(f"{path}: compressed with {name}, which this reader does not "
                               f"decompress; run '{name} -d' on it first; accepted: {ACCEPTED}")
    return fh, magic


class _Prepended:
    """A binary file whose first bytes were already read: those first, then the rest."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head = head
        self.rest = rest

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.rest.read(size)
        if size is None or size < 0:
            data, self.head = self.head + self.rest.read(), b""
            return data
        data, self.head = self.head[:size], self.head[size:]
        if len(data) < size:
            data += self.rest.read(size - len(data))
        return data

    def close(self) -> None:
        self.rest.close()


class _Decompressed:
    """A decompressing reader whose corrupt or cut stream reads as the end of the file,
    with a note: the records before the damage are still decoded (as with a cut pcap)."""

    def __init__(self, inner: BinaryIO, raw: _Prepended, name: str, path: Path,
                 state: ReadState) -> None:
        self.inner, self.raw, self.name, self.path, self.state = inner, raw, name, path, state
        self.done = 0        # decompressed bytes handed out
        self.broken = False  # the stream failed: every later read is the end of the file

    def read(self, size: int = -1) -> bytes:
        if self.broken:
            return b""
        try:
            data = self.inner.read(size)
        except _DECOMPRESS_ERRORS as exc:
            self.broken = True
            self.state.truncated = True
            self.state.notes.append(f"{self.name} stream corrupt or cut after {self.done} "
                                    f"decompressed bytes ({exc}); decoded what came before")
            return b""
        self.done += len(data)
        return data

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.raw.close()

    def __enter__(self) -> _Decompressed:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def read_records(path: Path, state: ReadState) -> Iterator[Record]:
    """Yield the capture's records; raise CaptureError when it isn't pcap or pcapng."""
    fh, magic = open_capture(path, state)
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
            inside = "".join(f"{name}-compressed file " for name in state.compression)
            raise CaptureError(f"{path}: not a capture file ({inside}starts with "
                               f"{magic.hex()}); accepted: {ACCEPTED}")


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
    yielded = False  # a corrupt block after packets ends the file; before any, it is an error
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
        fixed = _PCAPNG_FIXED.get(btype)
        if fixed is not None and not cut and len(body) < fixed[1]:
            problem = (f"pcapng block {number} ({fixed[0]}) has a {len(body)}-byte body, "
                       f"shorter than its {fixed[1]} bytes of fixed fields: the file is corrupt")
            if not yielded:
                raise CaptureError(f"{path}: {problem}; accepted: {ACCEPTED}")
            state.truncated = True
            state.notes.append(f"{problem}; stopped there")
            return
        if btype == PCAPNG_IDB and not cut:
            linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body)
            interfaces.append((linktype, _tsresol(body[8:], order), snaplen))
            if linktype in LINKTYPES:
                state.linktypes.add(linktype)
            else:
                state.notes.append(f"interface {len(interfaces) - 1}: link type {linktype} "
                                   f"not supported (accepted: {ACCEPTED_LINKTYPES}); skipped")
        elif btype in (PCAPNG_EPB, PCAPNG_OPB) and len(body) >= 20:
            if btype == PCAPNG_EPB:
                iface, hi, lo, incl, orig = struct.unpack_from(order + "IIIII", body)
            else:
                iface, _drops, hi, lo, incl, orig = struct.unpack_from(order + "HHIIII", body)
            if iface < len(interfaces) and interfaces[iface][0] in LINKTYPES:
                linktype, tick, _snap = interfaces[iface]
                data = body[20:20 + incl]
                if orig > incl:
                    state.snapped += 1
                if data:
                    yielded = True
                    yield ((hi << 32) | lo) * tick, linktype, data
        elif btype == PCAPNG_SPB and len(body) >= 4 and interfaces:
            linktype, _tick, snaplen = interfaces[0]
            orig = struct.unpack_from(order + "I", body)[0]
            incl = min(orig, snaplen) if snaplen else orig
            if linktype in LINKTYPES:
                if orig > incl:
                    state.snapped += 1
                yielded = True
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
        if code == 9 and length >= 1 and offset + 4 < len(options):
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


@dataclass
class Member:
    """One file of a capture: its path, what its reader learns, and its records."""

    path: Path
    state: ReadState
    records: Iterator[Record]
    readers: list[Iterator[Record]] = field(default_factory=list)  # to close when done

    def close(self) -> None:
        for reader in self.readers:
            close = getattr(reader, "close", None)
            if close is not None:
                close()


def _rereadable(path: Path) -> bool:
    """A regular file can be opened twice (once to peek, once to decode); a pipe, FIFO or
    device gives its bytes once. A path that can't be stat'ed is left to the reader's error."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return True


def _next_record(path: Path, records: Iterator[Record]) -> Record | None:
    try:
        return next(records, None)
    except OSError as exc:
        raise CaptureError(f"{path}: read failed "
                           f"({exc.strerror or exc}); accepted: {ACCEPTED}") from None


def _first_timestamp(path: Path) -> float | None:
    records = read_records(path, ReadState())
    try:
        first = _next_record(path, records)
    finally:
        records.close()
    return first[0] if first is not None else None


def _then(first: Record, rest: Iterator[Record]) -> Iterator[Record]:
    yield first
    yield from rest


def _peeked(path: Path) -> tuple[float | None, Member]:
    """A member read only once: its first record now (for the order), the rest later."""
    state = ReadState()
    reader = read_records(path, state)
    member = Member(path, state, reader, [reader])
    try:
        first = _next_record(path, reader)
    except BaseException:
        member.close()
        raise
    if first is not None:
        member.records = _then(first, reader)
        member.readers.append(member.records)
        return first[0], member
    return None, member


def member_paths(path: Path | Sequence[Path]) -> list[Path]:
    """The files of a capture, as named; raise CaptureError when there are none.

    A file is itself. A path that is no file but the prefix of a tcpdump ring (``-w PREFIX
    -C MB -W N``) is the ring's members. Several paths are those files.
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
        return files
    files = [Path(p) for p in path]
    if not files:
        raise CaptureError(f"no capture files given; accepted: {ACCEPTED}")
    return files


def open_members(path: Path | Sequence[Path]) -> list[Member]:
    """The capture's files, ready to read in order; close each Member when done.

    More than one file are put in tcpdump's rotation order: by the timestamp of each file's
    first packet (a ring that wrapped starts after the newest file), files without packets
    last, ties in the order named. Modification times are not used: they are lost when files
    are copied off a VM. A regular file is peeked and closed, then read again when its turn
    comes; a pipe or FIFO (``decode <(zcat a.gz) b.pcap``) is read once: its first record is
    read for the order and its reader stays open until its turn. (Several pipes fed one after
    the other by a single writer would wait on each other: feed them at the same time.)
    """
    files = member_paths(path)
    if len(files) == 1:
        state = ReadState()
        reader = read_records(files[0], state)
        return [Member(files[0], state, reader, [reader])]
    keyed: list[tuple[bool, float, int, Member]] = []
    try:
        for index, file in enumerate(files):
            if _rereadable(file):
                ts = _first_timestamp(file)
                state = ReadState()
                # A generator: the file is opened again only when decoding reaches it.
                reader = read_records(file, state)
                member = Member(file, state, reader, [reader])
            else:
                ts, member = _peeked(file)
            keyed.append((ts is None, ts if ts is not None else 0.0, index, member))
    except BaseException:
        for *_key, member in keyed:
            member.close()
        raise
    return [member for *_key, member in sorted(keyed, key=lambda k: k[:3])]


def _merge_state(into: ReadState, part: ReadState, path: Path, *, several: bool) -> None:
    into.format = into.format if into.format not in ("", "empty") else part.format
    into.compression |= part.compression
    into.linktypes |= part.linktypes
    into.truncated = into.truncated or part.truncated
    into.snapped += part.snapped
    into.notes += [f"{path.name}: {note}" if several else note for note in part.notes]
