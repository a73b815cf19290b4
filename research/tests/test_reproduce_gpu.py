"""research/reproduce_gpu.sh schedules its runs as promised, checked on the CPU
with a fake ``nvidia-smi`` (two GPUs) and a fake ``python3`` that stands in for
training and evaluation: every run once, in the queue's order, on either GPU,
finished runs skipped on the next call, a run named twice refused."""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "reproduce_gpu.sh"

FAKE_NVIDIA_SMI = """#!/bin/sh
if [ "$1" = "-L" ]; then echo "GPU 0: fake"; echo "GPU 1: fake"; else echo fake; fi
"""

# Stands in for `python3 -m training.train ... --workdir runs/NAME` (writes
# results.json after a pause; runs named *slow* pause longer) and for
# `python3 -m serving.cli eval ... --save-ranks F` / `--save-prefix-ranks F`
# (writes F). Every start is logged with the GPU it was given.
FAKE_PYTHON = """#!/bin/bash
workdir=""; prev=""; outputs=()
for a in "$@"; do
  [ "$prev" = "--workdir" ] && workdir=$a
  case "$prev" in --save-ranks|--save-prefix-ranks) outputs+=("$a") ;; esac
  prev=$a
done
name=$(basename "$workdir")
if [ "$2" = "training.train" ]; then
  echo "train $name $CUDA_VISIBLE_DEVICES" >> "$FAKE_LOG"
  case "$name" in *slow*) sleep 1.5 ;; *) sleep 0.2 ;; esac
  mkdir -p "$workdir"; echo '{}' > "$workdir/results.json"
  for i in $(seq 1 45); do
    echo "{\\"step\\": $i, \\"kind\\": \\"train\\"}"
    if (( i % 20 == 0 )); then echo "{\\"step\\": $i, \\"kind\\": \\"valid\\"}"; fi
  done > "$workdir/metrics.jsonl"
else
  echo "eval $name $CUDA_VISIBLE_DEVICES" >> "$FAKE_LOG"
  for f in "${outputs[@]}"; do echo fake > "$f"; done
  echo '{"fake": 1}'
fi
"""


def make_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_host(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make_executable(bin_dir / "nvidia-smi", FAKE_NVIDIA_SMI)
    make_executable(bin_dir / "python3", FAKE_PYTHON)
    work = tmp_path / "repo"
    work.mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_LOG": str(tmp_path / "calls.log"), "HOME": str(tmp_path)}
    return work, env, tmp_path / "calls.log"


def run_script(work, env, lanes, *args):
    full_env = dict(env, **lanes)
    return subprocess.run(["bash", str(SCRIPT), str(work / "out"), "120", *args], cwd=work, env=full_env,
                          capture_output=True, text=True, timeout=120)


def job(name):
    return f"{name}|cfg|Office|--set seed=1"


LANES = {
    "LANE_GPU0_A": "\n".join([job("office_t5_ce_slow1"), job("office_t5_ce_a2")]),
    "LANE_GPU0_B": job("office_t5_ce_slow2"),
    "LANE_GPU1_A": "\n".join(job(f"office_t5_ce_b{i}") for i in range(1, 6)),
    "LANE_GPU1_B": "",
}


def logged(log: Path, kind: str) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    return [tuple(line.split()[1:]) for line in log.read_text().splitlines() if line.startswith(kind + " ")]


def test_queue_runs_every_job_once_in_round_robin_order(fake_host):
    work, env, log = fake_host
    result = run_script(work, env, LANES)
    assert result.returncode == 0, result.stdout + result.stderr
    queue = [line.split("|")[0] for line in (work / "runs" / "queue.txt").read_text().splitlines()]
    # Line 1 of every lane, then line 2, ...
    assert queue == ["office_t5_ce_slow1", "office_t5_ce_slow2", "office_t5_ce_b1",
                     "office_t5_ce_a2", "office_t5_ce_b2", "office_t5_ce_b3", "office_t5_ce_b4", "office_t5_ce_b5"]
    trained = logged(log, "train")
    assert sorted(name for name, _ in trained) == sorted(queue)
    assert {gpu for _, gpu in trained} <= {"0", "1"}
    # Four workers (two a GPU) start the queue's first four jobs.
    assert {name for name, _ in trained[:4]} == set(queue[:4])
    for name in queue:
        assert (work / "runs" / name / "results.json").is_file()
        assert (work / "out" / f"{name}.results.json").is_file()
        # Every 20th training record and the last; validation records apart.
        train_steps = [json.loads(line)["step"] for line in (work / "out" / f"{name}.train.jsonl").open()]
        assert train_steps == [1, 21, 41, 45]
        valid_steps = [json.loads(line)["step"] for line in (work / "out" / f"{name}.valid.jsonl").open()]
        assert valid_steps == [20, 40]
    assert "train exit 0" in result.stdout


def test_one_long_lane_spreads_over_every_gpu(fake_host):
    """Lanes only order the queue: a lane written for GPU 0 alone is shared by
    all four workers, so both GPUs train (the former per-lane scheduler ran it
    on GPU 0, one job after another)."""
    work, env, log = fake_host
    lanes = {"LANE_GPU0_A": "\n".join(job(f"office_t5_ce_slow{i}") for i in range(1, 5)),
             "LANE_GPU0_B": "", "LANE_GPU1_A": "", "LANE_GPU1_B": ""}  # empty, not the defaults
    result = run_script(work, env, lanes)
    assert result.returncode == 0, result.stdout + result.stderr
    trained = logged(log, "train")
    assert sorted(name for name, _ in trained) == [f"office_t5_ce_slow{i}" for i in range(1, 5)]
    assert {gpu for _, gpu in trained} == {"0", "1"}


def test_second_call_skips_finished_runs_and_diagnoses_each_once(fake_host):
    work, env, log = fake_host
    assert run_script(work, env, LANES).returncode == 0
    first = len(logged(log, "train"))
    result = run_script(work, env, LANES, "--diagnose")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(logged(log, "train")) == first
    evals = [name for name, _ in logged(log, "eval")]
    assert sorted(evals) == sorted(2 * [f"office_t5_ce_{n}" for n in
                                        ("slow1", "slow2", "a2", "b1", "b2", "b3", "b4", "b5")])
    assert (work / "out" / "office_t5_ce_b5.prefix_ranks.npy").is_file()
    # A third call finds every evaluation done.
    assert run_script(work, env, LANES, "--diagnose").returncode == 0
    assert len(logged(log, "eval")) == len(evals)


def test_run_named_twice_is_refused(fake_host):
    work, env, log = fake_host
    lanes = dict(LANES, LANE_GPU1_B=job("office_t5_ce_a2"))
    result = run_script(work, env, lanes)
    assert result.returncode == 2
    assert "office_t5_ce_a2" in result.stdout
    assert logged(log, "train") == []


def test_no_gpu_exits_2(fake_host, tmp_path):
    work, env, log = fake_host
    os.remove(tmp_path / "bin" / "nvidia-smi")
    result = run_script(work, env, LANES)
    assert result.returncode == 2
    assert "no GPU" in result.stdout


def test_bench_runs_first_on_gpu_0_then_its_workers_join(fake_host):
    work, env, log = fake_host
    result = run_script(work, env, LANES, "--bench")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pairwise benchmark exit 0" in result.stdout
    trained = logged(log, "train")
    assert len(trained) == 8 and len({name for name, _ in trained}) == 8


def test_one_worker_per_gpu_gives_each_run_its_own_gpu(fake_host):
    """WORKERS_PER_GPU=1: two slow runs on two GPUs never share one (with two
    workers a GPU, both could start on the same GPU)."""
    work, env, log = fake_host
    lanes = {"LANE_GPU0_A": job("office_t5_ce_slow1"), "LANE_GPU0_B": job("office_t5_ce_slow2"),
             "LANE_GPU1_A": "", "LANE_GPU1_B": ""}
    result = run_script(work, dict(env, WORKERS_PER_GPU="1"), lanes)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 workers on 2 GPU(s)" in result.stdout
    trained = logged(log, "train")
    assert sorted(name for name, _ in trained) == ["office_t5_ce_slow1", "office_t5_ce_slow2"]
    assert sorted(gpu for _, gpu in trained) == ["0", "1"]


def test_bad_workers_per_gpu_is_refused(fake_host):
    work, env, log = fake_host
    result = run_script(work, dict(env, WORKERS_PER_GPU="0"), LANES)
    assert result.returncode == 2
    assert "WORKERS_PER_GPU" in result.stdout
    assert logged(log, "train") == []


def test_before_command_runs_alone_on_its_gpu_then_its_worker_joins(fake_host):
    """BEFORE_GPU1: the command sees only GPU 1, and GPU 1 starts no training
    until it has ended; every run is still trained once."""
    work, env, log = fake_host
    before = 'sleep 1; echo "before $CUDA_VISIBLE_DEVICES" >> "$FAKE_LOG"'
    result = run_script(work, dict(env, WORKERS_PER_GPU="1", BEFORE_GPU1=before), LANES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BEFORE_GPU1 exit 0" in result.stdout
    lines = log.read_text().splitlines()
    assert lines.count("before 1") == 1
    gpu1_trainings = [i for i, line in enumerate(lines) if line.startswith("train ") and line.endswith(" 1")]
    assert gpu1_trainings and min(gpu1_trainings) > lines.index("before 1")
    trained = logged(log, "train")
    assert len(trained) == 8 and len({name for name, _ in trained}) == 8
