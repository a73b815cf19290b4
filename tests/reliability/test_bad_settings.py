"""Fault suite: non-finite and out-of-range numeric settings are refused when the
config loads, with one line naming the key (docs/reliability.md)."""

import pytest

from training.config import TrainConfig, apply_overrides

BAD_SETTINGS = [
    "optimizer.learning_rate=nan", "optimizer.learning_rate=inf", "optimizer.learning_rate=0",
    "optimizer.weight_decay=nan", "optimizer.weight_decay=-0.1", "optimizer.eps=-1", "optimizer.eps=0",
    "optimizer.b1=5", "optimizer.b2=1.0", "optimizer.end_learning_rate=-1e-4", "optimizer.warmup_fraction=1",
    "optimizer.grad_clip_norm=nan", "model.dropout_rate=1.5", "model.dropout_rate=-0.1",
    "loss.beta=nan", "loss.eta=inf", "loss.ce_tau=nan",
]


@pytest.mark.parametrize("setting", BAD_SETTINGS)
def test_bad_numeric_setting_is_one_line_naming_the_key(setting):
    key = setting.split("=")[0]
    with pytest.raises(ValueError) as error:
        apply_overrides(TrainConfig(), [setting])
    assert key.split(".")[-1] in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("setting", ["optimizer.learning_rate=1e-2", "optimizer.weight_decay=0", "optimizer.b1=0",
                                     "model.dropout_rate=0", "optimizer.grad_clip_norm=0.5", "loss.eta=0"])
def test_edge_values_inside_the_ranges_are_accepted(setting):
    apply_overrides(TrainConfig(), [setting])
