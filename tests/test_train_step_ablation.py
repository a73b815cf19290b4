"""benchmarks/train_step_ablation.py: each variant changes only what it names.

Speed is measured on the GPU, never here; these checks make sure the device
call will run and that the variants are comparable steps.
"""

import json
import math

import pytest

from tests.benchmark_scripts import load_script

ablation = load_script("train_step_ablation")


def test_variants_without_dropout_train_identically(tmp_path):
    # The tiny preset has no dropout, so turning dropout off or drawing the
    # (unused) masks from another PRNG must leave every step bit-identical.
    out = tmp_path / "rows.json"
    ablation.main(["--preset", "tiny", "--batch-size", "8", "--steps", "2", "--rounds", "1",
                   "--variants", "baseline,no_dropout,rbg,fused_qkv", "--out", str(out)])
    rows = {row["variant"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"baseline", "no_dropout", "rbg", "fused_qkv"}
    assert rows["baseline"]["vs_baseline"] == 1.0
    assert math.isfinite(rows["baseline"]["final_loss"])
    assert rows["no_dropout"]["final_loss"] == rows["baseline"]["final_loss"]
    assert rows["rbg"]["final_loss"] == rows["baseline"]["final_loss"]
    # Fused projections: the same math in other kernels (float reassociation only).
    assert rows["fused_qkv"]["final_loss"] == pytest.approx(rows["baseline"]["final_loss"], rel=1e-5)
    for row in rows.values():
        assert row["steps_timed"] == 2 and row["step_ms"] > 0
        assert row["gflop_per_step"] > 0 and row["gbytes_per_step"] > 0


def test_partial_steps_compute_the_step_loss(tmp_path):
    # forward and grad leave the state as it is, so with the same step key
    # they see the same parameters and must report the same loss.
    out = tmp_path / "rows.json"
    ablation.main(["--preset", "tiny", "--batch-size", "8", "--steps", "2", "--rounds", "1",
                   "--variants", "grad,forward", "--out", str(out)])
    rows = {row["variant"]: row for row in json.loads(out.read_text())["rows"]}
    assert math.isfinite(rows["grad"]["final_loss"])
    assert rows["forward"]["final_loss"] == pytest.approx(rows["grad"]["final_loss"], rel=1e-5)
    # No backward pass: XLA counts fewer FLOPs for the loss alone.
    assert rows["forward"]["gflop_per_step"] < rows["grad"]["gflop_per_step"]


@pytest.mark.parametrize("args, named", [(["--variants", "baseline,flash"], "flash"),
                                         (["--loss", "apao_pairwise+fused"], "fused")])
def test_unknown_variant_or_loss_is_a_usage_error(args, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ablation.main(args)
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def test_pairwise_step_is_ablated_like_the_ce_step(tmp_path):
    # The same variants on the pairwise step: its negatives come from the
    # step's key, so forward and grad still see the same loss, and decoding
    # 1 + K candidates costs more FLOPs than the CE step's one.
    out = {}
    for loss in ("ce", "apao_pairwise@4"):
        out[loss] = tmp_path / f"{loss}.json"
        ablation.main(["--preset", "tiny", "--batch-size", "8", "--steps", "1", "--rounds", "1",
                       "--loss", loss, "--variants", "forward,grad", "--out", str(out[loss])])
    pairwise = json.loads(out["apao_pairwise@4"].read_text())
    ce = json.loads(out["ce"].read_text())
    assert (pairwise["loss"], ce["loss"]) == ("apao_pairwise@4", "ce")
    rows = {row["variant"]: row for row in pairwise["rows"]}
    ce_rows = {row["variant"]: row for row in ce["rows"]}
    assert rows["forward"]["final_loss"] == pytest.approx(rows["grad"]["final_loss"], rel=1e-5)
    assert rows["forward"]["final_loss"] != pytest.approx(ce_rows["forward"]["final_loss"], rel=1e-3)
    assert rows["grad"]["gflop_per_step"] > 1.2 * ce_rows["grad"]["gflop_per_step"]


def test_data_errors_are_not_reported_as_loss_errors(tmp_path):
    with pytest.raises(ValueError, match="found 0"):  # an empty data folder, a valid loss
        ablation.main(["--data", str(tmp_path), "--loss", "ce"])
