"""The audit's inputs that gave a traceback instead of one line (exit 2 from the CLI)."""

import numpy as np
import pytest
from logging_state import kept_logging

from serving.cli import main


@pytest.fixture(autouse=True)
def restore_logging():
    with kept_logging():
        yield


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
