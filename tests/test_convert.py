"""genrec/convert.py: the k-core filter equals a plain reference on random logs, the order and
duplicate rules on a hand-made log, one-line errors, the loader reads the output, chained SIDs
equal a separate build-sids, and the docs' walk CSV -> convert -> build-sids -> train -> recommend."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from logging_state import restore_logging  # noqa: F401 (autouse: every test keeps the logging state)
from train_cli import TINY_RUN

from genrec.convert import InteractionLog, chronological_k_core, filter_log, read_interactions, write_interactions
from genrec.datasets import load_sid_dataset
from genrec.synthetic import make_synthetic_dataset
from serving.cli import main

SMOKE = str(Path(__file__).resolve().parents[1] / "tpu_configs" / "cpu_smoke.py")



def _reference(events: list[tuple[str, str, int]], k_core: int, dedupe: str) -> dict[str, list[str]]:
    """Plain Python: per-user lists sorted by (time, file position), dedupe, then drop short users
    and rare items one after the other until nothing changes."""
    sequences: dict[str, list[tuple[int, int, str]]] = {}
    for position, (user, item, time) in enumerate(events):
        sequences.setdefault(user, []).append((time, position, item))
    lists = {user: [item for _, _, item in sorted(seq)] for user, seq in sequences.items()}
    if dedupe == "first":
        lists = {user: list(dict.fromkeys(items)) for user, items in lists.items()}
    while True:
        before = {user: list(items) for user, items in lists.items()}
        if dedupe == "consecutive":
            lists = {user: [item for j, item in enumerate(items) if j == 0 or items[j - 1] != item]
                     for user, items in lists.items()}
        lists = {user: items for user, items in lists.items() if len(items) >= k_core}
        counts: dict[str, int] = {}
        for items in lists.values():
            for item in items:
                counts[item] = counts.get(item, 0) + 1
        lists = {user: [item for item in items if counts[item] >= k_core] for user, items in lists.items()}
        lists = {user: items for user, items in lists.items() if items}
        if lists == before:
            return lists


def _random_events(seed: int) -> list[tuple[str, str, int]]:
    rng = np.random.default_rng(seed)
    num_users, num_items = int(rng.integers(5, 40)), int(rng.integers(3, 30))
    popularity = rng.dirichlet(np.full(num_items, 0.5))
    num_events = int(rng.integers(0, 400))
    users = rng.integers(num_users, size=num_events)
    items = rng.choice(num_items, size=num_events, p=popularity)
    times = rng.integers(0, 15, size=num_events)  # many ties
    return [(f"u{u}", f"i{i}", int(t)) for u, i, t in zip(users, items, times)]


def _log(events: list[tuple[str, str, int]]) -> InteractionLog:
    columns = list(zip(*events)) if events else [[], [], []]
    return InteractionLog(user_ids=np.asarray(columns[0], dtype=str), item_ids=np.asarray(columns[1], dtype=str),
                          timestamps=np.asarray(columns[2], dtype=np.int64), source="events")


@pytest.mark.parametrize("seed", range(6))
def test_k_core_and_dedupe_equal_the_reference_on_random_logs(seed, tmp_path):
    events = _random_events(seed)
    for dedupe in ("consecutive", "first", "none"):
        for k_core in (1, 2, 3, 5):
            expected = _reference(events, k_core, dedupe)
            if not expected:
                with pytest.raises(ValueError, match=f"no interactions left after the {k_core}-core filter"):
                    filter_log(_log(events), k_core=k_core, dedupe=dedupe)
                continue
            result = filter_log(_log(events), k_core=k_core, dedupe=dedupe)
            write_interactions(result, tmp_path, "r")
            # The same users in the same order (first event in the file), the same sequences; written as such.
            assert dict(zip(result.user_ids, result.sequences)) == expected
            assert list(json.loads((tmp_path / "r.inter.json").read_text()).items()) == list(expected.items())
            # The fixed point: every user and item has at least k_core interactions.
            item_counts = np.unique(np.concatenate(result.sequences), return_counts=True)[1]
            assert min(map(len, result.sequences)) >= k_core and item_counts.min() >= k_core


def test_chronological_k_core_is_a_stable_sort_without_filter():
    rng = np.random.default_rng(0)
    users, times = rng.integers(4, size=50), rng.integers(5, size=50)
    kept = chronological_k_core(users, np.arange(50), times, k_core=1, dedupe="none")
    expected = sorted(range(50), key=lambda i: (users[i], times[i], i))
    np.testing.assert_array_equal(kept, expected)


ORDER_CSV = """user,item,when
u1,a,3
u2,x,1
u1,b,1
u1,b,1
u1,a,2
u1,c,2
u2,"y,z",2
u1,a,4
"""


@pytest.mark.parametrize("dedupe, expected_u1", [
    ("consecutive", ["b", "a", "c", "a"]),  # b@1 b@1 -> b; a@2, c@2 in file order; a@3 a@4 -> a
    ("first", ["b", "a", "c"]),
    ("none", ["b", "b", "a", "c", "a", "a"]),
])
def test_order_and_dedupe_rules_on_a_hand_made_csv(dedupe, expected_u1, tmp_path, capsys):
    (tmp_path / "log.csv").write_text(ORDER_CSV)
    assert main(["convert", "--interactions", str(tmp_path / "log.csv"), "--user-col", "user", "--item-col", "item",
                 "--time-col", "when", "--out", str(tmp_path / "out"), "--k-core", "1", "--dedupe", dedupe]) == 0
    written = json.loads((tmp_path / "out" / "log.inter.json").read_text())
    assert written == {"u1": expected_u1, "u2": ["x", "y,z"]} and list(written) == ["u1", "u2"]
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "next: SIDs for its items: genrec build-sids" in out


def test_iso_timestamps_and_parquet_read_like_csv(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    times = ["2024-03-01T10:00:00+02:00", "2024-03-01 09:00:00", "2024-02-29", "2024-03-01T08:30:00Z"]
    rows = [("u1", "a", times[0]), ("u1", "b", times[1]), ("u1", "c", times[2]), ("u1", "d", times[3])]
    with (tmp_path / "log.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("user", "item", "t"), *rows])
    from_csv = read_interactions(tmp_path / "log.csv", "user", "item", "t")
    # 08:00Z (10:00+02:00) < 08:30Z < 09:00 (no zone: UTC); the date alone is midnight.
    result = filter_log(from_csv, k_core=1)
    assert result.sequences == [["c", "a", "d", "b"]]
    table = pa.table({"user": [1, 1, 1, 1], "item": ["a", "b", "c", "d"], "t": times})
    pq.write_table(table, tmp_path / "log.parquet")
    from_parquet = read_interactions(tmp_path / "log.parquet", "user", "item", "t")
    np.testing.assert_array_equal(from_parquet.timestamps, from_csv.timestamps)
    assert from_parquet.user_ids.tolist() == ["1"] * 4
    stamps = pa.array(from_csv.timestamps, pa.timestamp("us"))
    pq.write_table(table.set_column(2, "t", stamps), tmp_path / "typed.parquet")
    typed = read_interactions(tmp_path / "typed.parquet", "user", "item", "t")
    np.testing.assert_array_equal(typed.timestamps, from_csv.timestamps)


@pytest.mark.parametrize("text, flags, names", [
    ("user,item,time\nu1,a,1\n", ["--time-col", "ts"], ["log.csv", "no column 'ts'", "--time-col"]),
    ("user,item,ts\nu1,a,1\nu1,b,2\nu1,c,soon\n", ["--time-col", "ts"], ["log.csv", "'ts'", "row 3 (line 4)", "soon"]),
    ("user,item,ts\nu1,a,2024-01-01\nu1,b,17\n", ["--time-col", "ts"], ["log.csv", "'ts'", "row 2 (line 3)"]),
    ("user,item,ts\nu1,a,1\n,b,2\n", ["--time-col", "ts"], ["log.csv", "'user'", "row 2 (line 3)", "empty id"]),
    ("user,item,ts\nu1,a,1\nu1,b,2\n", ["--time-col", "ts"], ["log.csv", "no interactions left", "5-core"]),
])
def test_errors_are_one_line_naming_file_column_row(text, flags, names, tmp_path, capsys):
    (tmp_path / "log.csv").write_text(text)
    out_dir = tmp_path / "new" / "out"
    assert main(["convert", "--interactions", str(tmp_path / "log.csv"), "--user-col", "user", "--item-col", "item",
                 "--out", str(out_dir), *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("genrec convert: error: ")
    assert all(name in err for name in names), err
    assert not (tmp_path / "new").exists()  # what the failed command created is removed


def test_an_item_without_embedding_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "log.csv").write_text("u,i,t\nu1,a,1\nu1,b,2\nu2,a,3\n")
    np.save(tmp_path / "emb.npy", np.ones((2, 4), np.float32))
    (tmp_path / "ids.txt").write_text("a\nc\n")
    (tmp_path / "out").mkdir()
    assert main(["convert", "--interactions", str(tmp_path / "log.csv"), "--user-col", "u", "--item-col", "i",
                 "--time-col", "t", "--k-core", "1", "--out", str(tmp_path / "out"),
                 "--item-embeddings", str(tmp_path / "emb.npy"), "--embedding-ids", str(tmp_path / "ids.txt")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "ids.txt: 1 of the 2 kept items have no embedding, e.g. 'b'" in err
    assert list((tmp_path / "out").iterdir()) == []


def _write_log_csv(path: Path, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """The synthetic dataset's sequences as an event log in shuffled row order, a minute between a
    user's events; returns the catalogue's item ids and random 8-d embeddings for them."""
    data = make_synthetic_dataset(num_items=60, num_users=50, num_levels=2, codebook_size=8, seed=seed)
    rng = np.random.default_rng(seed)
    events = [(f"user{u}", f"sku-{data.item_ids[row]}", 1_700_000_000 + 60 * position)
              for u, sequence in enumerate(data.sequences) for position, row in enumerate(sequence)]
    order = rng.permutation(len(events))
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("user_id", "item_id", "timestamp"), *(events[i] for i in order)])
    item_ids = [f"sku-{item}" for item in data.item_ids]
    return item_ids, rng.normal(size=(len(item_ids), 8)).astype(np.float32)


def test_chained_sids_equal_build_sids_and_the_loader_reads_the_output(tmp_path, capsys):
    item_ids, embeddings = _write_log_csv(tmp_path / "events.csv")
    np.save(tmp_path / "emb.npy", embeddings)
    (tmp_path / "ids.json").write_text(json.dumps(item_ids))
    (tmp_path / "ids.txt").write_text("\n".join(item_ids) + "\n")
    convert = ["convert", "--interactions", str(tmp_path / "events.csv"), "--user-col", "user_id",
               "--item-col", "item_id", "--time-col", "timestamp", "--levels", "2", "--codes", "4", "--k-core", "3"]
    sids = ["--levels", "2", "--codes", "4"]
    # Two steps: convert, then genrec build-sids over every embedded item ...
    assert main([*convert, "--out", str(tmp_path / "two")]) == 0
    assert main(["build-sids", "--embeddings", str(tmp_path / "emb.npy"), "--item-ids", str(tmp_path / "ids.json"),
                 *sids, "--out", str(tmp_path / "two" / "events.index.rq-kmeans.json")]) == 0
    # ... write the files of one chained convert with --index-all-items.
    assert main([*convert, "--out", str(tmp_path / "one"), "--item-embeddings", str(tmp_path / "emb.npy"),
                 "--embedding-ids", str(tmp_path / "ids.txt"), "--index-all-items"]) == 0
    for suffix in (".inter.json", ".index.rq-kmeans.json", ".vocab.json"):
        one, two = tmp_path / "one" / f"events{suffix}", tmp_path / "two" / f"events{suffix}"
        assert one.read_bytes() == two.read_bytes()
    # Without --index-all-items the index holds exactly the kept items; the loader reads it all back.
    assert main([*convert, "--out", str(tmp_path / "kept"), "--item-embeddings", str(tmp_path / "emb.npy"),
                 "--embedding-ids", str(tmp_path / "ids.json")]) == 0
    assert "next: genrec train" in capsys.readouterr().out
    inter = json.loads((tmp_path / "kept" / "events.inter.json").read_text())
    data = load_sid_dataset(tmp_path / "kept", min_interactions=0)
    assert data.user_ids == list(inter)
    assert [data.item_ids[s].tolist() for s in data.sequences] == list(inter.values())
    assert set(data.item_ids.tolist()) == {item for items in inter.values() for item in items}
    assert data.item_ids.tolist() == [item for item in item_ids if item in set(data.item_ids.tolist())]


def test_csv_to_recommendations_walk(tmp_path, capsys):
    """docs/data.md, "Bring your own data": convert -> build-sids -> train -> recommend."""
    item_ids, embeddings = _write_log_csv(tmp_path / "events.csv", seed=1)
    np.save(tmp_path / "emb.npy", embeddings)
    (tmp_path / "ids.json").write_text(json.dumps(item_ids))
    data_dir, workdir, recs = tmp_path / "data", tmp_path / "run", tmp_path / "recs"
    assert main(["convert", "--interactions", str(tmp_path / "events.csv"), "--user-col", "user_id",
                 "--item-col", "item_id", "--time-col", "timestamp", "--out", str(data_dir), "--name", "shop"]) == 0
    assert main(["build-sids", "--embeddings", str(tmp_path / "emb.npy"), "--item-ids", str(tmp_path / "ids.json"),
                 "--levels", "3", "--codes", "8", "--no-disambiguate",
                 "--out", str(data_dir / "shop.index.rq-kmeans.json")]) == 0
    # The tiny run of the other end-to-end tests; 3 levels of 8 codes give its vocabulary, so the
    # session's compilation cache serves its train step (tests/conftest.py).
    overrides = [f"data.data_dir={data_dir}", "num_steps=2", "eval_every=0",
                 *[o for o in TINY_RUN if not o.startswith("data.")]]
    assert main(["train", "--config", SMOKE, "--workdir", str(workdir),
                 *[arg for o in overrides for arg in ("--set", o)]]) == 0
    assert main(["recommend", "--workdir", str(workdir), "--which", "latest", "--out", str(recs),
                 "--num-beams", "5", "--top-k", "5", "--batch-size", "64", "--users-per-shard", "1000"]) == 0
    capsys.readouterr()
    inter = json.loads((data_dir / "shop.inter.json").read_text())
    records = [json.loads(line) for line in (recs / "shard-00000.jsonl").read_text().splitlines()]
    assert [r["user"] for r in records] == list(inter)
    known = set(item_ids)
    assert all(1 <= len(r["items"]) <= 5 and set(r["items"]) <= known for r in records)


def test_help_names_the_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: genrec convert ")
    assert all(option in out for option in ("--k-core", "--dedupe", "--item-embeddings", "--embedding-ids"))
