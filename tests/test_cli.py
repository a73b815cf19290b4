"""serving/cli.py: --help everywhere, build-index on a synthetic dataset, and
a tiny end-to-end demo followed by eval and the batch job on its workdir."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from logging_state import kept_logging, restore_logging  # noqa: F401 (autouse)

from constrained.index import TrieIndex
from serving.cli import main

SUBCOMMANDS = ["demo", "train", "eval", "recommend", "build-index", "build-sids", "synth"]

# A demo that trains for a few steps on a small synthetic dataset.
TINY_DEMO = [
    "--set", "num_steps=6", "--set", "eval_every=3", "--set", "log_every=3",
    "--set", "batch_size=32", "--set", "eval.batch_size=64", "--set", "eval.max_examples=64",
    "--set", "data.synthetic.num_users=80", "--set", "data.synthetic.num_items=120",
    "--set", "data.synthetic.codebook_size=8", "--set", "model.num_encoder_layers=1",
    "--set", "model.num_decoder_layers=1",
]



@pytest.mark.parametrize("command", [[]] + [[c] for c in SUBCOMMANDS])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: genrec " + (f"{command[0]} " if command else ""))
    if not command:
        assert all(c in out for c in SUBCOMMANDS)


def test_synth_then_build_index(tmp_path, capsys):
    data_dir = tmp_path / "data"
    assert main(["synth", "--out", str(data_dir), "--name", "toy", "--num-items", "300",
                 "--num-users", "50", "--codebook-size", "8"]) == 0
    out_file = tmp_path / "index.npz"
    assert main(["build-index", "--data", str(data_dir), "--out", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "memory:" in out and "total" in out and "0 SIDs shared" in out
    index = TrieIndex.load(out_file)
    assert index.num_items == 300 and index.num_levels == 3


def test_missing_workdir_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", "--workdir", str(tmp_path / "nothing")]) == 2
    assert "not a genrec training workdir" in capsys.readouterr().err


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    buffer = io.StringIO()
    with kept_logging(), contextlib.redirect_stdout(buffer):
        code = main(["demo", "--workdir", str(workdir), *TINY_DEMO])
    return code, buffer.getvalue(), workdir


def test_demo_end_to_end(demo_run):
    code, out, workdir = demo_run
    assert code == 0
    table = out[out.index("Test split"):]
    assert "recall@10" in table and "popularity" in table
    assert out.count("top-10:") == 3
    results = json.loads((workdir / "results.json").read_text())
    assert results["test_metrics"]["num_examples"] == 80


def test_demo_rl_fine_tunes_the_demo_run_and_recommends_from_it(demo_run):
    """`genrec demo --rl` on a finished demo: reuses its run, fine-tunes it with V-STAR (2 tiny steps) into
    <workdir>_rl, prints both test rows and recommends from the RL run (a genrec rl workdir)."""
    _, _, workdir = demo_run
    buffer = io.StringIO()
    rl_tiny = ["rl.num_steps=2", "rl.eval_every=1", "rl.batch_size=8", "rl.num_rollouts=4", "log_every=1"]
    with kept_logging(), contextlib.redirect_stdout(buffer):
        code = main(["demo", "--workdir", str(workdir), "--rl", *TINY_DEMO,
                     *[arg for override in rl_tiny for arg in ("--set", override)]])
    out = buffer.getvalue()
    assert code == 0, out
    rl_workdir = workdir.with_name(workdir.name + "_rl")
    rl_results = json.loads((rl_workdir / "results.json").read_text())
    assert rl_results["final_step"] == 2 and rl_results["test_metrics"]["num_examples"] == 80
    table = out[out.index("Test split after RL"):]
    assert "supervised" in table and "+ V-STAR RL" in table and f"{rl_workdir}" in out
    assert out.count("top-10:") == 3  # recommended once, from the RL run


def test_eval_and_recommend_on_demo_workdir(demo_run, tmp_path, capsys):
    _, _, workdir = demo_run
    capsys.readouterr()
    assert main(["eval", "--workdir", str(workdir), "--split", "valid", "--max-examples", "64"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["split"] == "valid" and metrics["metrics"]["num_examples"] == 64
    assert 0.0 <= metrics["metrics"]["ndcg@10"] <= metrics["metrics"]["recall@10"] <= 1.0

    ranks_file, prefix_file = tmp_path / "ranks.npy", tmp_path / "prefix_ranks.npy"
    assert main(["eval", "--workdir", str(workdir), "--split", "valid", "--max-examples", "32",
                 "--save-prefix-ranks", str(prefix_file)]) == 2
    assert "--save-prefix-ranks needs --diagnose" in capsys.readouterr().err
    assert main(["eval", "--workdir", str(workdir), "--split", "valid", "--max-examples", "32", "--diagnose",
                 "--save-ranks", str(ranks_file), "--save-prefix-ranks", str(prefix_file)]) == 0
    out = capsys.readouterr().out
    diagnosed = json.loads(out.strip().splitlines()[-1])["metrics"]
    levels = sorted(key for key in diagnosed if key.startswith("prefix_in_beam@"))
    assert len(levels) >= 2 and "target prefix still in the" in out
    assert 0.0 <= diagnosed["unconstrained_valid_fraction"] <= 1.0
    ranks = np.load(ranks_file)
    assert ranks.shape == (32,) and np.mean((ranks >= 1) & (ranks <= 10)) == diagnosed["recall@10"]
    # Per-user prefix ranks: row t-1 reproduces prefix_in_beam@t, the last row is the final rank.
    prefix_ranks = np.load(prefix_file)
    assert prefix_ranks.shape == (len(levels), 32)
    np.testing.assert_array_equal(prefix_ranks[-1], ranks)
    for t in range(1, len(levels) + 1):
        assert np.mean(prefix_ranks[t - 1] > 0) == diagnosed[f"prefix_in_beam@{t}"]

    out_dir = tmp_path / "recs"
    assert main(["recommend", "--workdir", str(workdir), "--out", str(out_dir), "--users-per-shard", "50",
                 "--batch-size", "50"]) == 0
    lines = [json.loads(l) for s in ("00000", "00001") for l in (out_dir / f"shard-{s}.jsonl").read_text().splitlines()]
    assert len(lines) == 80 and all(len(line["items"]) == 10 for line in lines)


def test_demo_names_the_data_it_trains_on():
    # `genrec demo --set data.data_dir=DIR` trained on DIR while its first line said the synthetic data.
    from serving.cli import _demo_dataset
    from training.config import apply_overrides, load_config_file

    config = load_config_file(Path(__file__).resolve().parents[1] / "tpu_configs" / "cpu_smoke.py")
    assert _demo_dataset(config) == "built-in synthetic dataset"
    assert _demo_dataset(apply_overrides(config, ["data.data_dir=extra"])) == "extra"
