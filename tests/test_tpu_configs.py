"""tpu_configs/: every config that was once a file of its own is still reachable
as ``base.py:arg`` and gives exactly the TrainConfig it gave (golden JSON in
tests/data/configs/, written from the old files); and the TPU variants run as
written on the CPU: their device count, compute dtype and loss go through the
whole train loop (mesh, sharded steps, evaluation, checkpoints) on the 8 fake
CPU devices of conftest.py. Only the scale is shrunk (synthetic data, a small
model, a few steps); they are still untested on a TPU."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tpu_configs.common import T5_MODEL_VARIANTS
from training.config import config_to_json, load_config_file
from training.train import train

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "tpu_configs"
# Each config file that tpu_configs/ once held -> its spelling now (old lane files and
# results name runs by the old file names).
OLD_CONFIG_SPELLINGS = {
    "cpu_smoke": "cpu_smoke.py",
    "gpu_office_t5_ce": "office_t5.py:loss=ce,model=default",
    "gpu_office_t5_apao": "office_t5.py:loss=apao,model=default",
    "gpu_office_t5_apao_running": "office_t5.py:loss=apao_running,model=default",
    "gpu_office_t5_msl": "office_t5.py:loss=msl,model=default",
    "gpu_office_t5_apao_pairwise": "office_t5.py:loss=apao_pairwise,model=default",
    "gpu_office_llama_ce": "office_llama.py:loss=ce",
    "gpu_beauty_t5_ce": "beauty_t5.py:loss=ce,model=default",
    "gpu_beauty_t5_apao": "beauty_t5.py:loss=apao,model=default",
    "gpu_beauty_t5_apao_running": "beauty_t5.py:loss=apao_running,model=default",
    "gpu_beauty_t5_msl": "beauty_t5.py:loss=msl,model=default",
    "gpu_beauty_t5_apao_pairwise": "beauty_t5.py:loss=apao_pairwise,dtype=bfloat16,model=default",
    "tpu_v4_8_office": "office_t5.py:loss=apao,platform=tpu_v4_8,model=default",
    "tpu_v5e_8_office": "office_t5.py:loss=apao,platform=tpu_v5e_8,model=default",
}
TPU_CONFIGS = [spec for spec in OLD_CONFIG_SPELLINGS.values() if "platform=tpu" in spec]
# Scale only: the device count, dtype, loss and optimizer stay as written.
SHRINK = [
    "data.data_dir=none", "data.synthetic.num_users=120", "data.synthetic.num_items=150",
    "data.synthetic.codebook_size=8", "data.max_history=10",
    "model.num_encoder_layers=1", "model.num_decoder_layers=1", "model.d_model=32",
    "model.num_heads=2", "model.head_dim=16", "model.d_ff=64",
    "batch_size=64", "num_steps=4", "eval_every=2", "early_stopping_patience=None",
    "eval.max_examples=32", "eval.batch_size=16",
    "checkpoint.async_save=false", "log_every=2",
]


@pytest.mark.parametrize("old_name", sorted(OLD_CONFIG_SPELLINGS))
def test_every_old_config_file_is_reachable_unchanged(old_name):
    golden = json.loads((REPO / "tests" / "data" / "configs" / f"{old_name}.json").read_text())
    config = load_config_file(CONFIG_DIR / OLD_CONFIG_SPELLINGS[old_name])
    payload = json.loads(json.dumps(config_to_json(config)))
    # The goldens predate the RL stage's settings, which supervised training does not read.
    payload["train_config"].pop("rl")
    # ... and the Hugging Face T5 options, which the old files leave at the preset's (None).
    for key in T5_MODEL_VARIANTS["hf"]:
        assert payload["train_config"]["model"].pop(key) is None, key
    assert payload == golden, OLD_CONFIG_SPELLINGS[old_name]


# Each T5 base's default numerics: hf where that dataset's pre-registered A/B won (docs/results.md).
@pytest.mark.parametrize("base, default_model", [("beauty_t5.py", "hf"), ("office_t5.py", "hf")])
def test_model_hf_changes_only_the_four_hf_t5_options(base, default_model):
    plain = load_config_file(CONFIG_DIR / f"{base}:loss=ce,model=default")
    hf = load_config_file(CONFIG_DIR / f"{base}:loss=ce,model=hf")
    hf_options = dict(attention_dropout=0.1, ffn_dropout=0.1, attention_logit_scale="unscaled", init="hf_t5")
    assert hf == dataclasses.replace(plain, model=dataclasses.replace(plain.model, **hf_options))
    assert load_config_file(CONFIG_DIR / f"{base}:loss=ce") == {"default": plain, "hf": hf}[default_model]
    assert load_config_file(CONFIG_DIR / base) == {"default": plain, "hf": hf}[default_model]
    model_config = hf.model.build(vocab_size=1026, num_levels=4, max_history=20)
    assert {key: getattr(model_config, key) for key in hf_options} == hf_options
    assert model_config.dropout_rate == 0.1  # HF T5 uses its one dropout_rate everywhere
    # Each option alone through --set (the value is "unscaled", not "none", which --set reads as None).
    one = load_config_file(CONFIG_DIR / f"{base}:loss=ce,model=default", ["model.attention_logit_scale=unscaled"])
    assert one.model.build(1026, 4, 20).attention_logit_scale == "unscaled"


def test_llama_base_refuses_model_hf_in_one_line():
    with pytest.raises(ValueError, match="config argument model='hf' is not one of: default$"):
        load_config_file(CONFIG_DIR / "office_llama.py:loss=ce,model=hf")


def test_there_are_tpu_configs():
    assert TPU_CONFIGS, "tpu_configs/ ships configs for TPU slices"


@pytest.mark.parametrize("spec", TPU_CONFIGS)
def test_tpu_config_trains_on_its_device_count(spec, tmp_path, caplog):
    written = load_config_file(CONFIG_DIR / spec)
    config = load_config_file(CONFIG_DIR / spec, SHRINK)
    assert (config.num_devices, config.model.dtype, config.loss) == (
        written.num_devices, written.model.dtype, written.loss)
    assert config.num_devices > 1 and config.model.dtype == "bfloat16"

    with caplog.at_level("INFO", logger="genrec.train"):
        result = train(config, tmp_path, resume=False)
    per_device = config.batch_size // config.num_devices
    assert f"data parallel over {config.num_devices} cpu device(s), {per_device} examples each" in caplog.text
    assert result.final_step == config.num_steps
    assert np.isfinite([result.test_metrics["recall@10"], result.test_metrics["ndcg@10"]]).all()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert losses and np.isfinite(losses).all()
    assert json.loads((tmp_path / "results.json").read_text())["final_step"] == config.num_steps
