"""``python -m vtaplab bench proxy``: the proxy's forwarding rate in every mode, against routing.

Builds, in namespaces of its own (per-run prefix ``vlXXXX``), one path per mode::

    gen --veth-- proxy(mode) --veth-- sink

all sharing one generator namespace, so every mode is measured in the same run, alternating
round by round. The proxy namespaces are separate because a mode leaves state behind
(``iptables -t nat`` keeps connection tracking hooked in its namespace), which would tax the
modes measured after it.

- ``plain``: no netfilter at all; the generator sends to the sink's address and the proxy
  namespace only routes it. The limit every mode is compared with.
- ``conntrack``, ``stateless``, ``netdev``: ``cloudinit/vtap-proxy.sh apply --mode M`` (the
  script the VMs run) and the generator sends to the proxy's own address, as the vTAP does.

Like the proxy VM, each proxy namespace has one address (on the generator's side); the sink
is reached by an on-link route, and its MAC is a permanent neighbour entry (no ARP).

The generator is ``vtaplab/bench/csrc/udpgen.c``, compiled here with the machine's ``cc``: whole
frames through AF_PACKET + sendmmsg, outer UDP source ports cycling over 50,000 values and
2 source addresses (100,000 flows), as VXLAN senders spread flows. The sink counts with an
nftables counter at its ingress hook and drops there (no receive loop to slow it down).

Single-CPU layout: the generator is pinned to one CPU (``taskset -c CPU``, default 0). A veth
hands each packet to the peer's backlog and the kernel processes it when the sender's system
call re-enables softirqs, so the proxy's forwarding and the sink's count run on that same CPU,
charged to the generator. The figure compared is therefore packets per CPU-second: packets
that reached the sink / (the generator's user + system time + the CPU's ksoftirqd time, which
takes over softirq work under load). It is steady on a shared machine where packets per
wall-clock second are not (other processes take the CPU); both are printed.

Also measured per mode: connection-tracking entries in the proxy namespace after 100,000
distinct flows, and fragment safety (datagrams of 3,000 bytes sent as 3 IP fragments; the
sink counts the datagrams that arrive whole, i.e. that its stack reassembles).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from vtaplab import PROJECT_ROOT, facts
from vtaplab.cli import positive_int
from vtaplab.emulator import netns

PROXY_SCRIPT = PROJECT_ROOT / "cloudinit" / "vtap-proxy.sh"
GENERATOR_SOURCE = Path(__file__).resolve().parent / "csrc" / "udpgen.c"

MODES = ("plain", *facts.PROXY_MODES)
GOAL_RATIO = 0.90
PORT = 4789
# Benchmarking addresses (RFC 2544's 198.18.0.0/15), only ever inside this bench's namespaces.
PROXY_IP = "198.18.0.1"            # the address the vTAP sends to
SOURCE_IP = "198.18.1.1"           # first of the generator's source addresses
SINK_IP = "198.19.0.2"             # the PE stand-in: the rewrite's target
SOURCE_PORTS = 50_000              # outer UDP source ports cycled (VXLAN's flow entropy)
SOURCE_ADDRS = 2                   # x 2 source addresses = 100,000 distinct flows
FRAGMENT_PAYLOAD = 3000            # UDP payload: 3 fragments at MTU 1500
RUN_TIMEOUT = 120.0


class BenchError(RuntimeError):
    """Something the bench needs is missing or failed; the message is one line."""


@dataclass
class Sample:
    mode: str
    sent: int
    received: int
    seconds: float
    cpu: float

    @property
    def wall_pps(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_pps(self) -> float:
        return self.received / self.cpu if self.cpu > 0 else 0.0


@dataclass
class ModeResult:
    mode: str
    samples: list[Sample] = field(default_factory=list)
    conntrack_entries: int = 0
    flows_sent: int = 0
    fragmented_sent: int = 0
    fragmented_whole: int = 0

    @property
    def median_cpu_pps(self) -> float:
        return statistics.median(s.cpu_pps for s in self.samples) if self.samples else 0.0

    @property
    def median_wall_pps(self) -> float:
        return statistics.median(s.wall_pps for s in self.samples) if self.samples else 0.0

    @property
    def fragment_safe(self) -> bool:
        return self.fragmented_sent > 0 and self.fragmented_whole == self.fragmented_sent



def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 60:
        raise argparse.ArgumentTypeError(f"invalid seconds {text!r}; accepted: 0.05 to 60")
    return value


def _cpu(text: str) -> int:
    count = os.cpu_count() or 1
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < count:
        raise argparse.ArgumentTypeError(f"invalid CPU {text!r}; accepted: 0 to {count - 1}")
    return value


def compile_generator(workdir: Path) -> Path:
    """Build udpgen.c with the machine's C compiler into ``workdir``; return the binary."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler (cc) to build the packet generator; "
                         "apt-get install gcc libc6-dev (or run ./bootstrap.sh)")
    binary = workdir / "udpgen"
    done = subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(GENERATOR_SOURCE)],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise BenchError(f"building {GENERATOR_SOURCE.name} failed: {first}")
    return binary


def _parse_generator(line: str) -> dict[str, float]:
    fields: dict[str, float] = {}
    for part in line.split():
        key, _, value = part.partition("=")
        fields[key] = float(value)
    if not {"sent", "frames", "seconds", "cpu"} <= fields.keys():
        raise BenchError(f"unexpected generator output: {line.strip()!r}")
    return fields


def _ksoftirqd_pid(cpu: int) -> int | None:
    want = f"ksoftirqd/{cpu}"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == want:
                    return int(entry.name)
            except OSError:
                continue
    return None


def _task_cpu_seconds(pid: int | None) -> float:
    """utime + stime of ``pid`` (0 when unknown): read only, never signalled."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    """The namespaces of one bench run and the measurements made in them."""

    def __init__(self, generator: Path, *, cpu: int, modes: tuple[str, ...] = MODES) -> None:
        self.generator = generator
        self.cpu = cpu
        self.modes = modes
        self.prefix = netns.new_prefix(netns.list_namespaces())
        self.lab = netns.Lab(self.prefix, netns.Runner())
        self.gen_ns = self.lab.ns("gen")
        self.softirqd = _ksoftirqd_pid(cpu)

    # names and addresses ---------------------------------------------------------------------
    def proxy_ns(self, i: int) -> str:
        return self.lab.ns(f"p{i}")

    def sink_ns(self, i: int) -> str:
        return self.lab.ns(f"s{i}")

    @staticmethod
    def mac(i: int, role: int) -> str:
        return f"02:76:6c:00:{i:02x}:{role:02x}"

    # building --------------------------------------------------------------------------------
    def build(self) -> None:
        lab = self.lab
        lab.add_ns("gen")
        self._quiet(self.gen_ns)
        for i, mode in enumerate(self.modes):
            proxy, sink = lab.add_ns(f"p{i}"), lab.add_ns(f"s{i}")
            for ns in (proxy, sink):
                self._quiet(ns)
            gen_if, in_if = lab.ifname(f"g{i}"), lab.ifname(f"a{i}")
            out_if, sink_if = lab.ifname(f"b{i}"), lab.ifname(f"s{i}")
            lab.add_veth(self.gen_ns, gen_if, proxy, in_if)
            lab.add_veth(proxy, out_if, sink, sink_if)
            for ns, dev, role in ((self.gen_ns, gen_if, 1), (proxy, in_if, 2),
                                  (proxy, out_if, 3), (sink, sink_if, 4)):
                lab.runner.run(["ip", "link", "set", dev, "address", self.mac(i, role)], ns=ns)
                lab.up(ns, dev)
            # The generator's veth has no address: AF_PACKET needs none and routes nothing.
            # The proxy has one address, as the proxy VM has one NIC with one IP; the sink is
            # reached by an on-link route (forwarding needs no address of its own there).
            lab.add_addr(proxy, in_if, f"{PROXY_IP}/16")
            lab.runner.run(["ip", "route", "replace", f"{SINK_IP}/32", "dev", out_if], ns=proxy)
            lab.add_addr(sink, sink_if, f"{SINK_IP}/24")
            lab.sysctl(proxy, "net.ipv4.ip_forward", "1")
            # No ARP on the measured path (the generator has no address to answer from).
            lab.runner.run(["ip", "neigh", "replace", SINK_IP, "lladdr", self.mac(i, 4),
                            "dev", out_if, "nud", "permanent"], ns=proxy)
            if mode != "plain":
                lab.exec(proxy, [str(PROXY_SCRIPT), "apply", "--mode", mode,
                                 "--target", SINK_IP, "--port", str(PORT)])
            self._sink_whole(sink)

    def _quiet(self, ns: str) -> None:
        # No IPv6 chatter (router solicitations, DAD) on the measured links.
        self.lab.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
        self.lab.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")

    def _sink_whole(self, sink: str) -> None:
        """Count whole datagrams: the input hook sees them after the stack reassembled them."""
        self.lab.nft(sink, (
            "table ip vtaplab_sink\ndelete table ip vtaplab_sink\n"
            "table ip vtaplab_sink {\n  counter whole {}\n  chain input {\n"
            "    type filter hook input priority filter; policy accept;\n"
            f"    udp dport {PORT} counter name whole drop\n  }}\n}}\n"))

    def _sink_fast(self, i: int) -> None:
        """Count and drop at ingress: the sink costs next to nothing per packet."""
        dev = self.lab.ifname(f"s{i}")
        self.lab.nft(self.sink_ns(i), (
            "table ip vtaplab_sink\ndelete table ip vtaplab_sink\n"
            "table netdev vtaplab_sink {\n  counter rx {}\n  chain ingress {\n"
            f'    type filter hook ingress device "{dev}" priority filter; policy accept;\n'
            "    counter name rx drop\n  }\n}\n"))

    def _counter(self, i: int, family: str, name: str) -> int:
        out = self.lab.exec(self.sink_ns(i), ["nft", "-j", "list", "counter", family,
                                              "vtaplab_sink", name]).stdout
        for item in json.loads(out).get("nftables", []):
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise BenchError(f"no counter {name} in {self.sink_ns(i)}")

    # sending ---------------------------------------------------------------------------------
    def send(self, i: int, *, count: int, seconds: float,
             fragment: bool = False) -> dict[str, float]:
        mode = self.modes[i]
        dst = SINK_IP if mode == "plain" else PROXY_IP
        argv = ["taskset", "-c", str(self.cpu), str(self.generator),
                "-i", self.lab.ifname(f"g{i}"), "-s", self.mac(i, 1), "-d", self.mac(i, 2),
                "-S", SOURCE_IP, "-D", dst, "-p", str(PORT), "-P", "10000",
                "-n", str(SOURCE_PORTS), "-a", str(SOURCE_ADDRS),
                "-c", str(count), "-t", f"{seconds:g}"]
        if fragment:
            argv += ["-f", "-l", str(FRAGMENT_PAYLOAD)]
        done = self.lab.exec(self.gen_ns, argv, timeout=seconds + RUN_TIMEOUT)
        return _parse_generator(done.stdout)

    def conntrack_entries(self, i: int) -> int:
        done = self.lab.exec(self.proxy_ns(i),
                             ["cat", "/proc/sys/net/netfilter/nf_conntrack_count"], check=False)
        # No file: connection tracking was never loaded in that namespace, so no entries.
        return int(done.stdout.strip() or 0) if done.returncode == 0 else 0

    # phases ----------------------------------------------------------------------------------
    def fragments(self, results: dict[str, ModeResult], datagrams: int) -> None:
        for i, mode in enumerate(self.modes):
            before = self._counter(i, "ip", "whole")
            sent = self.send(i, count=datagrams, seconds=10.0, fragment=True)
            time.sleep(0.1)
            results[mode].fragmented_sent = int(sent["sent"])
            results[mode].fragmented_whole = self._counter(i, "ip", "whole") - before
            self._sink_fast(i)

    def flows(self, results: dict[str, ModeResult], flows: int) -> None:
        for i, mode in enumerate(self.modes):
            sent = self.send(i, count=flows, seconds=30.0)
            results[mode].flows_sent = int(sent["sent"])
            results[mode].conntrack_entries = self.conntrack_entries(i)

    def rates(self, results: dict[str, ModeResult], repeats: int, seconds: float) -> None:
        order = list(range(len(self.modes)))
        for round_no in range(repeats):
            # Rotate the order each round: no mode always runs first (or after the same one).
            shift = round_no % len(order)
            for i in order[shift:] + order[:shift]:
                mode = self.modes[i]
                rx0, soft0 = self._counter(i, "netdev", "rx"), _task_cpu_seconds(self.softirqd)
                sent = self.send(i, count=1_000_000_000, seconds=seconds)
                rx1, soft1 = self._counter(i, "netdev", "rx"), _task_cpu_seconds(self.softirqd)
                results[mode].samples.append(Sample(
                    mode=mode, sent=int(sent["sent"]), received=rx1 - rx0,
                    seconds=sent["seconds"], cpu=sent["cpu"] + (soft1 - soft0)))

    def teardown(self) -> list[str]:
        return self.lab.teardown()


def summarise(results: dict[str, ModeResult]) -> dict[str, object]:
    base = results["plain"].median_cpu_pps if "plain" in results else 0.0
    base_wall = results["plain"].median_wall_pps if "plain" in results else 0.0
    plain = results["plain"].samples if "plain" in results else []
    modes: dict[str, object] = {}
    for mode, res in results.items():
        # Round by round against plain routing in the same round: how steady the ratio is.
        paired = [round(s.cpu_pps / p.cpu_pps, 3)
                  for s, p in zip(res.samples, plain, strict=False) if p.cpu_pps > 0]
        modes[mode] = {
            "median_pps_per_cpu_second": round(res.median_cpu_pps),
            "median_pps_wall": round(res.median_wall_pps),
            "ratio_to_plain": round(res.median_cpu_pps / base, 3) if base else None,
            "ratio_to_plain_wall": round(res.median_wall_pps / base_wall, 3) if base_wall else None,
            "ratio_per_round": paired,
            "conntrack_entries": res.conntrack_entries,
            "flows_sent": res.flows_sent,
            "fragmented_datagrams_sent": res.fragmented_sent,
            "fragmented_datagrams_whole": res.fragmented_whole,
            "fragment_safe": res.fragment_safe,
            "lost_in_rate_runs": sum(s.sent - s.received for s in res.samples),
            "samples": [asdict(s) | {"cpu_pps": round(s.cpu_pps), "wall_pps": round(s.wall_pps)}
                        for s in res.samples],
        }
    candidates = [m for m in facts.PROXY_MODES if m in results and results[m].fragment_safe
                  and results[m].conntrack_entries == 0 and results[m].samples]
    best = max(candidates, key=lambda m: results[m].median_cpu_pps) if candidates else None
    best_ratio = results[best].median_cpu_pps / base if best and base else None
    return {
        "modes": modes,
        "best_fragment_safe_stateless_mode": best,
        "best_ratio": round(best_ratio, 3) if best_ratio is not None else None,
        "goal_ratio": GOAL_RATIO,
        "goal_met": best_ratio is not None and best_ratio >= GOAL_RATIO,
    }


def _print_table(summary: dict[str, object], args: argparse.Namespace) -> None:
    modes = summary["modes"]
    assert isinstance(modes, dict)
    print(f"bench proxy: {args.repeats} round(s) of {args.seconds:g} s per mode, generator "
          f"pinned to CPU {args.cpu}; {SOURCE_PORTS * SOURCE_ADDRS:,} flows cycled")
    print(f"{'mode':<10} {'pkt/CPU-s':>11} {'ratio':>6} {'per round':>11} {'pkt/s wall':>11} "
          f"{'ratio':>6} {'conntrack':>10} {'fragments whole':>16}")
    for mode, m in modes.items():
        ratio = "-" if m["ratio_to_plain"] is None else f"{m['ratio_to_plain']:.2f}"
        wall = "-" if m["ratio_to_plain_wall"] is None else f"{m['ratio_to_plain_wall']:.2f}"
        rounds = m["ratio_per_round"]
        spread = f"{min(rounds):.2f}-{max(rounds):.2f}" if rounds else "-"
        frag = f"{m['fragmented_datagrams_whole']}/{m['fragmented_datagrams_sent']}"
        print(f"{mode:<10} {m['median_pps_per_cpu_second']:>11,} {ratio:>6} {spread:>11} "
              f"{m['median_pps_wall']:>11,} {wall:>6} {m['conntrack_entries']:>10,} {frag:>16}")
    print("(medians; ratio = mode / plain routing; per round = the range of that ratio round by "
          "round; conntrack = entries in the proxy namespace after "
          f"{modes['plain']['flows_sent'] if 'plain' in modes else 0:,} distinct flows)")
    best = summary["best_fragment_safe_stateless_mode"]
    if best is None:
        print("best fragment-safe mode with no tracked entries: none")
    else:
        verdict = "met" if summary["goal_met"] else "NOT met"
        print(f"best fragment-safe mode with no tracked entries: {best}, "
              f"{summary['best_ratio']:.2f} of plain routing (goal >= {GOAL_RATIO:.2f}: {verdict})")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vtaplab bench proxy",
        description="Packets per second through the proxy in every mode, against plain routing, "
                    "with conntrack entries and fragment safety (root; builds namespaces).")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--short", action="store_true",
                        help="a few seconds in all: 1 round of 0.2 s, 2,000 flows, 50 fragmented "
                             "datagrams (proves it works; the figures mean little)")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="rounds over all modes (default 5; the median counts)")
    parser.add_argument("--seconds", type=_seconds, default=None,
                        help="seconds per mode per round (default 2)")
    parser.add_argument("--cpu", type=_cpu, default=0,
                        help="CPU to pin the generator to (default 0)")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.short else 5)
    args.seconds = args.seconds or (0.2 if args.short else 2.0)
    flows = 2_000 if args.short else SOURCE_PORTS * SOURCE_ADDRS
    datagrams = 50 if args.short else 1_000

    why = netns.preflight(["nft", "iptables", "taskset"])
    if why is not None:
        print(f"bench proxy: {why}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="vtaplab-proxy-bench-"))
    bench: Bench | None = None
    try:
        generator = compile_generator(workdir)
        bench = Bench(generator, cpu=args.cpu)
        if not args.json:
            print(f"bench proxy: run {bench.prefix}, namespaces {bench.prefix}-*")
        bench.build()
        results = {mode: ModeResult(mode) for mode in bench.modes}
        bench.fragments(results, datagrams)
        bench.flows(results, flows)
        bench.rates(results, args.repeats, args.seconds)
        summary = summarise(results)
        summary.update(run=bench.prefix, cpu=args.cpu, repeats=args.repeats,
                       seconds=args.seconds, short=args.short)
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            _print_table(summary, args)
        return 0
    except KeyboardInterrupt:
        print("bench proxy: interrupted", file=sys.stderr)
        return 130
    except (BenchError, netns.NetnsError, OSError, ValueError) as exc:
        print(f"bench proxy: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 1
    finally:
        if bench is not None:
            left = bench.teardown()
            if left:
                print(f"bench proxy: could not delete {', '.join(left)}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
