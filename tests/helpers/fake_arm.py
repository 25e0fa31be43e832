"""A fake ARM endpoint on loopback (HTTP), its recorded answers, and a VM id for the fastpath."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from vtaplab import PROJECT_ROOT
from vtaplab.azure.arm import ArmClient

FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "arm"


# A queued "status" that answers with a connection reset instead of HTTP.
RESET = 0

TOKEN = "test-token-3f9c"  # a recognisable value: tests assert it never reaches evidence


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class FakeArm:
    """A loopback ARM: ``add(method, path, status, body, headers)`` queues an answer
    (``status`` :data:`RESET`: the connection is reset instead)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[tuple[int, Any, dict[str, str]]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                with fake.lock:
                    fake.requests.append({
                        "method": self.command, "path": parts.path, "query": parts.query,
                        "auth": self.headers.get("Authorization"),
                        "body": json.loads(raw) if raw else None})
                    queue = fake.routes.get((self.command, parts.path))
                    if not queue:
                        status, body, headers = 404, {"error": {
                            "code": "ResourceNotFound",
                            "message": f"fake ARM: no route {self.command} {parts.path}"}}, {}
                    else:
                        status, body, headers = queue.pop(0) if len(queue) > 1 else queue[0]
                if status == RESET:
                    # A TCP reset instead of an answer (SO_LINGER 0 makes close() send RST).
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                data = b"" if body is None else json.dumps(body).replace(
                    "{base}", fake.base_url).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v.replace("{base}", fake.base_url))
                if data:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ms-request-id", "fake-request-id")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def add(self, method: str, path: str, status: int, body: Any = None,
            headers: dict[str, str] | None = None) -> None:
        self.routes.setdefault((method, path), []).append((status, body, headers or {}))

    def calls(self, method: str | None = None) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.requests
                if method is None or r["method"] == method]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def client(self, **kwargs: Any) -> ArmClient:
        kwargs.setdefault("poll_interval", 0.0)
        kwargs.setdefault("lro_timeout", 10.0)
        return ArmClient(token_provider=lambda: TOKEN, base_url=self.base_url, **kwargs)


VM = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-vtaplab-b2"
      "/providers/Microsoft.Compute/virtualMachines/vm-src")


def _queue_vm_ops(arm: FakeArm) -> None:
    arm.add("POST", VM + "/deallocate", 202, None,
            {"Azure-AsyncOperation": "{base}/ops/dealloc", "Location": "{base}/ops/dealloc-l"})
    arm.add("GET", "/ops/dealloc", 200, fixture("async-inprogress.json"))
    arm.add("GET", "/ops/dealloc", 200, fixture("async-succeeded.json"))
    arm.add("GET", "/ops/dealloc-l", 200, None)
    arm.add("POST", VM + "/start", 202, None,
            {"Azure-AsyncOperation": "{base}/ops/start", "Location": "{base}/ops/start-l"})
    arm.add("GET", "/ops/start", 200, fixture("async-inprogress.json"))
    arm.add("GET", "/ops/start", 200, fixture("async-succeeded.json"))
    arm.add("GET", "/ops/start-l", 200, None)


def running(*routes: tuple[str, str, int, Any]) -> Iterator[FakeArm]:
    """A fixture body: a FakeArm with ``routes`` queued, closed after the test even when it
    fails (``yield from running(...)``), so every test module starts and stops it one way."""
    fake = FakeArm()
    for method, path, status, body in routes:
        fake.add(method, path, status, body)
    try:
        yield fake
    finally:
        fake.close()


# The private endpoint and its NIC the rejected attempts read first, as recorded fixtures.
PE = fixture("private-endpoint.json")["id"]
NIC_ID = fixture("pe-nic.json")["id"]
PE_ROUTES = (("GET", PE, 200, fixture("private-endpoint.json")),
             ("GET", NIC_ID, 200, fixture("pe-nic.json")))
