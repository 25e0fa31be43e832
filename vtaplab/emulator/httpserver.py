"""A tiny HTTP/1.1 file server for the emulator's vm-src (nginx's stand-in).

``python -m vtaplab.emulator.httpserver --dir DIR --bind IP [--port 80]`` serves DIR and prints one
line, ``ready IP:PORT``, once it listens, so the emulator can wait for it without sleeping.
The standard library's handler answers HTTP/1.0 unless told otherwise; the lab's evidence
expects ``HTTP/1.1 200 OK``, as nginx on the VM answers.

It dies with the run that started it: when its parent (the emulator) goes, even by SIGKILL
(the kernel's parent-death signal, and a check of the parent pid on every poll), and in any
case after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import signal
import sys
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

# No emulation runs this long (1000 rounds of requests take minutes): a bound, not a budget.
MAX_LIFETIME_S = 3600.0
PR_SET_PDEATHSIG = 1   # prctl(2)
POLL_S = 0.2


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtaplab.emulator.httpserver")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--max-seconds", type=float, default=MAX_LIFETIME_S,
                        help=f"stop after this long in any case (default {MAX_LIFETIME_S:g})")
    args = parser.parse_args(argv)
    parent = os.getppid()
    _die_with_parent()
    deadline = time.monotonic() + args.max_seconds
    handler = functools.partial(Handler, directory=args.dir)

    class BoundedServer(ThreadingHTTPServer):
        def service_actions(self) -> None:
            # Called on every poll: the parent gone (reparented) or the bound reached ends it.
            if os.getppid() != parent or time.monotonic() > deadline:
                raise KeyboardInterrupt

    try:
        server = BoundedServer((args.bind, args.port), handler)
    except OSError as exc:
        print(f"httpserver: cannot listen on {args.bind}:{args.port}: {exc.strerror}",
              file=sys.stderr)
        return 2

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"ready {args.bind}:{args.port}", flush=True)
    try:
        server.serve_forever(poll_interval=POLL_S)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _die_with_parent() -> None:
    """SIGTERM this process when its parent ends (Linux); the poll check covers the rest."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
