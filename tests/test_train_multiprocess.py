"""training/train.py on two processes (jax.distributed over Gloo, 4 CPU devices
each) equals the same run in one process on 8 devices: the multi-host path
(replicated state built per process, batches assembled from each process's
rows, Orbax checkpoints written together, files written once)."""

import json
import os
import signal
import socket
import subprocess
import time

import jax
import numpy as np
from train_cli import REPO, SMOKE, assert_same_latest_params, train_command

from training.config import load_config_file
from training.preemption import EXIT_CODE
from training.train import train

OVERRIDES = [
    "data.synthetic.num_users=100", "data.synthetic.num_items=120", "data.synthetic.codebook_size=8",
    "model.num_encoder_layers=1", "model.num_decoder_layers=1", "model.dropout_rate=0.1",
    "loss.kind=apao_pairwise", "loss.neg_k=4", "loss.beta=0.3",
    "batch_size=32", "num_steps=8", "eval_every=4", "eval.max_examples=32", "eval.batch_size=16",
    "log_every=2", "checkpoint.async_save=false",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _two_process_command(workdir, overrides):
    """``(command without --process-id, env)`` of a 2-process CLI run, 4 CPU devices each."""
    # conftest.py's compile settings, with 4 devices a process instead of 8.
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
             if not flag.startswith("--xla_force_host_platform_device_count")]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
           "XLA_FLAGS": " ".join(flags + ["--xla_force_host_platform_device_count=4"])}
    command = train_command(workdir, overrides, "--no-resume", "--distributed",
                            "--coordinator", f"localhost:{_free_port()}", "--num-processes", "2")
    return command, env


def test_two_processes_equal_one_process(tmp_path):
    assert jax.device_count() == 8
    config = load_config_file(REPO / SMOKE, OVERRIDES)
    reference = train(config, tmp_path / "one", resume=False)

    workdir = tmp_path / "two"
    command, env = _two_process_command(workdir, OVERRIDES)
    processes = [subprocess.Popen(command + ["--process-id", str(i)], cwd=REPO, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-4000:]
    assert "process 1 of 2, 4 local / 8 global devices" in outputs[1]

    results = json.loads((workdir / "results.json").read_text())
    assert results["best_step"] == reference.best_step and results["final_step"] == 8
    for key, value in reference.test_metrics.items():
        np.testing.assert_allclose(results["test_metrics"][key], value, rtol=1e-5, atol=1e-6)
    assert_same_latest_params(workdir, tmp_path / "one", rtol=1e-5, atol=5e-5)
    # Every record once (only process 0 writes the metrics log).
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "valid"]
    assert steps == [4, 8]


def test_sigterm_to_one_process_stops_both_at_one_checkpointed_step(tmp_path):
    """A preemption notice reaches one process (SIGTERM to process 1 only): JAX's
    preemption sync service picks one step, both processes save it together and
    exit 143, so the run can resume from a consistent checkpoint."""
    workdir = tmp_path / "run"
    overrides = OVERRIDES + ["num_steps=300", "eval_every=150", "log_every=1", "checkpoint.every_steps=1000"]
    command, env = _two_process_command(workdir, overrides)
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    processes = []
    for i in range(2):
        with open(logs[i], "w") as log:
            processes.append(subprocess.Popen(command + ["--process-id", str(i)], cwd=REPO, env=env,
                                              stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 300
    while "step 5/300" not in logs[0].read_text():
        assert time.monotonic() < deadline and processes[0].poll() is None, logs[0].read_text()[-4000:]
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGTERM)
    for process, log in zip(processes, logs):
        assert process.wait(timeout=300) == EXIT_CODE, log.read_text()[-4000:]
    stopped = {json.loads(log.read_text().splitlines()[-1])["interrupted_at_step"] for log in logs}
    assert len(stopped) == 1
    (step,) = stopped
    assert 5 <= step < 150
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [step]
