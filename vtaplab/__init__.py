"""vtaplab: can Azure vTAP mirror a VM's traffic to a collector over Private Link? The evidence."""

from __future__ import annotations

from pathlib import Path

# The project's top folder (Pulumi.yaml, stack files, cloudinit/, evidence/).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
