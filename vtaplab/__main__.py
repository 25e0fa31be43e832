from __future__ import annotations

import sys

from vtaplab.cli import main

sys.exit(main(sys.argv[1:]))
