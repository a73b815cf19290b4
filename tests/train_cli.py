"""The ``python -m training.train`` command line that the end-to-end tests run
(on the tiny CPU smoke config, from the repository root)."""

import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE = "tpu_configs/cpu_smoke.py"


def train_command(workdir: Path, overrides: Sequence[str], *flags: str) -> list[str]:
    """``[python, -m, training.train, --config SMOKE, --workdir W, *flags, --set o ...]``."""
    command = [sys.executable, "-m", "training.train", "--config", SMOKE, "--workdir", str(workdir), *flags]
    for override in overrides:
        command += ["--set", override]
    return command
