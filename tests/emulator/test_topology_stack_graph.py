"""``topology.stack_graph(stack, root=None, overrides=None)``: the graph cache is keyed by the
overrides (``emulate --set``), a variant never evicts the default's graph, a bad override is
one GraphError line before any cache is read; and the twin reads the TCP/22 variant's probe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from components.internal_lb import PROBE_PORT
from vtaplab import facts
from vtaplab.emulator import topology
from vtaplab.emulator.topology import from_graph, stack_graph
from vtaplab.preflight import mocks


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """Every graph build, recorded instead of run, with the cache under ``tmp_path``."""
    calls: list[dict[str, Any]] = []

    def fake_build(stack: str, *, root: Path | None = None, cached: bool = True,
                   overrides: dict[str, str] | None = None) -> list[dict[str, Any]]:
        calls.append({"stack": stack, "overrides": dict(overrides or {})})
        return [{"built": len(calls), "overrides": dict(overrides or {})}]

    monkeypatch.setattr(topology, "CACHE_DIR", tmp_path / "graphs")
    monkeypatch.setattr(mocks, "build_graph", fake_build)
    return calls


def test_the_cache_is_keyed_by_the_overrides(builds, tmp_path):
    tcp, cached = stack_graph("b4", overrides={"proxyProbe": "tcp"})
    assert (tcp, cached) == ([{"built": 1, "overrides": {"proxyProbe": "tcp"}}], False)
    # the same override spelled with the prefix is the same graph, from the cache
    assert stack_graph("b4", overrides={"vtaplab:proxyProbe": "tcp"}) == (tcp, True)
    default, cached = stack_graph("b4")
    assert (default, cached) == ([{"built": 2, "overrides": {}}], False)
    assert stack_graph("b4", overrides={}) == (default, True)
    assert stack_graph("b4", overrides=None) == (default, True)
    # another value is another graph; the variants never evict each other or the default
    http, cached = stack_graph("b4", overrides={"proxyProbe": "http"})
    assert not cached and http[0]["built"] == 3
    assert stack_graph("b4", overrides={"proxyProbe": "tcp"}) == (tcp, True)
    assert stack_graph("b4") == (default, True)
    assert [c["overrides"] for c in builds] == [{"proxyProbe": "tcp"}, {}, {"proxyProbe": "http"}]
    assert len(list((tmp_path / "graphs").glob("b4*.json"))) == 3


def test_the_default_digest_is_the_one_without_overrides(tmp_path):
    from vtaplab import PROJECT_ROOT

    plain = topology._graph_digest("b4", PROJECT_ROOT)
    assert topology._graph_digest("b4", PROJECT_ROOT, {}) == plain
    assert topology._graph_digest("b4", PROJECT_ROOT, {"proxyProbe": "tcp"}) != plain


@pytest.mark.parametrize(("overrides", "text"), [
    ({"proxyProbe": "udp"}, "http or tcp"),
    ({"proxyProb": "tcp"}, "did you mean vtaplab:proxyProbe?"),
    ({"proxyProbe": "tcp", "vtaplab:proxyProbe": "http"}, "set twice"),
    ({"sshPrivateKey": "hunter2"}, "is a secret"),
])
def test_a_bad_override_is_one_graph_error_line_and_builds_nothing(builds, tmp_path,
                                                                   overrides, text):
    with pytest.raises(mocks.GraphError) as err:
        stack_graph("b4", overrides=overrides)
    message = str(err.value)
    assert text in message and "accepted" in message and "\n" not in message
    assert "hunter2" not in message
    assert builds == []
    assert not (tmp_path / "graphs").exists()


def test_the_twin_reads_the_tcp_variants_probe():
    """The real program (cached like any graph): b4 with ``proxyProbe=tcp`` is a twin whose
    consumer LB probes TCP/22 at the HTTP probe's cadence."""
    resources, _cached = stack_graph("b4", overrides={"proxyProbe": "tcp"})
    lbs = {lb.resource: lb for lb in from_graph(resources, "b4").lbs}
    probe = lbs["b4-ilb"].probe
    assert probe is not None
    assert (probe.protocol, probe.port, probe.path) == ("Tcp", PROBE_PORT, "")
    assert (probe.interval_s, probe.threshold) == (facts.PROBE_INTERVAL_S, facts.PROBE_THRESHOLD)
    default = {lb.resource: lb for lb in from_graph(stack_graph("b4")[0], "b4").lbs}
    assert default["b4-ilb"].probe is not None
    assert (default["b4-ilb"].probe.protocol, default["b4-ilb"].probe.port) == (
        "Http", facts.HEALTH_PORT)
