"""Fixtures of the injector tests (schema validation is in `kube_schemas.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

# The test modules import the helpers by name (pytest runs with --import-mode=importlib).
sys.path.append(str(Path(__file__).resolve().parent))
