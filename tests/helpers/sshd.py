"""A real sshd on loopback, started per test, for paramiko."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from vtaplab.azure import ssh

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """One sshd on 127.0.0.1:port, all its files in ``tmp``."""

    def __init__(self, tmp: Path, client_public: str, host_key: ssh.HostKeyPair) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.host_key = host_key
        (tmp / "host_ed25519").write_text(host_key.private_pem)
        os.chmod(tmp / "host_ed25519", 0o600)
        (tmp / "authorized_keys").write_text(client_public + "\n")
        self.config = tmp / "sshd_config"
        self.config.write_text("\n".join([
            f"ListenAddress 127.0.0.1:{self.port}",
            f"HostKey {tmp / 'host_ed25519'}",
            f"PidFile {tmp / 'sshd.pid'}",
            f"AuthorizedKeysFile {tmp / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "UsePAM no",
            "StrictModes no",  # temp dirs are not owned the way StrictModes wants
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
        ]) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        log = (self.tmp / "sshd.log").open("ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                     stdout=log, stderr=log)

    def wait_listening(self, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"sshd not listening:\n{self.log()}")

    def log(self) -> str:
        path = self.tmp / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
