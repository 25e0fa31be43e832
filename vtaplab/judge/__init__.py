"""Where a verdict comes from: evidence files in, ``verdict.json`` and the results table out.

- ``capture``: capture files in, records out (pcap, pcapng, compressed, rings, pipes).
- ``decode``: one streaming pass over a capture's records: what it proves.
- ``verdict``: the verdict of a scenario, computed from its evidence files.
- ``tenants``: msp: whether the collector can tell the tenants apart.
- ``results``: ``RESULTS.md`` and ``results.json`` from verdict files.
"""
