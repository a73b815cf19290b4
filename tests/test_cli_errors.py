"""A user's mistake, on any genrec subcommand, is one line on stderr naming the
file or item (and the fix), exit status 2, no traceback, and nothing left
behind: no directory the failing command created, nothing that existed removed.
Plus: every subcommand's usage line reads ``genrec SUB``, and logs are quiet
unless --verbose."""

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from logging_state import restore_logging  # noqa: F401 (autouse: every test keeps the logging state)
from train_cli import TINY_RUN

from genrec.console import LIBRARY_LOGGERS, OWN_LOGGERS
from genrec.synthetic import make_synthetic_dataset, write_sid_dataset
from serving.cli import main
from training.config import load_config_file
from training.train import train

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "tpu_configs" / "cpu_smoke.py")
SUBCOMMANDS = ["demo", "train", "eval", "recommend", "build-index", "build-sids", "synth"]
# A tiny synthetic run: the model's catalogue is items "0".."59" (codebook 8, 3 levels).
TINY = ["num_steps=2", "eval_every=0", *TINY_RUN]



@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A trained tiny workdir (latest checkpoint only) and its dataset's item ids."""
    workdir = tmp_path_factory.mktemp("run")
    train(load_config_file(SMOKE, TINY), workdir)
    return workdir


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _setup(kind: str, tmp: Path, workdir: Path | None) -> None:
    """Files a case needs before the command runs (all pre-existing: they must survive)."""
    if kind == "dataset":
        write_sid_dataset(make_synthetic_dataset(num_items=60, num_users=10, codebook_size=8), tmp / "data", "toy")
        (tmp / "a_dir").mkdir()
    elif kind == "malformed":
        write_sid_dataset(make_synthetic_dataset(num_items=60, num_users=10, codebook_size=8), tmp / "data", "toy")
        (tmp / "data" / "toy.inter.json").write_text('{"0": ["1", "2"')
    elif kind == "unknown-items":
        data = make_synthetic_dataset(num_items=60, num_users=10, codebook_size=8)
        data = dataclasses.replace(data, item_ids=np.array([f"new-{i}" for i in range(60)]))
        write_sid_dataset(data, tmp / "data", "other")
    elif kind == "other-catalogue":  # the same ids "0".."59" with other SIDs (another dataset)
        write_sid_dataset(make_synthetic_dataset(num_items=60, num_users=10, codebook_size=8, seed=7),
                          tmp / "data", "other")
    elif kind == "embeddings":
        np.save(tmp / "emb.npy", np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32))
        (tmp / "ids.json").write_text(json.dumps([str(i) for i in range(39)]))
        (tmp / "not_npy.npy").write_text("item,vector\n")
        (tmp / "a_dir").mkdir()
    elif kind == "job":  # a finished batch job with other settings in out/
        assert main(["recommend", "--workdir", str(workdir), "--which", "latest", "--out", str(tmp / "out"),
                     "--num-beams", "4", "--top-k", "4", "--users-per-shard", "40"]) == 0
    elif kind == "two-datasets":  # the run's catalogue as toy, another as toy2, in one directory
        write_sid_dataset(make_synthetic_dataset(num_items=60, num_users=10, codebook_size=8), tmp / "data", "toy")
        write_sid_dataset(make_synthetic_dataset(num_items=60, num_users=10, codebook_size=8, seed=7),
                          tmp / "data", "toy2")
    elif kind == "file":
        (tmp / "a_file").write_text("")


# (case id, setup, argv with {tmp} / {workdir} / {smoke}, text the error line must contain)
CASES = [
    ("train-missing-data", None, ["train", "--config", "{smoke}", "--workdir", "{tmp}/new/run",
                                  "--set", "data.data_dir={tmp}/no_data"], "no_data"),
    ("train-missing-config", None, ["train", "--config", "{tmp}/nope.py", "--workdir", "{tmp}/run"], "nope.py"),
    ("train-bad-set-key", None, ["train", "--config", "{smoke}", "--workdir", "{tmp}/run",
                                 "--set", "optimizer.lr=1"], "'optimizer.lr'"),
    ("train-bad-set-value", None, ["train", "--config", "{smoke}", "--workdir", "{tmp}/run",
                                   "--set", "num_steps=many"], "'num_steps'"),
    ("train-malformed-data", "malformed", ["train", "--config", "{smoke}", "--workdir", "{tmp}/run",
                                           "--set", "data.data_dir={tmp}/data"], "toy.inter.json"),
    ("demo-malformed-data", "malformed", ["demo", "--data", "{tmp}/data", "--workdir", "{tmp}/demo"],
     "toy.inter.json"),
    ("demo-missing-config", None, ["demo", "--config", "{tmp}/nope.py", "--workdir", "{tmp}/demo"], "nope.py"),
    ("demo-bad-set", None, ["demo", "--workdir", "{tmp}/demo", "--set", "batch_size=0"], "batch_size"),
    ("eval-missing-workdir", None, ["eval", "--workdir", "{tmp}/no_run"], "no_run"),
    ("eval-prefix-ranks-without-diagnose", None, ["eval", "--workdir", "{workdir}", "--save-prefix-ranks",
                                                  "{tmp}/new/p.npy"], "--save-prefix-ranks needs --diagnose"),
    ("recommend-missing-workdir", None, ["recommend", "--workdir", "{tmp}/no_run", "--out", "{tmp}/recs"],
     "no_run"),
    ("recommend-top-k-above-beams", None, ["recommend", "--workdir", "{tmp}/no_run", "--out", "{tmp}/new/recs",
                                           "--num-beams", "4", "--top-k", "5"], "--top-k 5 exceeds --num-beams 4"),
    ("recommend-unknown-items", "unknown-items", ["recommend", "--workdir", "{workdir}", "--which", "latest",
                                                  "--num-beams", "4", "--top-k", "4", "--data", "{tmp}/data",
                                                  "--out", "{tmp}/new/recs"], "'new-"),
    ("recommend-other-catalogue", "other-catalogue", ["recommend", "--workdir", "{workdir}", "--which", "latest",
                                                      "--num-beams", "4", "--top-k", "4", "--data", "{tmp}/data",
                                                      "--out", "{tmp}/new/recs"], "another catalogue"),
    ("eval-other-catalogue", "other-catalogue", ["eval", "--workdir", "{workdir}", "--which", "latest",
                                                 "--data", "{tmp}/data"], "another catalogue"),
    ("recommend-changed-settings", "job", ["recommend", "--workdir", "{workdir}", "--which", "latest",
                                           "--out", "{tmp}/out", "--num-beams", "4", "--top-k", "3",
                                           "--users-per-shard", "40"], "manifest.json"),
    ("build-index-missing-data", None, ["build-index", "--data", "{tmp}/no_data", "--out", "{tmp}/new/i.npz"],
     "no_data"),
    ("build-index-out-is-a-dir", "dataset", ["build-index", "--data", "{tmp}/data", "--out", "{tmp}/a_dir"],
     "a_dir"),
    ("build-index-out-under-a-file", "dataset", ["build-index", "--data", "{tmp}/data", "--out",
                                                 "{tmp}/data/toy.inter.json/i.npz"], "toy.inter.json"),
    ("build-sids-missing-embeddings", None, ["build-sids", "--embeddings", "{tmp}/no.npy", "--out",
                                             "{tmp}/new/x.index.rq-kmeans.json"], "no.npy"),
    ("build-sids-not-npy", "embeddings", ["build-sids", "--embeddings", "{tmp}/not_npy.npy", "--out",
                                          "{tmp}/new/x.index.rq-kmeans.json"], "not_npy.npy"),
    ("build-sids-id-count", "embeddings", ["build-sids", "--embeddings", "{tmp}/emb.npy", "--item-ids",
                                           "{tmp}/ids.json", "--out", "{tmp}/new/x.index.rq-kmeans.json"],
     "ids.json"),
    ("build-sids-report-is-a-dir", "embeddings", ["build-sids", "--embeddings", "{tmp}/emb.npy", "--codes", "4",
                                                  "--levels", "2", "--out", "{tmp}/new/x.index.rq-kmeans.json",
                                                  "--report", "{tmp}/a_dir"], "a_dir"),
    ("demo-resume-other-settings", None, ["demo", "--workdir", "{workdir}", "--set", "num_steps=3"], "--fresh"),
    ("eval-two-datasets", "two-datasets", ["eval", "--workdir", "{workdir}", "--which", "latest",
                                           "--data", "{tmp}/data"],
     "holds 2 datasets (toy, toy2); genrec eval reads one dataset a directory: move the one to use into a directory"),
    ("recommend-two-datasets", "two-datasets", ["recommend", "--workdir", "{workdir}", "--which", "latest", "--data",
                                                "{tmp}/data", "--out", "{tmp}/new/recs"],
     "holds 2 datasets (toy, toy2); pass --requests {tmp}/data/NAME.inter.json"),
    ("build-index-two-datasets", "two-datasets", ["build-index", "--data", "{tmp}/data", "--out", "{tmp}/i.npz"],
     "holds 2 datasets (toy, toy2); pass --name NAME"),
    ("synth-too-many-items", None, ["synth", "--out", "{tmp}/new/synth", "--num-items", "5000",
                                    "--codebook-size", "4"], "--num-items 5000"),
    ("synth-out-is-a-file", "file", ["synth", "--out", "{tmp}/a_file", "--num-items", "50"], "a_file"),
    ("train-workdir-is-a-file", "file", ["train", "--config", "{smoke}", "--workdir", "{tmp}/a_file"], "a_file"),
    ("recommend-out-is-a-file", "file", ["recommend", "--workdir", "{workdir}", "--which", "latest", "--num-beams",
                                         "4", "--top-k", "4", "--out", "{tmp}/a_file"], "a_file"),
    ("eval-save-ranks-under-a-file", "file", ["eval", "--workdir", "{workdir}", "--which", "latest",
                                              "--save-ranks", "{tmp}/a_file/ranks.npy"], "a_file"),
]


@pytest.mark.parametrize("setup, argv, names", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_user_error_is_one_line_and_leaves_nothing(setup, argv, names, tmp_path, request, capsys):
    needs_workdir = any("{workdir}" in a for a in argv) or setup == "job"
    run = request.getfixturevalue("workdir") if needs_workdir else None
    tmp = tmp_path / "case"
    tmp.mkdir()
    _setup(setup, tmp, run)
    before = _tree(tmp_path)
    capsys.readouterr()
    argv = [a.format(tmp=tmp, workdir=run, smoke=SMOKE) for a in argv]
    cwd = os.getcwd()
    os.chdir(tmp)  # a default output directory (runs/...) would land here
    try:
        code = main(argv)
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert code == 2, err
    names = names.format(tmp=tmp)
    assert len(err.splitlines()) == 1 and err.startswith(f"genrec {argv[0]}: error: ") and names in err, err
    assert "name=" not in err, err  # no Python spelling: a flag, or a fix that exists
    if argv[0] == "demo":
        assert "--no-resume" not in err, err  # genrec train's flag; demo's is --fresh
    assert _tree(tmp_path) == before


def test_subprocess_user_error_is_one_line_and_verbose_shows_the_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "serving.cli", "train", "--config", SMOKE, "--workdir", str(tmp_path / "run"),
               "--set", f"data.data_dir={tmp_path / 'missing'}"]
    failed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.splitlines() == [f"genrec train: error: {tmp_path / 'missing'}: dataset directory not found"]
    assert list(tmp_path.iterdir()) == []
    # --verbose: the same error with its traceback (and still no workdir left behind).
    verbose = subprocess.run(command + ["--verbose"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr and "FileNotFoundError" in verbose.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bug_is_not_a_user_error(monkeypatch, tmp_path):
    """A KeyError of a dict look-up inside genrec (no raise statement) keeps its traceback."""
    import genrec.synthetic

    def broken(**kwargs):
        return {}["num_items"]

    monkeypatch.setattr(genrec.synthetic, "make_synthetic_dataset", broken)
    with pytest.raises(KeyError):
        main(["synth", "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_names_genrec_and_verbose(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: genrec {command} ") and "--verbose" in out


@pytest.mark.parametrize("verbose", [False, True])
def test_library_logs_only_with_verbose(verbose, tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--num-items", "50", "--num-users", "5"]
                + ["--verbose"] * verbose) == 0
    expected = logging.INFO if verbose else logging.WARNING
    assert {logging.getLogger(name).getEffectiveLevel() for name in LIBRARY_LOGGERS} == {expected}
    assert {logging.getLogger(name).getEffectiveLevel() for name in OWN_LOGGERS} == {logging.INFO}
    assert logging.getLogger("some.other.library").getEffectiveLevel() == expected


def test_train_prints_only_its_own_lines_and_ends_with_the_result(tmp_path):
    command = [sys.executable, "-m", "serving.cli", "train", "--config", SMOKE, "--workdir", str(tmp_path / "run"),
               *[a for override in TINY for a in ("--set", override)], "--set", "eval_every=2"]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert all(" genrec.train: " in line for line in lines[:-1]), done.stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    test = results["test_metrics"]
    assert lines[-1] == (f"test recall@10 {test['recall@10']:.4f} ndcg@10 {test['ndcg@10']:.4f} "
                         f"(best checkpoint, step {results['best_step']}); popularity recall@10 "
                         f"{results['popularity_test_metrics']['recall@10']:.4f} ndcg@10 "
                         f"{results['popularity_test_metrics']['ndcg@10']:.4f}; "
                         f"all metrics in {tmp_path / 'run' / 'results.json'}")


def test_recommend_serves_one_of_two_datasets_with_requests(workdir, tmp_path, capsys):
    """The fix the two-datasets error names works: --requests DIR/NAME.inter.json serves that dataset's users."""
    _setup("two-datasets", tmp_path, workdir)
    assert main(["recommend", "--workdir", str(workdir), "--which", "latest", "--num-beams", "4", "--top-k", "4",
                 "--requests", str(tmp_path / "data" / "toy.inter.json"), "--out", str(tmp_path / "recs")]) == 0, \
        capsys.readouterr().err
    lines = (tmp_path / "recs" / "shard-00000.jsonl").read_text().splitlines()
    assert len(lines) == 10
