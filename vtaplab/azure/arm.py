"""A small, typed Azure Resource Manager REST client: what the lab needs and nothing more.

Two users: the rejected attempts (r1/b1 make exactly one ARM request each and keep ARM's full
answer as evidence) and the fastpath restart (deallocate + start a tapped VM). Both need the
same three things: ARM's error envelope as data, long-running operations
(``Azure-AsyncOperation`` first, ``Location`` second, bounded in total time, every answer kept
for evidence) and retries, bounded in count and per-wait time: a throttled 429 for any
method (ARM did not process it); a transient 500/502/503/504 or a connection reset only for
what is safe to repeat — GET (so every poll), PUT and DELETE (idempotent in ARM's contract);
a POST (deallocate, start) only when the connection never opened.

Why not the Azure SDK's management core (azure-mgmt-core's ``ARMPipelineClient`` with
azure-core's ``RetryPolicy`` and ``ARMPolling``)? Measured against the fake ARM server
(``tests/azure/test_arm.py::test_azure_core_retry_policy_repeats_a_post_on_500``): its retry
policy repeats a POST on 500/503/504, which would deallocate/start a VM twice, and its poller
keeps no record of the intermediate answers the evidence files need. The token side does use
azure-identity (``vtaplab.azure.credentials``).

The bearer token comes from a token provider (by default the credential chain azure-native
uses, from ``vtaplab.azure.credentials``; tests inject a constant) and is sent only to the
origin of ``base_url`` — a poll URL pointing elsewhere is refused — and never logged or
written into evidence.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

log = logging.getLogger("vtaplab.azure.arm")

ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
# Environment override of the endpoint (sovereign clouds; the tests' fake server).
ENDPOINT_ENV = "VTAPLAB_ARM_ENDPOINT"

NETWORK_API = "2024-05-01"
COMPUTE_API = "2024-07-01"

# Throttled: ARM did not process the request, so any method is retried after Retry-After.
_THROTTLED = 429
# Transient server-side failures: retried only for methods that are safe to repeat.
_TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
# Idempotent in ARM's contract (RPC: PUT creates-or-replaces, DELETE of a gone resource is
# 204/404); a poll is a GET. POST actions (deallocate, start) are not.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# Response headers that may carry credentials or session material: never stored.
_SECRET_HEADERS = frozenset(
    {"authorization", "set-cookie", "cookie", "x-ms-authorization-auxiliary"})
_TERMINAL_OK = "succeeded"
_TERMINAL_FAILED = frozenset({"failed", "canceled", "cancelled"})

TokenProvider = Callable[[], str]


class ArmError(Exception):
    """ARM said no (or could not be reached): the parsed error envelope plus the raw answer.

    ``status`` is 0 when no HTTP answer came back at all (network error, timeout).
    """

    def __init__(self, code: str, message: str, status: int, body: Any = None,
                 headers: Mapping[str, str] | None = None, *, method: str = "",
                 url: str = "") -> None:
        super().__init__(f"{code}: {message} (HTTP {status})" if status else f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.method = method
        self.url = url
        # True when the request was accepted and its long-running operation then failed:
        # ARM validated asynchronously, and a resource may exist in a Failed state.
        self.operation_failed = False
        # The answers that led here when it ended a long-running operation (evidence).
        self.history: list[dict[str, Any]] = []

    def to_evidence(self) -> dict[str, Any]:
        return {"status": self.status, "headers": public_headers(self.headers),
                "body": self.body}


@dataclass
class ArmResponse:
    """One HTTP answer from ARM, body parsed as JSON when it is JSON."""

    method: str
    url: str
    status: int
    headers: dict[str, str]
    body: Any
    # Every answer that led here (first answer, polls, final GET), for evidence.
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_evidence(self) -> dict[str, Any]:
        return {"status": self.status, "headers": public_headers(self.headers),
                "body": self.body}


def public_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers safe to write into evidence: everything but credentials and cookies."""
    return {k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS}


def parse_error(status: int, body: Any,
                headers: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(code, message) from ARM's error envelope; falls back to the HTTP status.

    ARM answers ``{"error": {"code", "message", "details": [...]}}``; a few RPs answer the
    bare ``{"code", "message"}``; a failed async operation answers
    ``{"status": "Failed", "error": {...}}``.
    """
    if isinstance(body, dict):
        err = body.get("error") if isinstance(body.get("error"), dict) else body
        code = err.get("code")
        message = err.get("message")
        if isinstance(code, str) and code:
            return code, str(message or "")
    header_code = (headers or {}).get("x-ms-failure-cause") or ""
    text = body if isinstance(body, str) else ""
    return (f"HTTP{status}" if not header_code else header_code), text[:500]


def default_token_provider() -> TokenProvider:
    """A cached bearer-token provider over the credential azure-native would use."""
    from vtaplab.azure.credentials import token_provider  # only when talking to real Azure

    return token_provider(ARM_SCOPE)


def _retry_after_seconds(headers: Mapping[str, str], default: float) -> float:
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value is None:
        return default
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


class ArmClient:
    """ARM over HTTPS: ``put/get/delete/post`` with api-version, LROs and throttling handled.

    Every loop is bounded: ``max_retries`` throttled answers per request, each wait capped at
    ``max_retry_wait`` seconds, and a long-running operation polled for at most
    ``lro_timeout`` seconds in total.
    """

    def __init__(self, *, token_provider: TokenProvider | None = None,
                 base_url: str | None = None, session: requests.Session | None = None,
                 timeout: float = 60.0, max_retries: int = 6, max_retry_wait: float = 60.0,
                 lro_timeout: float = 1800.0, poll_interval: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_url = (base_url or os.environ.get(ENDPOINT_ENV) or ARM_ENDPOINT).rstrip("/")
        self._origin = _origin(self.base_url)
        self._token_provider = token_provider
        self._session = session or requests.Session()
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.lro_timeout = lro_timeout
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:  # never shows the token provider's state
        return f"ArmClient(base_url={self.base_url!r})"

    # --- the four verbs -------------------------------------------------------------------

    def get(self, path: str, *, api_version: str) -> ArmResponse:
        return self.call("GET", path, api_version=api_version)

    def put(self, path: str, body: Any, *, api_version: str, wait: bool = True) -> ArmResponse:
        return self.call("PUT", path, api_version=api_version, body=body, wait=wait)

    def delete(self, path: str, *, api_version: str, wait: bool = True) -> ArmResponse:
        return self.call("DELETE", path, api_version=api_version, wait=wait)

    def post(self, path: str, body: Any = None, *, api_version: str,
             wait: bool = True) -> ArmResponse:
        return self.call("POST", path, api_version=api_version, body=body, wait=wait)

    def get_next(self, link: str) -> ArmResponse:
        """GET a list's ``nextLink`` as ARM gave it (it carries its own api-version and skip
        token); like every request, only on this client's origin."""
        resp = self._send("GET", link)
        if resp.status >= 400:
            raise self._error(resp)
        return resp

    def call(self, method: str, path: str, *, api_version: str, body: Any = None,
             wait: bool = True) -> ArmResponse:
        """One ARM operation; raises :class:`ArmError` on an error answer or a failed LRO."""
        url = self.url_for(path, api_version)
        first = self._send(method, url, body)
        if first.status >= 400:
            raise self._error(first)
        if wait and method != "GET" and (
                first.status == 202 or _has_async_header(first)
                or _header(first.headers, "Location") is not None):
            return self._wait(method, url, first)
        return first

    def url_for(self, path: str, api_version: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"ARM path must start with '/': {path!r}")
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}api-version={api_version}"

    # --- internals ------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "vtaplab-arm/1"}
        if self._token_provider is None:
            self._token_provider = default_token_provider()
        from vtaplab.azure.credentials import CredentialError

        try:
            headers["Authorization"] = f"Bearer {self._token_provider()}"
        except CredentialError as exc:
            # One line naming the credential tried; status 0: no request was sent.
            raise ArmError("AuthenticationFailed", str(exc), 0) from None
        return headers

    def _send(self, method: str, url: str, body: Any = None) -> ArmResponse:
        """One request, retried (bounded) when that is safe: see the module docstring."""
        if _origin(url) != self._origin:
            # The token goes only where it was meant to go.
            raise ArmError("UntrustedUrl", f"refusing to send credentials to {_origin(url)}",
                           0, method=method, url=url)
        data = None if body is None else json.dumps(body).encode()
        idempotent = method.upper() in _IDEMPOTENT
        for attempt in range(self.max_retries + 1):
            headers = self._headers()
            if data is not None:
                headers["Content-Type"] = "application/json"
            backoff = min(self.max_retry_wait, 2.0 ** attempt)
            try:
                raw = self._session.request(method, url, data=data, headers=headers,
                                            timeout=self.timeout, allow_redirects=False)
            except requests.RequestException as exc:
                if attempt >= self.max_retries or not (idempotent or _never_sent(exc)):
                    raise ArmError("NetworkError", f"{type(exc).__name__}: {exc}", 0,
                                   method=method, url=url) from None
                log.info("ARM %s %s: %s; retrying in %.1fs", method, _path(url),
                         type(exc).__name__, backoff)
                self._sleep(backoff)
                continue
            resp = ArmResponse(method, url, raw.status_code, dict(raw.headers), _json(raw))
            log.debug("ARM %s %s -> %s", method, _path(url), resp.status)
            retry = resp.status == _THROTTLED or (
                idempotent and resp.status in _TRANSIENT_STATUSES)
            if retry and attempt < self.max_retries:
                wait = min(self.max_retry_wait,
                           _retry_after_seconds(resp.headers, min(30.0, backoff)))
                log.info("ARM %s %s: HTTP %s, retrying after %.1fs (%d/%d)", method,
                         _path(url), resp.status, wait, attempt + 1, self.max_retries)
                self._sleep(wait)
                continue
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, resp: ArmResponse) -> ArmError:
        code, message = parse_error(resp.status, resp.body, resp.headers)
        return ArmError(code, message, resp.status, resp.body, resp.headers,
                        method=resp.method, url=resp.url)

    def _wait(self, method: str, url: str, first: ArmResponse) -> ArmResponse:
        """Follow a long-running operation to its end, within ``lro_timeout`` seconds."""
        async_url = _header(first.headers, "Azure-AsyncOperation")
        location = _header(first.headers, "Location")
        history = [_summary(first)]
        if not async_url and not location:
            return first  # a 201 with the final body and nothing to poll
        deadline = self._clock() + self.lro_timeout
        interval = _retry_after_seconds(first.headers, self.poll_interval)
        if async_url:
            while True:
                self._sleep_before_poll(interval, deadline, method, url)
                poll = self._get_recorded(async_url, history)
                status = str((poll.body or {}).get("status", "")).lower() \
                    if isinstance(poll.body, dict) else ""
                if status == _TERMINAL_OK:
                    break
                if status in _TERMINAL_FAILED:
                    err = self._error(poll)
                    if err.code.startswith("HTTP"):
                        err = ArmError("OperationFailed", f"operation ended {status}",
                                       poll.status, poll.body, poll.headers,
                                       method=method, url=url)
                    err.operation_failed = True
                    err.history = history
                    raise err
                interval = _retry_after_seconds(poll.headers, self.poll_interval)
            final_url = location if method == "POST" and location else url
            if method in ("PUT", "PATCH") or (method == "POST" and location):
                final = self._get_recorded(final_url, history)
                final.history = history
                return final
            poll.history = history
            return poll
        # Location polling: 202 while running; 200/201/204 when done; an error when failed.
        while True:
            self._sleep_before_poll(interval, deadline, method, url)
            poll = self._get_recorded(location, history)
            if poll.status != 202:
                poll.history = history
                return poll
            interval = _retry_after_seconds(poll.headers, self.poll_interval)

    def _get_recorded(self, url: str, history: list[dict[str, Any]]) -> ArmResponse:
        """GET one step of a long-running operation into ``history``; an error status ends
        the wait. Every poll and the final read do this alike, so one place does it."""
        response = self._send("GET", url)
        history.append(_summary(response))
        if response.status >= 400:
            raise self._error(response)
        return response

    def _sleep_before_poll(self, interval: float, deadline: float, method: str,
                           url: str) -> None:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise ArmError("OperationTimedOut",
                           f"{method} {_path(url)} did not finish within {self.lro_timeout:g}s",
                           0, method=method, url=url)
        self._sleep(min(max(0.0, interval), self.max_retry_wait, remaining))


def _never_sent(exc: BaseException) -> bool:
    """True when the connection never opened (refused, connect timeout): the server cannot
    have acted on the request, so even a POST may be sent again."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:  # bounded: each exception is visited once
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError) or type(cur).__name__ == \
                "NewConnectionError":
            return True
        todo += [cur.__cause__, cur.__context__,
                 *(a for a in cur.args if isinstance(a, BaseException)),
                 getattr(cur, "reason", None)]
    return False


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _path(url: str) -> str:
    return urlsplit(url).path


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def _has_async_header(resp: ArmResponse) -> bool:
    return _header(resp.headers, "Azure-AsyncOperation") is not None


def _json(raw: requests.Response) -> Any:
    if not raw.content:
        return None
    try:
        return raw.json()
    except ValueError:
        return raw.text[:4000]


def _summary(resp: ArmResponse) -> dict[str, Any]:
    return {"method": resp.method, "url": resp.url, "status": resp.status,
            "headers": public_headers(resp.headers), "body": resp.body}
