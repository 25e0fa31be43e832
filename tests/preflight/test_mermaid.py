"""The generated diagrams say what the program builds, and nothing it doesn't."""

from __future__ import annotations

import re


def test_msp_each_proxy_rewrites_to_its_own_tenants_pe(graph_of):
    from vtaplab.preflight.diagrams import to_mermaid

    text = to_mermaid(graph_of("msp"))
    edges = re.findall(r"(vm_\w+) -->\|UDP/4789 rewritten to the PE\| (pe_\w+)", text)
    assert edges, text
    for proxy, pe in edges:
        # vm_msp_t1_proxy -> pe_msp_t1_pe: same tenant, never a neighbour's PE at the same IP.
        assert proxy.split("_")[2] == pe.split("_")[2], (proxy, pe)
    tenants = {proxy.split("_")[2] for proxy, _ in edges}
    assert len(edges) == len(tenants)
