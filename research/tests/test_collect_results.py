"""research/collect_results.py: renames and folders as summarize_results and
compare_runs expect, skips badly named runs and unfinished diagnoses, and does
not overwrite different results unless asked."""

import json

import numpy as np
from research_scripts import load_script

collect_results = load_script("collect_results")


def test_collects_and_refuses_to_overwrite(tmp_path, capsys):
    src, dest = tmp_path / "r", tmp_path / "raw"
    src.mkdir()
    (src / "office_t5_ce_s1.results.json").write_text(json.dumps({"test_metrics": {"recall@10": 0.1}}))
    np.save(src / "office_t5_ce_s1.test_ranks.npy", np.array([1, 0, 3], np.int32))
    np.save(src / "office_t5_ce_s1.prefix_ranks.npy", np.array([[2, 4, 1], [1, 0, 3]], np.int32))
    np.save(src / "office_t5_ce_s1.valid_ranks.npy", np.array([0, 0, 7], np.int32))
    (src / "office_t5_ce_s1.diagnose.txt").write_text('table\n{"split": "test", "metrics": {}}\n')
    (src / "office_t5_apao_s2.diagnose.txt").write_text("Traceback: killed in f({'a': 1})\n")
    (src / "scratch.results.json").write_text("{}")
    (src / "office_t5_ce_s1.log").write_text("not collected")
    (src / "office_t5_ce_s1.valid.jsonl").write_text('{"step": 38, "kind": "valid", "valid_ce": 5.0}\n')
    (src / "office_t5_apao_s2.valid.jsonl").write_text('{"step": 38, "kind": "valid", "valid_ce": 5.1}\n')  # cut run
    np.save(src / "office_t5_apao_s2.test_ranks.npy", np.array([5, 5, 5], np.int32))  # its --final evaluation
    (src / "office_t5_ce_s1.train.jsonl").write_text('{"step": 10, "kind": "train", "prefix_weights": [0.5, 0.5]}\n')

    assert collect_results.main([str(src), str(dest)]) == 0
    captured = capsys.readouterr()
    assert "copied 7 files (1 runs)" in captured.out
    assert "skipping scratch.results.json" in captured.err and "skipping office_t5_apao_s2" in captured.err
    assert json.loads((dest / "office_t5_ce_s1.json").read_text())["test_metrics"]["recall@10"] == 0.1
    np.testing.assert_array_equal(np.load(dest / "ranks" / "office_t5_ce_s1.test_ranks.npy"), [1, 0, 3])
    assert np.load(dest / "prefix_ranks" / "office_t5_ce_s1.prefix_ranks.npy").shape == (2, 3)
    np.testing.assert_array_equal(np.load(dest / "valid_ranks" / "office_t5_ce_s1.valid_ranks.npy"), [0, 0, 7])
    assert sorted(p.name for p in (dest / "ranks").iterdir()) == ["office_t5_ce_s1.test_ranks.npy"]
    assert (dest / "diagnose" / "office_t5_ce_s1.diagnose.txt").exists()
    assert not (dest / "office_t5_apao_s2.diagnose.txt").exists()
    assert sorted(p.name for p in (dest / "valid_curves").iterdir()) == ["office_t5_ce_s1.valid.jsonl"]
    assert "skipping office_t5_apao_s2.valid.jsonl" in captured.err
    assert "skipping office_t5_apao_s2.test_ranks.npy" in captured.err
    assert sorted(p.name for p in (dest / "train_curves").iterdir()) == ["office_t5_ce_s1.train.jsonl"]

    # The same files again: nothing differs, fine. A changed result: refused, then forced.
    assert collect_results.main([str(src), str(dest)]) == 0
    (src / "office_t5_ce_s1.results.json").write_text(json.dumps({"test_metrics": {"recall@10": 0.2}}))
    assert collect_results.main([str(src), str(dest)]) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert json.loads((dest / "office_t5_ce_s1.json").read_text())["test_metrics"]["recall@10"] == 0.1
    assert collect_results.main([str(src), str(dest), "--overwrite"]) == 0
    assert json.loads((dest / "office_t5_ce_s1.json").read_text())["test_metrics"]["recall@10"] == 0.2
    assert collect_results.main([str(tmp_path / "absent"), str(dest)]) == 2
