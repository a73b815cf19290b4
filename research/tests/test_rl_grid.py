"""research/rl_comparison/rl_grid_gpu.py, the driver of the RL grids' device calls, with fake runs in place of
genrec (a device call lost to a driver bug costs minutes of a session's 30): a fresh machine needs no runs/
folder, finished runs are packed (a supervised run's checkpoint too), runs past the deadline are stopped
together and logged as resumable, a crash is logged as FAILED, on a host of several GPUs every run sees one
GPU of its own, and a ``--model hf`` grid's commands keep the start's model config."""

import importlib
import subprocess
import sys
import tarfile

import pytest
from research_scripts import REPO

sys.path.insert(0, str(REPO / "tests"))
from benchmark_scripts import load_script  # noqa: E402

FINISH = "import os, sys; w = sys.argv[1]; os.makedirs(w); [open(os.path.join(w, f), 'w').write('{}') for f in " \
         "('test_ranks.npy', 'metrics.jsonl')]; " \
         "open(os.path.join(w, 'results.json'), 'w').write('{\"best_valid_metrics\": {\"ndcg@10\": 0.04}}')"
FINISH_BETTER = FINISH.replace("0.04", "0.05")
CHECKPOINT_ON_SIGTERM = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(143)); "
                         "time.sleep(60)")
CRASH = "import sys; sys.exit(3)"
PRINT_GPU = "import os, sys; print('GPU', os.environ.get('CUDA_VISIBLE_DEVICES')); " + FINISH.split("; ", 1)[1]


@pytest.fixture
def grid(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the driver works in the repo root: runs/, tpu_configs/<dataset>_<backbone>.py
    (tmp_path / "tpu_configs").mkdir()
    (tmp_path / "tpu_configs" / "beauty_t5.py").touch()
    return load_script("rl_grid_gpu", REPO / "research" / "rl_comparison")


def _run(grid, monkeypatch, programs, *flags):
    """main() with seed s's run executing ``programs[s]`` (Python code; argv[1] = its workdir)."""
    def command(dataset, backbone, arm, lr, seed, workdir, model="default"):
        return [sys.executable, "-c", programs[seed], str(workdir)]

    monkeypatch.setattr(grid, "rl_command", command)
    monkeypatch.setattr(sys, "argv", ["rl_grid_gpu.py", "--out", "out", "--tag", "t", "--dataset", "Beauty",
                                      "--no-start", "--arms", "sup-hf", "--learning-rates", "config", *flags])
    assert grid.main() == 0
    return (grid.Path("out") / "driver.log").read_text()


def test_finished_stopped_and_failed_runs_are_told_apart(grid, monkeypatch):
    log = _run(grid, monkeypatch, {1: FINISH, 2: CHECKPOINT_ON_SIGTERM, 3: CRASH},
               "--seeds", "1,2,3", "--kill-at", "4", "--launch-until", "1")
    assert "sup-hf_lrconfig_s1: done" in log
    assert "sup-hf_lrconfig_s2: stopped at the deadline (the same command resumes it)" in log
    assert "sup-hf_lrconfig_s3: FAILED rc=3" in log
    assert "finished this call: 1; stopped at the deadline: 1; not started: 0" in log
    with tarfile.open("out/rl_t.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["rl_t", "rl_t/sup-hf_lrconfig_s1", "rl_t/sup-hf_lrconfig_s1/log.txt",
                                          "rl_t/sup-hf_lrconfig_s1/metrics.jsonl",
                                          "rl_t/sup-hf_lrconfig_s1/results.json",
                                          "rl_t/sup-hf_lrconfig_s1/test_ranks.npy"]
    with tarfile.open("out/sup-hf_lrconfig_s1.tar.part-aa") as tar:  # one part: the fake run is small
        assert "sup-hf_lrconfig_s1/results.json" in tar.getnames()
    assert not grid.Path("out/sup-hf_lrconfig_s2.tar.part-aa").exists()


def test_only_the_best_finished_supervised_run_is_packed(grid, monkeypatch):
    # A call returns at most 8 files: of its finished supervised runs only the one an A/B would start RL
    # from (best validation NDCG@10) comes back as parts.
    log = _run(grid, monkeypatch, {1: FINISH, 2: FINISH_BETTER, 3: FINISH}, "--seeds", "1,2,3", "--parallel", "3")
    packed = sorted(path.name for path in grid.Path("out").glob("*.tar.part-*"))
    assert packed == ["sup-hf_lrconfig_s2.tar.part-aa"]
    assert "packed sup-hf_lrconfig_s2 (validation NDCG@10 0.05, the best of 3 finished sup-hf run(s))" in log


def test_each_run_gets_a_gpu_of_its_own_on_a_host_of_several(grid, monkeypatch):
    real_run = subprocess.run

    def fake_nvidia_smi(command, *args, **kwargs):
        if command[0] == "nvidia-smi":
            return subprocess.CompletedProcess(command, 0, stdout="H100\nH100\nH100\n", stderr="")
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(grid.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(grid.subprocess, "run", fake_nvidia_smi)
    _run(grid, monkeypatch, {1: PRINT_GPU, 2: PRINT_GPU, 3: PRINT_GPU}, "--seeds", "1,2,3", "--parallel", "3")
    gpus = [(grid.Path("runs") / f"sup-hf_lrconfig_s{seed}.log").read_text().split()[1] for seed in (1, 2, 3)]
    assert sorted(gpus) == ["0", "1", "2"]


def test_hf_grid_starts_from_the_ab_run_and_keeps_its_numerics(grid):
    # ``--model hf``: the RL runs' configs must equal the start's model config (genrec rl refuses otherwise).
    sys.path.insert(0, str(REPO))
    from tpu_configs.beauty_t5 import get_config

    command = grid.rl_command("Beauty", "t5", "vstar", "3e-6", 1, grid.Path("runs/x"), "hf")
    config_arg = command[command.index("--config") + 1]
    assert config_arg == "tpu_configs/beauty_t5.py:rl=vstar,model=hf"
    assert command[command.index("--init-from") + 1] == "runs/sup_Beauty_hf"
    start_model = get_config("loss=ce,model=hf").model
    assert get_config(config_arg.split(":", 1)[1]).model == start_model
    assert start_model.attention_dropout == 0.1
    control = grid.rl_command("Beauty", "t5", "ce_control", "3e-6", 1, grid.Path("runs/x"), "hf")
    assert control[control.index("--config") + 1] == "tpu_configs/beauty_t5.py:loss=ce,model=hf"
    ours = grid.rl_command("Beauty", "t5", "vstar", "3e-6", 1, grid.Path("runs/x"))
    assert ours[ours.index("--config") + 1] == "tpu_configs/beauty_t5.py:rl=vstar,model=default"


@pytest.mark.parametrize("dataset", ["Office", "Beauty"])
def test_default_grid_names_our_t5_where_the_config_defaults_to_hf(grid, dataset):
    # office_t5.py's and beauty_t5.py's defaults became model=hf (2026-12-06 / 2026-12-07); the default
    # grids reproduce their runs of our first T5 (RL arms and CE control alike, from sup_<Dataset>).
    sys.path.insert(0, str(REPO))
    get_config = importlib.import_module(f"tpu_configs.{dataset.lower()}_t5").get_config

    ours = get_config("loss=ce,model=default").model
    assert get_config("").model != ours
    for arm, arg in (("vstar", "rl=vstar"), ("ce_control", "loss=ce")):
        command = grid.rl_command(dataset, "t5", arm, "3e-6", 1, grid.Path("runs/x"))
        config_arg = command[command.index("--config") + 1]
        assert config_arg == f"tpu_configs/{dataset.lower()}_t5.py:{arg},model=default"
        assert get_config(config_arg.split(":", 1)[1]).model == ours
        assert command[command.index("--init-from") + 1] == f"runs/sup_{dataset}"


@pytest.mark.parametrize("start", [None, "empty"])
def test_hf_grid_never_trains_a_start_of_its_own(grid, monkeypatch, start):
    # Without the chosen run's parts (no --start, or a folder without them) the call stops before any run.
    flags = ["--start", "empty"] if start else []
    grid.Path("empty").mkdir()
    monkeypatch.setattr(sys, "argv", ["rl_grid_gpu.py", "--out", "out", "--tag", "t", "--dataset", "Beauty",
                                      "--model", "hf", "--arms", "vstar", *flags])
    with pytest.raises(SystemExit, match="no runs/sup_Beauty_hf and no sup_Beauty_hf.tar.part-"):
        grid.main()
    assert not grid.Path("out/sup_Beauty_hf.log").exists()


def test_a_packed_run_renamed_is_unpacked_as_the_start(grid):
    run = grid.Path("runs/sup-hf_lrconfig_s3")
    (run / "best").mkdir(parents=True)
    (run / "best" / "params").write_bytes(b"weights")
    (run / "results.json").write_text("{}")
    grid.Path("packed").mkdir()
    grid.pack_start(grid.Path("packed"), run)
    grid.Path("rl_start_hf").mkdir()
    for part in grid.Path("packed").iterdir():  # the documented rename: <run>.tar.part-* -> <start>.tar.part-*
        part.rename(grid.Path("rl_start_hf") / part.name.replace(run.name, "sup_Beauty_hf"))
    grid.Path("out").mkdir()
    assert grid.start_workdir(grid.Path("out"), "Beauty", "t5", grid.Path("rl_start_hf"), 60.0, "hf")
    assert (grid.Path("runs/sup_Beauty_hf/best/params")).read_bytes() == b"weights"
    assert (grid.Path("runs/sup_Beauty_hf/results.json")).read_text() == "{}"


def test_hf_grid_retrains_the_chosen_run_as_its_start_with_start_seed(grid, monkeypatch):
    # A checkpoint does not outlive its session: --start-seed S trains the A/B's chosen run (loss=ce,model=hf,
    # seed S) as runs/sup_Beauty_hf in the call, then packs it like any start.
    launched = []
    real_popen = subprocess.Popen

    class FinishedTraining:
        returncode = 0

        def poll(self):
            return 0

    def popen(command, *args, **kwargs):  # the training finishes at once; anything else (split) runs
        if "training.train" not in command:
            return real_popen(command, *args, **kwargs)
        launched.append(command)
        workdir = grid.Path(command[command.index("--workdir") + 1])
        workdir.mkdir(parents=True)
        (workdir / "results.json").write_text('{"best_valid_metrics": {"ndcg@10": 0.05}}')
        return FinishedTraining()

    monkeypatch.setattr(grid.subprocess, "Popen", popen)
    grid.Path("out").mkdir()
    assert grid.start_workdir(grid.Path("out"), "Beauty", "t5", None, 60.0, "hf", seed=2)
    (command,) = launched
    assert command[command.index("--config") + 1] == "tpu_configs/beauty_t5.py:loss=ce,model=hf"
    assert command[-2:] == ["--set", "seed=2"] and command[command.index("--workdir") + 1] == "runs/sup_Beauty_hf"
    assert sorted(path.name for path in grid.Path("out").glob("*.tar.part-*")) == ["sup_Beauty_hf.tar.part-aa"]


def test_start_seed_refuses_a_start_of_another_seed(grid):
    start = grid.Path("runs/sup_Beauty_hf")
    start.mkdir(parents=True)
    (start / "config.json").write_text('{"train_config": {"seed": 3}}')
    (start / "results.json").write_text("{}")
    with pytest.raises(SystemExit, match="--start-seed 2: runs/sup_Beauty_hf was trained with seed 3"):
        grid.start_workdir(grid.Path("out"), "Beauty", "t5", None, 60.0, "hf", seed=2)


def test_start_seed_needs_the_hf_grid(grid, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["rl_grid_gpu.py", "--out", "out", "--tag", "t", "--dataset", "Beauty",
                                      "--arms", "vstar", "--start-seed", "2"])
    with pytest.raises(SystemExit):
        grid.main()
    assert "--start-seed: only with --model hf" in capsys.readouterr().err


def test_a_retrained_start_is_the_ab_run_of_its_seed(grid):
    # --start-seed S must reproduce the A/B's run of seed S: one command builder serves both, only the workdir differs.
    ab_run = grid.rl_command("Beauty", "t5", "sup-hf", "config", 1, grid.Path("runs/sup-hf_lrconfig_s1"))
    start = grid.supervised_command("Beauty", "t5", "hf", grid.Path("runs/sup_Beauty_hf"), 1)
    workdir = ab_run.index("--workdir") + 1
    assert ab_run[:workdir] + ab_run[workdir + 1:] == start[:workdir] + start[workdir + 1:]
    assert start[workdir] == "runs/sup_Beauty_hf"
    assert "seed=" not in " ".join(grid.supervised_command("Office", "t5", "default", grid.Path("runs/x"), None))


def test_arm_order_launches_every_seed_of_the_first_arm_first(grid, monkeypatch):
    # A call cut short must still finish the primary arm's seeds (docs/results.md, the Beauty RL rerun's amendment).
    assert grid.run_order(["vstar", "sibling"], ["3e-6"], [1, 2], "arm") == [
        ("vstar", "3e-6", 1), ("vstar", "3e-6", 2), ("sibling", "3e-6", 1), ("sibling", "3e-6", 2)]
    assert grid.run_order(["vstar", "sibling"], ["3e-6"], [1, 2], "seed") == [
        ("vstar", "3e-6", 1), ("sibling", "3e-6", 1), ("vstar", "3e-6", 2), ("sibling", "3e-6", 2)]
    launched = []

    def command(dataset, backbone, arm, lr, seed, workdir, model="default"):
        launched.append((arm, seed))
        return [sys.executable, "-c", FINISH, str(workdir)]

    monkeypatch.setattr(grid, "rl_command", command)
    monkeypatch.setattr(sys, "argv", ["rl_grid_gpu.py", "--out", "out", "--tag", "t", "--dataset", "Beauty",
                                      "--no-start", "--arms", "sup-hf,sup-default", "--learning-rates", "config",
                                      "--seeds", "1,2", "--parallel", "1", "--order", "arm"])
    assert grid.main() == 0
    assert launched == [("sup-hf", 1), ("sup-hf", 2), ("sup-default", 1), ("sup-default", 2)]
