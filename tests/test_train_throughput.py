"""benchmarks/train_throughput.py: the ``--kinds`` grammar and the rows it
writes. Speed is measured on the GPU, never here."""

import json
import math

import pytest

from tests.benchmark_scripts import load_script

throughput = load_script("train_throughput")


def test_kind_entries_set_negatives_and_the_shared_bos_position():
    assert throughput.parse_kind("ce").kind == "ce"
    default = throughput.parse_kind("apao_pairwise")
    assert (default.neg_k, default.share_bos_position) == (100, False)
    shared = throughput.parse_kind("apao_pairwise@20+shared")
    assert (shared.kind, shared.neg_k, shared.share_bos_position) == ("apao_pairwise", 20, True)
    for bad in ("apao_pairwise+fast", "nonsense", "apao_pairwise@0"):
        with pytest.raises(ValueError, match="--kinds entry"):
            throughput.parse_kind(bad)


def test_shared_and_per_candidate_pairwise_steps_train_alike_without_dropout(tmp_path):
    # The tiny preset has no dropout, so decoding the BOS position once per
    # example or once per candidate is the same loss: both rows must train to
    # the same value (the option changes the work, not the step).
    out = tmp_path / "rows.json"
    throughput.main(["--preset", "tiny", "--batch-sizes", "8", "--kinds", "apao_pairwise@4,apao_pairwise@4+shared",
                     "--dtypes", "float32", "--devices", "1", "--steps", "2", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [row["kind"] for row in rows] == ["apao_pairwise@4", "apao_pairwise@4+shared"]
    assert all(math.isfinite(row["final_loss"]) and row["step_ms"] > 0 for row in rows)
    assert rows[0]["final_loss"] == pytest.approx(rows[1]["final_loss"], rel=1e-4)


def test_models_pick_the_t5_numerics():
    assert throughput.model_spec("t5_small_rec", "float32", "default") == throughput.ModelSpec(
        preset="t5_small_rec", dtype="float32")
    hf = throughput.model_spec("t5_small_rec", "float32", "hf")
    assert (hf.attention_dropout, hf.ffn_dropout, hf.attention_logit_scale, hf.init) == (
        0.1, 0.1, "unscaled", "hf_t5")
    with pytest.raises(SystemExit) as exit_info:
        throughput.main(["--preset", "tiny", "--models", "default,huggingface"])
    assert exit_info.value.code == 2


def test_unknown_kind_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        throughput.main(["--preset", "tiny", "--kinds", "ce,apao_pairwise+fast"])
    assert exit_info.value.code == 2
