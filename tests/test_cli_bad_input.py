"""The audit's inputs that gave a traceback instead of one line (exit 2 from the CLI)."""

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
