"""One device call of an RL comparison (docs/results.md, "V-STAR RL on Office" / "on Beauty").

Trains (or unpacks, or resumes) the CE start, then runs the RL grid (arm x
learning rate x seed) as parallel processes, 8 at a time on one GPU (the
RL runs' small steps leave it mostly idle; a supervised Beauty run alone keeps
it busy, so 8 of those take 8 times as long) or spread one per GPU where there
are several, under a deadline: the start
gets SIGTERM at ``--kill-at`` (it checkpoints and exits 143; the next call's
same command resumes it exactly, as long as the machine is still warm), no run
starts after ``--launch-until``, and runs still going at ``--kill-at`` get
SIGTERM too and resume in the next call. Programs compile once per arm and
learning rate (a persistent JAX compilation cache shared by the processes).

Writes under ``--out``: ``sup_<Dataset>.tar.part-*`` (the start's workdir, to
carry into a later call as ``rl_start/``; likewise ``sup-<model>_lrconfig_s<S>.tar.part-*``
for each supervised arm's finished run of the call with the best validation NDCG@10: the run an A/B
would start RL from, the best of all being the best of some call's; one run an arm, as a call returns
at most 8 files), ``rl_<tag>.tar.gz`` (per finished run: results.json,
test_ranks.npy, metrics.jsonl, the log), ``driver.log``.

Usage (repo root, data in data_local/<Dataset>):
    python research/rl_comparison/rl_grid_gpu.py --out $OUT --tag a            # the Office grid
    python research/rl_comparison/rl_grid_gpu.py --out $OUT --tag b --start rl_start --done rl_start/done.txt --bench
    python research/rl_comparison/rl_grid_gpu.py --dataset Beauty --learning-rates 3e-6 --out $OUT --tag a
    python research/rl_comparison/rl_grid_gpu.py --backbone llama --arms vstar --out $OUT --tag llama
(This script was ``office_gpu.py`` when the Office grid ran; the Office defaults are unchanged.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ARMS = ("vstar", "grpo_beam", "grpo_sample", "sibling")
# ``--arms`` may also name ``<arm>-<variant>`` (an RL arm with these extra settings), ``ce_control``
# (CE continued from the start with the RL runs' steps, batch and learning rate: docs/results.md) and
# ``sup-<model>`` (a fresh supervised CE run of the config with ``model=<model>``, the learning rate
# ``config``: the Hugging Face T5 A/B; no start needed, ``--no-start``).
VARIANTS = {"ranking": ("--set", "rl.reward=ranking")}
LEARNING_RATES = ("3e-6", "1e-5")
SEEDS = (1, 2, 3, 4)
START_FILES = ("config.json", "vocab.json", "catalogue.npz", "best", "results.json", "test_ranks.npy",
               "metrics.jsonl", "data_fingerprint.json")  # those present
RUN_FILES = ("results.json", "test_ranks.npy", "metrics.jsonl", "rl_init.json", "init_from.json")  # those present
T0 = time.time()


def grid_names(dataset: str, backbone: str, model: str = "default") -> tuple[str, str]:
    """``(config file, start name)`` of a grid: ``tpu_configs/office_t5.py`` and ``sup_Office`` for the T5 (the
    names the comparisons used), ``tpu_configs/office_llama.py`` and ``sup_Office_llama`` for the Llama;
    ``sup_Beauty_hf`` for a start with the Hugging Face T5 numerics (``model=hf``)."""
    start = f"sup_{dataset}" if backbone == "t5" else f"sup_{dataset}_{backbone}"
    return f"tpu_configs/{dataset.lower()}_{backbone}.py", start if model == "default" else f"{start}_{model}"


def model_arg(model: str) -> str:
    """The config argument that picks the model variant (``common.T5_MODEL_VARIANTS``), always named: a
    base's default may change (office_t5.py's and beauty_t5.py's became ``hf``), and the grids reproduce runs
    of ``default``."""
    return f",model={model}"


def log(out: Path, message: str) -> None:
    line = f"[{time.time() - T0:6.0f} s] {message}"
    print(line, flush=True)
    with open(out / "driver.log", "a") as f:
        f.write(line + "\n")


def wait_or_kill(proc: subprocess.Popen, timeout: float) -> None:
    """Waits ``timeout`` seconds for ``proc`` to end, then kills it: the next call's resume then starts from
    the run's last checkpoint."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM (a genrec run checkpoints its step and exits 143), then a kill after ``timeout`` seconds."""
    proc.send_signal(signal.SIGTERM)
    wait_or_kill(proc, timeout)


def start_workdir(out: Path, dataset: str, backbone: str, start_dir: Path | None, kill_at: float,
                  model: str = "default", seed: int | None = None) -> bool:
    """The CE start in runs/<start name> (``grid_names``): unpacked from ``start_dir``'s tar parts, else trained
    (or resumed; with ``seed``: ``--set seed=<seed>``, else the config's) and packed. False when training was
    stopped at ``kill_at`` (rerun the same command to resume it)."""
    config, name = grid_names(dataset, backbone, model)
    start = Path("runs") / name
    if seed is not None and (start / "config.json").exists():  # a start left here must be the seed asked for
        trained = json.loads((start / "config.json").read_text())["train_config"]["seed"]
        if trained != seed:
            raise SystemExit(f"--start-seed {seed}: runs/{name} was trained with seed {trained}; remove it")
    if (start / "results.json").exists():
        return True
    parts = sorted(start_dir.glob(f"{name}.tar.part-*")) if start_dir else []
    if parts:
        start.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:  # of its own, as in pack_start
            with open(f"{tmp}/{name}.tar", "wb") as joined:
                for part in parts:
                    joined.write(part.read_bytes())
            with tarfile.open(f"{tmp}/{name}.tar") as tar:
                tar.extractall(f"{tmp}/x")
            # The tar's one folder becomes runs/<name> whatever it was called: parts of a run packed under
            # its own name (pack_start) serve as a start once renamed <name>.tar.part-*.
            (packed,) = Path(f"{tmp}/x").iterdir()
            if start.exists():  # a start left unfinished here: the carried parts replace it
                shutil.rmtree(start)
            shutil.move(packed, start)
        log(out, f"unpacked the start from {len(parts)} parts")
        return True
    if model != "default" and seed is None:  # the pre-registered start is the A/B's chosen run: never another
        raise SystemExit(f"--model {model}: no runs/{name} and no {name}.tar.part-* in --start "
                         f"({start_dir}); carry the chosen supervised run's parts, or retrain that run with "
                         "--start-seed (docs/results.md)")
    log(out, f"training the CE start{' (resuming)' if start.exists() else ''}")
    with open(out / f"{name}.log", "a") as logfile:
        proc = subprocess.Popen(supervised_command(dataset, backbone, model, start, seed),
                                stdout=logfile, stderr=subprocess.STDOUT)
        while proc.poll() is None and time.time() - T0 < kill_at:
            time.sleep(2)
        if proc.poll() is None:
            stop(proc, timeout=45)
            log(out, f"start stopped (rc {proc.returncode}: 143 after SIGTERM, -9 killed); the same command resumes it")
            return False
    if proc.returncode != 0:
        raise SystemExit(f"training the start failed (rc {proc.returncode}): see {out / f'{name}.log'}")
    log(out, "start trained: " + (start / "results.json").read_text()[:400].replace("\n", " "))
    pack_start(out, start)
    return True


def pack_start(out: Path, workdir: Path) -> None:
    """``out/<workdir name>.tar.part-*``: the files of ``workdir`` an RL run starts from (``START_FILES``, those
    present), in 15 MB parts that a later call carries in as ``--start``'s folder."""
    name = workdir.name
    with tempfile.TemporaryDirectory() as tmp:  # of its own: two drivers may pack runs of one name at once
        with tarfile.open(f"{tmp}/{name}.tar", "w") as tar:
            for file in START_FILES:
                if (workdir / file).exists():
                    tar.add(workdir / file, arcname=f"{name}/{file}")
        subprocess.run(["split", "-b", "15M", f"{tmp}/{name}.tar", str(out / f"{name}.tar.part-")], check=True)


def best_valid_ndcg(workdir: Path) -> float | None:
    """The run's selection metric: validation NDCG@10 of its best checkpoint (results.json); None if absent."""
    try:
        return float(json.loads((workdir / "results.json").read_text())["best_valid_metrics"]["ndcg@10"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def supervised_command(dataset: str, backbone: str, model: str, workdir: Path, seed: int | None) -> list[str]:
    """A supervised CE run of the grid's config with ``model`` numerics: the start, or a ``sup-<model>`` arm's
    run (the A/B's, which an RL start with ``--start-seed`` retrains); ``seed`` None: the config's."""
    config, _ = grid_names(dataset, backbone)
    return [sys.executable, "-m", "training.train", "--config", f"{config}:loss=ce{model_arg(model)}",
            "--workdir", str(workdir), "--set", f"data.data_dir=data_local/{dataset}",
            *(["--set", f"seed={seed}"] if seed is not None else [])]


def rl_command(dataset: str, backbone: str, arm: str, lr: str, seed: int, workdir: Path,
               model: str = "default") -> list[str]:
    config, start = grid_names(dataset, backbone, model)
    if arm.startswith("sup-"):
        return supervised_command(dataset, backbone, arm[4:], workdir, seed)
    common = ["--init-from", f"runs/{start}", "--workdir", str(workdir),
              "--set", f"data.data_dir=data_local/{dataset}", "--set", "log_every=50", "--set", f"seed={seed}"]
    if arm == "ce_control":
        return [sys.executable, "-m", "training.train", "--config", f"{config}:loss=ce{model_arg(model)}",
                *common, "--set", "batch_size=64", "--set", "num_steps=300", "--set", "eval_every=50",
                "--set", f"optimizer.learning_rate={lr}", "--set", "optimizer.schedule=constant",
                "--set", "optimizer.warmup_fraction=0", "--set", "optimizer.weight_decay=0"]
    base, _, variant = arm.partition("-")
    return [sys.executable, "-m", "training.rl", "--config", f"{config}:rl={base}{model_arg(model)}",
            *common, "--set", f"rl.optimizer.learning_rate={lr}", "--set", "rl.num_steps=300",
            "--set", "rl.eval_every=50", "--set", "rl.kl_estimator=exact", *(VARIANTS[variant] if variant else ())]


def run_order(arms: list[str], learning_rates: list[str], seeds: list[int], order: str) -> list[tuple[str, str, int]]:
    """``(arm, lr, seed)`` in launch order. ``seed``: seed-major, so the first wave compiles each (arm, lr) once
    and later seeds hit the cache; ``arm``: arm by arm in the order of ``--arms``, so a call cut short still
    finishes every seed of the first arm (the primary test's) before the others start."""
    if order == "arm":
        return list(itertools.product(arms, learning_rates, seeds))
    return [(arm, lr, seed) for seed, lr, arm in itertools.product(seeds, learning_rates, arms)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--tag", required=True, help="names this call's results tar")
    parser.add_argument("--dataset", default="Office", choices=["Office", "Beauty"])
    parser.add_argument("--backbone", default="t5", choices=["t5", "llama"],
                        help="the config tpu_configs/<dataset>_<backbone>.py (llama: Office only); run a llama grid in "
                             "a call of its own (the RL runs' workdirs do not name the backbone)")
    parser.add_argument("--learning-rates", default=",".join(LEARNING_RATES), help="comma-separated")
    parser.add_argument("--start", type=Path, default=None, help="folder with sup_<Dataset>.tar.part-* (carried)")
    parser.add_argument("--done", type=Path, default=None, help="names of runs already finished, one a line")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help="comma-separated: RL arms, <arm>-<variant> (" + ", ".join(VARIANTS) + "), ce_control")
    parser.add_argument("--no-start", action="store_true", help="skip the CE start (sup-<model> arms only)")
    parser.add_argument("--model", default="default", choices=["default", "hf"],
                        help="the start's and every RL run's T5 numerics; hf: the start is the Hugging Face T5 "
                             "A/B's chosen run, carried in --start as sup_<Dataset>_hf.tar.part-* (docs/results.md)")
    parser.add_argument("--start-seed", type=int, default=None,
                        help="with --model hf and no carried parts: train the start as the A/B's chosen run, "
                             "loss=ce,model=hf --set seed=S (a checkpoint does not outlive its session's "
                             "machine and checkout; docs/results.md)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated (default 1,2,3,4)")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--order", default="seed", choices=["seed", "arm"],
                        help="launch order: seed-major (default; compiles each arm once) or arm by arm in the "
                             "order of --arms (the first arm's seeds first)")
    parser.add_argument("--launch-until", type=float, default=470.0)
    parser.add_argument("--kill-at", type=float, default=545.0)
    parser.add_argument("--bench", action="store_true",
                        help="after the grid: benchmarks/rl_step.py at batch 512 (needs ~90 s alone on the GPU)")
    args = parser.parse_args()
    arms = args.arms.split(",")
    for arm in arms:
        base, _, variant = arm.partition("-")
        if arm.startswith("sup-"):
            if args.learning_rates != "config":
                parser.error("--arms sup-<model> trains with the config's schedule: pass --learning-rates config")
        elif arm != "ce_control" and (base not in ARMS or (variant and variant not in VARIANTS)):
            parser.error(f"--arms: unknown arm {arm!r}")
        if args.no_start and not arm.startswith("sup-"):
            parser.error(f"--no-start: arm {arm!r} starts from the CE start")
        if args.model != "default" and arm.startswith("sup-"):
            parser.error(f"--model {args.model}: arm {arm!r} names its own model")
    if args.start_seed is not None and args.model == "default":
        parser.error("--start-seed: only with --model hf (the default grid's start is the config's seed)")
    config, start = grid_names(args.dataset, args.backbone, args.model)
    if not Path(config).exists():
        parser.error(f"--backbone {args.backbone}: no {config}")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update(PYTHONPATH=".", PYTHONUNBUFFERED="1", JAX_COMPILATION_CACHE_DIR="/tmp/jax_cache",
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip().splitlines()
        log(out, ", ".join(gpus))
    Path("runs").mkdir(exist_ok=True)
    if not args.no_start and not start_workdir(out, args.dataset, args.backbone, args.start, args.kill_at,
                                               args.model, args.start_seed):
        return 0

    done = set(args.done.read_text().split()) if args.done and args.done.exists() else set()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    queue = [(arm, lr, seed) for arm, lr, seed in run_order(arms, args.learning_rates.split(","), seeds, args.order)
             if f"{arm}_lr{lr}_s{seed}" not in done
             and not (Path("runs") / f"{arm}_lr{lr}_s{seed}" / "results.json").exists()]  # finished in an earlier call
    log(out, f"{len(queue)} runs to go ({len(done)} done before)")
    # Several GPUs: each run gets one of its own (the least loaded), as a run would otherwise train
    # data-parallel over all of them; the memory fraction is per GPU.
    per_gpu = -(-args.parallel // max(len(gpus), 1))
    env = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION=str(round(0.9 / per_gpu, 3)))
    gpu_of: dict[str, int] = {}
    results = out / f"rl_{args.tag}"
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    finished: list[str] = []
    stopped_runs: list[str] = []
    while queue or running:
        now = time.time() - T0
        while queue and len(running) < args.parallel and now < args.launch_until:
            arm, lr, seed = queue.pop(0)
            name = f"{arm}_lr{lr}_s{seed}"
            # A workdir left by a call that stopped this run resumes (exactly) from its checkpoint.
            logfile = open(Path("runs") / f"{name}.log", "a")
            run_env = env
            if len(gpus) > 1:
                load = [sum(gpu_of[other] == g for other in running) for g in range(len(gpus))]
                gpu_of[name] = load.index(min(load))
                run_env = dict(env, CUDA_VISIBLE_DEVICES=str(gpu_of[name]))
            command = rl_command(args.dataset, args.backbone, arm, lr, seed, Path("runs") / name, args.model)
            running[name] = (subprocess.Popen(command, env=run_env, stdout=logfile, stderr=subprocess.STDOUT),
                             time.time())
        if not running:
            break
        time.sleep(2)
        past_deadline = time.time() - T0 >= args.kill_at
        if past_deadline:  # every run checkpoints and stops at once; the next call resumes them
            for proc, _ in running.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        for name, (proc, began) in list(running.items()):
            if proc.poll() is None and not past_deadline:
                continue
            if proc.poll() is None:  # signalled above; 30 s after the deadline it is killed instead
                wait_or_kill(proc, timeout=max(1.0, args.kill_at + 30 - (time.time() - T0)))
            del running[name]
            ok = proc.returncode == 0 and (Path("runs") / name / "results.json").exists()
            stopped = past_deadline and proc.returncode in (143, -signal.SIGTERM, -signal.SIGKILL)
            status = ("done" if ok else "stopped at the deadline (the same command resumes it)" if stopped
                      else f"FAILED rc={proc.returncode}")
            log(out, f"{name}: {status} in {time.time() - began:.0f} s")
            if stopped and not ok:
                stopped_runs.append(name)
            if ok:
                finished.append(name)
                (results / name).mkdir(parents=True, exist_ok=True)
                for file in RUN_FILES:
                    if (Path("runs") / name / file).exists():
                        shutil.copy(Path("runs") / name / file, results / name / file)
                shutil.copy(Path("runs") / f"{name}.log", results / name / "log.txt")
            else:
                tail = (Path("runs") / f"{name}.log").read_text().splitlines()[-5:]
                log(out, "  " + "\n  ".join(tail))
    log(out, f"finished this call: {len(finished)}; stopped at the deadline: {len(stopped_runs)}; "
             f"not started: {len(queue)}")
    if results.exists():
        with tarfile.open(out / f"rl_{args.tag}.tar.gz", "w:gz") as tar:
            tar.add(results, arcname=f"rl_{args.tag}")
        shutil.rmtree(results)
    # Per supervised arm, the finished run that may become an RL start: keep its checkpoint.
    for arm in sorted({name.split("_lr")[0] for name in finished if name.startswith("sup-")}):
        runs = [name for name in finished if name.split("_lr")[0] == arm]
        scored = {name: best_valid_ndcg(Path("runs") / name) for name in runs}
        best = max(runs, key=lambda name: scored[name] if scored[name] is not None else float("-inf"))
        pack_start(out, Path("runs") / best)
        log(out, f"packed {best} (validation NDCG@10 {scored[best]}, the best of {len(runs)} finished {arm} run(s))")
    if args.bench:
        log(out, "benchmark: rl_step at batch 512")
        bench = subprocess.run([sys.executable, "benchmarks/rl_step.py", "--data", f"data_local/{args.dataset}",
                                "--workdir", f"runs/{start}", "--batch-size", "512",
                                "--out", str(out / "rl_step_512.json")],
                               capture_output=True, text=True,
                               env={k: v for k, v in os.environ.items() if not k.startswith("JAX_")})
        (out / "rl_step_512.log").write_text(bench.stdout[-20000:] + bench.stderr[-20000:])
        log(out, f"benchmark rc={bench.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
