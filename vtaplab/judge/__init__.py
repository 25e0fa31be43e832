"""Where a verdict comes from: evidence files in, ``verdict.json`` and the results table out.

- ``decode``: one streaming pass over a capture (pcap, pcapng, rings): what it proves.
- ``verdict``: the verdict of a scenario, computed from its evidence files.
- ``tenants``: msp: whether the collector can tell the tenants apart.
- ``results``: ``RESULTS.md`` and ``results.json`` from verdict files.
"""
