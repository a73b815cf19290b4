"""Fault suite: a run whose weights turn non-finite stops at the next log,
evaluation or checkpoint point, naming the step, with nothing of it saved; a
workdir whose checkpoint holds non-finite weights is refused for serving."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from logging_state import kept_logging
from train_cli import RL_TINY, TINY_RUN

import genrec.run_files as run_files
import training.rl as rl_module
import training.train as train_module
from genrec.run_files import load_model_for_inference
from serving.cli import main as genrec_main
from training.config import load_config_file

REPO = Path(__file__).resolve().parents[2]
TINY = ["eval_every=2", "log_every=2", "checkpoint.async_save=false", *TINY_RUN]


def poison_from_step(monkeypatch, first_bad_step: int) -> None:
    """From ``first_bad_step`` on, every float array of the model state comes back NaN (what lr=nan did)."""
    make_step = train_module.make_train_step

    def make_poisoned_step(*args, **kwargs):
        step_fn = make_step(*args, **kwargs)
        calls = []

        def poisoned(graphdef, state, opt_state, batch, key, catalogue):
            state, opt_state, metrics = step_fn(graphdef, state, opt_state, batch, key, catalogue)
            calls.append(None)
            if len(calls) >= first_bad_step:
                state = jax.tree.map(
                    lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
            return state, opt_state, metrics
        return poisoned

    monkeypatch.setattr(train_module, "make_train_step", make_poisoned_step)


def test_diverged_weights_stop_the_run_before_they_are_saved(tmp_path, monkeypatch):
    poison_from_step(monkeypatch, first_bad_step=3)
    config = load_config_file(REPO / "tpu_configs/cpu_smoke.py", TINY + ["num_steps=6"])
    with kept_logging(), pytest.raises(FloatingPointError, match="diverged by step 4: its parameters are not"):
        train_module.train(config, tmp_path)
    # Steps 1-2 were good and saved (best and periodic); nothing of steps 3-4 was.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["2"]
    model, *_ = load_model_for_inference(tmp_path, "best")
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_a_checkpoint_of_non_finite_weights_is_refused_for_serving(tmp_path, monkeypatch):
    config = load_config_file(REPO / "tpu_configs/cpu_smoke.py", TINY + ["num_steps=2", "eval_every=0"])
    with kept_logging():
        train_module.train(config, tmp_path)
    load_model_for_inference(tmp_path, "latest")  # the clean checkpoint loads
    restore = run_files.restore_params

    def restore_damaged(workdir, params, which):  # the same checkpoint with its weights damaged
        params, step = restore(workdir, params, which)
        return jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.inf), params), step

    monkeypatch.setattr(run_files, "restore_params", restore_damaged)
    with pytest.raises(ValueError, match=r"latest checkpoint \(step 2\) holds non-finite weights"):
        load_model_for_inference(tmp_path, "latest")


def test_a_diverged_cli_run_ends_in_one_line_and_exit_1_keeping_its_checkpoints(tmp_path, monkeypatch, capsys):
    """``genrec train`` (and ``genrec rl``, through the same run_command) print a divergence as one line, not a
    traceback; the workdir stays, and its last checkpoint predates the divergence."""
    poison_from_step(monkeypatch, first_bad_step=3)
    workdir = tmp_path / "run"
    arguments = ["--config", str(REPO / "tpu_configs/cpu_smoke.py"), "--workdir", str(workdir)]
    for override in TINY + ["num_steps=6"]:
        arguments += ["--set", override]
    with kept_logging():
        status = train_module.main(arguments)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and err[0].startswith("genrec train: error: training diverged by step 4: its parameters")
    assert "Traceback" not in err[0]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]
    with kept_logging(), pytest.raises(FloatingPointError, match="training diverged by step"):  # --verbose: raised
        train_module.main(arguments + ["--verbose"])


def poison_rl_steps(monkeypatch) -> None:
    """Every RL step returns NaN weights (a divergence of ``genrec rl``, at its first log)."""
    make_step = rl_module.make_rl_step

    def make_poisoned_step(*args, **kwargs):
        step_fn = make_step(*args, **kwargs)

        def poisoned(*step_args):
            trainable, opt_state, metrics = step_fn(*step_args)
            trainable = jax.tree.map(lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x, trainable)
            return trainable, opt_state, metrics
        return poisoned

    monkeypatch.setattr(rl_module, "make_rl_step", make_poisoned_step)


@pytest.mark.parametrize("stage", ["train", "rl"])
def test_a_diverged_demo_names_its_own_flag_fresh(tmp_path, monkeypatch, capsys, stage):
    """``genrec demo`` has no ``--no-resume``: a divergence of its training or of its ``--rl`` stage tells the
    user to rerun with ``--fresh`` (genrec train's and genrec rl's message named ``--no-resume``), still one
    line and exit status 1."""
    if stage == "train":
        poison_from_step(monkeypatch, first_bad_step=3)
        overrides, flags = TINY + ["num_steps=6"], []
    else:
        poison_rl_steps(monkeypatch)
        overrides, flags = TINY + ["num_steps=2"] + RL_TINY, ["--rl"]
    argv = ["demo", "--workdir", str(tmp_path / "demo"), *flags]
    for override in overrides:
        argv += ["--set", override]
    with kept_logging():
        status = genrec_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1, err
    diverged = "training diverged by step 4" if stage == "train" else "RL diverged by step 2"
    assert len(err) == 1 and err[0].startswith(f"genrec demo: error: {diverged}"), err
    assert "--fresh" in err[0] and "--no-resume" not in err[0], err
    if stage == "rl":  # --fresh retrains the supervised stage too: the line says how to redo the RL stage alone
        assert f"to redo only the RL stage, remove {tmp_path / 'demo_rl'}" in err[0], err
