"""A tiny HTTP/1.1 file server for the emulator's vm-src (nginx's stand-in).

``python -m vtaplab.emulator.httpserver --dir DIR --bind IP [--port 80]`` serves DIR and prints one
line, ``ready IP:PORT``, once it listens, so the emulator can wait for it without sleeping.
The standard library's handler answers HTTP/1.0 unless told otherwise; the lab's evidence
expects ``HTTP/1.1 200 OK``, as nginx on the VM answers.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtaplab.emulator.httpserver")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args(argv)
    handler = functools.partial(Handler, directory=args.dir)
    try:
        server = ThreadingHTTPServer((args.bind, args.port), handler)
    except OSError as exc:
        print(f"httpserver: cannot listen on {args.bind}:{args.port}: {exc.strerror}",
              file=sys.stderr)
        return 2

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"ready {args.bind}:{args.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
