"""A small typed layer over ``ip``, ``tc``, ``nft`` and friends for namespace labs.

Every command is built from parameters (never from a shell string), logged exactly as run,
and tagged with the namespace it runs in. Creating something that exists and removing
something that is gone are not errors, so a half-built lab can always be built on or torn
down again. Everything a lab creates carries its per-run prefix, and teardown deletes by
name only the namespaces of that prefix (deleting a namespace deletes its interfaces).
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vtaplab.emulator.runs import RunRecord

# A command run in a namespace gets SIGTERM at its timeout and SIGKILL SELF_KILL_AFTER_S
# later (timeout(1)); this process waits that long plus SELF_TIMEOUT_SLACK_S before it gives up.
SELF_KILL_AFTER_S = 5.0
SELF_TIMEOUT_SLACK_S = 5.0
# Interface names: at most 15 characters (IFNAMSIZ - 1).
IFNAME_MAX = 15
_PREFIX_RE = re.compile(r"^vl[0-9a-f]{4}$")
# What "exists"/"missing" look like in iproute2's and nft's messages.
_EXISTS = ("File exists", "already exists")
_MISSING = (
    "Cannot find device",
    "No such file or directory",
    "No such process",
    "does not exist",
    "Cannot open network namespace",
)


class NetnsError(RuntimeError):
    """A command failed; the message holds the command line and its stderr."""


def new_prefix(taken: Sequence[str] = ()) -> str:
    """A fresh per-run prefix, ``vl`` + 4 hex digits, not the start of any name in ``taken``."""
    for _ in range(64):
        prefix = "vl" + secrets.token_hex(2)
        if not any(name.startswith(prefix) for name in taken):
            return prefix
    raise NetnsError("could not find a free run prefix in 64 tries")


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"run prefix {prefix!r} is not accepted; accepted: 'vl' + 4 hex digits")
    return prefix


@dataclass
class Runner:
    """Runs commands (optionally inside a namespace) and keeps the log of what ran."""

    log_path: Path | None = None
    echo: bool = False
    lines: list[str] = field(default_factory=list)
    _start: float = field(default_factory=time.monotonic)

    def _record(self, ns: str | None, argv: Sequence[str], note: str = "") -> None:
        where = f"[{ns}] " if ns else ""
        line = f"{time.monotonic() - self._start:7.3f} {where}{shlex.join(argv)}{note}"
        self.lines.append(line)
        if self.log_path is not None:
            with self.log_path.open("a") as log:
                log.write(line + "\n")
        if self.echo:
            print(line)

    def run(
        self,
        argv: Sequence[str],
        *,
        ns: str | None = None,
        check: bool = True,
        tolerate: Sequence[str] = (),
        input_text: str | None = None,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` (inside ``ip netns exec ns`` when ``ns`` is given).

        A failure whose stderr contains one of ``tolerate`` counts as success (so creating what
        exists and removing what is missing are no-ops); any other failure raises NetnsError
        when ``check``.
        """
        # Inside a namespace the command bounds itself (timeout(1)), so a run killed with
        # SIGKILL can't leave a traffic client running for hours; the subprocess timeout, a
        # little later, is only the backstop (killing timeout(1) would orphan the command).
        bound = ["timeout", f"--kill-after={SELF_KILL_AFTER_S:g}", f"{timeout:g}"] if ns else []
        full = [*(["ip", "netns", "exec", ns] if ns else []), *bound, *argv]
        started = time.monotonic()
        self._record(ns, argv)
        if input_text is not None:
            for text_line in input_text.rstrip("\n").splitlines():
                self._record(ns, ["  |"], " " + text_line)
        try:
            proc = subprocess.run(
                full, capture_output=True, text=True, input=input_text, check=False,
                timeout=timeout + (SELF_KILL_AFTER_S + SELF_TIMEOUT_SLACK_S if bound else 0))
        except subprocess.TimeoutExpired as exc:
            raise NetnsError(f"{shlex.join(full)}: no answer within {timeout:g} s") from exc
        # timeout(1) says 124 (137 after its SIGKILL); only the full time tells it from a
        # command of our own that exits 124 early (the LB probe's own `timeout 0.5`).
        if bound and proc.returncode in (124, 137) and time.monotonic() - started >= timeout:
            raise NetnsError(f"{shlex.join(full)}: no answer within {timeout:g} s")
        if proc.returncode != 0:
            err = proc.stderr.strip()
            if any(marker in err for marker in tolerate):
                self._record(ns, argv, f"   # tolerated: {err.splitlines()[0] if err else ''}")
                return proc
            if check:
                raise NetnsError(f"{shlex.join(full)} failed (exit {proc.returncode}): {err}")
        return proc


    def run_parallel(self, jobs: Sequence[tuple[str | None, Sequence[str]]], *,
                     timeout: float = 30.0) -> None:
        """Run independent commands at once (e.g. starting captures); raise if any failed."""
        procs = []
        for ns, argv in jobs:
            self._record(ns, argv, "   # in parallel")
            full = [*(["ip", "netns", "exec", ns] if ns else []), *argv]
            procs.append((full, subprocess.Popen(full, stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE, text=True)))
        failures = []
        try:
            for full, proc in procs:
                try:
                    _out, err = proc.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    _out, err = proc.communicate()
                    err = f"no answer within {timeout:g} s"
                if proc.returncode != 0:
                    failures.append(f"{shlex.join(full)} failed: {err.strip()}")
        except BaseException:
            # Interrupted: let the others finish (what they start must be known to teardown).
            for _full, proc in procs:
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
            raise
        if failures:
            raise NetnsError("; ".join(failures))


def list_namespaces(runner: Runner | None = None) -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    argv = ["ip", "netns", "list"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    if proc.returncode != 0:
        raise NetnsError(f"{shlex.join(argv)} failed: {proc.stderr.strip()}")
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def preflight(tools: Sequence[str]) -> str | None:
    """One line saying why a namespace lab cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "must run as root (network namespaces, veths and firewall rules need it)"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed; run ./bootstrap.sh as root"
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}; run ./bootstrap.sh as root"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=False, timeout=10)
    if probe.returncode != 0:
        why = probe.stderr.strip() or f"exit {probe.returncode}"
        return f"'ip netns' is unavailable here: {why}"
    return None


@dataclass
class Lab:
    """The namespaces and devices of one run, all named ``<prefix>-...``."""

    prefix: str
    runner: Runner
    created: list[str] = field(default_factory=list)
    # The run's record (vtaplab.emulator.runs): every process popen() starts is written to it,
    # so a run killed with SIGKILL leaves nothing the next run can't find and stop.
    record: RunRecord | None = None

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    # names -----------------------------------------------------------------------------------
    def ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def ifname(self, *parts: str) -> str:
        name = "-".join((self.prefix, *parts))
        if len(name) > IFNAME_MAX:
            raise ValueError(f"interface name {name!r} is longer than {IFNAME_MAX} characters")
        return name

    # create (tolerates "exists") -------------------------------------------------------------
    def add_ns(self, node: str) -> str:
        name = self.ns(node)
        self.runner.run(["ip", "netns", "add", name], tolerate=_EXISTS)
        if name not in self.created:
            self.created.append(name)
        self.runner.run(["ip", "link", "set", "lo", "up"], ns=name)
        return name

    def add_veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str, *, mtu: int = 1500) -> None:
        self.runner.run(["ip", "link", "add", if_a, "netns", ns_a, "mtu", str(mtu), "type", "veth",
                         "peer", "name", if_b, "netns", ns_b, "mtu", str(mtu)], tolerate=_EXISTS)

    def add_bridge(self, ns: str, name: str) -> None:
        self.runner.run(["ip", "link", "add", name, "type", "bridge"], ns=ns, tolerate=_EXISTS)

    def set_master(self, ns: str, dev: str, bridge: str) -> None:
        self.runner.run(["ip", "link", "set", dev, "master", bridge], ns=ns)

    def add_addr(self, ns: str, dev: str, cidr: str) -> None:
        self.runner.run(["ip", "addr", "add", cidr, "dev", dev], ns=ns, tolerate=_EXISTS)

    def up(self, ns: str, dev: str) -> None:
        self.runner.run(["ip", "link", "set", dev, "up"], ns=ns)

    def add_route(self, ns: str, dst: str, via: str) -> None:
        self.runner.run(["ip", "route", "replace", dst, "via", via], ns=ns)

    def sysctl(self, ns: str, key: str, value: str) -> None:
        # Written through /proc so interface names with dots need no escaping.
        path = "/proc/sys/" + key.replace(".", "/")
        self.runner.run(["sh", "-c", f"echo {shlex.quote(value)} > {shlex.quote(path)}"], ns=ns)

    def sysctl_iface(self, ns: str, dev: str, setting: str, value: str) -> None:
        path = f"/proc/sys/net/ipv4/conf/{dev}/{setting}"
        self.runner.run(["sh", "-c", f"echo {shlex.quote(value)} > {shlex.quote(path)}"], ns=ns)

    def ethtool_off(self, ns: str, dev: str, *features: str) -> None:
        args: list[str] = []
        for feature in features:
            args += [feature, "off"]
        self.runner.run(["ethtool", "-K", dev, *args], ns=ns)

    def nft(self, ns: str, script: str) -> None:
        self.runner.run(["nft", "-f", "-"], ns=ns, input_text=script)

    def iptables(self, ns: str, *args: str) -> None:
        self.runner.run(["iptables", *args], ns=ns)

    def tc(self, ns: str, *args: str, tolerate: Sequence[str] = ()) -> None:
        self.runner.run(["tc", *args], ns=ns, tolerate=tolerate)

    def exec(self, ns: str, argv: Sequence[str], *, check: bool = True,
             timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return self.runner.run(argv, ns=ns, check=check, timeout=timeout)

    def popen(self, ns: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        """Start a long-running process in ``ns``; the caller owns (and stops) its pid."""
        self.runner._record(ns, argv, "   &")
        proc: subprocess.Popen[str] = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], text=True, **kwargs)  # type: ignore[call-overload]
        if self.record is not None:
            self.record.add_process(proc.pid, f"{Path(argv[0]).name} in {ns}")
        return proc

    # remove (tolerates "missing") ------------------------------------------------------------
    def mine(self) -> list[str]:
        """Every namespace whose name carries this run's prefix (whoever listed it)."""
        return [name for name in list_namespaces() if name.startswith(self.prefix + "-")]

    def teardown(self) -> list[str]:
        """Delete this run's namespaces by name; return the names that could not be deleted."""
        left: list[str] = []
        for name in sorted(set(self.created) | set(self.mine())):
            proc = self.runner.run(["ip", "netns", "del", name], check=False, tolerate=_MISSING)
            if proc.returncode != 0 and not any(m in proc.stderr for m in _MISSING):
                left.append(name)
        self.created.clear()
        return left
