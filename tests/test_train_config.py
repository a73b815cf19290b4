"""training/config.py: config files, typed --set overrides, clear errors, JSON round trip;
every tpu_configs/ file loads and documents its command and expected result."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from logging_state import kept_logging

from genrec.models import expected_num_params
from training.config import (
    TrainConfig,
    apply_overrides,
    config_from_json,
    config_to_json,
    load_config_file,
    override_keys,
)
from training.train import main

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "tpu_configs"
SMOKE = CONFIG_DIR / "cpu_smoke.py"


def test_config_file_with_typed_overrides():
    base = load_config_file(SMOKE)
    config = load_config_file(SMOKE, [
        "optimizer.learning_rate=1e-3",
        "loss.kind=apao_pointwise",
        "loss.eta=5e-5",
        "loss.num_prefixes=3",
        "eval.max_examples=none",
        "eval.ks=5,10,50",
        "model.tie_embeddings=false",
        "data.synthetic.num_users=500",
        "data.data_dir=some/dir",
        "checkpoint.async_save=0",
        "num_steps=7",
    ])
    assert config.optimizer.learning_rate == 1e-3 and isinstance(config.optimizer.learning_rate, float)
    assert config.loss.kind == "apao_pointwise" and config.loss.eta == 5e-5 and config.loss.num_prefixes == 3
    assert config.eval.max_examples is None and base.eval.max_examples == 500
    assert config.eval.ks == (5, 10, 50)
    assert config.model.tie_embeddings is False
    assert config.data.synthetic.num_users == 500 and config.data.data_dir == "some/dir"
    assert config.checkpoint.async_save is False and config.num_steps == 7
    # Everything not overridden is the file's value.
    assert config.model.preset == base.model.preset == "tiny"
    assert config.batch_size == base.batch_size


def test_later_override_wins():
    config = apply_overrides(TrainConfig(), ["batch_size=64", "batch_size=128"])
    assert config.batch_size == 128


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError) as error:
        apply_overrides(TrainConfig(), ["optimizer.learnin_rate=1e-3"])
    message = str(error.value)
    assert "'optimizer.learnin_rate'" in message
    assert "optimizer.learning_rate" in message and "loss.kind" in message and "data.synthetic.seed" in message
    with pytest.raises(ValueError, match="unknown config key 'nope'"):
        apply_overrides(TrainConfig(), ["nope=1"])
    with pytest.raises(ValueError, match="unknown config key 'batch_size.x'"):
        apply_overrides(TrainConfig(), ["batch_size.x=1"])


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("batch_size=1.5", r"'batch_size' is an int; got '1.5'"),
        ("optimizer.learning_rate=fast", r"'optimizer.learning_rate' is a float"),
        ("loss.kind=focal", r"'focal' is not one of \['ce', 'msl', 'apao_pointwise', 'apao_pairwise'\]"),
        ("model.dtype=float16", r"not one of \['float32', 'bfloat16'\]"),
        ("checkpoint.async_save=maybe", r"is a bool"),
        ("optimizer=adam", r"'optimizer' is a group; set one of its fields: optimizer.learning_rate"),
        ("batch_size", r"must look like key=value"),
        ("batch_size=0", r"TrainConfig.batch_size=0 must be >= 1"),
        ("eval.ks=5,20", r"must contain 10"),
    ],
)
def test_bad_values_fail_clearly(override, pattern):
    with pytest.raises(ValueError, match=pattern):
        apply_overrides(TrainConfig(), [override])


def test_override_keys_cover_nested_fields():
    keys = override_keys()
    assert "loss.beta" in keys and "data.synthetic.codebook_size" in keys and "eval.num_beams" in keys
    assert "loss" not in keys and "data.synthetic" not in keys
    assert len(keys) == len(set(keys))


def test_json_round_trip():
    config = apply_overrides(TrainConfig(), ["eval.ks=5,10", "loss.kind=msl", "data.data_dir=x"])
    assert config_from_json(config_to_json(config)) == config
    with pytest.raises(ValueError, match="format_version"):
        config_from_json({"format_version": 99, "train_config": {}})


def test_missing_file_and_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_config_file(tmp_path / "absent.py")
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config():\n    return {'batch_size': 3}\n")
    with pytest.raises(ValueError, match="returned dict, expected TrainConfig"):
        load_config_file(bad)


RESULTS_RAW = REPO / "research" / "results_raw"


def assert_expected_recall_matches_results(config_name: str, doc: str) -> None:
    """The docstring's "Expected result (test, N seed(s) ...): Recall@10 X" is the mean
    test Recall@10 of research/results_raw/*/<group>_s<seed>.json, where the group is
    the config's name without ``gpu_`` (<dataset>_<arch>_<method>) unless the
    parenthesis names the runs (``runs <group>_s*``)."""
    match = re.search(r"Expected result \(test, (\d+) seeds? (.*?)\):\s+Recall@10 (0\.\d{4})", doc, re.S)
    assert match, "a measured config states 'Expected result (test, N seeds ...): Recall@10 X'"
    named = re.search(r"runs `*(\w+)_s\*", match[2])
    group = named[1] if named else config_name.removeprefix("gpu_")
    files = sorted(RESULTS_RAW.glob(f"*/{group}_s*.json"))
    values = [json.loads(f.read_text())["test_metrics"]["recall@10"] for f in files]
    assert len(values) == int(match[1]), (config_name, group, [f.name for f in files])
    assert f"{np.mean(values):.4f}" == match[3], (config_name, group, np.mean(values))


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.py")), ids=lambda p: p.stem)
def test_every_shipped_config(path):
    config = load_config_file(path)
    doc = path.read_text().split('"""')[1]
    assert f"--config tpu_configs/{path.name}" in doc, "docstring must give the exact command"
    assert "Expected result" in doc
    if config.data.data_dir is not None:
        assert "Published bar" in doc
        assert not Path(config.data.data_dir).is_absolute()
        if "to be measured" not in doc:
            # A measured figure must be the mean of the kept results (no invented figures).
            assert_expected_recall_matches_results(path.stem, doc)
    if config.model.preset == "t5_small_rec":
        model_config = config.model.build(vocab_size=1026, num_levels=4, max_history=config.data.max_history)
        assert expected_num_params(model_config) == 4_590_976


def test_paper_settings_in_real_data_configs():
    office_apao = load_config_file(CONFIG_DIR / "gpu_office_t5_apao.py")
    beauty_apao = load_config_file(CONFIG_DIR / "gpu_beauty_t5_apao.py")
    assert (office_apao.loss.kind, office_apao.loss.beta, office_apao.loss.eta) == ("apao_pointwise", 0.3, 1e-4)
    assert (beauty_apao.loss.kind, beauty_apao.loss.beta, beauty_apao.loss.eta) == ("apao_pointwise", 0.1, 1e-5)
    for config in (office_apao, beauty_apao):
        assert config.batch_size == 1024 and config.num_epochs == 200 and config.early_stopping_patience == 20
        assert config.eval.num_beams == 20 and config.data.max_history == 20
        assert dataclasses.astuple(config.optimizer)[:4] == (5e-4, 0.01, 0.01, "cosine")


def test_cli_help_and_bad_override(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--set" in out and "--no-resume" in out and "optimizer.learning_rate" in out
    with kept_logging():
        assert main(["--config", str(SMOKE), "--workdir", "unused", "--set", "optimizer.lr=1"]) == 2
    assert capsys.readouterr().err.startswith("genrec train: error: unknown config key 'optimizer.lr'")


def test_score_normalization_follows_the_loss_unless_set():
    from training.config import EvalConfig, score_normalization
    from training.losses import LossConfig

    assert score_normalization(TrainConfig(loss=LossConfig(kind="msl"))) == "trie"
    assert score_normalization(TrainConfig(loss=LossConfig(kind="apao_pointwise"))) == "vocab"
    forced = TrainConfig(loss=LossConfig(kind="msl"), eval=EvalConfig(score_normalization="vocab"))
    assert score_normalization(forced) == "vocab"
    # Old run files without the field read back with the default ("auto").
    payload = config_to_json(TrainConfig(loss=LossConfig(kind="msl")))
    del payload["train_config"]["eval"]["score_normalization"]
    assert score_normalization(config_from_json(payload)) == "trie"


def test_eval_subset_defaults_to_spread_and_old_runs_keep_the_first_examples():
    from training.config import EvalConfig

    assert TrainConfig().eval.subset == "spread"
    assert apply_overrides(TrainConfig(), ["eval.subset=first"]).eval.subset == "first"
    with pytest.raises(ValueError, match="eval.subset"):
        apply_overrides(TrainConfig(), ["eval.subset=random"])
    with pytest.raises(ValueError, match="eval.subset='random'"):
        TrainConfig(eval=EvalConfig(subset="random"))
    # A run file written before the field existed validated on the leading examples.
    payload = config_to_json(TrainConfig(eval=EvalConfig(max_examples=50)))
    del payload["train_config"]["eval"]["subset"]
    assert config_from_json(payload).eval.subset == "first"


def test_selection_metric_must_be_a_known_validation_metric():
    from training.config import EvalConfig

    assert TrainConfig(eval=EvalConfig(selection_metric="valid_ce")).eval.selection_metric == "valid_ce"
    assert TrainConfig(eval=EvalConfig(selection_metric="recall@20")).eval.selection_metric == "recall@20"
    with pytest.raises(ValueError, match="must contain 50"):
        TrainConfig(eval=EvalConfig(selection_metric="ndcg@50"))
    with pytest.raises(ValueError, match="expected 'recall@k'"):
        TrainConfig(eval=EvalConfig(selection_metric="loss"))
