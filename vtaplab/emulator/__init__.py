"""The local emulator: the stack's twin, built from its resource graph, in network namespaces.

- ``topology``: the graph as data (nodes, ports, NSGs, LBs, PE/PLS, taps, scenarios) and the
  naming scheme of namespaces and devices.
- ``nft``: the NIC, NSG and load-balancer behaviours as nftables rulesets.
- ``engine``: builds the namespaces, runs the VMs' scripts and the traffic, faults, verdicts,
  teardown.
- ``netns``: a typed, logged layer over ``ip``, ``tc``, ``nft`` for namespace labs.
- ``httpserver``: the HTTP/1.1 file server standing in for vm-src's nginx (and the probed
  backends' sshd).
"""
