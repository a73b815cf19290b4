"""research/level_profile.py: lane lines to loss settings, the level profile
of a recorded run, and the slope test, on a few fake result files (plain or
gzip-compressed)."""

import gzip
import json

import numpy as np
import pytest
from research_scripts import load_script

level_profile = load_script("level_profile")
pointwise_token_weights = load_script("prefix_weights").pointwise_token_weights


def write(path, text, compressed=False):
    """``text`` at ``path``, or gzip-compressed at ``path.gz`` (as collect_results.py stores it)."""
    if compressed:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


def write_run(folder, name, r10, best_step=30, compressed=False):
    test = {"recall@10": r10, "ndcg@10": r10 / 2}
    write(folder / f"{name}.json", json.dumps({
        "test_metrics": test, "best_valid_metrics": test, "best_step": best_step, "final_step": 50,
        "early_stopped": True}), compressed)


def write_curve(folder, name, weights_by_step, compressed=False):
    curves = folder / "train_curves"
    curves.mkdir(exist_ok=True)
    lines = [json.dumps({"kind": "train", "step": step, "prefix_weights": w, "prefix_losses": [4, 3, 2, 1]})
             for step, w in weights_by_step]
    write(curves / f"{name}.train.jsonl", "\n".join(lines) + "\n", compressed)


def test_lane_lines_give_each_run_its_config_and_overrides(tmp_path):
    (tmp_path / "a.sh").write_text(
        "# office_t5_x_s1|office_t5.py:loss=ce|Office|--set seed=1  (a comment is not a lane line)\n"
        "export LANE_GPU0_A='office_t5_apao_running_e5e4_s2|office_t5.py:loss=apao_running|Office|"
        "--set loss.eta=5e-4 --set seed=2\n"
        "office_t5_ce_s3|office_t5.py:loss=ce|Office|--set seed=3'\n")
    lanes = level_profile.lane_settings(tmp_path)
    assert lanes == {
        "office_t5_apao_running_e5e4_s2": ("office_t5.py:loss=apao_running", ["loss.eta=5e-4", "seed=2"]),
        "office_t5_ce_s3": ("office_t5.py:loss=ce", ["seed=3"]),
    }


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_profiles_and_slope_on_fake_runs(tmp_path, capsys, compressed):
    lanes = tmp_path / "lanes"
    lanes.mkdir()
    (lanes / "l.sh").write_text(
        "export LANE_GPU0_A='office_t5_apao_running_e5e4_s1|office_t5.py:loss=apao_running|Office|"
        "--set loss.eta=5e-4 --set seed=1'\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    write_run(runs, "office_t5_ce_s1", 0.060, compressed=compressed)
    write_run(runs, "office_t5_ce_s2", 0.062)  # a folder may mix both kinds
    write_run(runs, "office_t5_apao_running_e5e4_s1", 0.070, compressed=compressed)
    weights = [(10, [0.25, 0.25, 0.25, 0.25]), (20, [0.4, 0.3, 0.2, 0.1]), (40, [0.7, 0.1, 0.1, 0.1])]
    write_curve(runs, "office_t5_apao_running_e5e4_s1", weights, compressed)
    assert level_profile.main(["--dir", str(runs), "--lanes", str(lanes)]) == 0
    out = capsys.readouterr().out
    # beta 0.3 from office_t5.py:loss=apao_running; the record after the best step (40 > 30) is left out
    c = pointwise_token_weights(np.array([w for _, w in weights[:2]]), sid_length=4, beta=0.3)
    c = c / c.sum(axis=1, keepdims=True)
    averaged, at_best = level_profile.slashed(c.mean(axis=0)), level_profile.slashed(c[-1])
    assert f"| office | t5 | apao_running_e5e4 | 1 | 0.3 | own records | {averaged} | {at_best} |" in out
    assert "| office | t5 | ce | 2 | - | - | 0.250 / 0.250 / 0.250 / 0.250 |" in out
    assert "| office | t5 | 3 | 0.250-" in out


def test_slope_test_finds_a_line_and_not_noise():
    shares = np.linspace(0.25, 0.45, 12)
    slope, p, low, high = level_profile.slope_test(shares, 0.06 + 0.1 * (shares - 0.25), num_permutations=2000)
    assert slope == pytest.approx(0.1) and p < 0.01
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)  # a perfect line: every resample agrees
    rng = np.random.default_rng(0)
    values = rng.normal(0.06, 0.003, 12)
    slope, p_null, low, high = level_profile.slope_test(shares, values, num_permutations=2000)
    assert p_null > 0.05 and low < 0 < high and low < slope < high
    assert slope == pytest.approx(np.polyfit(shares, values, 1)[0])
    assert np.isnan(level_profile.slope_test(np.full(3, 0.25), np.array([0.1, 0.2, 0.3]))[0])
