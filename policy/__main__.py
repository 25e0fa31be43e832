"""The policy pack's entry point: the ONLY place the ``PolicyPack`` is constructed.

Constructing a ``PolicyPack`` starts the analyzer's gRPC server and never returns, so the
policies themselves live in ``vtaplab_policies`` (importable, tested directly) and this file
does nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The pack runs from policy/; its policies import vtaplab from the project root.
HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402
from vtaplab_policies import PACK_NAME, policies  # noqa: E402

PolicyPack(
    name=PACK_NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=policies(),
)
