"""Run records (vtaplab.emulator.runs): what a run killed with SIGKILL leaves is found by its
prefix, removed by the next run or ``--teardown`` (which says what it removed), and only by
verified pid; the HTTP server dies with its run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.netns import wait_for_traffic

from vtaplab import PROJECT_ROOT
from vtaplab.emulator import engine, runs
from vtaplab.emulator.netns import list_namespaces, new_prefix

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="network namespaces need root")


def _wait_gone(pid: int, start: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runs.process_start(pid) != start:
            return True
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh run prefix; whatever carries it is deleted by name after the test."""
    name = new_prefix(list_namespaces())
    yield name
    for ns in list_namespaces():
        if ns.startswith(name + "-"):
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)


def _sleeper(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*argv], start_new_session=True, stdout=subprocess.DEVNULL)


def test_a_process_is_stopped_only_while_its_start_time_matches():
    proc = _sleeper("sleep", "30")
    try:
        start = runs.process_start(proc.pid)
        assert start is not None
        assert runs.stop_process(proc.pid, start + 1) is False   # another process's pid now
        assert proc.poll() is None
        assert runs.stop_process(proc.pid, start, grace_s=2) is True
        assert proc.wait(timeout=5) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_watchdog_shell_goes_with_its_sleep():
    shell = _sleeper("bash", "-c", "sleep 30; true")
    try:
        deadline = time.monotonic() + 5
        children: list[int] = []
        while not children and time.monotonic() < deadline:
            children = runs._children(shell.pid)
            time.sleep(0.02)
        [child] = children
        child_start = runs.process_start(child)
        assert child_start is not None
        start = runs.process_start(shell.pid)
        assert start is not None and runs.stop_process(shell.pid, start, grace_s=2)
        shell.wait(timeout=5)
        assert _wait_gone(child, child_start)
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()


@needs_root
def test_the_next_run_removes_what_a_dead_run_left_and_says_so(tmp_path, prefix):
    namespace = f"{prefix}-src"
    subprocess.run(["ip", "netns", "add", namespace], check=True, timeout=30)
    recorded = _sleeper("ip", "netns", "exec", namespace, "sleep", "60")
    unrecorded = _sleeper("ip", "netns", "exec", namespace, "sleep", "61")
    www = Path(tempfile.mkdtemp(prefix=f"{prefix}-www-"))
    try:
        time.sleep(0.2)   # both have exec'd sleep inside the namespace
        record = runs.begin(prefix, state=tmp_path)
        record.add_process(recorded.pid, "http server in " + namespace)
        # The owner "died": its recorded start time no longer matches this pid.
        record.owner_start += 1
        record.save()
        said: list[str] = []
        assert runs.clean_dead_runs(said.append, state=tmp_path) == [prefix]
        [line] = said
        assert f"run {prefix}" in line and "ended without cleaning up" in line
        assert f"pid {recorded.pid}" in line and f"pid {unrecorded.pid} in {namespace}" in line
        assert f"1 namespace(s) {prefix}-*" in line and str(www) in line
        assert recorded.wait(timeout=10) is not None and unrecorded.wait(timeout=10) is not None
        assert namespace not in list_namespaces()
        assert not www.exists() and not (tmp_path / f"{prefix}.json").exists()
    finally:
        for proc in (recorded, unrecorded):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_live_run_is_left_alone(tmp_path, prefix):
    record = runs.begin(prefix, state=tmp_path)          # this process: alive
    said: list[str] = []
    assert runs.clean_dead_runs(said.append, state=tmp_path) == []
    assert said == [] and record.path is not None and record.path.exists()
    code, line = runs.teardown(prefix, state=tmp_path)
    assert code == 1 and "still running" in line and "nothing deleted" in line
    assert record.path.exists()


def test_a_kept_run_is_pointed_at_not_removed(tmp_path, prefix):
    record = runs.begin(prefix, state=tmp_path)
    record.finish(kept=True)
    record.owner_start += 1
    record.save()
    said: list[str] = []
    assert runs.clean_dead_runs(said.append, state=tmp_path) == []
    assert said == [f"emulate: run {prefix} was kept (--keep); delete it with "
                    f"python -m vtaplab emulate --teardown {prefix}"]


def test_teardown_of_a_run_that_never_existed_says_so(tmp_path, prefix):
    code, line = runs.teardown(prefix, state=tmp_path)
    assert code == 1
    assert f"--teardown {prefix}: no such run" in line and "nothing deleted" in line
    assert "deleted the namespaces" not in line


def test_teardown_needs_no_scenario():
    assert engine._options(["--teardown", "vl1234"]) == "vl1234"
    with pytest.raises(ValueError, match="required: stack"):
        engine._options([])


def _start_server_under(parent_code: str, www: Path) -> tuple[subprocess.Popen[str], int]:
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code, str(www)], stdout=subprocess.PIPE, text=True,
        cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert parent.stdout is not None
    server_pid = int(parent.stdout.readline())
    assert parent.stdout.readline().startswith("ready")
    return parent, server_pid


PARENT = r"""
import subprocess, sys, time
server = subprocess.Popen([sys.executable, "-m", "vtaplab.emulator.httpserver", "--dir",
                           sys.argv[1], "--bind", "127.0.0.1", "--port", "0"{extra}],
                          stdout=subprocess.PIPE, text=True, start_new_session=True)
print(server.pid, flush=True)
print(server.stdout.readline().strip(), flush=True)
time.sleep(60)
"""


def test_the_http_server_dies_with_its_run_even_by_sigkill(tmp_path):
    parent, server = _start_server_under(PARENT.format(extra=""), tmp_path)
    try:
        start = runs.process_start(server)
        assert start is not None
        parent.kill()                      # SIGKILL: the run gets no chance to stop it
        parent.wait(timeout=5)
        assert _wait_gone(server, start, timeout=5), "the HTTP server outlived its run"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        start = runs.process_start(server)
        if start is not None:
            runs.stop_process(server, start)


def test_the_http_server_has_a_lifetime_bound(tmp_path):
    parent, server = _start_server_under(PARENT.format(extra=', "--max-seconds", "0.5"'),
                                         tmp_path)
    try:
        start = runs.process_start(server)
        assert start is not None
        assert _wait_gone(server, start, timeout=5), "the HTTP server ignored --max-seconds"
        assert parent.poll() is None       # it ended on its own bound, not with its parent
    finally:
        parent.kill()
        parent.wait()


@needs_root
def test_a_run_killed_with_sigkill_is_torn_down_by_prefix(tmp_path):
    state = tmp_path / "state"
    env = {**os.environ, runs.STATE_DIR_ENV: str(state)}
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vtaplab", "emulate", "b2", "--proxy-mode", "netdev",
         "--out", str(out), "--requests", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, env=env)
    prefix = ""
    try:
        wait_for_traffic(out, timeout=120, poll=0.1)
        [record_file] = state.glob("vl????.json")
        prefix = record_file.stem
        proc.kill()                                   # SIGKILL: no teardown of its own
        proc.communicate(timeout=30)
        record = json.loads(record_file.read_text())
        left = [(p["pid"], p["start"]) for p in record["processes"]]
        assert left, "the run recorded none of its processes"
        assert [ns for ns in list_namespaces() if ns.startswith(prefix + "-")]
        teardown = subprocess.run(
            [sys.executable, "-m", "vtaplab", "emulate", "--teardown", prefix],
            capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=120, check=False)
        assert teardown.returncode == 0, teardown.stderr
        line = teardown.stdout.strip()
        assert line.startswith(f"emulate: run {prefix}: removed ")
        assert re.search(r"\d+ namespace\(s\)", line) and "process(es)" in line
        assert [ns for ns in list_namespaces() if ns.startswith(prefix + "-")] == []
        for pid, start in left:
            assert _wait_gone(pid, start, timeout=5), f"pid {pid} of the dead run still runs"
        assert not list(Path(tempfile.gettempdir()).glob(f"{prefix}-*"))
        assert not record_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if prefix:
            runs.teardown(prefix, state=state)


def test_an_unwritable_state_dir_is_one_line(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(runs.STATE_DIR_ENV, str(blocker / "state"))   # under a file: ENOTDIR
    monkeypatch.setattr(engine.Emulation, "run", lambda _self: pytest.fail("ran"))
    opts = engine._options(["b2", "--proxy-mode", "netdev", "--out", str(tmp_path / "out")])
    assert not isinstance(opts, str)
    topo, _origin = engine.load_topology(opts)
    assert engine._run_one(opts, topo) == (2, "error")
    [line] = capsys.readouterr().err.strip().splitlines()
    assert str(blocker / "state") in line and runs.STATE_DIR_ENV in line


@needs_root
def test_a_command_in_a_namespace_bounds_itself(prefix):
    from vtaplab.emulator.netns import Lab, NetnsError, Runner

    lab = Lab(prefix, Runner())
    ns = lab.add_ns("t")
    try:
        started = time.monotonic()
        with pytest.raises(NetnsError, match=r"no answer within 1 s"):
            lab.exec(ns, ["sleep", "30"], timeout=1)
        assert time.monotonic() - started < 5       # timeout(1) ended it, not the backstop
        assert subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              check=False, timeout=10).stdout.split() == []
        # A command's own exit status 124, early, is its own: not a timeout of ours.
        done = lab.exec(ns, ["sh", "-c", "exit 124"], check=False, timeout=10)
        assert done.returncode == 124
    finally:
        lab.teardown()
