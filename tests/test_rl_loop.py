"""training/rl.py end to end on the tiny smoke run: a V-STAR run from a supervised
workdir writes one step-0 validation record and keeps the supervised start as
the best checkpoint when RL does not beat it; SIGKILL and SIGTERM mid-run
resume to exactly the uninterrupted run; the RL workdir serves ``genrec eval``
and the ``Recommender`` unchanged; user mistakes are one line, exit status 2,
nothing changed.

One supervised workdir and one uninterrupted RL run serve every test (module
fixtures); the V-STAR step is the program tests/test_rl_step.py compiles on 8
devices, and the killed process loads it from conftest.py's persistent cache."""

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess

import numpy as np
import pytest
from checkpoint_damage import delete_a_used_file
from flax import nnx
from logging_state import restore_logging  # noqa: F401 (autouse: every test keeps the logging state)
from train_cli import (
    REPO,
    RL_TINY,
    SMOKE,
    TINY_RUN,
    assert_same_latest_params,
    killed_rl_command,
    rl_arguments,
    train_tiny_supervised,
)

from genrec.array_digest import tree_digest
from genrec.console import UserError
from genrec.run_files import load_model_for_inference
from serving.cli import main as genrec_main
from serving.recommender import Recommender
from training.config import load_config_file
from training.rl import main as rl_main
from training.rl import rl_train
from training.rl_step import rollout_budget
from training.train import train

CONFIG = load_config_file(REPO / SMOKE, TINY_RUN + RL_TINY)
NUM_STEPS, KILL_AT = CONFIG.rl.num_steps, 3  # checkpoints at 2 and 4: the killed run redoes step 3



@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    """A supervised tiny workdir with a best checkpoint (step 4), the RL runs' start."""
    workdir = tmp_path_factory.mktemp("supervised")
    train_tiny_supervised(workdir)
    return workdir


@pytest.fixture(scope="module")
def reference(supervised, tmp_path_factory):
    """An uninterrupted V-STAR run (in process): ``(RLResult, workdir)``."""
    workdir = tmp_path_factory.mktemp("rl") / "reference"
    return rl_train(CONFIG, supervised, workdir, resume=False), workdir


@pytest.fixture(scope="module")
def other_start(tmp_path_factory):
    """Another supervised tiny workdir (2 steps): other weights than ``supervised``'s, for a refused resume."""
    workdir = tmp_path_factory.mktemp("other_start")
    train(load_config_file(REPO / SMOKE, TINY_RUN + ["num_steps=2", "eval_every=2"]), workdir)
    return workdir


def _records(workdir, kind=None):
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if kind is None or r["kind"] == kind]


def _timeless(records):
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in records]


def _params_digest(workdir, which):
    model = load_model_for_inference(workdir, which=which)[0]
    return tree_digest(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def test_run_logs_the_start_once_and_keeps_it_as_best_when_rl_does_not_improve(reference):
    result, workdir = reference
    assert result.final_step == NUM_STEPS
    valid = _records(workdir, "valid")
    assert [r["step"] for r in valid] == [0, 2, 4]  # the supervised start, evaluated once, then every 2 steps
    train_records = _records(workdir, "train")
    assert [r["step"] for r in train_records] == [2, 4]
    budget = rollout_budget(CONFIG.rl, np.load(workdir / "catalogue.npz")["sid_codes"].shape[1])
    for record in train_records:
        assert record["rollouts_in_catalogue"] == 1.0 and np.isfinite(record["loss"])
        assert 0 < record["valid_fraction"] <= 1 and 1 <= record["tokens_used"] <= budget
        assert not record["update_skipped"]
    assert len(_records(workdir, "test")) == 1

    # lr 1e-5 for 4 steps moves the weights but not the validation ranking: no later evaluation
    # beats the start, so the best checkpoint is step 0, the supervised weights bit for bit.
    metric = CONFIG.eval.selection_metric
    assert all(r[metric] <= valid[0][metric] for r in valid), "the setup no longer leaves validation unchanged"
    assert result.best_step == 0
    assert result.best_valid_metrics == result.start_valid_metrics == {k: v for k, v in valid[0].items()
                                                                       if k not in ("step", "kind")}
    init = json.loads((workdir / "rl_init.json").read_text())
    assert init["checkpoint"] == "best" and _params_digest(workdir, "best") == init["params"]
    assert _params_digest(workdir, "latest") != init["params"]  # RL did change the weights
    results = json.loads((workdir / "results.json").read_text())
    assert results["best_step"] == 0 and results["test_metrics"] == result.test_metrics


def test_killed_and_resumed_run_equals_the_uninterrupted_run(supervised, reference, tmp_path):
    result, reference_dir = reference
    workdir = tmp_path / "resumed"
    command = killed_rl_command(supervised, workdir, TINY_RUN + RL_TINY, KILL_AT)
    killed = subprocess.run(command, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]
    saved_steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved_steps == [2] and not (workdir / "results.json").exists()

    resumed = rl_train(CONFIG, supervised, workdir, resume=True)
    assert_same_latest_params(reference_dir, workdir, atol=0.0)  # bit-identical
    assert _timeless(_records(workdir)) == _timeless(_records(reference_dir))
    assert resumed == dataclasses.replace(result, workdir=workdir)


class _Crash(Exception):
    pass


def _crash_at_step_1(step):
    if step == 1:
        raise _Crash


def test_sigterm_checkpoints_the_step_exits_143_and_a_rerun_finishes(supervised, reference, tmp_path, capsys):
    """One workdir through a crash before its first checkpoint, a SIGTERM at step 3 (exit 143, a checkpoint
    of step 3 though none was due) and a rerun to the end: the uninterrupted run's weights and records."""
    _, reference_dir = reference
    workdir = tmp_path / "stopped"
    argv = rl_arguments(supervised, workdir, TINY_RUN + RL_TINY)

    # First a crash before any periodic checkpoint: the start's evaluation and best/0 are on disk.
    # The next run starts over, evaluates the start again and logs it once (checked below).
    with pytest.raises(_Crash):
        rl_train(CONFIG, supervised, workdir, on_step_end=_crash_at_step_1)
    assert [r["step"] for r in _records(workdir, "valid")] == [0] and not (workdir / "checkpoints" / "1").exists()

    def sigterm_at_step_2(step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    handler_before = signal.getsignal(signal.SIGTERM)
    assert rl_main(argv, on_step_end=sigterm_at_step_2) == 143
    assert signal.getsignal(signal.SIGTERM) is handler_before
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[-1]) == {"interrupted_at_step": 3}
    # The stop line is the RL module's (it was logged as genrec.train's).
    assert "genrec.rl: stopped at step 3 with a checkpoint" in out and "genrec.train: stopped" not in out, out
    saved_steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved_steps == [2, 3]  # the step the signal arrived in, though no checkpoint was due
    assert rl_main(argv) == 0
    assert_same_latest_params(reference_dir, workdir, atol=0.0)
    # The same records, the train record of step 4 included: the checkpoint of step 3 holds the log window
    # (step 3's metrics), so the first log after the resume averages steps 3 and 4 as the reference's does
    # (it averaged step 4 alone).
    assert _timeless(_records(workdir)) == _timeless(_records(reference_dir))


def test_a_resume_without_metrics_jsonl_reports_the_start_from_the_checkpoint(supervised, reference, tmp_path):
    """metrics.jsonl deleted: the step-0 validation of the start comes from the checkpoint (a StopIteration after
    the whole test evaluation, test_ranks.npy rewritten, before)."""
    result, reference_dir = reference
    workdir = tmp_path / "rl"
    shutil.copytree(reference_dir, workdir)
    (workdir / "metrics.jsonl").unlink()
    assert rl_train(CONFIG, supervised, workdir) == dataclasses.replace(result, workdir=workdir)
    assert json.loads((workdir / "results.json").read_text())["start_valid_metrics"] == result.start_valid_metrics


def test_an_older_checkpoint_takes_the_start_metrics_from_metrics_jsonl_or_stops_before_any_work(
        supervised, reference, tmp_path):
    """Checkpoints without the start's validation (as genrec wrote them before it kept it there): metrics.jsonl's
    step-0 record is reported; without metrics.jsonl, one line before any evaluation, the results and test
    ranks as they were."""
    result, reference_dir = reference
    workdir = tmp_path / "rl"
    shutil.copytree(reference_dir, workdir)
    for meta in (workdir / "checkpoints").glob("*/meta/metadata"):
        record = json.loads(meta.read_text())
        del record["start_valid_metrics"]
        meta.write_text(json.dumps(record))
    assert rl_train(CONFIG, supervised, workdir) == dataclasses.replace(result, workdir=workdir)

    (workdir / "metrics.jsonl").unlink()
    kept = {name: (workdir / name).read_bytes() for name in ("results.json", "test_ranks.npy")}
    with pytest.raises(UserError, match=r"the validation of its start \(step 0\), which the run reports, is in "
                                        r"neither its checkpoint \(step 4, written by an older genrec\) nor "
                                        r"metrics.jsonl \(deleted\); restore metrics.jsonl, or start over"):
        rl_train(CONFIG, supervised, workdir)
    assert {name: (workdir / name).read_bytes() for name in kept} == kept
    assert not (workdir / "metrics.jsonl").exists()


def test_a_moved_start_with_the_same_weights_is_accepted_on_resume(supervised, reference, tmp_path, caplog):
    """The start's workdir moved (its step and weights' digest unchanged): the resume goes on, with one INFO
    line, and rl_init.json names the new place (it was refused as "not from ..."). Other weights: ERRORS."""
    result, reference_dir = reference
    moved, workdir = tmp_path / "moved_start", tmp_path / "rl"
    shutil.copytree(supervised, moved)
    shutil.copytree(reference_dir, workdir)
    with caplog.at_level(logging.INFO, logger="genrec.rl"):
        resumed = rl_train(CONFIG, moved, workdir)
    init = {**result.init_from, "workdir": str(moved.resolve())}
    assert resumed == dataclasses.replace(result, workdir=workdir, init_from=init)
    assert json.loads((workdir / "rl_init.json").read_text()) == init
    lines = [r.getMessage() for r in caplog.records if r.name == "genrec.rl" and "start moved" in r.getMessage()]
    assert len(lines) == 1 and str(supervised.resolve()) in lines[0] and str(moved.resolve()) in lines[0], lines


def test_rl_workdir_serves_genrec_eval_and_the_recommender(supervised, reference, capsys):
    result, workdir = reference
    capsys.readouterr()
    assert genrec_main(["eval", "--workdir", str(workdir)]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["split"] == "test"
    for key, value in result.test_metrics.items():  # the run's own test evaluation of its best checkpoint
        assert evaluated["metrics"][key] == pytest.approx(value, abs=1e-6), key

    histories = [["1", "2", "3"], ["10"], []]
    rl_recs = Recommender.from_workdir(workdir, num_beams=8).recommend(histories, top_k=5)
    start_recs = Recommender.from_workdir(supervised, num_beams=8).recommend(histories, top_k=5)
    catalogue = set(np.load(workdir / "catalogue.npz")["item_ids"].tolist())
    assert all(set(items) <= catalogue and len(items) == 5 for items in rl_recs.item_ids.tolist())
    # Its best checkpoint is the supervised start (previous test): the same recommendations.
    assert result.best_step == 0
    np.testing.assert_array_equal(rl_recs.item_ids, start_recs.item_ids)


def _tree(root):
    """Every path under ``root`` with its bytes, but the lock file's (the last holder's pid)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() and p.name != ".genrec.lock" else None
            for p in sorted(root.rglob("*"))}


# (case, --init-from, --workdir, more arguments, text of the one error line); {sup} the supervised workdir,
# {ref} the finished RL run (every resume case must leave it as it was), {tmp} the test's own folder,
# {tmp}/copy a copy of {sup}.
ERRORS = [
    ("init-from-not-a-workdir", "{tmp}", "{tmp}/rl", [], "not a genrec workdir"),
    ("changed-model", "{sup}", "{tmp}/new/rl", ["--set", "model.num_decoder_layers=2"],
     "model.num_decoder_layers 1 -> 2"),
    ("workdir-is-init-from", "{sup}", "{sup}", [], "is --init-from itself"),
    ("workdir-is-a-supervised-run", "{sup}", "{tmp}/copy", ["--no-resume"], "holds a genrec train run"),
    ("resume-changed-rollouts", "{sup}", "{ref}", ["--set", "rl.num_rollouts=4"], "rl.num_rollouts 8 -> 4"),
    # Another start: other weights (a moved copy of the same start is accepted: test_a_moved_start_...).
    ("resume-other-start", "{other}", "{ref}", [], "rl_init.json: this run started from"),
    ("batch-over-devices", "{sup}", "{tmp}/rl", ["--set", "rl.batch_size=12"],
     "rl.batch_size=12 does not split evenly over 8 devices; use a multiple of 8 (e.g. --set rl.batch_size=16)"),
    # Settings tests/reliability/test_rl_settings.py checks, refused before anything is compiled.
    ("group-of-one", "{sup}", "{tmp}/rl", ["--set", "rl.num_rollouts=1"], "rl.num_rollouts=1: GRPO"),
    ("batch-over-requests", "{sup}", "{tmp}/rl", ["--set", "rl.batch_size=616"],
     "rl.batch_size=616 is more than the 613 training requests"),
    # Ran for minutes at gigabytes (VED's node table and iterations are sized by the budget), deaf to Ctrl-C.
    ("budget-over-the-trie", "{sup}", "{tmp}/rl", ["--set", "rl.budget=100000"],
     "rl.budget=100000 is more than VED can spend"),
    # --no-resume used to clear the previous run before these checks, leaving a workdir later refused
    # as "a genrec train run".
    ("no-resume-changed-model", "{sup}", "{ref}", ["--no-resume", "--set", "model.num_decoder_layers=2"],
     "model.num_decoder_layers 1 -> 2"),
    ("no-resume-bad-setting", "{sup}", "{ref}", ["--no-resume", "--set", "rl.level_weights=0.5,1"],
     "rl.level_weights=0.5,1 has 2 weights but the SIDs have 3 levels"),
    ("no-resume-no-best", "{tmp}/copy", "{ref}", ["--no-resume"],
     "no best checkpoint in {tmp}/copy/best (no validation evaluation ran); start from its latest checkpoint "
     "(--set rl.init_checkpoint=latest)"),
    # It named genrec eval's options ("--which latest, which='latest'").
    ("damaged-start-best", "{tmp}/copy", "{tmp}/rl", [],
     "; start from its latest checkpoint (--set rl.init_checkpoint=latest) or train the start again"),
]


@pytest.mark.parametrize("case, init_from, workdir, more, expected", ERRORS, ids=[case[0] for case in ERRORS])
def test_user_error_is_one_line_and_changes_nothing(case, init_from, workdir, more, expected, supervised, reference,
                                                    tmp_path, capsys, request):
    places = {"sup": supervised, "ref": reference[1], "tmp": tmp_path}
    if init_from == "{other}":
        places["other"] = request.getfixturevalue("other_start")
    if "{tmp}/copy" in (init_from, workdir):
        shutil.copytree(supervised, tmp_path / "copy")
        if case == "no-resume-no-best":
            shutil.rmtree(tmp_path / "copy" / "best")
        if case == "damaged-start-best":  # a file its best checkpoint needs gone: unreadable
            delete_a_used_file(tmp_path / "copy" / "best")
    before = [_tree(root) for root in places.values()]
    argv = rl_arguments(init_from.format(**places), workdir.format(**places), TINY_RUN + RL_TINY) + more
    capsys.readouterr()
    assert rl_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("genrec rl: error: ") and expected.format(**places) in err, err
    assert [_tree(root) for root in places.values()] == before


def test_a_crash_while_writing_the_run_files_leaves_a_workdir_rl_accepts(supervised, tmp_path, monkeypatch):
    """rl_init.json is written before config.json: a workdir holding config.json alone reads as a genrec train
    run and is refused, so a crash between the two writes must never leave that."""
    import training.rl as rl_module

    def crash(*args, **kwargs):
        raise _Crash

    workdir = tmp_path / "crashed"
    write_run_files = rl_module.write_run_files
    monkeypatch.setattr(rl_module, "write_run_files", crash)
    with pytest.raises(_Crash):
        rl_train(CONFIG, supervised, workdir, resume=False)
    assert (workdir / "rl_init.json").exists() and not (workdir / "config.json").exists()
    monkeypatch.setattr(rl_module, "write_run_files", write_run_files)
    config = dataclasses.replace(CONFIG, rl=dataclasses.replace(CONFIG.rl, num_steps=1, eval_every=0))
    assert rl_train(config, supervised, workdir).final_step == 1  # accepted and run, not refused


@pytest.fixture
def own_sigterm_handler():
    """A SIGTERM handler that only records, standing in for the default one (which would end pytest):
    a signal that reaches it is one that the RL run ignored. Yields the signals it received."""
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_during_the_final_evaluation_stops_at_once_and_a_rerun_only_evaluates(
        supervised, reference, tmp_path, monkeypatch, own_sigterm_handler, capsys):
    """As genrec train (tests/reliability/test_sigterm_edges.py): SIGTERM during the final test evaluation, after
    the last checkpoint, stops at once, exit 143, no results; the rerun trains no step and reports what the
    uninterrupted run does. (The signal went to the previous handler and the run finished, exit 0.)"""
    import training.rl as rl_module

    result, reference_dir = reference
    workdir = tmp_path / "rl"
    argv = rl_arguments(supervised, workdir, TINY_RUN + RL_TINY)
    trained = []
    evaluate_split = rl_module.evaluate_split

    def signal_in_the_test_evaluation(*args, **kwargs):  # the evaluations after the last step: the test split's
        if trained:
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate_split(*args, **kwargs)

    monkeypatch.setattr(rl_module, "evaluate_split", signal_in_the_test_evaluation)
    capsys.readouterr()
    assert rl_main(argv, on_step_end=lambda step: trained.append(step) if step == NUM_STEPS else None) == 143
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"interrupted_at_step": NUM_STEPS}
    assert own_sigterm_handler == []
    assert not (workdir / "results.json").exists() and _records(workdir, "test") == []
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [2, NUM_STEPS]

    # The rerun: no RL step (a step would fail), the final evaluation only.
    monkeypatch.undo()

    def no_training(*args, **kwargs):
        def step(*step_args):
            raise AssertionError("the rerun of a finished RL run trained again")
        return step

    monkeypatch.setattr(rl_module, "make_rl_step", no_training)
    assert rl_main(argv) == 0
    assert json.loads((workdir / "results.json").read_text())["test_metrics"] == result.test_metrics
    assert _timeless(_records(workdir)) == _timeless(_records(reference_dir))


def test_a_damaged_best_checkpoint_of_the_rl_run_stops_its_final_evaluation_in_one_line(
        supervised, reference, tmp_path, capsys):
    """The RL run's own best checkpoint damaged before its final evaluation: one line naming the RL run's best
    checkpoint and genrec rl's fix, as genrec train words its own (it was genrec eval's message, "--which latest,
    which='latest'"); exit 2, the run's results as they were."""
    _, reference_dir = reference
    workdir = tmp_path / "rl"
    shutil.copytree(reference_dir, workdir)
    delete_a_used_file(workdir / "best")  # a file its best checkpoint (step 0) needs gone: unreadable
    kept = {name: (workdir / name).read_bytes() for name in ("results.json", "test_ranks.npy")}
    capsys.readouterr()
    assert rl_main(rl_arguments(supervised, workdir, TINY_RUN + RL_TINY)) == 2  # finished: straight to the test split
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("genrec rl: error: "), err
    assert f"{workdir / 'best'}: the RL run's best checkpoint (step 0) is damaged (unreadable: " in err, err
    assert err.rstrip().endswith("so the test split was not evaluated; run genrec rl again with --no-resume, or "
                                 "evaluate the latest checkpoint: genrec eval --which latest"), err
    assert {name: (workdir / name).read_bytes() for name in kept} == kept
