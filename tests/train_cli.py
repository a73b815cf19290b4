"""What the end-to-end training tests share: the ``python -m training.train``
command line they run (on the tiny CPU smoke config, from the repository root)
and the comparison of two runs' trained parameters."""

import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from training.checkpoint import load_model_for_inference

REPO = Path(__file__).resolve().parents[1]
SMOKE = "tpu_configs/cpu_smoke.py"


def train_command(workdir: Path, overrides: Sequence[str], *flags: str) -> list[str]:
    """``[python, -m, training.train, --config SMOKE, --workdir W, *flags, --set o ...]``."""
    command = [sys.executable, "-m", "training.train", "--config", SMOKE, "--workdir", str(workdir), *flags]
    for override in overrides:
        command += ["--set", override]
    return command


def latest_params(workdir: Path) -> dict:
    """The parameters of ``workdir``'s latest checkpoint, as a nested dict of NumPy arrays."""
    model = load_model_for_inference(workdir, which="latest")[0]
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def assert_same_latest_params(workdir_a: Path, workdir_b: Path, *, rtol: float = 0.0, atol: float = 1e-6) -> None:
    """The two runs' latest parameters have the same structure and agree within ``rtol`` / ``atol``."""
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol),
                 latest_params(workdir_a), latest_params(workdir_b))
