"""The life cycle of an emulator run outside its own process: a record of what it started.

A run writes ``<state dir>/<prefix>.json`` before it creates anything: its own pid and start
time, and, as it starts them, the pids and start times of its long-running processes (HTTP
servers, captures and their watchdogs). Its namespaces (``<prefix>-*``) and temp dirs
(``<tmp>/<prefix>-*``) are found by the prefix. A run that ends normally removes its record;
one killed with SIGKILL leaves it, and the next run (``clean_dead_runs``) or
``emulate --teardown PREFIX`` (``teardown``) removes what it left and says what.

Nothing here kills by name: a process is stopped by pid, and only while its start time (field
22 of ``/proc/PID/stat``) is still the one recorded, so a pid the kernel has since given to
another program is never touched. Processes found inside the run's own namespaces
(``ip netns pids``) are the run's by construction and are stopped the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vtaplab.emulator.netns import check_prefix, list_namespaces

STATE_DIR_ENV = "VTAPLAB_STATE_DIR"
# tmpfs: a reboot (which also removes every namespace and process) empties it.
DEFAULT_STATE_DIR = Path("/run/vtaplab/emulator")
# How long a stopped process gets between SIGTERM and SIGKILL (tcpdump flushes its file).
STOP_GRACE_S = 3.0
_POLL_S = 0.05


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int           # /proc/PID/stat field 22 (clock ticks after boot)
    what: str


@dataclass
class RunRecord:
    """What a run started, kept on disk while it runs (and after, if it was killed)."""

    prefix: str
    owner_pid: int
    owner_start: int
    started: float                    # wall clock, for the message only
    processes: list[Proc] = field(default_factory=list)
    kept: bool = False                # ended with --keep: its namespaces stay on purpose
    path: Path | None = field(default=None, repr=False, compare=False)

    def save(self) -> None:
        assert self.path is not None
        body = {k: v for k, v in asdict(self).items() if k != "path"}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=1) + "\n")
        tmp.replace(self.path)       # atomic: a reader never sees half a record

    def add_process(self, pid: int, what: str) -> None:
        """Record ``pid`` (with its start time) as this run's; no-op if it already ended."""
        start = process_start(pid)
        if start is None or any(p.pid == pid and p.start == start for p in self.processes):
            return
        self.processes.append(Proc(pid, start, what))
        self.save()

    def add_pidfile(self, pidfile: Path, what: str) -> None:
        """Record the pids a capture script wrote (tcpdump, then its watchdog)."""
        try:
            pids = [int(word) for word in pidfile.read_text().split()]
        except (OSError, ValueError):
            return
        for pid, role in zip(pids, ("tcpdump", "watchdog"), strict=False):
            self.add_process(pid, f"{what} {role}")

    def finish(self, *, kept: bool = False) -> None:
        """The run ended on its own: forget it (or, with --keep, remember its namespaces)."""
        assert self.path is not None
        if kept:
            self.processes.clear()
            self.kept = True
            self.save()
        else:
            self.path.unlink(missing_ok=True)

    @property
    def owner_alive(self) -> bool:
        return process_start(self.owner_pid) == self.owner_start


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks after boot), or None when there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields resume after the
    # last ')'; field 3 (state) is index 0 there, so field 22 is index 19.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        if fields[0] == "Z":      # a zombie has ended; only its parent's wait is missing
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (a watchdog shell's ``sleep``), from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(word) for word in text.split()]


def stop_process(pid: int, start: int, *, grace_s: float = STOP_GRACE_S) -> bool:
    """Stop ``pid`` if it is still the process that started at ``start``: SIGTERM, then
    SIGKILL after ``grace_s``; its direct children first go the same way. True when it was
    running (and is now stopped)."""
    if process_start(pid) != start:
        return False
    for child in _children(pid):
        child_start = process_start(child)
        if child_start is not None:
            _signal(child, child_start, signal.SIGTERM)
    _signal(pid, start, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and process_start(pid) == start:
        _reap(pid)
        time.sleep(_POLL_S)
    if process_start(pid) == start:
        _signal(pid, start, signal.SIGKILL)
        for _ in range(int(1 / _POLL_S)):      # bounded: a SIGKILLed process ends at once
            _reap(pid)
            if process_start(pid) != start:
                break
            time.sleep(_POLL_S)
    return True


def _signal(pid: int, start: int, sig: signal.Signals) -> None:
    # Checked again right before the kill: the window for pid reuse is as small as it gets.
    if process_start(pid) == start:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our child (else it is init's or a subreaper's to collect)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def begin(prefix: str, *, state: Path | None = None) -> RunRecord:
    """Write the record of a new run (this process) before it creates anything."""
    check_prefix(prefix)
    directory = state or state_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    owner_start = process_start(os.getpid())
    assert owner_start is not None
    record = RunRecord(prefix=prefix, owner_pid=os.getpid(), owner_start=owner_start,
                       started=time.time(), path=directory / f"{prefix}.json")
    record.save()
    return record


def load(path: Path) -> RunRecord | None:
    """A record from disk, or None when it is unreadable (then ``clean`` goes by prefix)."""
    try:
        data = json.loads(path.read_text())
        record = RunRecord(
            prefix=check_prefix(str(data["prefix"])), owner_pid=int(data["owner_pid"]),
            owner_start=int(data["owner_start"]), started=float(data["started"]),
            processes=[Proc(int(p["pid"]), int(p["start"]), str(p["what"]))
                       for p in data.get("processes", [])],
            kept=bool(data.get("kept", False)), path=path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def records(state: Path | None = None) -> list[RunRecord]:
    directory = state or state_dir()
    found = [load(p) for p in sorted(directory.glob("vl????.json"))]
    return [r for r in found if r is not None]


def _namespaces(prefix: str) -> list[str]:
    return [name for name in list_namespaces() if name.startswith(prefix + "-")]


def _temp_dirs(prefix: str) -> list[Path]:
    return sorted(p for p in Path(tempfile.gettempdir()).glob(f"{prefix}-*") if p.is_dir())


def _pids_in(namespace: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                          check=False, timeout=10)
    return [int(word) for word in proc.stdout.split() if word.isdigit()]


def clean(prefix: str, record: RunRecord | None) -> list[str]:
    """Remove what run ``prefix`` left: its processes (recorded ones and any still inside its
    namespaces, by verified pid), its namespaces, its temp dirs, its record. Returns one
    phrase per kind of thing removed (empty: nothing was left)."""
    stopped: list[str] = []
    for proc in record.processes if record else []:
        if stop_process(proc.pid, proc.start):
            stopped.append(f"{proc.what} (pid {proc.pid})")
    namespaces = _namespaces(prefix)
    for namespace in namespaces:
        for pid in _pids_in(namespace):
            start = process_start(pid)
            if start is not None and stop_process(pid, start):
                stopped.append(f"pid {pid} in {namespace}")
    deleted: list[str] = []
    for namespace in namespaces:
        done = subprocess.run(["ip", "netns", "del", namespace], capture_output=True,
                              text=True, check=False, timeout=30)
        if done.returncode == 0:
            deleted.append(namespace)
    temp_dirs = _temp_dirs(prefix)
    for directory in temp_dirs:
        shutil.rmtree(directory, ignore_errors=True)
    if record is not None and record.path is not None:
        record.path.unlink(missing_ok=True)
    said: list[str] = []
    if stopped:
        said.append(f"{len(stopped)} process(es): {', '.join(stopped)}")
    if deleted:
        said.append(f"{len(deleted)} namespace(s) {prefix}-*")
    if temp_dirs:
        said.append(f"temp dir(s) {', '.join(map(str, temp_dirs))}")
    return said


def clean_dead_runs(say: Callable[[str], None], *, state: Path | None = None) -> list[str]:
    """Before a new run: remove what runs that died without cleaning up left, saying so; point
    at kept runs (left on purpose). Returns the prefixes cleaned. A live run's record (another
    emulation running right now) is left alone."""
    cleaned: list[str] = []
    for record in records(state):
        if record.owner_alive:
            continue
        if record.kept:
            say(f"emulate: run {record.prefix} was kept (--keep); delete it with "
                f"python -m vtaplab emulate --teardown {record.prefix}")
            continue
        removed = clean(record.prefix, record)
        cleaned.append(record.prefix)
        say(f"emulate: run {record.prefix} (pid {record.owner_pid}) ended without cleaning "
            f"up; removed: {'; '.join(removed) or 'nothing was left but its record'}")
    return cleaned


def teardown(prefix: str, *, state: Path | None = None) -> tuple[int, str]:
    """``emulate --teardown PREFIX``: (exit status, the one line to print)."""
    try:
        check_prefix(prefix)
    except ValueError as exc:
        return 2, f"emulate: --teardown {exc}"
    path = (state or state_dir()) / f"{prefix}.json"
    record = load(path) if path.exists() else None
    if record is not None and record.owner_alive:
        return 1, (f"emulate: run {prefix} is still running (pid {record.owner_pid}); "
                   "nothing deleted; accepted: the prefix of a run that has ended (stop a "
                   "running one with Ctrl-C: it tears itself down)")
    if record is None and not path.exists() and not _namespaces(prefix) and not _temp_dirs(
            prefix):
        return 1, (f"emulate: --teardown {prefix}: no such run (no record in "
                   f"{path.parent}, no namespace {prefix}-*, no temp dir); nothing deleted")
    removed = clean(prefix, record)
    path.unlink(missing_ok=True)
    return 0, (f"emulate: run {prefix}: removed "
               f"{'; '.join(removed) or 'its record (nothing else was left)'}")


def note_pidfiles(record: RunRecord | None, pidfiles: Iterable[Path]) -> None:
    """Record every capture's pids (the engine calls this once its captures listen)."""
    if record is not None:
        for pidfile in pidfiles:
            record.add_pidfile(pidfile, f"capture {pidfile.stem.lstrip('.')}")
