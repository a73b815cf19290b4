"""Loads a script of ``benchmarks/`` (or of another folder, e.g. ``research/``) as a
module for its tests: those folders are not packages, so scripts are loaded by path."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str, directory: Path = BENCHMARKS_DIR) -> ModuleType:
    """``<directory>/<name>.py`` executed as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
