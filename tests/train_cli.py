"""What the end-to-end training tests share: the ``python -m training.train``
command line they run (on the tiny CPU smoke config, from the repository root),
the same command killed by SIGKILL after a given step, and the comparison of
two runs' trained parameters."""

import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from genrec.run_files import load_model_for_inference

REPO = Path(__file__).resolve().parents[1]
SMOKE = "tpu_configs/cpu_smoke.py"
# The smoke config shrunk to a run of seconds (a 60-item catalogue, one layer each side),
# for tests that need a trained workdir rather than a good model; each adds its steps.
TINY_RUN = ["batch_size=16", "eval.batch_size=64", "data.synthetic.num_users=40", "data.synthetic.num_items=60",
            "data.synthetic.codebook_size=8", "model.num_encoder_layers=1", "model.num_decoder_layers=1"]


def train_command(workdir: Path, overrides: Sequence[str], *flags: str) -> list[str]:
    """``[python, -m, training.train, --config SMOKE, --workdir W, *flags, --set o ...]``."""
    return [sys.executable, "-m", "training.train", *_train_arguments(workdir, overrides, *flags)]


def _train_arguments(workdir: Path, overrides: Sequence[str], *flags: str) -> list[str]:
    arguments = ["--config", SMOKE, "--workdir", str(workdir), *flags]
    for override in overrides:
        arguments += ["--set", override]
    return arguments


# training.train.main with an on_step_end hook that SIGKILLs the process once step
# KILL_AT (and its checkpoint, if one was due) is committed: a crash at a known point.
_KILLED_MAIN = """
import os, signal, sys
from training.train import main

def kill_at(step):
    if step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)

sys.exit(main(sys.argv[1:], on_step_end=kill_at))
"""


def killed_train_command(workdir: Path, overrides: Sequence[str], kill_at: int) -> list[str]:
    """:func:`train_command` through ``training.train.main``, SIGKILLed right after step ``kill_at``."""
    return [sys.executable, "-c", _KILLED_MAIN.format(kill_at=int(kill_at)), *_train_arguments(workdir, overrides)]


def latest_params(workdir: Path) -> dict:
    """The parameters of ``workdir``'s latest checkpoint, as a nested dict of NumPy arrays."""
    model = load_model_for_inference(workdir, which="latest")[0]
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def assert_same_latest_params(workdir_a: Path, workdir_b: Path, *, rtol: float = 0.0, atol: float = 1e-6) -> None:
    """The two runs' latest parameters have the same structure and agree within ``rtol`` / ``atol``."""
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol),
                 latest_params(workdir_a), latest_params(workdir_b))


# The RL stage (training.rl) on a TINY_RUN supervised workdir: 8 requests x 8 rollouts a step,
# 4 steps, validation (and a periodic checkpoint) every 2, a metrics record every 2.
RL_TINY = ["rl.batch_size=8", "rl.num_rollouts=8", "rl.num_steps=4", "rl.eval_every=2", "log_every=2"]


def rl_arguments(init_from: Path, workdir: Path, overrides: Sequence[str], *flags: str) -> list[str]:
    """``[--config REPO/SMOKE, --init-from I, --workdir W, *flags, --set o ...]``: argv of ``training.rl.main``."""
    arguments = _train_arguments(workdir, overrides, *flags)[2:]  # without its --config
    return ["--config", str(REPO / SMOKE), "--init-from", str(init_from), *arguments]


def killed_rl_command(init_from: Path, workdir: Path, overrides: Sequence[str], kill_at: int) -> list[str]:
    """``python -m training.rl`` through ``training.rl.main``, SIGKILLed right after step ``kill_at``."""
    script = _KILLED_MAIN.format(kill_at=int(kill_at)).replace("from training.train import", "from training.rl import")
    return [sys.executable, "-c", script, *rl_arguments(init_from, workdir, overrides)]


def train_tiny_supervised(workdir: Path):
    """A supervised TINY_RUN workdir with a best checkpoint at step 4 (the start of RL and warm-start tests;
    the same programs in every module, so the persistent compile cache serves them): its ``TrainResult``."""
    from training.config import load_config_file
    from training.train import train

    return train(load_config_file(REPO / SMOKE, TINY_RUN + ["num_steps=4", "eval_every=4"]), workdir)
