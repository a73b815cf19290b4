"""Loads a ``research/`` script as a module for its tests (``research/`` is not
a package, so the scripts are loaded by path)."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

RESEARCH_DIR = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """``research/<name>.py`` executed as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, RESEARCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
