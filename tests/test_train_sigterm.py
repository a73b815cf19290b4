"""SIGTERM stops `genrec train` after the current step with a checkpoint of that
step (not the last periodic one), exit status 143; rerunning resumes exactly:
the parameters and results equal an uninterrupted run's, and train() leaves
the process's SIGTERM handler as it found it. In process: SIGTERM and a first
SIGINT set the stop request, a second SIGINT aborts, the handlers are restored."""

import json
import os
import signal
import subprocess

import pytest
from train_cli import REPO, SMOKE, assert_same_latest_params, train_command

from training.config import load_config_file
from training.preemption import EXIT_CODE, StopOnSignal, TrainingInterrupted
from training.train import train

NUM_STEPS = 60
OVERRIDES = [
    "data.synthetic.num_users=120", "data.synthetic.num_items=150", "data.synthetic.codebook_size=8",
    "model.num_encoder_layers=1", "model.num_decoder_layers=1", "model.dropout_rate=0.1",
    "batch_size=16", f"num_steps={NUM_STEPS}", "eval_every=30", "early_stopping_patience=5",
    "eval.max_examples=32", "eval.batch_size=32", "checkpoint.every_steps=1000", "log_every=1",
]


def test_sigterm_checkpoints_the_current_step_and_resumes_exactly(tmp_path):
    workdir = tmp_path / "run"
    command = train_command(workdir, OVERRIDES)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    output = []
    for line in process.stdout:  # wait until training steps run, then ask it to stop
        output.append(line)
        if f"step 5/{NUM_STEPS}" in line:
            process.send_signal(signal.SIGTERM)
            break
    output.extend(process.stdout)
    assert process.wait(timeout=300) == EXIT_CODE, "".join(output)[-3000:]
    stopped_at = json.loads(output[-1])["interrupted_at_step"]
    assert 5 <= stopped_at < 30  # before the first periodic save (eval at 30, checkpoints every 1000)
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [stopped_at]
    assert not (workdir / "results.json").exists()

    config = load_config_file(REPO / SMOKE, OVERRIDES)
    handler_before = signal.getsignal(signal.SIGTERM)
    resumed = train(config, workdir, resume=True)
    assert signal.getsignal(signal.SIGTERM) is handler_before  # train() restores the handler it replaced
    reference = train(config, tmp_path / "reference", resume=False)
    assert resumed.final_step == reference.final_step == NUM_STEPS
    assert resumed.test_metrics == reference.test_metrics
    assert_same_latest_params(workdir, tmp_path / "reference")



@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_handler_flags_then_restores(signum):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with StopOnSignal() as stop:
        assert not stop.requested(1)
        os.kill(os.getpid(), signum)  # delivered to the main thread before kill returns
        assert stop.requested(2) and stop.signum == signum
        if signum == signal.SIGINT:  # a second Ctrl-C aborts at once
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        else:  # a second SIGTERM changes nothing
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested(3)
    assert {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} == before
    assert TrainingInterrupted(7, signum).exit_code == 128 + signum
    assert TrainingInterrupted(7).exit_code == EXIT_CODE == 143
