"""Fault suite: what a ``genrec rl`` run evaluates, selects, reports and serves (docs/reliability.md).

- From an MSL-trained start (``eval.score_normalization="auto"`` resolves to ``"trie"`` for it), the RL
  run evaluates, selects and serves with the start's normalisation, recorded in its config.json, though the
  RL config's ``loss.kind`` is ``ce``: its step 0 (the start's weights) reports the start's validation
  metrics, and ``evaluate_workdir`` of it equals the start's. Another explicit normalisation is refused.
  An older RL run (config.json: ``"auto"``, resolved by its own loss.kind) resumes where that gave its start's
  normalisation, and is refused in one line saying what to do where it did not.
- ``rl.eval_every=0`` (never validate) selects nothing: the run reports and serves its final weights (the
  latest checkpoint), as ``genrec train`` does; it used to validate step 0 and report the untouched start.
- An arm without a value head (``rl.value_weight=0``, beam rollouts) logs no value loss or explained
  variance (they were the figures of all-zero values).

One MSL start serves every test; short RL runs from it (module fixtures)."""

import json
import logging
import shutil

import numpy as np
import pytest
from logging_state import kept_logging, restore_logging  # noqa: F401 (autouse)
from train_cli import REPO, RL_TINY, SMOKE, TINY_RUN, rl_arguments

import training.rl as rl_module
from genrec.console import UserError
from genrec.run_files import read_run_info
from training.config import apply_overrides, load_config_file
from training.evaluate import evaluate_workdir
from training.rl import main as rl_main
from training.rl import rl_train
from training.train import train

MSL_START = TINY_RUN + ["num_steps=4", "eval_every=4", "loss.kind=msl"]
RL = TINY_RUN + RL_TINY  # the RL config: loss.kind=ce, eval.score_normalization=auto
# grpo_beam with no validation: beam rollouts, no Sibling-GRPO, no value head; 2 steps, a record each.
BEAM_NO_EVAL = RL + ["rl.rollouts=beam", "rl.sibling_weight=0", "rl.value_weight=0", "rl.eval_every=0",
                     "rl.num_steps=2", "log_every=1"]
METRIC_KEYS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "num_examples")


class _Stop(Exception):
    pass


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def msl_start(tmp_path_factory):
    """A supervised tiny MSL run (best checkpoint at step 4, validated with trie normalisation)."""
    workdir = tmp_path_factory.mktemp("msl") / "start"
    with kept_logging():
        train(load_config_file(REPO / SMOKE, MSL_START), workdir)
    return workdir


@pytest.fixture(scope="module")
def rl_at_step_0(msl_start, tmp_path_factory):
    """An RL run (V-STAR) from the MSL start, stopped after its first step: best/ holds step 0, the start."""
    workdir = tmp_path_factory.mktemp("rl") / "from_msl"

    def stop(step):
        raise _Stop

    with kept_logging(), pytest.raises(_Stop):
        rl_train(load_config_file(REPO / SMOKE, RL), msl_start, workdir, on_step_end=stop)
    return workdir


@pytest.fixture(scope="module")
def beam_no_eval(msl_start, tmp_path_factory):
    """``(RLResult, workdir, genrec.rl's log lines)`` of a 2-step BEAM_NO_EVAL run from the MSL start."""
    workdir = tmp_path_factory.mktemp("rl") / "beam_no_eval"
    lines = _Lines()
    rl_logger = logging.getLogger("genrec.rl")
    with kept_logging():
        rl_logger.setLevel(logging.INFO)
        rl_logger.addHandler(lines)
        try:
            result = rl_train(load_config_file(REPO / SMOKE, BEAM_NO_EVAL), msl_start, workdir)
        finally:
            rl_logger.removeHandler(lines)
    return result, workdir, lines.lines


def _records(workdir, kind):
    return [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def _metrics(values):
    return {key: values[key] for key in METRIC_KEYS}


def test_rl_from_an_msl_start_evaluates_and_serves_with_the_starts_normalisation(msl_start, rl_at_step_0):
    start_valid = _records(msl_start, "valid")[-1]
    assert start_valid["step"] == 4  # the start's best (and only) validation
    rl_valid = _records(rl_at_step_0, "valid")
    assert [r["step"] for r in rl_valid] == [0]
    assert _metrics(rl_valid[0]) == pytest.approx(_metrics(start_valid), abs=1e-6)  # its own weights, its figures
    # Every reader of the RL workdir agrees: config.json records the start's resolved normalisation.
    config_json = json.loads((rl_at_step_0 / "config.json").read_text())
    assert config_json["train_config"]["eval"]["score_normalization"] == "trie"
    assert read_run_info(rl_at_step_0).score_normalization == read_run_info(msl_start).score_normalization == "trie"
    evaluated = [evaluate_workdir(workdir, split="valid").result.metrics for workdir in (msl_start, rl_at_step_0)]
    assert evaluated[1] == pytest.approx(evaluated[0], abs=1e-6)


def test_another_normalisation_than_the_starts_is_refused_in_one_line(msl_start, tmp_path, capsys):
    config = load_config_file(REPO / SMOKE, RL)
    for choice in ("auto", "trie"):  # the start's, or left to it
        resolved = rl_module.with_start_normalization(apply_overrides(config, [f"eval.score_normalization={choice}"]),
                                            msl_start)
        assert resolved.eval.score_normalization == "trie"
    with pytest.raises(UserError):
        rl_module.with_start_normalization(apply_overrides(config, ["eval.score_normalization=vocab"]), msl_start)
    workdir = tmp_path / "rl"
    capsys.readouterr()
    assert rl_main(rl_arguments(msl_start, workdir, RL + ["eval.score_normalization=vocab"])) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "eval.score_normalization=vocab" in err and "trie" in err, err
    assert not workdir.exists()


def test_an_older_rl_config_with_auto_compares_as_what_auto_gave_it(tmp_path):
    """config.json of an RL run from before (``"auto"``, resolved by its own loss.kind) resumes as the same
    setting where that was its start's, and is refused where it was not (the MSL start's ``trie``); end to end:
    test_an_older_rl_run_from_an_msl_start_resumes_when_auto_gave_it_the_starts_normalisation."""
    config = load_config_file(REPO / SMOKE, RL)
    saved = apply_overrides(config, ["eval.score_normalization=auto"])
    source, start = tmp_path / "config.json", tmp_path / "start"
    assert rl_module._check_resume(saved, apply_overrides(config, ["eval.score_normalization=vocab"]), source,
                                   start) == {}
    with pytest.raises(UserError, match=r"chose its best checkpoint with vocab .* evaluated with trie"):
        rl_module._check_resume(saved, apply_overrides(config, ["eval.score_normalization=trie"]), source, start)


def test_eval_every_0_selects_nothing_and_reports_the_final_weights(beam_no_eval):
    result, workdir, _ = beam_no_eval
    assert result.final_step == 2 and result.best_step is None
    assert result.best_valid_metrics is None and result.start_valid_metrics is None
    assert _records(workdir, "valid") == []  # step 0 is not validated either
    assert not any((workdir / "best").glob("[0-9]*"))
    results = json.loads((workdir / "results.json").read_text())
    assert results["best_step"] is None and results["test_metrics"] == result.test_metrics
    # The test figures are the latest checkpoint's (RL's final weights), what genrec eval --which latest reads.
    latest = evaluate_workdir(workdir, which="latest").result.metrics
    assert latest == pytest.approx(result.test_metrics, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):  # as after genrec train with eval_every=0
        evaluate_workdir(workdir)


def test_an_arm_without_a_value_head_logs_no_value_figures(beam_no_eval):
    _, workdir, lines = beam_no_eval
    progress = [line for line in lines if line.startswith("step ") and "| loss" in line]
    assert len(progress) == 2, lines
    assert not any("value_loss" in line for line in progress), progress
    for record in _records(workdir, "train"):
        assert record["value_loss"] is None and record["explained_variance"] is None and record["value_mean"] is None
        assert np.isfinite(record["loss"]) and record["grpo_loss"] is not None


def _tree(root):
    """Every path under ``root`` with its bytes, but the lock file's (the last holder's pid)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() and p.name != ".genrec.lock" else None
            for p in sorted(root.rglob("*"))}


def _as_older_genrec_wrote_it(workdir, loss_kind):
    """The RL workdir's config.json as a genrec rl run from before ``with_start_normalization`` wrote it:
    ``eval.score_normalization`` ``"auto"`` (every genrec rl resolved it by the RL config's own loss.kind)."""
    path = workdir / "config.json"
    config_json = json.loads(path.read_text())
    config_json["train_config"]["eval"]["score_normalization"] = "auto"
    config_json["train_config"]["loss"]["kind"] = loss_kind
    path.write_text(json.dumps(config_json, indent=1))


@pytest.mark.parametrize("loss_kind", ["msl", "ce"])
def test_an_older_rl_run_from_an_msl_start_resumes_when_auto_gave_it_the_starts_normalisation(
        loss_kind, msl_start, rl_at_step_0, tmp_path, capsys):
    """An older RL run from the MSL start (config.json: auto). With the RL config's loss.kind=msl, auto gave it
    trie, its start's: it resumes, and config.json records trie. With loss.kind=ce, auto gave it vocab: its step-0
    validation and best checkpoint are on another scale than the start's trie, which it would go on with, so it is
    refused in one line that says what to do (it said "use the run's settings", which genrec rl refuses), nothing
    changed; doing what it says (--no-resume) runs."""
    workdir = tmp_path / "rl"
    shutil.copytree(rl_at_step_0, workdir, ignore=shutil.ignore_patterns("*.lock"))
    _as_older_genrec_wrote_it(workdir, loss_kind)
    argv = rl_arguments(msl_start, workdir, RL + [f"loss.kind={loss_kind}"])

    def stop(step):
        raise _Stop

    if loss_kind == "ce":
        before = _tree(workdir)
        capsys.readouterr()
        with kept_logging():
            assert rl_main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("genrec rl: error: "), err
        assert (f"{workdir / 'config.json'}: this run validated and chose its best checkpoint with vocab "
                "(eval.score_normalization=auto with its loss.kind=ce, before genrec rl kept its start's)") in err, err
        assert f"its start {msl_start} is evaluated with trie" in err and "use the run's settings" not in err, err
        assert err.rstrip().endswith("cannot resume: rerun this command with --no-resume to start it over (with "
                                     "trie), or use another --workdir to keep this run as it is (genrec eval reads it "
                                     "with vocab, as before)"), err
        assert _tree(workdir) == before
        assert read_run_info(workdir).score_normalization == "vocab"  # what genrec eval reads it with, as the line says
        argv.append("--no-resume")  # what the line says
    with kept_logging(), pytest.raises(_Stop):  # accepted: the run goes on to its first step
        rl_main(argv, on_step_end=stop)
    assert json.loads((workdir / "config.json").read_text())["train_config"]["eval"]["score_normalization"] == "trie"
