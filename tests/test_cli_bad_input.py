"""The audit's inputs that gave a traceback instead of one line (exit 2 from the CLI); and Ctrl-C, which
ends a command with one line and exit 130 (its traceback only with --verbose)."""

import os

import numpy as np
import pytest
from logging_state import restore_logging  # noqa: F401 (autouse: every test keeps the logging state)

from genrec.console import run_command
from serving.cli import main


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"genrec {command}: error: "), err
    return lines[0]


@pytest.mark.parametrize("command", ["train", "demo"])
def test_a_config_file_that_is_not_python_is_one_line(command, tmp_path, capsys):
    notes = tmp_path / "README.md"
    notes.write_text("# notes\n")
    assert main([command, "--config", str(notes), "--workdir", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys.readouterr().err, command)
    assert str(notes) in line and "not a Python config file" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value", [("--levels", "0"), ("--codes", "0"), ("--levels", "-1"), ("--iters", "0")])
def test_build_sids_sizes_below_one_are_usage_errors(flag, value, tmp_path, capsys):
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    with pytest.raises(SystemExit) as exit_info:
        main(["build-sids", "--embeddings", str(tmp_path / "emb.npy"), "--out",
              str(tmp_path / "o" / "x.index.rq-kmeans.json"), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be an integer >= 1, got {value}" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--num-items", "5", "--codebook-size", "16"],
     "--num-items 5 is fewer than the 16 clusters (one per level-0 code, --codebook-size 16): "
     "give --num-items 16 or more, or a smaller --codebook-size"),
    (["--num-items", "5000", "--codebook-size", "4"],
     "--num-items 5000 is more than the 64 distinct SIDs of --num-levels 3 and --codebook-size 4: "
     "give --num-items 64 or fewer, or a larger --codebook-size or --num-levels"),
])
def test_synth_item_count_that_does_not_fit_says_what_is_needed(argv, expected, tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), *argv]) == 2
    assert _one_error_line(capsys.readouterr().err, "synth") == f"genrec synth: error: {expected}"
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("flag", ["--num-items", "--num-users", "--num-levels", "--codebook-size"])
def test_synth_sizes_below_one_are_usage_errors(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path / "s"), flag, "0"])
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be an integer >= 1, got 0" in capsys.readouterr().err


def test_synth_small_codebook_works(tmp_path, capsys):
    """Two clusters cannot have the default 3 likely successors each: the CLI asks for what exists."""
    assert main(["synth", "--out", str(tmp_path / "s"), "--num-items", "4", "--num-users", "5",
                 "--codebook-size", "2"]) == 0


def test_interrupt_is_one_line_and_exit_130(tmp_path, capsys):
    out = tmp_path / "out"

    def body():
        out.mkdir()
        raise KeyboardInterrupt

    assert run_command("genrec recommend", body, outputs=[out]) == 130
    assert capsys.readouterr().err == "genrec recommend: interrupted (Ctrl-C); run the same command again to resume\n"
    assert out.is_dir()  # what the command wrote is kept: the rerun resumes from it
    with pytest.raises(KeyboardInterrupt):
        run_command("genrec recommend", lambda: (_ for _ in ()).throw(KeyboardInterrupt), verbose=True)


def test_interrupt_during_recommend_is_one_line(monkeypatch, tmp_path, capsys):
    import serving.batch_job

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(serving.batch_job, "main", interrupted)
    assert main(["recommend", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.splitlines() == [
        "genrec recommend: interrupted (Ctrl-C); run the same command again to resume"]


@pytest.mark.parametrize("where", ["set-up", "import"])
def test_interrupt_during_train_set_up_is_one_line(where, monkeypatch, tmp_path, capsys):
    import training.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # set-up: inside the command (loading the config); import: before it, while genrec train imports JAX.
    monkeypatch.setattr(training.train, "load_config_file" if where == "set-up" else "main", interrupted)
    assert main(["train", "--config", "x.py", "--workdir", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err.splitlines() == [
        "genrec train: interrupted (Ctrl-C); run the same command again to resume"]
    with pytest.raises(KeyboardInterrupt):
        main(["train", "--config", "x.py", "--workdir", str(tmp_path / "run"), "--verbose"])


_RESUME = "; run the same command again to resume"


@pytest.mark.parametrize("argv, expected", [
    (["train", "--config", "c.py", "--workdir", "w"], _RESUME),
    (["train", "--config", "c.py", "--workdir", "w", "--no-resume"],
     "; to resume, run the command again without --no-resume (with it, it starts over)"),
    (["rl", "--workdir", "w", "--no-res"],
     "; to resume, run the command again without --no-resume (with it, it starts over)"),
    (["demo", "--workdir", "w"], _RESUME),
    (["demo", "--workdir", "w", "--fresh"], "; to resume, run the command again without --fresh (with it, it "
                                            "starts over)"),
    (["recommend", "--workdir", "w", "--out", "o"], _RESUME),
    (["recommend", "--workdir", "w", "--out", "o", "--runner", "beam", "--", "--runner=DataflowRunner"],
     "; the beam runner does not resume: remove the partial --out directory or give another --out, then run again"),
    (["recommend", "--workdir", "w", "--out", "o", "--runner=beam"],
     "; the beam runner does not resume: remove the partial --out directory or give another --out, then run again"),
    (["recommend", "--workdir", "w", "--out", "o", "--runner", "local", "--", "--runner=beam"], _RESUME),
    (["eval", "--workdir", "w"], ""),
    (["build-index", "--data", "d", "--out", "o.npz"], ""),
    (["build-sids", "--embeddings", "e.npy", "--out", "o"], ""),
    (["synth", "--out", "o"], ""),
    (["convert", "--input", "i.csv", "--out", "o"], ""),
])
def test_interrupt_hint_depends_on_the_command_and_its_flags(argv, expected, monkeypatch, capsys):
    import serving.cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # Ctrl-C before the command's own run_command (the delegated commands) and inside it (demo, eval, build-index).
    monkeypatch.setattr(serving.cli, "_main", lambda argv: run_command(f"genrec {argv[0]}", interrupted))
    assert main(argv) == 130
    assert capsys.readouterr().err.splitlines() == [f"genrec {argv[0]}: interrupted (Ctrl-C){expected}"]
    monkeypatch.setattr(serving.cli, "_main", interrupted)
    assert main(argv) == 130
    assert capsys.readouterr().err.splitlines() == [f"genrec {argv[0]}: interrupted (Ctrl-C){expected}"]


def test_recommend_max_shards_below_zero_is_a_usage_error(tmp_path, capsys):
    # -1 acted as 0 ("stopped after 0 shards"); refused before the workdir is read.
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--max-shards", "-1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --max-shards: must be an integer >= 0, got -1" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value", [("--top-k", "0"), ("--top-k", "-2"), ("--num-beams", "0"),
                                         ("--batch-size", "0"), ("--devices", "0"), ("--users-per-shard", "0")])
def test_recommend_sizes_below_one_are_usage_errors(flag, value, tmp_path, capsys):
    # They said "top_k=0 must be >= 1" (the Python spelling) after loading the model; now the flag's usage error.
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "out"), flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be an integer >= 1, got {value}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _seed_command(command, tmp_path):
    """The command's argv with real inputs (so that only --seed can fail), its outputs under tmp_path/o."""
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32))
    (tmp_path / "ids.txt").write_text("".join(f"i{i}\n" for i in range(12)))
    (tmp_path / "log.csv").write_text("u,i,t\n" + "".join(f"u{u},i{(u + t) % 12},{t}\n" for u in range(6)
                                                           for t in range(4)))
    return {
        "synth": ["synth", "--out", str(tmp_path / "o"), "--num-items", "20", "--num-users", "5",
                  "--codebook-size", "4"],
        "build-sids": ["build-sids", "--embeddings", str(tmp_path / "emb.npy"), "--levels", "2", "--codes", "3",
                       "--out", str(tmp_path / "o" / "x.index.rq-kmeans.json")],
        "convert": ["convert", "--interactions", str(tmp_path / "log.csv"), "--user-col", "u", "--item-col", "i",
                    "--time-col", "t", "--k-core", "1", "--out", str(tmp_path / "o"), "--item-embeddings",
                    str(tmp_path / "emb.npy"), "--embedding-ids", str(tmp_path / "ids.txt"), "--levels", "2",
                    "--codes", "3"],
    }[command]


@pytest.mark.parametrize("command", ["synth", "build-sids", "convert"])
@pytest.mark.parametrize("value", ["-1", "4294967296", "1.5"])
def test_seeds_outside_0_to_2_to_the_32_are_usage_errors(command, value, tmp_path, capsys):
    # -1 was NumPy's "ValueError: expected non-negative integer" traceback; NumPy takes seeds above 2**32 - 1,
    # which other seeded code (JAX's keys) does not: every --seed is one 32-bit unsigned integer.
    with pytest.raises(SystemExit) as exit_info:
        main([*_seed_command(command, tmp_path), "--seed", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --seed: must be an integer from 0 to 4294967295, got {value}" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["synth", "build-sids", "convert"])
def test_the_largest_seed_is_accepted(command, tmp_path, capsys):
    assert main([*_seed_command(command, tmp_path), "--seed", "4294967295"]) == 0
    assert (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--num-levels", "27"], "--num-levels 27 is more than the 26 levels a SID can have (tokens <a_..> to <z_..>): "
                             "give --num-levels 26 or fewer"),
    (["--codebook-size", "70000", "--num-levels", "1", "--num-items", "70000"],
     "--codebook-size 70000 is more than the 65536 codes a SID level can have: give --codebook-size 65536 or fewer"),
])
def test_synth_sid_shapes_that_cannot_be_written_are_one_line(argv, expected, tmp_path, capsys):
    # 27 levels was an OverflowError traceback (16 ** 26 in a C long), 70000 codes a 36 GiB MemoryError.
    assert main(["synth", "--out", str(tmp_path / "s"), *argv]) == 2
    assert _one_error_line(capsys.readouterr().err, "synth") == f"genrec synth: error: {expected}"
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("levels", [17, 20, 26])
def test_synth_writes_sids_of_many_levels(levels, tmp_path, capsys):
    # 16 ** (levels - 1) SIDs a cluster overflowed a C long from 17 levels on (OverflowError traceback).
    assert main(["synth", "--out", str(tmp_path / "s"), "--num-levels", str(levels), "--num-items", "40",
                 "--num-users", "8"]) == 0
    from genrec.datasets import find_duplicate_sids, load_sid_dataset

    data = load_sid_dataset(tmp_path / "s")
    assert data.sid_codes.shape == (40, levels) and find_duplicate_sids(data.sid_codes) == []


@pytest.mark.parametrize("command", ["build-sids", "synth", "convert"])
def test_stdout_closed_early_stops_quietly_with_141(command, tmp_path):
    # `genrec build-sids ... | head -12`: printing the report raised BrokenPipeError (a traceback, and another at
    # the interpreter's flush at exit); now the command stops quietly with 128 + SIGPIPE, as a shell tool does.
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    argv = [a for a in _seed_command(command, tmp_path)]
    process = subprocess.Popen([sys.executable, "-m", "serving.cli", *argv], cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(repo)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # the reader is gone before the command prints anything
    err = process.stderr.read()
    assert process.wait(timeout=300) == 141, err
    assert err == ""


def test_a_broken_pipe_other_than_stdout_keeps_its_traceback(capsys):
    """Only stdout's reader going away stops a command quietly; a BrokenPipeError of another pipe is a bug."""

    def body():
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        run_command("genrec build-sids", body)


def _id_files(tmp_path):
    """emb.npy (12 rows; nan.npy: row 7 NaN) and id files for them, one per case below."""
    embeddings = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    np.save(tmp_path / "emb.npy", embeddings)
    embeddings[7, 1] = np.nan
    np.save(tmp_path / "nan.npy", embeddings)
    np.save(tmp_path / "flat.npy", embeddings[:, 0])
    ids = [f"i{i}" for i in range(12)]
    import json

    (tmp_path / "dup.json").write_text(json.dumps([1, "1", *range(2, 12)]))
    (tmp_path / "nested.json").write_text(json.dumps([[1, 2], *range(1, 12)]))
    (tmp_path / "bom.json").write_text(json.dumps(ids), encoding="utf-8-sig")
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    (tmp_path / "log.csv").write_text("u,i,t\n" + "".join(f"u{u},i{(u + t) % 12},{t}\n" for u in range(6)
                                                           for t in range(4)))


def _sids_argv(command, tmp_path, embeddings, ids):
    if command == "build-sids":
        return ["build-sids", "--embeddings", str(tmp_path / embeddings), "--item-ids", str(tmp_path / ids),
                "--levels", "2", "--codes", "3", "--out", str(tmp_path / "o" / "x.index.rq-kmeans.json")]
    return ["convert", "--interactions", str(tmp_path / "log.csv"), "--user-col", "u", "--item-col", "i",
            "--time-col", "t", "--k-core", "1", "--out", str(tmp_path / "o"), "--item-embeddings",
            str(tmp_path / embeddings), "--embedding-ids", str(tmp_path / ids), "--levels", "2", "--codes", "3"]


@pytest.mark.parametrize("command", ["build-sids", "convert"])
@pytest.mark.parametrize("embeddings, ids, extra, expected", [
    # build-sids said only "item ids must be unique" (after k-means), without the file or the id.
    ("emb.npy", "dup.json", [], "dup.json: item id '1' is given more than once (1 and \"1\" are one id: ids are "
                                "compared as strings); give each embedding row its own id"),
    # [1, 2] was taken as the id "[1, 2]".
    ("emb.npy", "nested.json", [], "nested.json: entry 0 is [1, 2], a list; item ids must be strings or integers"),
    # convert said only "malformed JSON at line 1, column 1"; build-sids gave the reason.
    ("emb.npy", "bom.json", [], "bom.json: malformed JSON at line 1, column 1: Unexpected UTF-8 BOM (decode using "
                                "utf-8-sig); expected a JSON list of item ids"),
    # The file was not named ("embeddings row 7 has NaN or inf values").
    ("nan.npy", "ids.json", [], "nan.npy: row 7 (item 'i7') has NaN or inf values; fix it, or drop it "
                                "and its item id"),
    # "embeddings must be [num_items > 0, dim], got shape (12,)" (build-sids), without the file.
    ("flat.npy", "ids.json", [], "flat.npy: holds an array of shape [12]; save the float [num_items, dim] embeddings "
                                 "with numpy.save"),
    # "... check the index file", after loading everything; build-sids has no index file to check.
    ("emb.npy", "ids.json", ["--codes", "100000"],
     "--codes 100000 is more than the 65536 codes a SID level can have; give --codes 65536 or fewer"),
    ("emb.npy", "ids.json", ["--levels", "26"], "--levels 26 and the disambiguation level make 27 SID levels, more "
                                                "than the 26 a SID can have (<a_..> to <z_..>); give --levels 25 or "
                                                "fewer, or --no-disambiguate"),
])
def test_embedding_and_id_file_mistakes_are_one_line_naming_the_file(command, embeddings, ids, extra, expected,
                                                                     monkeypatch, tmp_path, capsys):
    import genrec.rqkmeans

    _id_files(tmp_path)
    if extra:  # refused before any clustering
        monkeypatch.setattr(genrec.rqkmeans, "residual_kmeans", lambda *a, **k: pytest.fail("k-means ran"))
    assert main([*_sids_argv(command, tmp_path, embeddings, ids), *extra]) == 2
    line = _one_error_line(capsys.readouterr().err, command)
    assert line.endswith(expected), line
    assert not (tmp_path / "o").exists()


def test_a_text_ids_file_with_a_byte_order_mark_is_read(tmp_path, capsys):
    # Its first id was read with the BOM and reported as an item without an embedding.
    _id_files(tmp_path)
    (tmp_path / "ids.txt").write_text("".join(f"i{i}\n" for i in range(12)), encoding="utf-8-sig")
    assert main(_sids_argv("convert", tmp_path, "emb.npy", "ids.txt")) == 0
    import json

    assert "i0" in json.loads((tmp_path / "o" / "log.index.rq-kmeans.json").read_text())


def test_more_items_on_one_sid_than_a_codebook_holds_is_one_line(tmp_path, capsys):
    # 65,537 identical rows on one clustered SID need a disambiguation level of 65,537 codes: the vocabulary's
    # "check the index file" message, though build-sids has none.
    np.save(tmp_path / "same.npy", np.ones((65_537, 2), np.float32))
    assert main(["build-sids", "--embeddings", str(tmp_path / "same.npy"), "--levels", "1", "--codes", "1",
                 "--out", str(tmp_path / "o" / "x.index.rq-kmeans.json")]) == 2
    line = _one_error_line(capsys.readouterr().err, "build-sids")
    assert line.endswith("65537 items share one SID of the 1 clustered level, more than the 65536 codes of the "
                         "disambiguation level; give more --codes or --levels, or check the embeddings for "
                         "repeated rows"), line
    assert not (tmp_path / "o").exists()


def test_train_on_users_of_three_interactions_says_why_there_are_no_training_examples(tmp_path, capsys):
    # Every user's 3 interactions are history, validation and test target: it said
    # "0 examples make no batch of 256 with drop_remainder=False".
    from pathlib import Path

    from genrec.synthetic import make_synthetic_dataset, write_sid_dataset

    smoke = str(Path(__file__).resolve().parents[1] / "tpu_configs" / "cpu_smoke.py")
    write_sid_dataset(make_synthetic_dataset(num_items=40, num_users=12, min_length=3, max_length=3),
                      tmp_path / "short", "short")
    assert main(["train", "--config", smoke, "--workdir", str(tmp_path / "run"),
                 "--set", f"data.data_dir={tmp_path / 'short'}"]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert line == (f"genrec train: error: {tmp_path / 'short' / 'short.inter.json'}: no training examples: each of "
                    "its 12 users has 3 interactions, which leave-one-out takes as history, validation target and "
                    "test target: a user gives training examples from a 4th interaction on; give users of 4 or more "
                    "interactions (genrec convert --k-core 4 keeps only those)"), line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("marker", [".genrec.lock", "manifest.json", "sub/.genrec.lock"])
def test_a_refused_command_keeps_an_output_directory_holding_a_job(tmp_path, capsys, marker):
    """A batch job refused by the lock (or by another job's manifest) removed the --out it found missing when
    it started, though another job had made it since: a running job's shards and lock, or a finished job's
    whole output, were deleted (an audit, 2026-12-07). A full disk after some shards deleted them too. A
    directory holding a lock file or a batch manifest is kept; one holding only what this command wrote
    is removed, as before."""
    from genrec.console import UserError

    out = tmp_path / "out"

    def body():  # another process made the directory (or this job wrote a manifest) before the refusal
        (out / marker).parent.mkdir(parents=True)
        (out / marker).write_text("{}")
        (out / "shard-00000.jsonl").write_text("{}\n")
        raise UserError(f"{out} is in use by process 1")

    assert run_command("genrec recommend", body, outputs=[out], resumable_markers=("manifest.json",)) == 2
    assert (out / marker).is_file() and (out / "shard-00000.jsonl").is_file()
    assert capsys.readouterr().err == f"genrec recommend: error: {out} is in use by process 1\n"

    other = tmp_path / "other"

    def refused():
        other.mkdir()
        (other / "config.json").write_text("{}")
        raise UserError("bad setting")

    assert run_command("genrec recommend", refused, outputs=[other], resumable_markers=("manifest.json",)) == 2
    assert not other.exists()


def test_sigterm_of_a_resumable_command_is_one_line_and_exit_143(tmp_path, capsys):
    """A scheduler stopping `genrec recommend` (SIGTERM) ended it by the default action: exit 143, not a
    line in its log, the lock file left. With ``stop_on_sigterm`` the command stops as after Ctrl-C: one
    line, exit 143, outputs kept for the rerun, and the previous handler back afterwards."""
    import signal
    import time

    out = tmp_path / "out"

    def body():
        out.mkdir()
        (out / "manifest.json").write_text("{}")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        return 0

    before = signal.getsignal(signal.SIGTERM)
    started = time.perf_counter()
    assert run_command("genrec recommend", body, outputs=[out], stop_on_sigterm=True) == 143
    assert time.perf_counter() - started < 4
    assert capsys.readouterr().err == ("genrec recommend: stopped by SIGTERM; run the same command again to "
                                       "resume\n")
    assert (out / "manifest.json").is_file() and signal.getsignal(signal.SIGTERM) == before
