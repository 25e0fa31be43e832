#!/usr/bin/env python3
"""vtap-health.py — the proxy's health endpoint for the load balancer's HTTP probe.

Answers ``GET /health`` (any path) with 200 only while this proxy can do its job: its rewrite
of the mirrored VXLAN is installed (``vtap-proxy.sh status`` exits 0) and the kernel has a route
to the Private Endpoint (``ip -4 route get PE_IP`` names a device, not unreachable/prohibit/
blackhole); 503 otherwise, with the failing check in the body. A TCP/22 probe can't see either:
a proxy whose rewrite failed keeps its SSH port open and would keep receiving its share of the
mirror. Installed on every proxy by cloud-init and run unchanged by the local emulator.

    vtap-health.py --target PE_IP [--bind ADDR] [--port 8080] [--proxy-script PATH]
                   [--cache-seconds 1] [--lifetime-seconds 0]

Bounded: one request at a time, 2 s socket timeout, each check a subprocess with a 2 s
timeout, results cached for --cache-seconds (the LB probes every few seconds from each of its
instances); --lifetime-seconds > 0 exits after that long (the emulator's runs are bounded).
Only the load balancer's probe source may reach the port: the NSG rule that opens it names
the service tag AzureLoadBalancer, never a wider source.
"""

from __future__ import annotations

import argparse
import ipaddress
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

CHECK_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 2.0
UNUSABLE_ROUTES = ("unreachable", "prohibit", "blackhole", "throw")


def check_rewrite(script: str) -> str | None:
    """None when the rewrite is installed, else why not."""
    try:
        done = subprocess.run([script, "status"], capture_output=True, text=True,
                              timeout=CHECK_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"rewrite: {script} status failed: {exc}"
    return None if done.returncode == 0 else "rewrite: not installed"


def check_route(target: str) -> str | None:
    """None when the kernel routes to ``target`` through a device, else why not."""
    try:
        done = subprocess.run(["ip", "-4", "route", "get", target], capture_output=True,
                              text=True, timeout=CHECK_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"route: ip route get failed: {exc}"
    first = (done.stdout.splitlines() or [""])[0].split()
    if done.returncode != 0 or not first or first[0] in UNUSABLE_ROUTES or "dev" not in first:
        return f"route: no usable route to {target}: {(done.stderr or done.stdout).strip()}"
    return None


class Health:
    """The checks, cached for ``cache_s`` so a busy prober costs at most one check a period."""

    def __init__(self, target: str, script: str, cache_s: float) -> None:
        self.target, self.script, self.cache_s = target, script, cache_s
        self._at = -1e9
        self._problem: str | None = None

    def problem(self) -> str | None:
        now = time.monotonic()
        if now - self._at >= self.cache_s:
            self._problem = check_rewrite(self.script) or check_route(self.target)
            self._at = now
        return self._problem


def handler_for(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = SOCKET_TIMEOUT_S

        def do_GET(self) -> None:
            problem = health.problem()
            body = (f"unhealthy: {problem}\n" if problem else "ok\n").encode()
            self.send_response(503 if problem else 200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # the LB probes every few seconds: no log line per probe

    return Handler


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vtap-health.py", description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="the Private Endpoint's IPv4 address")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--proxy-script", default="/usr/local/sbin/vtap-proxy.sh")
    parser.add_argument("--cache-seconds", type=float, default=1.0)
    parser.add_argument("--lifetime-seconds", type=float, default=0.0,
                        help="exit after this long (0: run until stopped)")
    args = parser.parse_args(argv)
    try:
        ipaddress.IPv4Address(args.target)
        ipaddress.IPv4Address(args.bind)
    except ValueError as exc:
        print(f"vtap-health: {exc}; accepted: IPv4 addresses for --target and --bind",
              file=sys.stderr)
        return 2
    if not 1 <= args.port <= 65535 or args.cache_seconds < 0 or args.lifetime_seconds < 0:
        print(f"vtap-health: --port {args.port} / --cache-seconds {args.cache_seconds} / "
              f"--lifetime-seconds {args.lifetime_seconds}; accepted: a port 1-65535 and "
              "seconds >= 0", file=sys.stderr)
        return 2
    health = Health(args.target, args.proxy_script, args.cache_seconds)
    server = HTTPServer((args.bind, args.port), handler_for(health))
    server.timeout = 0.5  # handle_request returns at least this often: the lifetime is checked
    deadline = time.monotonic() + args.lifetime_seconds if args.lifetime_seconds else None
    print(f"vtap-health: listening on {args.bind}:{args.port} for {args.target}", flush=True)
    try:
        while deadline is None or time.monotonic() < deadline:
            server.handle_request()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
