"""Fault suite: a workdir's run files (``config.json``, ``catalogue.npz``,
``vocab.json``) that are damaged (malformed, truncated, emptied, of another
kind, a section or field missing, an unknown key) or that describe another run
are never read into a traceback nor silently accepted: every reader raises one
line naming the file, what is wrong and the fix, and every command that reads a
workdir (genrec eval, recommend, train's resume, rl --init-from) prints that
line and exits with status 2 (docs/reliability.md).

One tiny workdir (run files and a step-2 checkpoint, no training) is copied per
case; each case damages one file of its copy."""

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from logging_state import restore_logging  # noqa: F401 (autouse: every test keeps the logging state)
from train_cli import RL_TINY, SMOKE, TINY_RUN, rl_arguments

from genrec.locks import LOCK_FILE
from genrec.models import build_model
from genrec.run_files import CATALOGUE_FILE, CONFIG_FILE, VOCAB_FILE, read_run_info
from genrec.vocab import SIDVocabulary
from serving.cli import main as genrec_main
from serving.recommender import Recommender
from training.checkpoint import Checkpointer, TrainingProgress, read_run_config, write_run_files
from training.config import CheckpointConfig, load_config_file
from training.evaluate import evaluate_workdir
from training.rl import main as rl_main
from training.train import load_data
from training.train import main as train_main

REPO = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The run files of the tiny run (tests/train_cli.TINY_RUN) and a latest checkpoint at step 2 of
    initial weights: what a training run writes, without the time of training one."""
    workdir = tmp_path_factory.mktemp("run")
    config = load_config_file(REPO / SMOKE, TINY_RUN)
    data = load_data(config.data)
    model_config = config.model.build(data.vocab.vocab_size, data.num_levels, config.data.max_history)
    write_run_files(workdir, config, model_config, data.vocab, data.sid_codes, data.item_ids)
    checkpointer = Checkpointer(workdir, CheckpointConfig(async_save=False))
    checkpointer.save(nnx.state(build_model(model_config, rngs=nnx.Rngs(params=0, dropout=0)), nnx.Param),
                      {"count": np.zeros((), np.int32)}, TrainingProgress(step=2, data_step=2, rng_key=(0, 0)))
    checkpointer.close()
    return workdir


# --- Damage: each writes one file of a workdir copy ---------------------------


def _write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def damage(workdir: Path) -> None:
        path = workdir / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return damage


def _cut(name: str, keep: float) -> Callable[[Path], None]:
    """Truncates the file to its first ``keep`` share of bytes (a copy or a write that stopped)."""
    def damage(workdir: Path) -> None:
        path = workdir / name
        path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])
    return damage


def _edit_json(name: str, edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(workdir: Path) -> None:
        payload = json.loads((workdir / name).read_text())
        edit(payload)
        (workdir / name).write_text(json.dumps(payload))
    return damage


def _npz(**arrays: np.ndarray) -> Callable[[Path], None]:
    """A well-formed npz archive that is not the run's catalogue."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return _write(CATALOGUE_FILE, buffer.getvalue())


def _other_vocabulary(workdir: Path) -> None:
    """A sound vocabulary file of another run (2 levels of 8 codes, not the run's 3)."""
    SIDVocabulary((8, 8)).save(workdir / VOCAB_FILE)


def _codes_out_of_range(workdir: Path) -> None:
    """A sound catalogue whose first item has a code past its level's codebook (8 codes a level)."""
    with np.load(workdir / CATALOGUE_FILE) as arrays:
        sid_codes, item_ids = arrays["sid_codes"].copy(), arrays["item_ids"]
    sid_codes[0, 1] = 8
    _npz(sid_codes=sid_codes, item_ids=item_ids)(workdir)


# (case, damaged file, damage, a text of the one-line error)
DAMAGES = [
    ("config-malformed", CONFIG_FILE, _write(CONFIG_FILE, "{not json"), "malformed JSON at line 1, column 2"),
    ("config-truncated", CONFIG_FILE, _cut(CONFIG_FILE, 0.5), "malformed JSON at line"),
    ("config-empty", CONFIG_FILE, _write(CONFIG_FILE, ""), ": empty;"),
    ("config-binary", CONFIG_FILE, _write(CONFIG_FILE, b"\x89PNG\r\n\x1a\n\xff"), "not UTF-8 text"),
    ("config-not-an-object", CONFIG_FILE, _write(CONFIG_FILE, "[1, 2]"), "holds a JSON list, not an object"),
    ("config-no-train-config", CONFIG_FILE, _edit_json(CONFIG_FILE, lambda c: c.pop("train_config")),
     "train_config is missing"),
    ("config-no-model-config", CONFIG_FILE, _edit_json(CONFIG_FILE, lambda c: c.pop("model_config")),
     "model_config is missing"),
    ("config-train-config-a-list", CONFIG_FILE, _edit_json(CONFIG_FILE, lambda c: c.update(train_config=[1])),
     "train_config is a JSON list, not an object"),
    ("config-no-eval-section", CONFIG_FILE, _edit_json(CONFIG_FILE, lambda c: c["train_config"].pop("eval")),
     "train_config.eval is missing"),
    ("config-model-field-missing", CONFIG_FILE, _edit_json(CONFIG_FILE, lambda c: c["model_config"].pop("d_model")),
     "argument: 'd_model'"),
    ("config-model-field-unknown", CONFIG_FILE, _edit_json(CONFIG_FILE, lambda c: c["model_config"].update(bogus=1)),
     "unknown model_config fields ['bogus']"),
    ("config-model-bad-dtype", CONFIG_FILE, _edit_json(CONFIG_FILE, lambda c: c["model_config"].update(dtype="f77")),
     "model_config is not a valid ModelConfig"),
    ("config-unknown-top-level-key", CONFIG_FILE, _edit_json(CONFIG_FILE, lambda c: c.update(note="x")),
     "unknown top-level keys ['note']"),
    ("config-unknown-synthetic-field", CONFIG_FILE,
     _edit_json(CONFIG_FILE, lambda c: c["train_config"]["data"]["synthetic"].update(bogus=1)), "fields ['bogus']"),
    ("config-value-of-wrong-kind", CONFIG_FILE,
     _edit_json(CONFIG_FILE, lambda c: c["train_config"]["eval"].update(num_beams="x")),
     'train_config.eval.num_beams is "x", not '),
    ("catalogue-junk", CATALOGUE_FILE, _write(CATALOGUE_FILE, b"junk" * 16), "not an npz archive"),
    ("catalogue-truncated", CATALOGUE_FILE, _cut(CATALOGUE_FILE, 0.5), "a truncated or damaged npz archive"),
    ("catalogue-empty", CATALOGUE_FILE, _write(CATALOGUE_FILE, b""), ": empty;"),
    ("catalogue-no-sid-codes", CATALOGUE_FILE, _npz(item_ids=np.array(["1"])), "no sid_codes array"),
    ("catalogue-text-codes", CATALOGUE_FILE, _npz(sid_codes=np.array([["a"]]), item_ids=np.array(["1"])),
     "not int[num_items, L]"),
    ("catalogue-codes-out-of-range", CATALOGUE_FILE, _codes_out_of_range, "do not fit vocab.json's codebooks"),
    ("vocab-truncated", VOCAB_FILE, _cut(VOCAB_FILE, 0.5), "malformed JSON at line"),
    ("vocab-binary", VOCAB_FILE, _write(VOCAB_FILE, b"\xff\xfe\x00"), "not UTF-8 text"),
    ("vocab-no-codebook-sizes", VOCAB_FILE, _edit_json(VOCAB_FILE, lambda v: v.pop("codebook_sizes")),
     "no 'codebook_sizes' field"),
    ("vocab-of-another-run", VOCAB_FILE, _other_vocabulary, "a vocabulary of 18 tokens and 2 levels"),
]
# Damage to settings that only training reads (serving and evaluation need not refuse it).
TRAINING_DAMAGES = [
    ("config-unknown-section-field", CONFIG_FILE,
     _edit_json(CONFIG_FILE, lambda c: c["train_config"]["optimizer"].update(lr=0.1)),
     "unknown OptimizerConfig fields ['lr'] in train_config.optimizer"),
    ("config-learning-rate-a-string", CONFIG_FILE,
     _edit_json(CONFIG_FILE, lambda c: c["train_config"]["optimizer"].update(learning_rate="fast")),
     'train_config.optimizer.learning_rate is "fast", not a number'),
    ("config-batch-size-null", CONFIG_FILE,
     _edit_json(CONFIG_FILE, lambda c: c["train_config"].update(batch_size=None)),
     "train_config.batch_size is null, not an integer"),
    ("config-loss-section-a-list", CONFIG_FILE, _edit_json(CONFIG_FILE, lambda c: c["train_config"].update(loss=[])),
     "train_config.loss is a JSON list, not an object"),
]
CONFIG_DAMAGES = [case for case in DAMAGES if case[1] == CONFIG_FILE] + TRAINING_DAMAGES


def _damaged_copy(workdir: Path, tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    damage(copy)
    return copy


def _assert_one_line(message: str, path: Path, expected: str) -> None:
    """The error names the damaged file first, says what is wrong and how to fix it, on one line."""
    assert "\n" not in message.strip(), message
    assert message.startswith(f"{path}: ") and expected in message, message
    assert "restore" in message, message  # the fix: restore the file or the workdir, or write it again


# The readers of a workdir, in process: the serving API, genrec eval's function, training's resume read.
READERS = {
    "Recommender.from_workdir": lambda workdir: Recommender.from_workdir(workdir, which="latest"),
    "evaluate_workdir": lambda workdir: evaluate_workdir(workdir, which="latest", max_examples=4),
    "read_run_config": read_run_config,
}


@pytest.mark.parametrize("reader", ["Recommender.from_workdir", "evaluate_workdir"])
@pytest.mark.parametrize("case, name, damage, expected", DAMAGES, ids=[case[0] for case in DAMAGES])
def test_a_damaged_run_file_is_one_error_naming_it(workdir, tmp_path, reader, case, name, damage, expected):
    damaged = _damaged_copy(workdir, tmp_path, damage)
    with pytest.raises(ValueError) as error:
        READERS[reader](damaged)
    _assert_one_line(str(error.value), damaged / name, expected)


@pytest.mark.parametrize("case, name, damage, expected", CONFIG_DAMAGES, ids=[case[0] for case in CONFIG_DAMAGES])
def test_resume_refuses_a_damaged_config(workdir, tmp_path, case, name, damage, expected):
    damaged = _damaged_copy(workdir, tmp_path, damage)
    with pytest.raises(ValueError) as error:
        read_run_config(damaged)
    _assert_one_line(str(error.value), damaged / name, expected)


def test_the_undamaged_copy_loads_and_an_older_config_still_reads(workdir, tmp_path):
    """The control: the copy serves, so each case's error is its damage's. A config.json written before
    later fields existed (no rl section, no eval.subset or eval.score_normalization) reads with their defaults."""
    copy = _damaged_copy(workdir, tmp_path, lambda _: None)
    recommendations = Recommender.from_workdir(copy, which="latest", num_beams=4).recommend([["1", "2"]], top_k=3)
    with np.load(copy / CATALOGUE_FILE) as arrays:
        catalogue = set(arrays["item_ids"].tolist())
    assert recommendations.valid.all() and set(recommendations.item_ids.ravel().tolist()) <= catalogue

    config, model_config = read_run_config(copy)
    def drop_later_fields(payload: dict) -> None:
        for key in ("subset", "score_normalization"):
            del payload["train_config"]["eval"][key]
        del payload["train_config"]["rl"]

    _edit_json(CONFIG_FILE, drop_later_fields)(copy)
    older, older_model_config = read_run_config(copy)
    assert older_model_config == model_config and older.rl == type(config.rl)()
    assert older.eval.subset == "first" and older.data == config.data and older.model == config.model
    assert read_run_info(copy).score_normalization == "vocab"


# --- The commands: one line on stderr, exit status 2 --------------------------


def _command(command: str, workdir: Path, tmp_path: Path) -> Callable[[], int]:
    """``genrec COMMAND`` on ``workdir``, in process (genrec rl takes it as --init-from)."""
    if command == "train":
        argv = ["--config", SMOKE, "--workdir", str(workdir)] + [a for o in TINY_RUN for a in ("--set", o)]
        return lambda: train_main(argv)
    if command == "rl":
        # The fixture run has a latest checkpoint only (as the other commands read, --which latest).
        overrides = TINY_RUN + RL_TINY + ["rl.init_checkpoint=latest"]
        return lambda: rl_main(rl_arguments(workdir, tmp_path / "rl", overrides))
    more = (["--out", str(tmp_path / "recs"), "--num-beams", "4", "--top-k", "4"] if command == "recommend"
            else ["--max-examples", "4"])
    return lambda: genrec_main([command, "--workdir", str(workdir), "--which", "latest", *more])


def _files(root: Path) -> dict[Path, bytes]:
    """Every file under ``root`` and its bytes but the directory lock genrec train takes (genrec/locks.py)."""
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


COMMAND_DAMAGES = [case for case in DAMAGES if case[0] in ("config-truncated", "catalogue-junk")]


@pytest.mark.parametrize("command", ["eval", "recommend", "train", "rl"])
@pytest.mark.parametrize("case, name, damage, expected", COMMAND_DAMAGES, ids=[case[0] for case in COMMAND_DAMAGES])
def test_every_command_reading_a_workdir_reports_the_damage_in_one_line(workdir, tmp_path, capsys, command, case,
                                                                        name, damage, expected):
    damaged = _damaged_copy(workdir, tmp_path, damage)
    before = _files(damaged)
    capsys.readouterr()
    assert _command(command, damaged, tmp_path)() == 2
    err = capsys.readouterr().err
    prefix = f"genrec {command}: error: "
    assert err.startswith(prefix), err
    _assert_one_line(err[len(prefix):], damaged / name, expected)
    assert _files(damaged) == before  # nothing rewritten


def test_the_cli_process_exits_2_without_a_traceback(workdir, tmp_path):
    damaged = _damaged_copy(workdir, tmp_path, _edit_json(CONFIG_FILE, lambda c: c.update(note="x")))
    done = subprocess.run([sys.executable, "-m", "serving.cli", "eval", "--workdir", str(damaged)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    prefix = "genrec eval: error: "
    assert done.stderr.startswith(prefix) and "Traceback" not in done.stderr, done.stderr[-3000:]
    _assert_one_line(done.stderr[len(prefix):], damaged / CONFIG_FILE, "unknown top-level keys ['note']")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"workdir": "w"}', "\udcff"])
def test_a_damaged_rl_init_record_is_one_line_naming_it(tmp_path, text):
    """RL's rl_init.json (and a warm start's init_from.json, read by the same function)."""
    from training.rl import RL_INIT_FILE
    from training.train import read_start_record

    path = tmp_path / RL_INIT_FILE
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ValueError) as error:
        read_start_record(path, "a supervised start")
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path)) and "restore the workdir" in message
