"""Fault suite: genrec train given a genrec rl workdir (rl_init.json present)
refuses in one line, pointing to genrec rl, and leaves the RL run as it was
(its checkpoints are not called damaged, nor moved aside or wiped)."""

from pathlib import Path

import pytest
from logging_state import kept_logging
from train_cli import RL_TINY, SMOKE, TINY_RUN, rl_arguments, train_tiny_supervised

from serving.cli import main
from training.rl import main as rl_main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rl_workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    with kept_logging():
        train_tiny_supervised(root / "sup")
        assert rl_main(rl_arguments(root / "sup", root / "rl", [*TINY_RUN, *RL_TINY, "rl.num_steps=2"])) == 0
    return root / "rl"


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("flags", [[], ["--no-resume"]])
def test_train_refuses_an_rl_workdir(rl_workdir, flags, capsys):
    before = _tree(rl_workdir)
    capsys.readouterr()
    with kept_logging():
        status = main(["train", "--config", str(REPO / SMOKE), "--workdir", str(rl_workdir), *flags,
                       *[arg for setting in [*TINY_RUN, "num_steps=4"] for arg in ("--set", setting)]])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and "rl_init.json" in err and "genrec rl" in err and "damaged" not in err, err
    assert _tree(rl_workdir) == before
