"""The local stack: the whole aggregator on a laptop, with no Docker and no AWS account."""

import sys
from pathlib import Path

# The shared layer is importable here as /opt/python is in Lambda.
LAYER = Path(__file__).resolve().parent.parent / "layers" / "common" / "python"
if str(LAYER) not in sys.path:
    sys.path.insert(0, str(LAYER))
