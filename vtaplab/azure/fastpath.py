"""The fastpath restart: deallocate, then start, a tapped VM — once, after its tap
configuration exists.

Azure documents that mirroring fails with "NIC is not on fastpath" until each source VM has
been deallocated and started again; a reboot is not enough. Both are long-running POSTs on
``Microsoft.Compute/virtualMachines``; this waits for each to finish (deallocate must be done
before start is asked for), then optionally until a readiness callback (e.g. an SSH
``cloud-init status --wait``) succeeds, bounded in time.

    python -m vtaplab fastpath VM_ID [--ssh-host IP --host-key 'ssh-ed25519 …'
                                      --ssh-key-file F] [--ready-timeout S]

prints a small JSON record of the steps (no secrets) for a pulumi-command ``local.Command``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from vtaplab.azure.arm import COMPUTE_API, ArmClient, ArmError
from vtaplab.azure.ssh import SshSession

# Wait for cloud-init; exit 2 ("done, with recoverable errors", e.g. a deprecation notice on
# newer cloud-init) still means the VM finished booting; 1 (an error) does not.
READY_COMMAND = "cloud-init status --wait >/dev/null || [ $? -eq 2 ]"

_VM_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"virtualMachines/[^/]+$", re.IGNORECASE)


class FastpathError(RuntimeError):
    """The VM did not come back ready within the bound."""


@dataclass
class Step:
    name: str
    seconds: float
    tries: int = 1
    status: int | None = None


@dataclass
class FastpathResult:
    vm_id: str
    steps: list[Step] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def restart_vm(client: ArmClient, vm_id: str, *, ready: Callable[[], object] | None = None,
               ready_timeout: float = 900.0, ready_interval: float = 10.0,
               api_version: str = COMPUTE_API,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> FastpathResult:
    """Deallocate then start ``vm_id``, waiting for each operation; then wait for
    ``ready()`` to return without raising, for at most ``ready_timeout`` seconds."""
    if not _VM_ID.match(vm_id):
        raise ValueError(f"fastpath: {vm_id!r} is not a VM resource id; expected "
                         "/subscriptions/…/resourceGroups/…/providers/Microsoft.Compute/"
                         "virtualMachines/NAME")
    result = FastpathResult(vm_id)
    for action in ("deallocate", "start"):
        started = clock()
        resp = client.post(f"{vm_id}/{action}", api_version=api_version)
        result.steps.append(Step(action, round(clock() - started, 3), status=resp.status))
    if ready is not None:
        result.steps.append(_wait_ready(ready, ready_timeout, ready_interval, clock, sleep))
    return result


def _wait_ready(ready: Callable[[], object], timeout: float, interval: float,
                clock: Callable[[], float], sleep: Callable[[float], None]) -> Step:
    started = clock()
    deadline = started + timeout
    tries = 0
    while True:
        tries += 1
        try:
            ready()
        except Exception as exc:  # any failure of the probe means "not ready yet"
            if clock() + interval > deadline:
                raise FastpathError(f"VM not ready within {timeout:g}s after {tries} tries; "
                                    f"last: {type(exc).__name__}: {exc}") from None
            sleep(interval)
            continue
        return Step("ready", round(clock() - started, 3), tries=tries)


def ssh_ready(session_factory: Callable[[], object], command: str = READY_COMMAND
              ) -> Callable[[], None]:
    """A readiness probe: connect over SSH (the session's own bounded retries) and run
    ``command`` (default: wait for cloud-init), which must exit 0."""
    def probe() -> None:
        session = session_factory()
        assert isinstance(session, SshSession)
        with session:
            session.run(command, timeout=600, check=True)
    return probe


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtaplab fastpath",
                                     description="deallocate then start a tapped VM once, "
                                                 "then wait until it answers over SSH")
    parser.add_argument("vm_id", help="the VM's ARM resource id")
    parser.add_argument("--api-version", default=COMPUTE_API)
    parser.add_argument("--ssh-host", help="wait for SSH on this address after the start")
    parser.add_argument("--ssh-port", type=int, default=22)
    parser.add_argument("--ssh-user", default="azureuser")
    parser.add_argument("--ssh-key-file",
                        help="private key file (else PEM text in $VTAPLAB_SSH_KEY)")
    parser.add_argument("--host-key", help="the VM's pinned host key, 'ssh-ed25519 AAAA...'")
    parser.add_argument("--ready-timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    ready = None
    if args.ssh_host:
        key = args.ssh_key_file or os.environ.get("VTAPLAB_SSH_KEY")
        if not key or not args.host_key:
            print("vtaplab fastpath: --ssh-host needs --host-key and --ssh-key-file "
                  "(or $VTAPLAB_SSH_KEY)", file=sys.stderr)
            return 2

        def session() -> object:
            return SshSession(args.ssh_host, port=args.ssh_port, username=args.ssh_user,
                              private_key=key, known_hosts={args.ssh_host: args.host_key},
                              connect_total_seconds=min(300.0, args.ready_timeout))

        ready = ssh_ready(session)
    try:
        result = restart_vm(ArmClient(), args.vm_id, api_version=args.api_version,
                            ready=ready, ready_timeout=args.ready_timeout)
    except ValueError as exc:
        print(f"vtaplab fastpath: {exc}", file=sys.stderr)
        return 2
    except (ArmError, FastpathError) as exc:
        print(f"vtaplab fastpath: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_json()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
