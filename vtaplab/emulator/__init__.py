"""The local emulator: a scenario's data path in network namespaces on one machine.

- ``engine``: builds the namespaces, runs the traffic and captures, writes the verdict.
- ``netns``: a typed, logged layer over ``ip``, ``tc``, ``nft`` for namespace labs.
- ``httpserver``: the HTTP/1.1 file server standing in for vm-src's nginx.
"""
