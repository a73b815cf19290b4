"""research/summarize_results.py: mean ± sd cells, the relative-to-CE line,
and skipping of badly named files, on a few fake result files."""

import json
from pathlib import Path

import pytest
from research_scripts import load_script

summarize_results = load_script("summarize_results")


def write_run(folder: Path, name: str, r10: float) -> None:
    # Every metric scales with recall@10, so every relative change is the same.
    test = {"recall@5": r10 / 2, "recall@10": r10, "recall@20": 2 * r10,
            "ndcg@5": r10 / 4, "ndcg@10": r10 / 2, "ndcg@20": r10, "num_examples": 100.0}
    (folder / name).write_text(json.dumps({
        "test_metrics": test, "best_step": 10, "final_step": 20, "early_stopped": True,
        "best_valid_metrics": test, "popularity_test_metrics": test, "workdir": "runs/x"}))


def test_tables_and_relative_change(tmp_path, capsys):
    write_run(tmp_path, "office_t5_ce_s1.json", 0.10)
    write_run(tmp_path, "office_t5_ce_s2.json", 0.20)
    write_run(tmp_path, "office_t5_apao_b01_s1.json", 0.25)
    write_run(tmp_path, "office_t5_apao_b01_s2.json", 0.12)
    write_run(tmp_path, "office_t5_apao_b01_s42.results.json", 0.05)  # reproduce_gpu.sh naming
    write_run(tmp_path, "office_t5_ce.json", 0.99)  # no seed: skipped
    out = tmp_path / "summary.md"

    assert summarize_results.main(["--dir", str(tmp_path), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert out.read_text() == text
    assert not (tmp_path / "summary.md.tmp").exists()
    assert "skipping office_t5_ce.json" in captured.err
    assert "0.99" not in text

    # ce: 0.10, 0.20 -> mean 0.15, sd 0.0707; apao_b01: mean 0.14, sd sqrt(0.0103).
    assert ("| office | t5 | ce | 1, 2 (2) | 0.1500 ± 0.0707 | 0.3000 ± 0.1414 "
            "| 0.0750 ± 0.0354 | 0.1500 ± 0.0707 | 0.0750 ± 0.0354 | 1.00 |") in text
    assert "| office | t5 | apao_b01 | 1, 2, 42 (3) | 0.1400 ± 0.1015 |" in text
    # The validation column is the best checkpoint's NDCG@10 (here equal to the test one).
    assert "| office | t5 | apao_b01 | 42 | 0.0500 | 0.1000 | 0.0250 | 0.0500 | 0.0250 | 10 / 20 | yes |" in text
    # 0.14 / 0.15 - 1 = -6.7%; one seed above 0.20, one below 0.10.
    assert ("- office t5 apao_b01 vs ce: R@10 -6.7%, R@20 -6.7%, N@10 -6.7%, N@20 -6.7%; "
            "seeds above best / below worst ce seed (3 vs 2 seeds): "
            "R@10 1/1, R@20 1/1, N@10 1/1, N@20 1/1") in text
    # Run-level permutation test on R@10: of the C(5, 2) = 10 ways to pick CE's two
    # seeds from {0.10, 0.20, 0.25, 0.12, 0.05}, those with CE sum <= 0.30 (six,
    # the two ties at 0.30 included) give apao_b01 - ce >= the observed -0.01.
    assert "permutation p over seeds (R@10) 0.600 (smallest attainable 0.100)" in text
    # Seeds 1 and 2 are shared: differences +0.15 and -0.08, mean +0.035 on CE's 0.15 there
    # (+23.3%); of the 4 sign patterns, (+,+) and (+,-) reach +0.035 -> p 0.5.
    assert ("seed-matched (2 shared seeds, ce mean there 0.1500) R@10 +23.3%, "
            "sign-flip p 0.500") in text
    assert "ce vs ce" not in text


def test_single_seed_and_errors(tmp_path, capsys):
    write_run(tmp_path, "beauty_t5_msl_s42.json", 0.0612)
    # A run whose best validation NDCG@10 is half its test one: ratio 2.00.
    data = json.loads((tmp_path / "beauty_t5_msl_s42.json").read_text())
    data["best_valid_metrics"]["ndcg@10"] = 0.0153
    (tmp_path / "beauty_t5_msl_s42.json").write_text(json.dumps(data))
    assert summarize_results.main(["--dir", str(tmp_path), "--metrics", "recall@10"]) == 0
    text = capsys.readouterr().out
    assert "| beauty | t5 | msl | 42 (1) | 0.0612 | 0.0153 | 2.00 |" in text
    assert "vs ce" not in text  # no CE runs to compare with

    (tmp_path / "beauty_t5_ce_s1.json").write_text(json.dumps({"best_step": 1}))
    with pytest.raises(SystemExit, match="has no test_metrics"):
        summarize_results.main(["--dir", str(tmp_path)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no result files"):
        summarize_results.main(["--dir", str(empty)])


def test_variant_baseline_and_prefix_survival(tmp_path, capsys):
    write_run(tmp_path, "office_t5_ce_s1.json", 0.10)
    write_run(tmp_path, "office_t5_ce_vce_s1.json", 0.20)
    write_run(tmp_path, "office_t5_apao_vce_s1.json", 0.30)
    write_run(tmp_path, "office_t5_apao_b01_s1.json", 0.05)
    diag = tmp_path / "diagnose"
    diag.mkdir()
    for name, survive in [("office_t5_ce_s1", 0.4), ("office_t5_apao_vce_s1", 0.5),
                          ("office_t5_apao_vce_s2", 0.7)]:
        metrics = {"recall@10": 0.1, "unconstrained_valid_fraction": survive / 2,
                   "prefix_in_beam@1": survive, "prefix_in_beam@2": survive / 4}
        (diag / f"{name}.diagnose.txt").write_text(
            "a table the CLI prints\n" + json.dumps({"split": "test", "metrics": metrics}) + "\n")
    (diag / "broken.diagnose.txt").write_text("no json here\n")

    assert summarize_results.main(["--dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    # apao_vce is compared with ce_vce (+50%), apao_b01 with plain ce (-50%).
    assert "- office t5 apao_vce vs ce_vce: R@10 +50.0%" in text
    assert "- office t5 apao_b01 vs ce: R@10 -50.0%" in text
    assert "- office t5 ce_vce vs ce: R@10 +100.0%" in text
    # Survival is averaged over the diagnosed runs of a group (0.5 and 0.7).
    assert "| office | t5 | apao_vce | 2 | 0.6000 | 0.1500 | 0.3000 |" in text
    assert "| office | t5 | ce | 1 | 0.4000 | 0.1000 | 0.2000 |" in text
    assert "skipping broken.diagnose.txt" in captured.err


def test_baseline_of():
    methods = {"ce", "ce_vce", "apao", "apao_vce", "apao_pairwise_vce"}
    assert summarize_results.baseline_of("ce", methods) is None
    assert summarize_results.baseline_of("apao", methods) == "ce"
    assert summarize_results.baseline_of("apao_pairwise_vce", methods) == "ce_vce"
    assert summarize_results.baseline_of("ce_vce", methods) == "ce"
    assert summarize_results.baseline_of("apao", {"apao"}) is None


def test_valid_ce_section(tmp_path, capsys):
    curves = tmp_path / "valid_curves"
    curves.mkdir()

    def write_curve(name, points):  # points: (ndcg@10, valid_ce) per evaluation
        lines = [json.dumps({"step": 38 * (i + 1), "kind": "valid", "ndcg@10": n, "valid_ce": ce})
                 for i, (n, ce) in enumerate(points)]
        (curves / f"{name}.valid.jsonl").write_text("\n".join(lines) + "\n")

    for seed, low in ((1, 2.0), (2, 2.1)):
        write_run(tmp_path, f"office_t5_ce_s{seed}.json", 0.1)
        write_curve(f"office_t5_ce_s{seed}", [(0.01, 3.0), (0.05, low + 0.1), (0.04, low)])
    for seed, low in ((1, 2.3), (2, 2.4)):
        write_run(tmp_path, f"office_t5_apao_s{seed}.json", 0.1)
        write_curve(f"office_t5_apao_s{seed}", [(0.02, 3.1), (0.06, low)])
    write_run(tmp_path, "office_t5_ce_vce_s1.json", 0.1)
    write_curve("office_t5_ce_vce_s1", [(0.05, 2.5), (0.01, 2.2)])  # _vce selects the lowest CE
    # _fullval validates on other users: compared with ce_fullval, never with ce.
    for method, lows in (("ce_fullval", (1.5, 1.6)), ("apao_fullval", (1.7, 1.8))):
        for seed, low in enumerate(lows, start=1):
            write_run(tmp_path, f"office_t5_{method}_s{seed}.json", 0.1)
            write_curve(f"office_t5_{method}_s{seed}", [(0.05, low)])

    assert summarize_results.main(["--dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    section = text[text.index("### Validation cross-entropy"):]
    rows = {line.split(" | ")[2]: line for line in section.splitlines() if line.startswith("| office")}
    # Lowest CE: ce 2.0, 2.1; apao 2.3, 2.4. At the selected checkpoint (best ndcg@10): ce 2.1, 2.2.
    assert "| 2.0500 ± 0.0707 | 2.1500 ± 0.0707 |" in rows["ce"]
    assert "| 2.3500 ± 0.0707 | 2.3500 ± 0.0707 |" in rows["apao"]
    # apao above both ce runs: the smallest p 2 vs 2 runs allow, 1/6.
    assert "+0.3000 vs ce, p 0.1667" in rows["apao"]
    assert "| 2.2000 | 2.2000 |" in rows["ce_vce"]
    assert rows["ce_fullval"].endswith("|  |")
    assert "+0.2000 vs ce_fullval, p 0.1667" in rows["apao_fullval"]


def test_prefix_weights_section(tmp_path, capsys):
    curves = tmp_path / "train_curves"
    curves.mkdir()

    def write_curve(name, weights_by_step):
        lines = [json.dumps({"step": step, "kind": "train", "prefix_weights": w, "prefix_losses": [3.0, 2.0]})
                 for step, w in weights_by_step]
        (curves / f"{name}.train.jsonl").write_text("\n".join(lines) + "\n")

    # best_step is 10 (write_run): the record at step 5 is the last at or before it.
    write_run(tmp_path, "office_t5_apao_running_s1.json", 0.1)
    write_curve("office_t5_apao_running_s1", [(1, [0.5, 0.5]), (5, [0.6, 0.4]), (15, [0.9, 0.1])])
    write_run(tmp_path, "office_t5_apao_running_s2.json", 0.1)
    write_curve("office_t5_apao_running_s2", [(1, [0.5, 0.5]), (10, [0.7, 0.3]), (20, [0.9, 0.1])])
    write_run(tmp_path, "office_t5_ce_s1.json", 0.1)
    write_curve("office_t5_ce_s1", [(1, [0.0, 0.0]), (10, [0.0, 0.0])])  # what CE logs

    assert summarize_results.main(["--dir", str(tmp_path)]) == 0
    section = capsys.readouterr().out.split("### Prefix weights")[1]
    rows = [line for line in section.splitlines() if line.startswith("| office")]
    # CE logs no prefix weights: no row. Running: first 0.5 / 0.5; at best (steps 5 and 10) 0.65 / 0.35.
    assert rows == ["| office | t5 | apao_running | 2 | 1 | 0.500 / 0.500 | 8 | 0.650 / 0.350 | 3.000 / 2.000 |"]
