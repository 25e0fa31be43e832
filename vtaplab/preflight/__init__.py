"""Before any cloud call: the program under Pulumi's mocks, and what Azure would refuse.

- ``mocks``: ``__main__.py`` run under Pulumi's mocks answering like ARM; one graph per stack.
- ``diagrams``: a graph drawn as a Mermaid flowchart.
- ``graph``: ``python -m vtaplab graph STACK``: the graph as JSON or Mermaid.
- ``rules``: the preflight rules, pure functions over that graph.
- ``check``: ``python -m vtaplab check STACK``: the rules' findings against expectations.
- ``cost``: a stack's hourly cost, counted from its graph.
- ``snapshots``: committed graph snapshots and their Mermaid diagrams.
"""
