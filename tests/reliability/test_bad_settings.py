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
    # Passed the non-negative check (NaN compares False) and failed at RL step 1 as a divergence.
    "rl.level_weights=nan,0.5,1", "rl.level_weights=0.1,inf,1", "rl.level_weights=0.1,-0.2,1",
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


def test_cut_offs_above_the_beam_width_are_refused_before_training():
    # Seen: --set eval.num_beams=4 trained the whole run, then failed at the final test evaluation.
    with pytest.raises(ValueError, match=r"eval.ks=\(5, 10, 20\) has a cut-off above eval.num_beams=4"):
        apply_overrides(TrainConfig(), ["eval.num_beams=4"])
    # Fields tied together can be set in any order: the checks run on the final config.
    for overrides in (["eval.num_beams=4", "eval.ks=1,4", "eval.selection_metric=ndcg@4"],
                      ["eval.selection_metric=ndcg@4", "eval.ks=1,4", "eval.num_beams=4"]):
        assert apply_overrides(TrainConfig(), overrides).eval.ks == (1, 4)
