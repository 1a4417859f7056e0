"""Test helpers shared across folders (`kube_schemas`, `helm_render`) are imported by name."""

from __future__ import annotations

import sys
from pathlib import Path

# pytest runs with --import-mode=importlib: this folder is not on sys.path by itself.
sys.path.append(str(Path(__file__).resolve().parent))
