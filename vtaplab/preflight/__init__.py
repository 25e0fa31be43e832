"""Before any cloud call: the program under Pulumi's mocks, and what Azure would refuse.

- ``graph``: the stack's resource graph from ``__main__.py`` under mocks (json, mermaid).
- ``rules``: the preflight rules, pure functions over that graph.
- ``check``: ``python -m vtaplab check STACK``: the rules' findings against expectations.
- ``cost``: a stack's hourly cost, counted from its graph.
- ``snapshots``: committed graph snapshots and their Mermaid diagrams.
"""
