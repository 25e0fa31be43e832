"""SSH and evidence fetch against a real OpenSSH server on 127.0.0.1.

Each test starts its own ``/usr/sbin/sshd -D -e -f CONFIG`` on a free loopback port, with a
host key made by ``vtaplab.azure.ssh`` (so OpenSSH itself proves the key format cloud-init will
install) and a per-run client key in ``authorized_keys``; it is stopped by pid.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers.sshd import SSHD, Sshd, free_port

from vtaplab.azure import fetch, ssh
from vtaplab.judge.decode import CaptureError

pytestmark = pytest.mark.skipif(
    not (os.path.exists(SSHD) and os.geteuid() == 0),
    reason="needs root and openssh-server (bootstrap.sh installs it)")






@pytest.fixture
def keys():
    client = ssh.generate_host_key()  # any Ed25519 pair serves as a user key too
    return {"client": client, "host": ssh.host_key_for(os.urandom(16), "vm-test")}


@pytest.fixture
def sshd(tmp_path, keys):
    server_dir = tmp_path / "sshd"
    server_dir.mkdir()
    server = Sshd(server_dir, keys["client"].public_line, keys["host"])
    server.start()
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()


def session(server: Sshd, keys: dict, **kw) -> ssh.SshSession:
    kw.setdefault("known_hosts", {"127.0.0.1": keys["host"].public_line})
    kw.setdefault("private_key", keys["client"].private_pem)
    kw.setdefault("connect_attempts", 5)
    kw.setdefault("connect_total_seconds", 30)
    kw.setdefault("backoff_initial", 0.2)
    return ssh.SshSession("127.0.0.1", port=server.port, username="root", **kw)


def test_run_drains_large_stdout_and_stderr_before_exit_status(sshd, keys):
    # 8 MB on stdout and 2 MB on stderr: far beyond the channel windows
    cmd = ("head -c 6000000 /dev/zero | base64 -w 0; "
           "head -c 1500000 /dev/zero | base64 -w 0 >&2; exit 3")
    with session(sshd, keys) as s:
        res = s.run(cmd, timeout=120)
    assert res.exit_status == 3
    assert len(res.stdout) == 8000000 and len(res.stderr) == 2000000
    assert set(res.stdout) == {ord("A")} and set(res.stderr) == {ord("A")}


def test_run_times_out(sshd, keys):
    with session(sshd, keys) as s, pytest.raises(ssh.CommandTimeout, match="still running"):
        s.run("sleep 30", timeout=0.5)


def test_fetch_several_files_including_a_large_one(sshd, keys, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    big = os.urandom(40 * 1024 * 1024)
    (remote / "collector.pcap").write_bytes(big)
    (remote / "proxy.pcap").write_bytes(b"\xd4\xc3\xb2\xa1" + os.urandom(4096))
    (remote / "traffic.log").write_text("# vtap-traffic v1\n")
    local = tmp_path / "local"
    with session(sshd, keys) as s:
        results = [s.fetch(str(remote / n), local / n, verify_remote_sha256=(n != "proxy.pcap"))
                   for n in ("collector.pcap", "proxy.pcap", "traffic.log")]
    for r in results:
        want = (remote / r.local.name).read_bytes()
        assert r.size == len(want)
        assert r.sha256 == hashlib.sha256(want).hexdigest()
        assert hashlib.sha256(r.local.read_bytes()).hexdigest() == r.sha256
    assert results[0].size == 40 * 1024 * 1024
    assert not list(local.glob("*.part"))


def test_host_key_mismatch_is_refused(sshd, keys):
    other = ssh.generate_host_key()
    s = session(sshd, keys, known_hosts={"127.0.0.1": other.public_line})
    with pytest.raises(ssh.HostKeyMismatch, match="host key mismatch") as info:
        s.connect()
    assert s.connect_tries == 1  # final at once, never retried
    assert info.value.__class__ is ssh.HostKeyMismatch


def test_unpinned_host_is_refused(sshd, keys):
    with pytest.raises(ssh.UnknownHost, match="no pinned host key"):
        session(sshd, keys, known_hosts={"10.40.3.4": keys["host"].public_line})


def test_wrong_client_key_gives_a_clear_auth_error(sshd, keys):
    wrong = ssh.generate_host_key()
    s = session(sshd, keys, private_key=wrong.private_pem)
    with pytest.raises(ssh.AuthFailed) as info:
        s.connect()
    msg = str(info.value)
    assert "authentication failed" in msg and "root@127.0.0.1" in msg
    assert wrong.private_pem.splitlines()[1] not in msg  # no key material in the message
    assert s.connect_tries == 1


def test_private_key_from_file_path(sshd, keys, tmp_path):
    path = tmp_path / "id_ed25519"
    path.write_text(keys["client"].private_pem)
    os.chmod(path, 0o600)
    with session(sshd, keys, private_key=path) as s:
        assert s.run("echo ok", check=True).stdout == b"ok\n"


def test_bad_private_key_input_is_one_line_error(tmp_path):
    with pytest.raises(ssh.SshError, match="private key file"):
        ssh.load_private_key(tmp_path / "nope")
    with pytest.raises(ssh.SshError, match="not an unencrypted"):
        ssh.load_private_key("-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n")


def test_host_key_derivation_is_deterministic_and_installable(keys):
    a = ssh.host_key_for(b"stack-secret", "vm-col")
    assert a.public_line == ssh.host_key_for(b"stack-secret", "vm-col").public_line
    assert a.public_line != ssh.host_key_for(b"stack-secret", "vm-proxy").public_line
    assert a.public_line.startswith("ssh-ed25519 ")
    assert "PRIVATE" not in repr(a)
    # the sshd fixture runs on a derived key: OpenSSH accepts the format (see other tests)


def test_late_server_is_waited_for_within_the_bound(tmp_path, keys):
    server = Sshd(tmp_path, keys["client"].public_line, keys["host"])
    timer = threading.Timer(2.0, server.start)
    timer.start()
    try:
        s = session(server, keys, connect_attempts=40, connect_total_seconds=60,
                    backoff_initial=0.1, backoff_max=0.5)
        with s:
            assert s.run("true").exit_status == 0
        assert s.connect_tries > 1  # it really was not there at first
    finally:
        timer.cancel()
        timer.join()
        server.stop()


def test_absent_server_gives_up_within_the_bound(keys):
    port = free_port()
    s = ssh.SshSession("127.0.0.1", port=port, username="root",
                       private_key=keys["client"].private_pem,
                       known_hosts={"127.0.0.1": keys["host"].public_line},
                       connect_attempts=3, connect_total_seconds=20, backoff_initial=0.05)
    with pytest.raises(ssh.ConnectTimeout, match="after 3 tries"):
        s.connect()
    assert s.connect_tries == 3


# --- fetch.py: a scenario's evidence ---------------------------------------------------------

def _connect(server: Sshd, keys: dict):
    def connect(host: str) -> ssh.SshSession:
        return session(server, keys)
    return connect


def test_fetch_scenario_missing_collector_capture_is_not_delivered(sshd, keys, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "traffic.log").write_text(
        "# vtap-traffic v1\n1\thttp://10.30.1.4/\t200\t615\t0.004\n")
    files = [fetch.RemoteFile("collector.pcap", "127.0.0.1", str(remote / "nope.pcap")),
             fetch.RemoteFile("traffic.log", "127.0.0.1", str(remote / "traffic.log"))]
    verdict = fetch.fetch_scenario(stack="b2", scenario="b2", files=files,
                                   connect=_connect(sshd, keys), root=tmp_path)
    assert verdict["outcome"] == "not-delivered"
    assert verdict["matches_expected"] is False
    assert "nope.pcap" in verdict["reason"] and "no such file" in verdict["reason"]
    assert verdict["files"] == ["evidence/b2/b2/traffic.log"]
    assert verdict["traffic"]["requests"] == 1
    written = json.loads((tmp_path / "evidence/b2/b2/verdict.json").read_text())
    assert written["outcome"] == "not-delivered" and written["reason"] == verdict["reason"]
    summary = fetch.outputs_summary(verdict, stack="b2")
    assert summary["verdict"] == "evidence/b2/b2/verdict.json"


def test_fetch_scenario_decodes_what_arrived(sshd, keys, tmp_path):
    # not a capture at all: the decoder's error lands in the verdict, not a traceback
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "c.pcap").write_bytes(b"this is not a pcap")
    files = [fetch.RemoteFile("collector.pcap", "127.0.0.1", str(remote / "c.pcap"))]
    verdict = fetch.fetch_scenario(stack="b2", scenario="b2", files=files,
                                   connect=_connect(sshd, keys), root=tmp_path)
    assert verdict["fetched"]["collector.pcap"]["bytes"] == 18
    assert verdict["outcome"] == "error" and "unreadable" in verdict["reason"]
    assert issubclass(CaptureError, ValueError)


def test_fetch_scenario_unreachable_collector_is_error_not_a_claim(keys, tmp_path):
    port = free_port()

    def connect(host: str) -> ssh.SshSession:
        return ssh.SshSession(host, port=port, username="root",
                              private_key=keys["client"].private_pem,
                              known_hosts={host: keys["host"].public_line},
                              connect_attempts=2, connect_total_seconds=5,
                              backoff_initial=0.05)

    files = [fetch.RemoteFile("collector.pcap", "127.0.0.1", "/x/collector.pcap")]
    verdict = fetch.fetch_scenario(stack="b2", scenario="b2", files=files,
                                   connect=connect, root=tmp_path)
    assert verdict["outcome"] == "error" and "not reachable" in verdict["reason"]


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run's remote folder holding an empty traffic log, for the fetch command; the
    command's own working folder is tmp_path."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "traffic.log").write_text("# vtap-traffic v1\n")
    return folder


def test_fetch_cli_prints_small_json(sshd, keys, tmp_path, remote, monkeypatch, capsys):
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({f"[127.0.0.1]:{sshd.port}": keys["host"].public_line}))
    monkeypatch.setenv(fetch.KEY_ENV, keys["client"].private_pem)
    rc = fetch.main(["--stack", "b2", "--scenario", "b2", "--user", "root",
                     "--port", str(sshd.port), "--known-hosts", str(hosts),
                     "--file", f"collector.pcap=127.0.0.1:{remote}/missing.pcap",
                     "--file", f"traffic.log=127.0.0.1:{remote}/traffic.log"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    summary = json.loads(out.out)
    assert summary["outcome"] == "not-delivered"
    assert "PRIVATE" not in out.out + out.err
    assert fetch.main(["--stack", "b2", "--scenario", "b2", "--known-hosts",
                       str(hosts), "--file", "bad"]) == 2
    assert "NAME=HOST:/ABSOLUTE/PATH" in capsys.readouterr().err



def test_fastpath_restart_waits_for_ssh_readiness(sshd, keys):
    from helpers.fake_arm import VM, FakeArm, _queue_vm_ops

    from vtaplab.azure import fastpath

    arm = FakeArm()
    try:
        _queue_vm_ops(arm)
        ready = fastpath.ssh_ready(lambda: session(sshd, keys), command="test -d /")
        result = fastpath.restart_vm(arm.client(), VM, ready=ready, ready_timeout=30,
                                     ready_interval=0.1)
    finally:
        arm.close()
    assert [s.name for s in result.steps] == ["deallocate", "start", "ready"]
    # a failing readiness command is "not ready", within the bound
    bad = fastpath.ssh_ready(lambda: session(sshd, keys), command="exit 1")
    with pytest.raises(fastpath.FastpathError, match="exited 1"):
        fastpath._wait_ready(bad, 0.3, 0.1, time.monotonic, time.sleep)


def test_fastpath_cli_needs_host_key_for_ssh(capsys):
    from vtaplab.azure import fastpath

    assert fastpath.main([VM_ID_EXAMPLE, "--ssh-host", "127.0.0.1"]) == 2
    assert "--host-key" in capsys.readouterr().err
    assert fastpath.main(["/subscriptions/x/not-a-vm"]) == 2
    assert "not a VM resource id" in capsys.readouterr().err


VM_ID_EXAMPLE = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg"
                 "/providers/Microsoft.Compute/virtualMachines/vm-src")


def test_fetch_scenario_unreadable_collector_file_is_error(sshd, keys, tmp_path):
    remote = tmp_path / "remote"
    (remote / "collector.pcap").mkdir(parents=True)  # there, but not a file SFTP can read
    files = [fetch.RemoteFile("collector.pcap", "127.0.0.1",
                              str(remote / "collector.pcap"))]
    verdict = fetch.fetch_scenario(stack="b2", scenario="b2", files=files,
                                   connect=_connect(sshd, keys), root=tmp_path)
    assert verdict["outcome"] == "error", verdict
    assert "collector.pcap" in verdict["missing"]


def test_derived_host_key_text_is_byte_for_byte_stable(tmp_path):
    # cloud-init user data carries it: a different text each run would replace the VM
    first = ssh.host_key_for("a stack secret of enough length....", "b2-src")
    again = ssh.host_key_for("a stack secret of enough length....", "b2-src")
    assert first.private_pem == again.private_pem
    assert first.private_pem != ssh.host_key_for("a stack secret of enough length....",
                                                 "b2-client").private_pem
    path = tmp_path / "key"
    path.write_text(first.private_pem)
    path.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(path)], capture_output=True,
                             text=True, timeout=30, check=False)
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout.strip() == first.public_line  # OpenSSH reads it as the same key


def test_fetch_cli_takes_pinned_keys_inline(sshd, keys, tmp_path, remote, capsys):
    key_file = tmp_path / "id"
    key_file.write_text(keys["client"].private_pem)
    base = ["--stack", "b2", "--scenario", "b2", "--user", "root", "--port", str(sshd.port),
            "--key-file", str(key_file),
            "--file", f"collector.pcap=127.0.0.1:{remote}/none.pcap",
            "--file", f"traffic.log=127.0.0.1:{remote}/traffic.log"]
    rc = fetch.main([*base, "--known-host", f"127.0.0.1={keys['host'].public_line}"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    summary = json.loads(out.out)
    assert summary["files"] == ["evidence/b2/b2/traffic.log"]
    assert summary["outcome"] == "not-delivered"  # looked, and no capture was there
    other = ssh.generate_host_key().public_line
    assert fetch.main([*base, "--known-host", f"127.0.0.1={other}"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["outcome"] == "error" and "host key mismatch" in summary["reason"]
    assert fetch.main(base) == 2
    assert "no pinned host key" in capsys.readouterr().err
