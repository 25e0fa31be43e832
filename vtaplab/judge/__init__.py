"""Where a verdict comes from: evidence files in, ``verdict.json`` and the write-up out.

- ``capture``: capture files in, records out (pcap, pcapng, compressed, rings, pipes).
- ``decode``: one streaming pass over a capture's records: what it proves.
- ``verdict``: the verdict of a scenario: its evidence files gathered into ``verdict.json``.
- ``outcome``: the one judge: outcome, matches_expected and reason from that evidence.
- ``tenants``: msp: the per-tenant table the judge reads.
- ``results``: ``RESULTS.md`` and ``results.json`` from verdict files.
- ``findings``: ``FINDINGS.md``, the write-up with its diagrams, from verdict files.
"""
