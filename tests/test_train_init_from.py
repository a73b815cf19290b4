"""training/train.py warm start (``--init-from RUN``) on the tiny smoke run: the run
begins from RUN's best parameters bit for bit, validates that start at step 0 (once,
across a resume), keeps it as the best checkpoint when training does not beat it
(then its test metrics are RUN's), and refuses a source of another model in one line.
A ``--no-resume`` command refused by any check leaves the workdir's previous run byte for byte.

One supervised workdir (the same run as tests/test_rl_loop.py's, so its programs come
from the session's compilation cache) and one warm run, resumed once, serve every test."""

import json
import shutil

import pytest
from checkpoint_damage import delete_a_used_file
from flax import nnx
from logging_state import restore_logging  # noqa: F401 (autouse: every test keeps the logging state)
from train_cli import REPO, SMOKE, TINY_RUN, train_tiny_supervised

from genrec.array_digest import tree_digest
from genrec.console import UserError
from genrec.run_files import load_model_for_inference
from training.config import load_config_file
from training.train import main, train, use_its_config

# A learning rate too small to move float32 weights (0 is refused): the run stays at its start.
STILL = ["optimizer.learning_rate=1e-12", "optimizer.schedule=constant", "optimizer.warmup_fraction=0",
         "optimizer.weight_decay=0", "eval_every=2"]



@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    """A supervised tiny workdir with a best checkpoint (step 4): ``(TrainResult, workdir)``."""
    workdir = tmp_path_factory.mktemp("supervised")
    return train_tiny_supervised(workdir), workdir


@pytest.fixture(scope="module")
def warm(supervised, tmp_path_factory):
    """A warm start from ``supervised`` run to step 2, then resumed (no kill) to step 4:
    ``(first TrainResult, final TrainResult, workdir)``."""
    workdir = tmp_path_factory.mktemp("warm") / "run"
    first = train(load_config_file(REPO / SMOKE, TINY_RUN + STILL + ["num_steps=2"]), workdir, init_from=supervised[1])
    final = train(load_config_file(REPO / SMOKE, TINY_RUN + STILL + ["num_steps=4"]), workdir, init_from=supervised[1])
    return first, final, workdir


def _records(workdir, kind):
    return [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def _params_digest(workdir, which):
    model = load_model_for_inference(workdir, which=which)[0]
    return tree_digest(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def test_warm_start_begins_at_the_source_best_and_keeps_it_when_training_does_not_beat_it(supervised, warm):
    source_result, source_dir = supervised
    first, final, workdir = warm
    start = json.loads((workdir / "init_from.json").read_text())
    assert start["workdir"] == str(source_dir.resolve()) and start["step"] == source_result.best_step == 4
    assert start["params"] == _params_digest(source_dir, "best")

    # The start is validated once, at step 0, and its metrics are the source's best validation.
    valid = _records(workdir, "valid")
    assert [r["step"] for r in valid] == [0, 2, 4]
    assert {k: v for k, v in valid[0].items() if k not in ("step", "kind")} == source_result.best_valid_metrics

    metric = load_config_file(REPO / SMOKE, TINY_RUN).eval.selection_metric
    assert all(r[metric] <= valid[0][metric] for r in valid), "the setup no longer leaves validation unchanged"
    assert first.final_step == 2 and final.final_step == 4
    assert first.best_step == final.best_step == 0
    assert _params_digest(workdir, "best") == start["params"]  # the step-0 best is the source's weights
    assert final.test_metrics == source_result.test_metrics
    assert json.loads((workdir / "results.json").read_text())["best_step"] == 0


def test_resume_must_name_the_recorded_start(warm):
    workdir = warm[2]
    config = load_config_file(REPO / SMOKE, TINY_RUN + STILL + ["num_steps=4"])
    with pytest.raises(UserError, match=r"this run started from .*, not from scratch \(no --init-from\)"):
        train(config, workdir)


@pytest.mark.parametrize("case", ["other_model", "other_numerics", "not_a_run", "itself", "no_best", "damaged_best"])
def test_a_wrong_source_is_refused_in_one_line(supervised, tmp_path, capsys, case):
    source_dir = supervised[1]
    workdir = tmp_path / "warm"
    changes = {"other_model": ["model.num_decoder_layers=2"],
               "other_numerics": ["model.attention_logit_scale=unscaled", "model.init=hf_t5"]}
    overrides = TINY_RUN + changes.get(case, [])
    init_from = {"other_model": source_dir, "other_numerics": source_dir, "not_a_run": tmp_path, "itself": workdir,
                 "no_best": tmp_path / "run", "damaged_best": tmp_path / "run"}[case]
    if case == "no_best":  # the run's files without its best checkpoint
        shutil.copytree(source_dir, init_from, ignore=shutil.ignore_patterns("best", "*.lock"))
    if case == "damaged_best":  # a file its best checkpoint needs gone: unreadable
        shutil.copytree(source_dir, init_from, ignore=shutil.ignore_patterns("*.lock"))
        delete_a_used_file(init_from / "best")
    argv = ["--config", str(REPO / SMOKE), "--workdir", str(workdir), "--init-from", str(init_from)]
    for override in overrides:
        argv += ["--set", override]
    if case == "itself":
        (workdir / "config.json").parent.mkdir()
        (workdir / "config.json").write_text("{}")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    expected = {"other_model": "model.num_decoder_layers 1 -> 2", "not_a_run": "not a genrec workdir",
                "itself": "is --workdir itself", "no_best": "no best checkpoint",
                # it named genrec eval's --which latest, which a warm start does not have
                "damaged_best": f"--init-from {init_from}: its best checkpoint (step 4) is damaged (unreadable: ",
                # only a T5 config's numerics differ: the advice names the model= argument
                "other_numerics": "model.init None -> 'hf_t5'; a warm start continues that run's model on its "
                                  "data: use its config file with the model= it trained with"}[case]
    assert expected in err
    if case == "other_model":
        assert err.endswith("use its config file")
    if case == "damaged_best":
        assert err.endswith("; train that run again, or start from another"), err
    if case != "itself":
        assert not workdir.exists()  # refused before anything was written


def test_the_advice_names_model_only_when_only_t5_numerics_differ():
    numerics = {"model.attention_logit_scale": (None, "unscaled"), "model.init": (None, "hf_t5")}
    assert use_its_config(numerics).startswith("use its config file with the model= it trained with")
    assert use_its_config({**numerics, "model.d_model": (128, 64)}) == "use its config file"


def _tree(root):
    """Every path under ``root`` with its bytes, but the lock file's (the last holder's pid)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() and p.name != ".genrec.lock" else None
            for p in sorted(root.rglob("*"))}


# (case, --init-from, more --set overrides, text of the one error line): genrec train --no-resume on a workdir
# holding a finished run ({prev}, a copy of the supervised run), refused; {sup} the supervised run, {tmp} the
# test's own folder, {tmp}/no_best a copy of {sup} without its best checkpoint. --no-resume used to clear the
# previous run before all but the first of these checks, so a refused command deleted it.
NO_RESUME_REFUSED = [
    ("changed-model", "{sup}", ["model.num_decoder_layers=2"], "model.num_decoder_layers 1 -> 2"),
    ("init-from-no-best", "{tmp}/no_best", [],
     "--init-from {tmp}/no_best: no best checkpoint in {tmp}/no_best/best (no validation evaluation ran: "
     "eval_every=0, or training stopped before the first one); a warm start begins from a best checkpoint: "
     "start from a run that has one"),
    ("batch-over-devices", None, ["batch_size=12"],
     "batch_size=12 does not split evenly over 8 devices; use a multiple of 8 (e.g. --set batch_size=16)"),
    ("more-devices-than-there-are", None, ["num_devices=9"], "num_devices=9, but 8 devices are available"),
    ("missing-data", None, ["data.data_dir={tmp}/no_data"], "{tmp}/no_data: dataset directory not found"),
]


@pytest.mark.parametrize("case, init_from, more, expected", NO_RESUME_REFUSED,
                         ids=[case[0] for case in NO_RESUME_REFUSED])
def test_a_refused_no_resume_command_leaves_the_previous_run_as_it_was(case, init_from, more, expected, supervised,
                                                                       tmp_path, capsys):
    source_dir = supervised[1]
    workdir = tmp_path / "prev"
    shutil.copytree(source_dir, workdir)
    if case == "init-from-no-best":
        shutil.copytree(source_dir, tmp_path / "no_best", ignore=shutil.ignore_patterns("best", "*.lock"))
    places = {"sup": source_dir, "tmp": tmp_path}
    before = [_tree(root) for root in (workdir, source_dir)]
    assert {"checkpoints", "best", "metrics.jsonl", "results.json"} <= set(before[0])  # a finished run
    argv = ["--config", str(REPO / SMOKE), "--workdir", str(workdir), "--no-resume"]
    if init_from is not None:
        argv += ["--init-from", init_from.format(**places)]
    for override in TINY_RUN + ["num_steps=4", "eval_every=4"] + [m.format(**places) for m in more]:
        argv += ["--set", override]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert [_tree(root) for root in (workdir, source_dir)] == before, err
    assert len(err.splitlines()) == 1 and err.startswith("genrec train: error: "), err
    assert expected.format(**places) in err, err
    assert "which=" not in err  # no command has such an option


@pytest.fixture(scope="module")
def other_source(tmp_path_factory):
    """Another supervised tiny workdir (2 steps): other weights than ``supervised``'s, for a refused resume."""
    workdir = tmp_path_factory.mktemp("other_source")
    train(load_config_file(REPO / SMOKE, TINY_RUN + ["num_steps=2", "eval_every=2"]), workdir)
    return workdir


def test_a_moved_start_with_the_same_weights_is_accepted_on_resume(supervised, warm, other_source, tmp_path,
                                                                   caplog, capsys):
    """The start's workdir moved (its checkpoint, step and weights' digest unchanged): the resume goes on with one
    INFO line, and init_from.json names the new place, as genrec rl does (it was refused as "not from ...").
    A start with other weights is still refused in one line, nothing written."""
    _, final, warm_dir = warm
    moved, workdir = tmp_path / "moved_source", tmp_path / "warm"
    shutil.copytree(supervised[1], moved, ignore=shutil.ignore_patterns("*.lock"))
    shutil.copytree(warm_dir, workdir, ignore=shutil.ignore_patterns("*.lock"))
    config = load_config_file(REPO / SMOKE, TINY_RUN + STILL + ["num_steps=4"])
    recorded = json.loads((workdir / "init_from.json").read_text())
    with caplog.at_level("INFO", logger="genrec.train"):
        resumed = train(config, workdir, init_from=moved)
    assert resumed.final_step == 4 and resumed.best_step == final.best_step
    assert resumed.test_metrics == final.test_metrics
    assert json.loads((workdir / "init_from.json").read_text()) == {**recorded, "workdir": str(moved.resolve())}
    lines = [r.getMessage() for r in caplog.records if r.name == "genrec.train" and "start moved" in r.getMessage()]
    assert len(lines) == 1 and recorded["workdir"] in lines[0] and str(moved.resolve()) in lines[0], lines

    before = _tree(workdir)
    argv = ["--config", str(REPO / SMOKE), "--workdir", str(workdir), "--init-from", str(other_source)]
    for override in TINY_RUN + STILL + ["num_steps=4"]:
        argv += ["--set", override]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"{workdir}: this run started from {moved.resolve()} (best step 4" in err, err
    assert f"not from {other_source.resolve()} (best step 2" in err, err
    assert _tree(workdir) == before
