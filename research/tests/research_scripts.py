"""Loads a ``research/`` script as a module for its tests (tests/benchmark_scripts.py's loader)."""

import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from benchmark_scripts import load_script as _load_script  # noqa: E402


def load_script(name: str) -> ModuleType:
    """``research/<name>.py`` executed as module ``name``."""
    return _load_script(name, REPO / "research")
