"""research/collect_results.py: renames and folders as summarize_results and
compare_runs expect, gzip-compressed; skips badly named runs and unfinished
diagnoses, and does not overwrite different results (plain or compressed)
unless asked. The readers give the same tables from compressed files as from
plain copies of them."""

import gzip
import json
import shutil

import numpy as np
import pytest
from research_scripts import load_script

collect_results = load_script("collect_results")
compare_runs = load_script("compare_runs")
raw_files = load_script("raw_files")
summarize_results = load_script("summarize_results")


def load_json(path):
    return json.loads(raw_files.read_text(path))


def test_collects_compressed_and_refuses_to_overwrite(tmp_path, capsys):
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
    assert "collected 7 files (1 runs)" in captured.out and "7 written gzip-compressed" in captured.out
    assert "skipping scratch.results.json" in captured.err and "skipping office_t5_apao_s2" in captured.err
    written = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert written == ["diagnose/office_t5_ce_s1.diagnose.txt.gz", "office_t5_ce_s1.json.gz",
                       "prefix_ranks/office_t5_ce_s1.prefix_ranks.npy.gz", "ranks/office_t5_ce_s1.test_ranks.npy.gz",
                       "train_curves/office_t5_ce_s1.train.jsonl.gz", "valid_curves/office_t5_ce_s1.valid.jsonl.gz",
                       "valid_ranks/office_t5_ce_s1.valid_ranks.npy.gz"]
    for path in dest.rglob("*.gz"):  # real gzip files, holding exactly the source's bytes
        source = src / path.name.removesuffix(".gz").replace("office_t5_ce_s1.json", "office_t5_ce_s1.results.json")
        assert path.read_bytes()[:2] == b"\x1f\x8b" and gzip.decompress(path.read_bytes()) == source.read_bytes()
    assert load_json(dest / "office_t5_ce_s1.json.gz")["test_metrics"]["recall@10"] == 0.1
    np.testing.assert_array_equal(raw_files.load_array(dest / "ranks" / "office_t5_ce_s1.test_ranks.npy.gz"), [1, 0, 3])
    assert "skipping office_t5_apao_s2.valid.jsonl" in captured.err
    assert "skipping office_t5_apao_s2.test_ranks.npy" in captured.err

    # The same files again: nothing differs, nothing written. A changed result: refused, then forced.
    assert collect_results.main([str(src), str(dest)]) == 0
    assert "0 written gzip-compressed, 7 already there" in capsys.readouterr().out
    (src / "office_t5_ce_s1.results.json").write_text(json.dumps({"test_metrics": {"recall@10": 0.2}}))
    assert collect_results.main([str(src), str(dest)]) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert load_json(dest / "office_t5_ce_s1.json.gz")["test_metrics"]["recall@10"] == 0.1
    assert collect_results.main([str(src), str(dest), "--overwrite"]) == 0
    assert load_json(dest / "office_t5_ce_s1.json.gz")["test_metrics"]["recall@10"] == 0.2
    assert collect_results.main([str(tmp_path / "absent"), str(dest)]) == 2


def test_plain_files_already_collected_are_kept_or_replaced_once(tmp_path, capsys):
    """A folder collected before compression holds plain files: equal ones stay plain
    (no second copy), a differing one is refused, and under --overwrite replaced by its .gz."""
    src, dest = tmp_path / "r", tmp_path / "raw"
    src.mkdir()
    dest.mkdir()
    (src / "office_t5_ce_s1.results.json").write_text('{"test_metrics": {"recall@10": 0.1}}')
    (src / "office_t5_ce_s2.results.json").write_text('{"test_metrics": {"recall@10": 0.3}}')
    (dest / "office_t5_ce_s1.json").write_text('{"test_metrics": {"recall@10": 0.1}}')
    (dest / "office_t5_ce_s2.json").write_text('{"test_metrics": {"recall@10": 0.2}}')
    assert collect_results.main([str(src), str(dest)]) == 2
    assert "office_t5_ce_s2.json" in capsys.readouterr().err
    assert collect_results.main([str(src), str(dest), "--overwrite"]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["office_t5_ce_s1.json", "office_t5_ce_s2.json.gz"]
    assert load_json(dest / "office_t5_ce_s2.json.gz")["test_metrics"]["recall@10"] == 0.3


def fake_fetched_dir(src):
    """Two CE and two APAO runs with every kind of result file reproduce_gpu.sh brings back."""
    src.mkdir()
    rng = np.random.default_rng(0)
    for method, shift in (("ce", 0), ("apao", 3)):
        for seed in (1, 2):
            run = f"office_t5_{method}_s{seed}"
            ranks = rng.integers(0, 21 - shift, size=200).astype(np.int32)
            test = {"recall@10": float(np.mean((ranks >= 1) & (ranks <= 10))), "recall@20": float(np.mean(ranks >= 1)),
                    "ndcg@10": 0.05 + seed / 100, "ndcg@20": 0.06 + seed / 100}
            (src / f"{run}.results.json").write_text(json.dumps(
                {"test_metrics": test, "best_valid_metrics": test, "best_step": 40, "final_step": 60,
                 "early_stopped": True}))
            np.save(src / f"{run}.test_ranks.npy", ranks)
            (src / f"{run}.diagnose.txt").write_text(json.dumps({"metrics": {
                "prefix_in_beam@1": 0.9 - shift / 100, "prefix_in_beam@2": 0.5, "unconstrained_valid_fraction": 0.8}}))
            (src / f"{run}.valid.jsonl").write_text("".join(
                json.dumps({"step": step, "kind": "valid", "valid_ce": 5 - step / 100 + seed / 10, "ndcg@10": step})
                + "\n" for step in (20, 40)))
            weights = [0.25] * 4 if method == "ce" else [0.4, 0.3, 0.2, 0.1]
            (src / f"{run}.train.jsonl").write_text("".join(
                json.dumps({"step": step, "kind": "train", "prefix_weights": weights, "prefix_losses": [4, 3, 2, 1]})
                + "\n" for step in (1, 21, 41)))


def test_readers_give_the_same_tables_from_compressed_and_plain_files(tmp_path, capsys):
    src, packed, plain = tmp_path / "r", tmp_path / "packed", tmp_path / "plain"
    fake_fetched_dir(src)
    assert collect_results.main([str(src), str(packed)]) == 0
    assert all(p.name.endswith(".gz") for p in packed.rglob("*") if p.is_file())
    for path in packed.rglob("*.gz"):  # plain copies, as the folders collected before compression hold them
        target = plain / path.relative_to(packed).with_suffix("")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(gzip.decompress(path.read_bytes()))

    tables = [summarize_results.summarize(folder, ["recall@10", "ndcg@10"]) for folder in (packed, plain)]
    assert tables[0].replace(str(packed), "DIR") == tables[1].replace(str(plain), "DIR")
    assert "| office | t5 | apao | 1, 2 (2) |" in tables[0]
    for section in ("### Prefix survival", "### Validation cross-entropy", "### Prefix weights"):
        assert section in tables[0]

    outputs = []
    for folder, suffix in ((packed, ".npy.gz"), (plain, ".npy")):
        group = {method: [str(folder / "ranks" / f"office_t5_{method}_s{s}.test_ranks{suffix}") for s in (1, 2)]
                 for method in ("ce", "apao")}
        capsys.readouterr()
        assert compare_runs.main(["--a", *group["ce"], "--b", *group["apao"], "--resamples", "200"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and "| recall@10 |" in outputs[0]

    # A run stored both plain and compressed would count twice: refused, naming both.
    shutil.copy(plain / "office_t5_ce_s1.json", packed / "office_t5_ce_s1.json")
    with pytest.raises(SystemExit, match="are copies of one file"):
        summarize_results.main(["--dir", str(packed)])
    shutil.copy(plain / "ranks" / "office_t5_ce_s1.test_ranks.npy", packed / "ranks")
    both = [str(packed / "ranks" / name) for name in ("office_t5_ce_s1.test_ranks.npy.gz",
                                                      "office_t5_ce_s1.test_ranks.npy")]
    assert compare_runs.main(["--a", *both, "--b", *both]) == 2
    assert "are copies of one file" in capsys.readouterr().err
