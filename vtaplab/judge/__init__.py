"""Where a verdict comes from: evidence files in, ``verdict.json`` and the results table out.

- ``decode``: one streaming pass over a capture (pcap, pcapng, rings): what it proves.
- ``verdict``: the verdict of a scenario: its evidence files gathered into ``verdict.json``.
- ``outcome``: the one judge: outcome, matches_expected and reason from that evidence.
- ``tenants``: msp: whether the collector can tell the tenants apart.
- ``results``: ``RESULTS.md`` and ``results.json`` from verdict files.
"""
