"""training/config.py: config files (``FILE:ARG`` variants), typed --set overrides, clear errors, JSON
round trip; every tpu_configs/ variant a docstring lists loads and states its command and expected result
(research/tests/test_config_results.py checks the figures against the kept runs)."""

import ast
import dataclasses
import re
from pathlib import Path

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
        "eval.num_beams=50",
        "model.tie_embeddings=false",
        "data.synthetic.num_users=500",
        "data.data_dir=some/dir",
        "checkpoint.async_save=0",
        "num_steps=7",
    ])
    assert config.optimizer.learning_rate == 1e-3 and isinstance(config.optimizer.learning_rate, float)
    assert config.loss.kind == "apao_pointwise" and config.loss.eta == 5e-5 and config.loss.num_prefixes == 3
    assert config.eval.max_examples is None and base.eval.max_examples == 500
    assert config.eval.ks == (5, 10, 50) and config.eval.num_beams == 50
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
        # Seeds NumPy cannot take crashed after the model was built (ValueError / OverflowError).
        ("seed=-1", r"TrainConfig.seed=-1 must be in \[0, 4294967295\]"),
        ("seed=99999999999999999999", r"TrainConfig.seed=99999999999999999999 must be in \[0, 4294967295\]"),
        ("data.synthetic.seed=-3", r"TrainConfig.data.synthetic.seed=-3 must be in \[0, 4294967295\]"),
        # data.name alone trained on the built-in synthetic data, silently.
        ("data.name=Office", r"data.name='Office' names a dataset in data.data_dir, which is not set"),
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


# The config files (tpu_configs/common.py holds their shared pieces and is no config).
CONFIG_FILES = sorted(p for p in CONFIG_DIR.glob("*.py") if p.name != "common.py")
# A documented variant: "`genrec train --config tpu_configs/FILE[:ARG] ...`: result" (the result may wrap).
VARIANT_RE = re.compile(r"^`genrec train --config tpu_configs/(\S+) [^`]*`:\s*(.*?)(?=\n`|\n\n|\Z)", re.M | re.S)


def documented_variants(path: Path) -> list[tuple[str, str]]:
    """``[(FILE[:ARG], expected result)]`` of every variant ``path``'s docstring lists."""
    return VARIANT_RE.findall(ast.get_docstring(ast.parse(path.read_text())))


VARIANTS = [variant for path in CONFIG_FILES for variant in documented_variants(path)]


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_every_config_file_loads_and_lists_its_variants(path):
    load_config_file(path)  # a bare file gives its defaults
    specs = [spec for spec, _ in documented_variants(path)]
    assert specs, "the docstring lists each variant's exact `genrec train --config ...` command and result"
    assert all(spec.split(":")[0] == path.name for spec in specs), specs
    assert len(specs) == len(set(specs)), "a variant listed twice"


@pytest.mark.parametrize("spec, result", VARIANTS, ids=[spec for spec, _ in VARIANTS])
def test_every_documented_variant(spec, result):
    config = load_config_file(CONFIG_DIR / spec)
    assert re.search(r"Recall@10 0\.\d{3}", result) or result.startswith("to be measured"), result
    if config.data.data_dir is not None:
        assert re.search(r"\(\d+ seeds?\)", result) or result.startswith("to be measured"), result
        assert "Published bar" in ast.get_docstring(ast.parse((CONFIG_DIR / spec.split(":")[0]).read_text()))
        assert not Path(config.data.data_dir).is_absolute()
    if config.model.preset == "t5_small_rec":
        model_config = config.model.build(vocab_size=1026, num_levels=4, max_history=config.data.max_history)
        assert expected_num_params(model_config) == 4_590_976


def test_config_argument_reaches_get_config_and_bad_ones_fail_in_one_line(tmp_path):
    config = load_config_file(f"{CONFIG_DIR}/office_t5.py:loss=apao,dtype=bfloat16", ["seed=3"])
    assert (config.loss.kind, config.model.dtype, config.seed) == ("apao_pointwise", "bfloat16", 3)
    assert load_config_file(CONFIG_DIR / "office_t5.py") == load_config_file(f"{CONFIG_DIR}/office_t5.py:loss=ce")
    with pytest.raises(ValueError) as error:
        load_config_file(f"{CONFIG_DIR}/office_t5.py:los=apao")
    assert str(error.value).endswith("office_t5.py:los=apao: unknown config argument key 'los'; "
                                     "valid keys: loss, dtype, platform, rl, model")
    with pytest.raises(ValueError, match="loss='focal' is not one of: ce, apao, apao_running, msl, apao_pairwise"):
        load_config_file(f"{CONFIG_DIR}/office_t5.py:loss=focal")
    with pytest.raises(ValueError, match=r"config argument key 'loss' is given twice in 'loss=ce,loss=apao'"):
        load_config_file(f"{CONFIG_DIR}/office_t5.py:loss=ce,loss=apao")  # the last one silently won
    with pytest.raises(ValueError, match=r"'apao' is not key=value"):
        load_config_file(f"{CONFIG_DIR}/office_t5.py:apao")
    with pytest.raises(ValueError, match=r"cpu_smoke.py: get_config\(\) takes no argument; drop ':loss=ce'"):
        load_config_file(f"{SMOKE}:loss=ce")
    with pytest.raises(FileNotFoundError, match="absent.py not found"):
        load_config_file(f"{tmp_path}/absent.py:loss=ce")


def test_paper_settings_in_real_data_configs():
    office_apao = load_config_file(CONFIG_DIR / "office_t5.py:loss=apao")
    beauty_apao = load_config_file(CONFIG_DIR / "beauty_t5.py:loss=apao")
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
    assert "--config FILE[:ARG]" in out and "get_config(ARG)" in out
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


def test_a_shipped_config_is_found_from_any_directory(tmp_path, monkeypatch):
    # docs/data.md's walk runs `genrec train --config tpu_configs/cpu_smoke.py` in the user's own project
    # directory: "config file tpu_configs/cpu_smoke.py not found". Shipped configs resolve against the
    # repository when the current directory has none; a file there still comes first.
    monkeypatch.chdir(tmp_path)
    shipped = load_config_file("tpu_configs/cpu_smoke.py")
    assert shipped.model.preset == "tiny"
    assert load_config_file("tpu_configs/office_t5.py:loss=ce,model=default").loss.kind == "ce"
    with pytest.raises(FileNotFoundError, match="config file tpu_configs/nope.py not found"):
        load_config_file("tpu_configs/nope.py")
    (tmp_path / "tpu_configs").mkdir()
    (tmp_path / "tpu_configs" / "cpu_smoke.py").write_text(
        "from training.config import TrainConfig\n\ndef get_config():\n    return TrainConfig(seed=7)\n")
    assert load_config_file("tpu_configs/cpu_smoke.py").seed == 7
