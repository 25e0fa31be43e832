"""``python -m vtaplab bench decode``: our decoder against tshark on the same capture.

Writes a mixed VXLAN capture (inner HTTP over TCP, fragmented outer datagrams, several VNIs,
a little non-HTTP and non-VXLAN traffic), then times, in the same run and alternating so
neither gets a warmer cache:

  ours:   python -m vtaplab decode FILE --json          (a fresh interpreter, like tshark)
  tshark: tshark -r FILE -d udp.port==PORT,vxlan        (its default one-line-per-packet)

and prints both, the ratio, and whether the two agree on the VXLAN packet count per VNI.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vtaplab import facts
from vtaplab.bench import pcapgen
from vtaplab.cli import positive_int
from vtaplab.judge.decode import decode_capture

GOAL_RATIO = 0.5
# Generated mixes: the default one is the collector's view of the emulator's traffic.
MIXES = {"mixed": {}, "small": {"big_body": 612}}
RUN_TIMEOUT = 900.0



@dataclass
class Timing:
    wall: float   # seconds on the clock
    cpu: float    # user + system seconds of the child: steadier when the machine is busy


def _timed(cmd: list[str]) -> tuple[Timing, subprocess.CompletedProcess[bytes]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=RUN_TIMEOUT, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu), done


def _describe(runs: list[Timing]) -> str:
    walls = [r.wall for r in runs]
    return (f"best {min(walls):.3f} s, median {statistics.median(walls):.3f} s wall; "
            f"best {min(r.cpu for r in runs):.3f} s cpu; {len(runs)} runs")


def _tshark_vnis(tshark: str, capture: Path, port: int) -> dict[int, int]:
    cmd = [tshark, "-r", str(capture), "-d", f"udp.port=={port},vxlan", "-Y", "vxlan",
           "-T", "fields", "-e", "vxlan.vni"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          check=False)
    counts: dict[int, int] = {}
    for line in done.stdout.split():
        # A frame carrying VXLAN in VXLAN lists both VNIs; the outer one comes first.
        vni = int(line.split(",")[0])
        counts[vni] = counts.get(vni, 0) + 1
    return counts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtaplab bench decode",
                                     description="Time our decoder against tshark.")
    parser.add_argument("--packets", type=positive_int, default=100_000,
                        help="frames in the generated capture (default 100000)")
    parser.add_argument("--repeat", type=positive_int, default=3,
                        help="timed runs of each tool (default 3; the best counts)")
    parser.add_argument("--mix", choices=sorted(MIXES), default="mixed",
                        help="mixed (default): 1 in 4 connections fetches 200 kB, fragmented; "
                             "small: small pages only, no fragments, more HTTP per packet")
    parser.add_argument("--keep", action="store_true",
                        help="keep the capture in bench-out/decode-bench.pcap")
    args = parser.parse_args(argv)

    tshark = shutil.which("tshark")
    if args.keep:
        workdir = Path("bench-out")
        workdir.mkdir(exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="vtaplab-bench-"))
    capture = workdir / "decode-bench.pcap"
    try:
        start = time.perf_counter()
        frames = pcapgen.write_capture(capture, pcapgen.bench_frames(args.packets,
                                                                     **MIXES[args.mix]))
        print(f"capture: {capture} ({frames} frames, mix {args.mix}, "
              f"{capture.stat().st_size} bytes, written in {time.perf_counter() - start:.2f} s)")
        return _run(args, capture, tshark)
    except KeyboardInterrupt:
        print("bench decode: interrupted", file=sys.stderr)
        return 130
    except subprocess.TimeoutExpired as exc:
        print(f"bench decode: {exc.cmd[0]} took longer than {RUN_TIMEOUT:.0f} s; stopped",
              file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"bench decode: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, capture: Path, tshark: str | None) -> int:
    start = time.perf_counter()
    summary = decode_capture(capture)
    in_process = time.perf_counter() - start

    ours_cmd = [sys.executable, "-m", "vtaplab", "decode", str(capture), "--json"]
    port = facts.VXLAN_PORT
    tshark_cmd = [tshark or "tshark", "-r", str(capture), "-d",
                  f"udp.port=={facts.VXLAN_PORT},vxlan"]
    ours: list[Timing] = []
    theirs: list[Timing] = []
    runs = [("our decoder", ours_cmd, ours)] + ([("tshark", tshark_cmd, theirs)] if tshark else [])
    for _ in range(args.repeat):
        for who, cmd, timings in runs:
            took, done = _timed(cmd)
            if done.returncode != 0:
                print(f"bench decode: {who} failed: {done.stderr.decode().strip()[-300:]}",
                      file=sys.stderr)
                return 1
            timings.append(took)

    print(f"decoded: {summary.vxlan_packets} VXLAN packets, VNIs {sorted(summary.vnis)}, "
          f"{summary.fragments['reassembled']} datagrams reassembled from "
          f"{summary.fragments['frames']} fragments, {summary.request_count} HTTP requests, "
          f"{summary.response_count} responses, {len(summary.bodies)} distinct bodies")
    print(f"ours   (python -m vtaplab decode FILE --json): {_describe(ours)}; "
          f"in-process decode {in_process:.3f} s "
          f"({summary.frames / in_process:,.0f} frames/s)")
    if not tshark:
        print("tshark: not installed (apt-get install tshark) - no ratio")
        return 1
    print(f"tshark (tshark -r FILE -d udp.port=={port},vxlan): {_describe(theirs)}")
    ratio = min(r.wall for r in ours) / min(r.wall for r in theirs)
    cpu_ratio = min(r.cpu for r in ours) / min(r.cpu for r in theirs)
    print(f"ratio ours/tshark: {ratio:.2f} wall, {cpu_ratio:.2f} cpu (goal <= {GOAL_RATIO}: "
          f"{'met' if ratio <= GOAL_RATIO else 'NOT met'})")

    expected = {v: s["packets"] for v, s in summary.vnis.items()}
    seen = _tshark_vnis(tshark, capture, port)
    if seen == expected:
        print(f"cross-check: tshark agrees on VXLAN packets per VNI {seen}")
        return 0
    print(f"cross-check: DISAGREE - tshark {seen}, ours {expected}")
    return 1
