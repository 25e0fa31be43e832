"""Fuzz: a few hundred mutated pcap, pcapng and gzip'ed captures, decoded in a child process.

Fixed seed, so a failure names a file that can be rebuilt. The child decodes each file under
its own alarm and reports tracebacks, hangs and its peak RSS; the parent bounds the whole run.
Any outcome but a summary or a CaptureError (one line, exit 2 on the command line) is a bug.
"""

from __future__ import annotations

import gzip
import json
import random
import struct
import subprocess
import sys

from vtaplab import PROJECT_ROOT
from vtaplab.bench import pcapgen
from vtaplab.bench.pcapgen import HttpExchange, Outer, http_get, http_ok

SEED = 20261129
MUTANTS_PER_SEED_FILE = 75      # x 4 seed files (pcap, pcapng, each plain and gzip'ed)
PER_FILE_SECONDS = 5.0          # a file this small decodes in milliseconds: more is a hang
WHOLE_RUN_SECONDS = 120.0       # the child is killed past this, and the test fails
PEAK_RSS_GROWTH_MB = 150        # over the child's RSS before it decodes anything
CLI_SAMPLES = 8                 # mutants also run through `python -m vtaplab decode`

CHILD = r"""
import json, resource, signal, sys, time, traceback
from pathlib import Path
from vtaplab.judge import decode

class Hang(Exception):
    pass

def alarm(_signum, _frame):
    raise Hang()

signal.signal(signal.SIGALRM, alarm)
limit = float(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = {"files": 0, "capture_errors": 0, "tracebacks": [], "hangs": [], "slowest": 0.0}
for path in sorted(Path(sys.argv[1]).iterdir()):
    report["files"] += 1
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        json.dumps(decode.decode_capture(path).to_dict())
    except decode.CaptureError as exc:
        report["capture_errors"] += 1
        if "\n" in str(exc):
            report["tracebacks"].append(f"{path.name}: multi-line error {exc!r}")
    except Hang:
        report["hangs"].append(path.name)
    except Exception:
        report["tracebacks"].append(f"{path.name}: {traceback.format_exc()}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    report["slowest"] = max(report["slowest"], time.perf_counter() - start)
report["rss_before_kb"] = before
report["rss_peak_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(report))
"""


def seed_frames() -> list[bytes]:
    """Every shape the decoder knows, small: fragments, IPv4 and IPv6, VLAN, chunked,
    Fast Open, short and I-flag-clear VXLAN, non-VXLAN noise."""
    body = http_ok(pcapgen.body_of(3000, 4))
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
               b"0\r\n\r\n")
    pairs = [
        (Outer(mtu=400, vni=1), HttpExchange(mss=300, messages=[(http_get("/a"), body),
                                                                 (http_get("/c"), chunked)])),
        (Outer(vni=2, ident=900), HttpExchange(client="fd00::5", server="fd00::4", vlan=7,
                                               messages=[(http_get("/six"), body)])),
        (Outer(vni=3, ident=1900, flags=0), HttpExchange(fast_open=True, client_port=41000,
                                                         messages=[(http_get("/t"), body)])),
    ]
    frames = list(pcapgen.http_capture_frames(pairs))
    frames.insert(5, Outer(src="10.9.9.9").short(b"\x08\0\0"))
    frames.insert(9, pcapgen.ethernet(pcapgen.ipv4("10.40.3.4", "168.63.129.16", 17,
                                                   pcapgen.udp(53000, 53, b"\0" * 40))))
    return frames


def _units(data: bytes, pcapng: bool) -> list[tuple[int, int, int]]:
    """(offset, kind, length) of each pcapng block or pcap record, as far as they parse."""
    units = []
    at = 0 if pcapng else 24
    while at + (8 if pcapng else 16) <= len(data):
        if pcapng:
            kind, length = struct.unpack_from("<II", data, at)
        else:
            kind, length = -1, 16 + struct.unpack_from("<I", data, at + 8)[0]
        if length < 12:
            break
        units.append((at, kind, length))
        at += length
    return units


def _length_fields(data: bytes, pcapng: bool) -> list[int]:
    """Offsets of the 4-byte length fields a reader trusts: record/block lengths."""
    offsets = []
    for at, kind, _length in _units(data, pcapng):
        if not pcapng:
            offsets += [at + 8, at + 12]      # captured and original length
        elif kind == 6:
            offsets += [at + 4, at + 20, at + 24]
        else:
            offsets += [at + 4]
    return offsets


def _shrink(rnd: random.Random, data: bytes, pcapng: bool) -> bytes:
    """One block (any type as likely as any other) or record made shorter, consistently:
    its length fields agree with its bytes, only the body is too short for what it is."""
    units = _units(data, pcapng)
    if not units:
        return data
    kind = rnd.choice(sorted({u[1] for u in units}))
    at, _kind, length = rnd.choice([u for u in units if u[1] == kind])
    if pcapng:
        body = rnd.randrange(0, length - 12, 4) if length > 12 else 0
        unit = data[at:at + 4] + struct.pack("<I", 12 + body) + data[at + 8:at + 8 + body] \
            + struct.pack("<I", 12 + body)
    else:
        body = rnd.randrange(0, length - 16) if length > 16 else 0
        unit = data[at:at + 8] + struct.pack("<I", body) + data[at + 12:at + 16 + body]
    return data[:at] + unit + data[at + length:]


def mutate(rnd: random.Random, data: bytes, pcapng: bool) -> bytes:
    raw = bytearray(data)
    for _ in range(rnd.randint(1, 3)):
        kind = rnd.randrange(7)
        if kind == 0:    # flip bytes anywhere
            for _ in range(rnd.randint(1, 16)):
                raw[rnd.randrange(len(raw))] = rnd.randrange(256)
        elif kind == 1:  # cut the file short
            raw = raw[:rnd.randrange(len(raw))]
        elif kind == 2:  # a length field gets a value readers must not trust
            fields = _length_fields(bytes(raw), pcapng)
            if fields:
                at = rnd.choice(fields)
                value = rnd.choice([0, 1, 4, 7, 8, 11, 12, 13, 16, 20, 28, 0x3FFFFFF,
                                    0x4000000, 0x4000001, 0x7FFFFFFF, 0xFFFFFFFF,
                                    rnd.randrange(1 << 32)])
                raw[at:at + 4] = struct.pack("<I", value)
        elif kind == 3:  # drop a range
            start = rnd.randrange(len(raw))
            del raw[start:start + rnd.randint(1, 64)]
        elif kind == 4:  # insert junk
            start = rnd.randrange(len(raw))
            raw[start:start] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 64)))
        elif kind == 5:  # repeat a range (a block or record seen twice, or half of one)
            start = rnd.randrange(len(raw))
            raw[start:start] = raw[start:start + rnd.randint(1, 512)]
        else:            # a block or record shorter than its type needs
            raw = bytearray(_shrink(rnd, bytes(raw), pcapng))
        if not raw:
            break
    return bytes(raw)


def test_mutated_captures_give_a_summary_or_one_line_never_a_traceback_or_a_hang(tmp_path):
    rnd = random.Random(SEED)
    frames = seed_frames()
    seeds: list[tuple[str, bytes, bool, bool]] = []
    for pcapng in (False, True):
        path = tmp_path / "seed"
        pcapgen.write_capture(path, frames, pcapng=pcapng)
        seeds += [("ng" if pcapng else "pcap", path.read_bytes(), pcapng, False),
                  ("ng" if pcapng else "pcap", path.read_bytes(), pcapng, True)]
    mutants = tmp_path / "mutants"
    mutants.mkdir()
    for name, data, pcapng, gzipped in seeds:
        for n in range(MUTANTS_PER_SEED_FILE):
            mutant = mutate(rnd, data, pcapng)
            if gzipped:
                # Half mutate the capture inside the gzip, half the gzip stream itself.
                mutant = gzip.compress(mutant, mtime=0) if n % 2 else mutate(
                    rnd, gzip.compress(data, mtime=0), pcapng=False)
            (mutants / f"{name}{'-gz' if gzipped else ''}-{n:03d}").write_bytes(mutant)
    count = len(list(mutants.iterdir()))
    assert count == 4 * MUTANTS_PER_SEED_FILE

    done = subprocess.run([sys.executable, "-c", CHILD, str(mutants), str(PER_FILE_SECONDS)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=WHOLE_RUN_SECONDS, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["files"] == count
    assert report["tracebacks"] == [], report["tracebacks"][0]
    assert report["hangs"] == []
    growth_mb = (report["rss_peak_kb"] - report["rss_before_kb"]) / 1024
    assert growth_mb < PEAK_RSS_GROWTH_MB, report
    # The mutations bite: some files are refused, most still decode.
    assert 0 < report["capture_errors"] < count

    # The command line on a sample: a verdict (exit 0) or one line (exit 2), no traceback.
    for path in rnd.sample(sorted(mutants.iterdir()), CLI_SAMPLES):
        cli = subprocess.run([sys.executable, "-m", "vtaplab", "decode", str(path), "--json"],
                             capture_output=True, text=True, cwd=PROJECT_ROOT,
                             timeout=60, check=False)
        assert "Traceback" not in cli.stderr, (path.name, cli.stderr)
        if cli.returncode == 2:
            assert cli.stderr.count("\n") == 1 and path.name in cli.stderr, cli.stderr
        else:
            assert cli.returncode == 0 and json.loads(cli.stdout)["capture"], cli.stderr
