"""SSH to the lab's VMs, done right: key only, pinned host keys, bounded retries, no deadlocks.

- Authentication is by private key only (a file path, or a PEM string the Pulumi program keeps
  as a secret); no agent, no ``~/.ssh`` keys, no password.
- Host keys are pinned: the caller passes ``known_hosts`` (host -> ``"ssh-ed25519 AAAA…"``);
  an unknown host or a different key is refused (:class:`HostKeyMismatch`,
  :class:`UnknownHost`) — never auto-added. On Azure each VM's host key is a pulumi-tls
  ``PrivateKey`` (components/linux_vm.py): cloud-init installs it and the stack outputs pin
  it. :func:`host_key_for` (deterministic from a secret and a name) stands in for it under
  the graph mocks and in tests; :func:`generate_host_key` makes a fresh one.
- Connecting retries with exponential backoff while the VM boots, bounded by a count and a
  total time; a host-key mismatch or an authentication failure is final at once.
- :meth:`SshSession.run` drains stdout and stderr while the command runs and only then reads
  the exit status (paramiko deadlocks on large output otherwise), within a timeout.
- :meth:`SshSession.fetch` brings a file back over SFTP, checks its size (and optionally
  its sha256 against the remote ``sha256sum``), and lands it atomically.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import logging
import os
import shlex
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger("vtaplab.azure.ssh")


class SshError(RuntimeError):
    """Any SSH failure, with a one-line message naming host and cause."""


class HostKeyMismatch(SshError):
    pass


class UnknownHost(SshError):
    pass


class AuthFailed(SshError):
    pass


class ConnectTimeout(SshError):
    pass


class CommandTimeout(SshError):
    pass


class RemoteFileMissing(SshError):
    pass


class TransferError(SshError):
    pass


# --- keys -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostKeyPair:
    """An Ed25519 key pair: ``private_pem`` in OpenSSH format (what sshd and cloud-init's
    ``ssh_keys: ed25519_private`` take), ``public_line`` as ``ssh-ed25519 AAAA…``."""

    private_pem: str
    public_line: str

    def __repr__(self) -> str:  # the private half never lands in a log or a traceback
        return f"HostKeyPair(public_line={self.public_line!r})"


def host_key_from_seed(seed: bytes) -> HostKeyPair:
    """The Ed25519 key pair whose private scalar seed is ``seed`` (32 bytes)."""
    if len(seed) != 32:
        raise ValueError(f"host key seed: {len(seed)} bytes; accepted: exactly 32")
    return _pair(Ed25519PrivateKey.from_private_bytes(seed))


def host_key_for(secret: bytes | str, vm_name: str) -> HostKeyPair:
    """A host key derived from a secret and a VM's name: the same inputs always give the same
    key, byte for byte (the graph mocks' stand-in for pulumi-tls, so two mock runs agree)."""
    if not secret:
        raise ValueError("host key secret: empty; give the stack's secret (bytes or str)")
    key = secret.encode() if isinstance(secret, str) else secret
    seed = hmac.new(key, b"vtaplab-host-key:" + vm_name.encode(), hashlib.sha256).digest()
    return host_key_from_seed(seed)


def generate_host_key() -> HostKeyPair:
    """A fresh random Ed25519 key pair (paramiko cannot generate Ed25519; cryptography can)."""
    return _pair(Ed25519PrivateKey.generate())


def _pair(key: Ed25519PrivateKey) -> HostKeyPair:
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    public_raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return HostKeyPair(_openssh_private_pem(seed, public_raw), public)


def _openssh_private_pem(seed: bytes, public_raw: bytes) -> str:
    """The ``openssh-key-v1`` file of an Ed25519 key, byte for byte the same for the same key.

    (``cryptography`` fills the two "check" integers with random bytes, so its text differs
    on every call; cloud-init user data built from it would change on every ``pulumi up``,
    and Azure replaces a VM whose customData changes.) The check integers only let a reader
    detect a wrong passphrase; here they derive from the key."""
    def string(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    key_type = b"ssh-ed25519"
    public_blob = string(key_type) + string(public_raw)
    check = hashlib.sha256(b"vtaplab-openssh-check:" + seed).digest()[:4]
    private = (check + check + string(key_type) + string(public_raw)
               + string(seed + public_raw) + string(b""))
    private += bytes(range(1, 1 + (-len(private)) % 8))  # pad to the cipher block size 8
    blob = (b"openssh-key-v1\0" + string(b"none") + string(b"none") + string(b"")
            + (1).to_bytes(4, "big") + string(public_blob) + string(private))
    text = base64.b64encode(blob).decode()
    lines = [text[i:i + 70] for i in range(0, len(text), 70)]
    return ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(lines)
            + "\n-----END OPENSSH PRIVATE KEY-----\n")


_KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey,
                                                 paramiko.RSAKey)


def load_private_key(key: str | os.PathLike[str]) -> paramiko.PKey:
    """A private key from PEM text (contains ``-----BEGIN``) or a file path."""
    if isinstance(key, str) and "-----BEGIN" in key:
        text, where = key, "the private key given as text"
    else:
        path = Path(key)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SshError(f"private key file {path}: {exc.strerror}; give a readable "
                           "OpenSSH/PEM private key file or the key's PEM text") from None
        where = f"private key file {path}"
    errors = []
    for cls in _KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(f"{cls.__name__}: {exc}")
    raise SshError(f"{where}: not an unencrypted Ed25519, ECDSA or RSA private key")


def parse_public_key(line: str) -> paramiko.PKey:
    """``"ssh-ed25519 AAAA… [comment]"`` -> a paramiko public key."""
    fields = line.split()
    if len(fields) < 2:
        raise SshError(f"host public key {line[:40]!r}: accepted form 'TYPE BASE64 [comment]'")
    try:
        return paramiko.PKey.from_type_string(fields[0], base64.b64decode(fields[1]))
    except Exception as exc:
        raise SshError(f"host public key {line[:40]!r}: unreadable ({exc})") from None


# --- the session ----------------------------------------------------------------------------

@dataclass
class CommandResult:
    command: str
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass
class FetchResult:
    remote: str
    local: Path
    size: int
    sha256: str


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Refuse any host whose key was not pinned (paramiko's AutoAddPolicy is never used)."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise UnknownHost(f"SSH {hostname}: host key {key.get_name()} "
                          f"{key.fingerprint} is not pinned; refusing to connect")


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, paramiko.BadHostKeyException | paramiko.AuthenticationException |
                  UnknownHost):
        return False
    return isinstance(exc, OSError | EOFError | paramiko.SSHException | socket.timeout)


class SshSession:
    """One authenticated SSH connection to ``username@host:port``."""

    def __init__(self, host: str, *, username: str, private_key: str | os.PathLike[str],
                 known_hosts: Mapping[str, str], port: int = 22,
                 connect_attempts: int = 40, connect_total_seconds: float = 600.0,
                 backoff_initial: float = 1.0, backoff_max: float = 15.0,
                 timeout: float = 15.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self.port, self.username = host, int(port), username
        self._pkey = load_private_key(private_key)
        self._pinned = self._pinned_key(known_hosts)
        self.connect_attempts = connect_attempts
        self.connect_total_seconds = connect_total_seconds
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.timeout = timeout
        self._sleep, self._clock = sleep, clock
        self._client: paramiko.SSHClient | None = None
        self.connect_tries = 0

    def __repr__(self) -> str:
        return f"SshSession({self.username}@{self.host}:{self.port})"

    @property
    def where(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    def _pinned_key(self, known_hosts: Mapping[str, str]) -> paramiko.PKey:
        for name in (f"[{self.host}]:{self.port}", self.host):
            if name in known_hosts:
                return parse_public_key(known_hosts[name])
        raise UnknownHost(f"SSH {self.host}:{self.port}: no pinned host key in known_hosts "
                          f"(has: {', '.join(sorted(known_hosts)) or 'none'}); refusing to "
                          "connect")

    # context manager
    def __enter__(self) -> SshSession:
        return self.connect()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def connect(self) -> SshSession:
        """Connect with bounded retries; final at once on a host-key or auth failure."""
        if self._client is not None:
            return self
        deadline = self._clock() + self.connect_total_seconds
        delay = self.backoff_initial
        last: BaseException | None = None
        for attempt in range(1, self.connect_attempts + 1):
            self.connect_tries = attempt
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(_RefuseUnknown())
            host_keys = client.get_host_keys()
            name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
            host_keys.add(name, self._pinned.get_name(), self._pinned)
            remaining = deadline - self._clock()
            try:
                client.connect(self.host, port=self.port, username=self.username,
                               pkey=self._pkey, allow_agent=False, look_for_keys=False,
                               timeout=max(0.5, min(self.timeout, remaining)),
                               banner_timeout=max(0.5, min(self.timeout, remaining)),
                               auth_timeout=max(0.5, min(self.timeout, remaining)))
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise HostKeyMismatch(
                    f"SSH {self.host}:{self.port}: host key mismatch — got "
                    f"{exc.key.get_name()} {exc.key.fingerprint}, pinned "
                    f"{exc.expected_key.get_name()} {exc.expected_key.fingerprint}; refusing "
                    "to connect (a different machine, or the VM's host keys changed)"
                ) from None
            except paramiko.AuthenticationException:
                client.close()
                raise AuthFailed(
                    f"SSH {self.where}: authentication failed for key "
                    f"{self._pkey.get_name()} {self._pkey.fingerprint}; the VM does not "
                    "accept this private key (is it the pair of the stack's sshPublicKey?)"
                ) from None
            except UnknownHost:
                client.close()
                raise
            except Exception as exc:
                client.close()
                if not _retriable(exc):
                    raise SshError(f"SSH {self.where}: {type(exc).__name__}: {exc}") from None
                last = exc
                remaining = deadline - self._clock()
                if attempt >= self.connect_attempts or remaining <= 0:
                    break
                wait = min(delay, self.backoff_max, remaining)
                log.info("SSH %s not ready (%s), retry %d/%d in %.1fs", self.where,
                         type(exc).__name__, attempt, self.connect_attempts, wait)
                self._sleep(wait)
                delay *= 2
                continue
            self._client = client
            return self
        raise ConnectTimeout(
            f"SSH {self.where}: not reachable after {self.connect_tries} tries within "
            f"{self.connect_total_seconds:g}s; last: {type(last).__name__}: {last}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _transport(self) -> paramiko.Transport:
        if self._client is None:
            self.connect()
        assert self._client is not None
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError(f"SSH {self.where}: connection lost")
        return transport

    def run(self, command: str, *, timeout: float = 600.0, check: bool = False,
            max_output: int = 64 * 1024 * 1024) -> CommandResult:
        """Run ``command``; stdout and stderr are read as they come (up to ``max_output``
        bytes each, the rest discarded), the exit status after both are drained."""
        chan = self._transport().open_session(timeout=self.timeout)
        try:
            chan.settimeout(0.0)
            chan.exec_command(command)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = self._clock() + timeout
            while True:
                moved = False
                while chan.recv_ready():
                    data = chan.recv(65536)
                    moved = True
                    if len(out) < max_output:
                        out += data[: max_output - len(out)]
                while chan.recv_stderr_ready():
                    data = chan.recv_stderr(65536)
                    moved = True
                    if len(err) < max_output:
                        err += data[: max_output - len(err)]
                if chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready() and (chan.eof_received or chan.closed):
                    break
                if self._clock() > deadline:
                    raise CommandTimeout(f"SSH {self.where}: {command!r} still running after "
                                         f"{timeout:g}s; abandoned")
                if not moved:
                    time.sleep(0.005)
            status = chan.recv_exit_status()
        finally:
            chan.close()
        result = CommandResult(command, status, bytes(out), bytes(err))
        if check and status != 0:
            tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise SshError(f"SSH {self.where}: {command!r} exited {status}"
                           + (f": {tail[0]}" if tail else ""))
        return result

    def fetch(self, remote: str, local: str | os.PathLike[str], *,
              verify_remote_sha256: bool = False) -> FetchResult:
        """Copy ``remote`` to ``local`` over SFTP; size checked, sha256 computed (and compared
        with the remote ``sha256sum`` when asked). Lands atomically (``.part`` then rename)."""
        local_path = Path(local)
        if self._client is None:
            self.connect()
        assert self._client is not None
        sftp = self._client.open_sftp()
        try:
            try:
                size = sftp.stat(remote).st_size
            except FileNotFoundError:
                raise RemoteFileMissing(f"{remote}: no such file on {self.host}") from None
            except PermissionError:
                raise TransferError(f"{remote} on {self.host}: permission denied") from None
            local_path.parent.mkdir(parents=True, exist_ok=True)
            part = local_path.with_name(local_path.name + ".part")
            try:
                sftp.get(remote, str(part))
            except OSError as exc:
                part.unlink(missing_ok=True)
                raise TransferError(f"{remote} from {self.host}: {exc}") from None
        finally:
            sftp.close()
        got = part.stat().st_size
        if size is not None and got != size:
            part.unlink(missing_ok=True)
            raise TransferError(f"{remote} from {self.host}: {got} bytes arrived, "
                                f"{size} expected")
        digest = _sha256(part)
        if verify_remote_sha256:
            res = self.run(f"sha256sum -- {shlex.quote(remote)}", timeout=300)
            remote_digest = res.stdout.decode(errors="replace").split(" ", 1)[0].strip()
            if res.exit_status != 0 or remote_digest != digest:
                part.unlink(missing_ok=True)
                raise TransferError(f"{remote} from {self.host}: sha256 {digest} here, "
                                    f"{remote_digest or '?'} there")
        part.replace(local_path)
        return FetchResult(remote, local_path, got, digest)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
