"""The ARM REST client and the fastpath restart against a loopback fake ARM server.

The fake (``FakeArm``) is an ``http.server`` on 127.0.0.1 with a per-test port; it answers
each (method, path) with a queue of recorded-shape bodies from ``tests/fixtures/arm/`` (the
last answer repeats) and records every request it got. ``tests/test_attempts.py`` uses it
too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from helpers.fake_arm import RESET, TOKEN, VM, FakeArm, _queue_vm_ops, fixture, running

from vtaplab.azure import fastpath
from vtaplab.azure.arm import ArmClient, ArmError, parse_error, public_headers


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    yield from running()


VTAP = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-vtaplab-r1"
        "/providers/Microsoft.Network/virtualNetworkTaps/vtap-r1")


def test_get_sends_api_version_and_bearer_token(arm):
    arm.add("GET", VTAP, 200, fixture("accepted-vtap-201.json"))
    resp = arm.client().get(VTAP, api_version="2024-05-01")
    assert resp.status == 200 and resp.body["properties"]["destinationPort"] == 4789
    (req,) = arm.requests
    assert req["query"] == "api-version=2024-05-01"
    assert req["auth"] == f"Bearer {TOKEN}"


def test_error_envelope_is_parsed_into_arm_error(arm):
    arm.add("PUT", VTAP, 400, fixture("error-r1-pe-as-vtap-destination.json"))
    with pytest.raises(ArmError) as info:
        arm.client().put(VTAP, {"location": "uksouth"}, api_version="2024-05-01")
    err = info.value
    assert err.status == 400
    assert err.code.startswith("CannotSetPrivateLinkService")
    assert "destination of virtual network tap" in err.message
    assert err.body == fixture("error-r1-pe-as-vtap-destination.json")


def test_parse_error_falls_back_without_envelope():
    assert parse_error(502, "<html>bad gateway</html>") == ("HTTP502", "<html>bad gateway</html>")
    assert parse_error(400, {"code": "Bare", "message": "m"}) == ("Bare", "m")


def test_429_with_retry_after_is_retried_then_succeeds(arm):
    arm.add("GET", VTAP, 429, fixture("error-throttled.json"), {"Retry-After": "0"})
    arm.add("GET", VTAP, 429, fixture("error-throttled.json"), {"Retry-After": "1"})
    arm.add("GET", VTAP, 200, fixture("accepted-vtap-201.json"))
    waits: list[float] = []
    resp = arm.client(sleep=waits.append).get(VTAP, api_version="2024-05-01")
    assert resp.status == 200
    assert waits == [0.0, 1.0]  # the server's Retry-After values, in order
    assert len(arm.requests) == 3


def test_throttling_is_bounded(arm):
    arm.add("GET", VTAP, 503, None, {"Retry-After": "0"})
    with pytest.raises(ArmError) as info:
        arm.client(max_retries=2).get(VTAP, api_version="2024-05-01")
    assert info.value.status == 503
    assert len(arm.requests) == 3  # one try + two retries


def test_retry_after_is_capped(arm):
    arm.add("GET", VTAP, 429, None, {"Retry-After": "3600"})
    arm.add("GET", VTAP, 200, {})
    waits: list[float] = []
    arm.client(sleep=waits.append, max_retry_wait=2.0).get(VTAP, api_version="2024-05-01")
    assert waits == [2.0]


def test_lro_azure_async_operation_polled_to_succeeded(arm):
    arm.add("PUT", VTAP, 201, fixture("accepted-vtap-201.json"),
            {"Azure-AsyncOperation": "{base}/ops/op1?api-version=2024-05-01",
             "Retry-After": "0"})
    arm.add("GET", "/ops/op1", 200, fixture("async-inprogress.json"))
    arm.add("GET", "/ops/op1", 200, fixture("async-inprogress.json"))
    arm.add("GET", "/ops/op1", 200, fixture("async-succeeded.json"))
    done = dict(fixture("accepted-vtap-201.json"))
    done["properties"] = {**done["properties"], "provisioningState": "Succeeded"}
    arm.add("GET", VTAP, 200, done)
    resp = arm.client().put(VTAP, {"location": "uksouth"}, api_version="2024-05-01")
    assert resp.body["properties"]["provisioningState"] == "Succeeded"
    assert arm.calls() == [("PUT", VTAP), ("GET", "/ops/op1"), ("GET", "/ops/op1"),
                           ("GET", "/ops/op1"), ("GET", VTAP)]
    assert [h["status"] for h in resp.history] == [201, 200, 200, 200, 200]
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in arm.requests)


def test_lro_failed_raises_the_operation_error(arm):
    arm.add("PUT", VTAP, 201, fixture("accepted-vtap-201.json"),
            {"Azure-AsyncOperation": "{base}/ops/op2"})
    arm.add("GET", "/ops/op2", 200, fixture("async-inprogress.json"))
    arm.add("GET", "/ops/op2", 200, fixture("async-failed.json"))
    with pytest.raises(ArmError) as info:
        arm.client().put(VTAP, {}, api_version="2024-05-01")
    assert info.value.code == "OperationPreempted"
    assert ("GET", VTAP) not in arm.calls()


def test_lro_location_polling(arm):
    path = VM + "/deallocate"
    arm.add("POST", path, 202, None, {"Location": "{base}/ops/loc1"})
    arm.add("GET", "/ops/loc1", 202, None, {"Retry-After": "0"})
    arm.add("GET", "/ops/loc1", 200, {"ok": True})
    resp = arm.client().post(path, api_version="2024-07-01")
    assert resp.status == 200 and resp.body == {"ok": True}
    assert arm.calls() == [("POST", path), ("GET", "/ops/loc1"), ("GET", "/ops/loc1")]


def test_lro_total_time_is_bounded(arm):
    arm.add("POST", VM + "/start", 202, None, {"Location": "{base}/ops/forever"})
    arm.add("GET", "/ops/forever", 202, None)
    with pytest.raises(ArmError) as info:
        arm.client(lro_timeout=0.3, poll_interval=0.05).post(VM + "/start",
                                                             api_version="2024-07-01")
    assert info.value.code == "OperationTimedOut"
    assert 2 <= len(arm.requests) < 100


def test_poll_url_on_another_origin_gets_no_token(arm):
    arm.add("PUT", VTAP, 201, {}, {"Azure-AsyncOperation": "http://127.0.0.2:9/ops/x"})
    with pytest.raises(ArmError) as info:
        arm.client().put(VTAP, {}, api_version="2024-05-01")
    assert info.value.code == "UntrustedUrl"
    assert len(arm.requests) == 1


def test_network_error_is_an_arm_error_with_status_0():
    client = ArmClient(token_provider=lambda: TOKEN, base_url="http://127.0.0.1:9",
                       max_retries=1, sleep=lambda s: None, timeout=2)
    with pytest.raises(ArmError) as info:
        client.get(VTAP, api_version="2024-05-01")
    assert info.value.code == "NetworkError" and info.value.status == 0


def test_evidence_headers_drop_credentials():
    headers = {"Authorization": "Bearer x", "Set-Cookie": "a=b", "x-ms-request-id": "r"}
    assert public_headers(headers) == {"x-ms-request-id": "r"}


def test_token_never_in_repr():
    client = ArmClient(token_provider=lambda: TOKEN, base_url="http://127.0.0.1:9")
    assert TOKEN not in repr(client)


# --- fastpath restart ---------------------------------------------------------------------



def test_fastpath_deallocates_then_starts_and_waits_for_both(arm):
    _queue_vm_ops(arm)
    seen_at_ready: list[list[tuple[str, str]]] = []

    def ready() -> None:
        seen_at_ready.append(arm.calls())

    result = fastpath.restart_vm(arm.client(), VM, ready=ready, ready_timeout=5,
                                 ready_interval=0)
    calls = arm.calls()
    assert calls == [
        ("POST", VM + "/deallocate"), ("GET", "/ops/dealloc"), ("GET", "/ops/dealloc"),
        ("GET", "/ops/dealloc-l"),
        ("POST", VM + "/start"), ("GET", "/ops/start"), ("GET", "/ops/start"),
        ("GET", "/ops/start-l")]
    assert all(r["query"] == "api-version=2024-07-01" for r in arm.requests
               if r["method"] == "POST")
    # readiness is asked only after both operations finished
    assert seen_at_ready == [calls]
    assert [s.name for s in result.steps] == ["deallocate", "start", "ready"]


def test_fastpath_stops_when_deallocate_fails(arm):
    arm.add("POST", VM + "/deallocate", 202, None, {"Azure-AsyncOperation": "{base}/ops/d"})
    arm.add("GET", "/ops/d", 200, fixture("async-failed.json"))
    with pytest.raises(ArmError):
        fastpath.restart_vm(arm.client(), VM)
    assert ("POST", VM + "/start") not in arm.calls()


def test_fastpath_readiness_is_retried_within_its_bound(arm):
    _queue_vm_ops(arm)
    tries: list[float] = []

    def ready() -> None:
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise ConnectionError("not yet")

    result = fastpath.restart_vm(arm.client(), VM, ready=ready, ready_timeout=10,
                                 ready_interval=0)
    assert len(tries) == 3 and result.steps[-1].tries == 3

    _queue_vm_ops(arm)

    def never() -> None:
        raise ConnectionError("still booting")

    with pytest.raises(fastpath.FastpathError, match="still booting"):
        fastpath.restart_vm(arm.client(), VM, ready=never, ready_timeout=0.2,
                            ready_interval=0.05)


def test_fastpath_rejects_a_non_vm_id(arm):
    with pytest.raises(ValueError, match="virtualMachines"):
        fastpath.restart_vm(arm.client(), VTAP)
    assert arm.requests == []


# --- transient failures: retried only where repeating is safe ----------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_transient_5xx_on_an_idempotent_request_is_retried_with_backoff(arm, method, status):
    arm.add(method, VTAP, status, {"error": {"code": "InternalServerError", "message": "x"}})
    arm.add(method, VTAP, status, None)
    arm.add(method, VTAP, 200, fixture("accepted-vtap-201.json"))
    waits: list[float] = []
    client = arm.client(sleep=waits.append)
    body = {"location": "uksouth"} if method == "PUT" else None
    resp = client.call(method, VTAP, api_version="2024-05-01", body=body)
    assert resp.status == 200
    assert waits == [1.0, 2.0]  # exponential backoff, no Retry-After given
    assert arm.calls() == [(method, VTAP)] * 3


def test_transient_5xx_retries_are_bounded(arm):
    arm.add("GET", VTAP, 502, None)
    waits: list[float] = []
    with pytest.raises(ArmError) as info:
        arm.client(sleep=waits.append, max_retries=3, max_retry_wait=2.0).get(
            VTAP, api_version="2024-05-01")
    assert info.value.status == 502 and info.value.code == "HTTP502"
    assert waits == [1.0, 2.0, 2.0] and len(arm.requests) == 4


def test_a_poll_answering_500_is_retried(arm):
    arm.add("PUT", VTAP, 201, fixture("accepted-vtap-201.json"),
            {"Azure-AsyncOperation": "{base}/ops/p500"})
    arm.add("GET", "/ops/p500", 500, None)
    arm.add("GET", "/ops/p500", 504, None)
    arm.add("GET", "/ops/p500", 200, fixture("async-succeeded.json"))
    arm.add("GET", VTAP, 200, fixture("accepted-vtap-201.json"))
    resp = arm.client(sleep=lambda s: None).put(VTAP, {}, api_version="2024-05-01")
    assert resp.status == 200
    assert arm.calls() == [("PUT", VTAP)] + [("GET", "/ops/p500")] * 3 + [("GET", VTAP)]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_post_is_not_repeated_after_a_5xx(arm, status):
    arm.add("POST", VM + "/deallocate", status, None)
    arm.add("POST", VM + "/deallocate", 202, None)
    with pytest.raises(ArmError) as info:
        arm.client(sleep=lambda s: None).post(VM + "/deallocate", api_version="2024-07-01")
    assert info.value.status == status
    assert arm.calls() == [("POST", VM + "/deallocate")]  # sent once: it may have acted


def test_a_throttled_post_is_retried(arm):
    # 429: ARM refused the request before acting on it, so sending it again is safe.
    arm.add("POST", VM + "/start", 429, fixture("error-throttled.json"), {"Retry-After": "0"})
    arm.add("POST", VM + "/start", 200, None)
    assert arm.client(sleep=lambda s: None).post(VM + "/start",
                                                 api_version="2024-07-01").status == 200
    assert len(arm.requests) == 2


def test_a_connection_reset_is_retried_on_get_not_on_post(arm):
    arm.add("GET", VTAP, RESET)
    arm.add("GET", VTAP, 200, {"id": VTAP})
    assert arm.client(sleep=lambda s: None).get(VTAP, api_version="2024-05-01").body == {
        "id": VTAP}
    assert arm.calls() == [("GET", VTAP)] * 2
    arm.requests.clear()
    arm.add("POST", VM + "/start", RESET)
    arm.add("POST", VM + "/start", 200, None)
    with pytest.raises(ArmError) as info:
        arm.client(sleep=lambda s: None).post(VM + "/start", api_version="2024-07-01")
    assert info.value.code == "NetworkError"
    assert arm.calls() == [("POST", VM + "/start")]


def test_a_post_whose_connection_never_opened_is_retried():
    waits: list[float] = []
    client = ArmClient(token_provider=lambda: TOKEN, base_url="http://127.0.0.1:9",
                       max_retries=2, sleep=waits.append, timeout=2)
    with pytest.raises(ArmError):
        client.post(VM + "/start", api_version="2024-07-01")
    assert waits == [1.0, 2.0]  # refused: nothing reached a server, so it was tried again


def test_azure_core_retry_policy_repeats_a_post_on_500(arm):
    """The measurement behind keeping this client's retry rule instead of azure-core's
    RetryPolicy (what azure-mgmt-core's ARMPipelineClient uses): against the same fake ARM,
    azure-core sends a failed POST (a VM deallocate) again."""
    from azure.core import PipelineClient
    from azure.core.pipeline.policies import RetryPolicy
    from azure.core.pipeline.transport import RequestsTransport
    from azure.core.rest import HttpRequest

    arm.add("POST", VM + "/deallocate", 500, None)
    arm.add("POST", VM + "/deallocate", 202, None)
    client = PipelineClient(arm.base_url, policies=[RetryPolicy(retry_backoff_factor=0)],
                            transport=RequestsTransport())
    resp = client.send_request(HttpRequest("POST", f"{arm.base_url}{VM}/deallocate"))
    assert resp.status_code == 202
    assert arm.calls() == [("POST", VM + "/deallocate")] * 2  # sent twice
