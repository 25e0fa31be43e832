"""Benchmarks that print figures measured side by side (``python -m vtaplab bench WHAT``).

- ``cli``: the ``bench`` dispatcher.
- ``decode``: our decoder against tshark on the same synthetic capture.
- ``proxy``: the proxy's forwarding rate in every mode, against plain routing.
- ``pcapgen``: synthetic VXLAN captures (also the decoder tests' input).
"""
