"""serving/requests_io.py and the batch job's formats: JSONL and Parquet requests serve exactly what the
dataset path serves, Parquet output reads back to the JSONL records, --users and --item-fields select and
annotate, a Parquet job resumes to the uninterrupted files, and malformed requests are one line naming
the file and the line or row."""

import hashlib
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from logging_state import kept_logging

from genrec.console import user_error_message
from genrec.datasets import write_sid_dataset
from serving import batch_job
from serving.batch_job import MANIFEST_FILE, input_digest, run_batch_job
from serving.cli import main as genrec_main
from serving.requests_io import (
    MissingPyarrow,
    encode_records,
    load_item_fields,
    read_records,
    read_requests,
    requests_digest,
)
from tests.batch_job_setup import USERS_PER_SHARD, batch_job_data, batch_job_recommender

# The data and model of tests/test_batch_job.py (tests/batch_job_setup.py). 18 users: shards of 4, 4, 4, 4, 2.
NUM_SHARDS = 5


@pytest.fixture(scope="module")
def data():
    return batch_job_data()


@pytest.fixture(scope="module")
def recommender(data):
    return batch_job_recommender(data)


def _histories(data):
    return [[str(data.item_ids[r]) for r in sequence] for sequence in data.sequences]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _job(recommender, requests, out, **kwargs):
    kwargs.setdefault("exclude_seen", True)
    return run_batch_job(recommender, requests, out, top_k=5, users_per_shard=USERS_PER_SHARD,
                         log=lambda line: None, **kwargs)


def _shards(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*"))}


def _records(out):
    return [record for path in sorted(out.glob("shard-*")) for record in read_records(path)]


@pytest.fixture(scope="module")
def dataset_output(data, recommender, tmp_path_factory):
    """Shards of the job over the dataset itself (what genrec recommend serves by default)."""
    out = tmp_path_factory.mktemp("dataset") / "recs"
    assert _job(recommender, data, out).finished
    return _shards(out)


def test_jsonl_parquet_and_inter_json_requests_serve_what_the_dataset_serves(tmp_path, data, recommender,
                                                                            dataset_output):
    histories = _histories(data)
    # Integer-looking ids as integers in JSONL: ids are compared as strings.
    rows = [{"user_id": user, "history": [int(i) if i.isdigit() else i for i in history]}
            for user, history in zip(data.user_ids, histories)]
    jsonl = _write_jsonl(tmp_path / "requests.jsonl", rows)
    parquet = tmp_path / "requests.parquet"
    pq.write_table(pa.table({"user_id": data.user_ids, "history": histories}), parquet)
    inter = write_sid_dataset(data, tmp_path / "dataset", "shop")["inter"]

    tables = {path.name: read_requests(path) for path in (jsonl, parquet, inter)}
    # One table whatever the file format: same digest (the manifest's input).
    assert requests_digest(tables["requests.jsonl"]) == requests_digest(tables["requests.parquet"])
    for name, table in tables.items():
        assert table.user_ids == data.user_ids and table.allow_items is None
        assert [table.item_ids[h].tolist() for h in table.histories] == histories
        assert _job(recommender, table, tmp_path / f"out-{name}").finished
        assert _shards(tmp_path / f"out-{name}") == dataset_output, name


def test_dataset_digest_is_the_one_manifests_already_hold(tmp_path, data):
    """A table without item lists digests exactly as input_digest did before them (jobs in flight resume)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(data.user_ids).encode())
    digest.update(json.dumps(data.item_ids.astype(str).tolist()).encode())
    digest.update(np.asarray([len(s) for s in data.sequences], "<i8").tobytes())
    digest.update(np.concatenate(data.sequences).astype("<i8").tobytes())
    assert input_digest(data) == "sha256:" + digest.hexdigest()
    # An allow list, even an empty one, makes another input.
    rows = [{"user_id": u, "history": h} for u, h in zip(data.user_ids, _histories(data))]
    digests = set()
    for allow in (None, [], [data.item_ids[0]]):
        rows[-1]["allow_items"] = allow
        digests.add(requests_digest(read_requests(_write_jsonl(tmp_path / "requests.jsonl", rows))))
    assert len(digests) == 3


@pytest.fixture(scope="module")
def item_file(data, tmp_path_factory):
    """NAME.item.json beside the dataset: titles for all items but one, a brand for a few."""
    directory = tmp_path_factory.mktemp("items")
    write_sid_dataset(data, directory)
    metadata = {str(item): {"title": f"title of {item}", **({"brand": f"b{row % 3}"} if row % 2 else {})}
                for row, item in enumerate(data.item_ids.tolist()) if row != 1}
    (directory / f"{data.name}.item.json").write_text(json.dumps(metadata))
    return directory / f"{data.name}.item.json"


def test_parquet_output_reads_back_to_the_jsonl_records_with_item_fields(tmp_path, data, recommender, item_file):
    fields = load_item_fields(item_file, ["title", "brand"], recommender.item_ids)
    _job(recommender, data, tmp_path / "jsonl", item_fields=fields)
    _job(recommender, data, tmp_path / "parquet", item_fields=fields, output_format="parquet")
    assert sorted(p.name for p in (tmp_path / "parquet").glob("shard-*")) == [
        f"shard-{s:05d}.parquet" for s in range(NUM_SHARDS)]
    records = _records(tmp_path / "jsonl")
    assert _records(tmp_path / "parquet") == records
    metadata = json.loads(item_file.read_text())
    assert [r["user"] for r in records] == data.user_ids
    for record in records:
        assert list(record) == ["user", "items", "scores", "title", "brand"]
        assert record["title"] == [metadata.get(i, {}).get("title") for i in record["items"]]
        assert record["brand"] == [metadata.get(i, {}).get("brand") for i in record["items"]]
    shown = {i for r in records for i in r["items"]}
    assert any(metadata.get(i, {}).get("brand") is None for i in shown)  # the null case is exercised
    with pytest.raises(ValueError, match="no item has the field 'titel' .*fields there: brand, title"):
        load_item_fields(item_file, ["titel"], recommender.item_ids)
    # The fields' values are part of the job's input: a resume with other values is refused.
    fields.values["title"][0] = "renamed"
    with pytest.raises(ValueError, match="item fields had values sha256:.*the item metadata file changed"):
        _job(recommender, data, tmp_path / "jsonl", item_fields=fields)


def test_interrupted_parquet_job_resumes_to_the_same_files(tmp_path, data, recommender):
    full = tmp_path / "full"
    _job(recommender, data, full, output_format="parquet")
    part = tmp_path / "part"
    assert not _job(recommender, data, part, output_format="parquet", max_shards=2).finished
    (part / "shard-00002.parquet").write_bytes(b"stale")  # written, not yet recorded
    resumed = _job(recommender, data, part, output_format="parquet")
    assert resumed.finished and resumed.shards_skipped == 2 and resumed.shards_written == NUM_SHARDS - 2
    assert _shards(part) == _shards(full)
    assert json.loads((part / MANIFEST_FILE).read_text())["settings"]["output_format"] == "parquet"
    with pytest.raises(ValueError, match=r"other settings \(output_format"):
        _job(recommender, data, part)


def test_a_changed_request_file_is_refused_on_resume(tmp_path, data, recommender):
    rows = [{"user_id": u, "history": h} for u, h in zip(data.user_ids, _histories(data))]
    path = _write_jsonl(tmp_path / "requests.jsonl", rows)
    out = tmp_path / "recs"
    _job(recommender, read_requests(path), out, max_shards=1)
    rows[-1]["history"] = rows[-1]["history"][::-1]
    _write_jsonl(path, rows)
    with pytest.raises(ValueError, match="its users or their histories changed"):
        _job(recommender, read_requests(path), out)


@pytest.fixture
def cli(monkeypatch, capsys, data, recommender):
    """``genrec recommend ARGS`` in this process on the module's model and dataset: (exit status, stderr)."""
    monkeypatch.setattr(batch_job.Recommender, "from_workdir", classmethod(lambda cls, *a, **k: recommender))
    monkeypatch.setattr(batch_job, "load_workdir_data", lambda *a, **k: data)

    def run(*args):
        capsys.readouterr()
        with kept_logging():
            code = genrec_main(["recommend", "--workdir", "unused", "--top-k", "5", "--num-beams", "6",
                                "--users-per-shard", str(USERS_PER_SHARD), "--exclude-seen", *map(str, args)])
        return code, capsys.readouterr().err

    return run


def test_users_subset_equals_the_matching_records_of_a_full_run(tmp_path, cli, data, item_file):
    assert cli("--out", tmp_path / "full", "--data", item_file.parent, "--item-fields", "title")[0] == 0
    full = {record["user"]: record for record in _records(tmp_path / "full")}
    chosen = [data.user_ids[9], data.user_ids[2], data.user_ids[17]]
    (tmp_path / "users.txt").write_text("\n".join(chosen) + "\n\n")
    code, _ = cli("--out", tmp_path / "some", "--users", tmp_path / "users.txt", "--data", item_file.parent,
                  "--item-fields", "title", "--output-format", "parquet")
    assert code == 0
    assert _records(tmp_path / "some") == [full[user] for user in chosen]

    (tmp_path / "users.txt").write_text(f"{chosen[0]}\nnobody\n{chosen[1]}\nghost\n")
    code, err = cli("--out", tmp_path / "unknown", "--users", tmp_path / "users.txt")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "2 of 4 user id(s) have no request" in err and "the first 'nobody'" in err
    assert not (tmp_path / "unknown").exists()


def _one_line(error):
    message = user_error_message(error.value)
    assert message is not None and "\n" not in message
    return message


@pytest.mark.parametrize("line, expected", [
    ({"user_id": "u2", "items": ["a"]}, "line 3: no 'history'"),
    ({"user_id": "u2", "history": "a b"}, "line 3: 'history' is str; give a list of item ids"),
    ({"user_id": "u2", "history": ["a", 1.5]}, "line 3: 'history' is a list holding 1.5"),
    ({"user_id": "u2", "history": [], "allow_items": 7}, "line 3: 'allow_items' is int"),
    ({"user_id": "u2", "history": None}, "line 3: 'history' is null"),
    ({"user_id": None, "history": []}, "line 3: 'user_id' is None"),
    ({"user_id": "u1", "history": []}, "user 'u1' has two requests (line 1 and line 3)"),
    (["u2", []], "line 3: expected an object"),
    ({"user_id": "u2", "history": [], "alow_items": ["a"]}, "line 3: unknown key 'alow_items' (did you mean "
                                                            "'allow_items'?)"),
    ({"user_id": "u2", "history": [], "allow_items": ["a"], "Exclude": [], "ts": 1}, "line 3: unknown keys "
                                                                                   "'Exclude', 'ts'"),
])
def test_malformed_jsonl_requests_name_the_file_and_line(tmp_path, line, expected):
    path = tmp_path / "requests.jsonl"
    path.write_text('{"user_id": "u1", "history": ["a"]}\n\n' + json.dumps(line) + "\n")
    with pytest.raises(ValueError) as error:
        read_requests(path)
    message = _one_line(error)
    assert message.startswith(f"{path}: ") and expected in message, message


@pytest.mark.parametrize("table, expected", [
    ({"user_id": ["u0", "u1"], "history": [["a"], None]}, "row 1 (counting from 0) has a null 'history'"),
    ({"user_id": ["u0", "u1"], "history": ["a", "b"]}, "column 'history' is string, expected a list"),
    ({"user_id": ["u0", "u1"], "items": [["a"], []]}, "no column 'history' (columns: user_id, items)"),
    ({"user_id": ["u0", "u1"], "history": [["a"], ["b", None]]}, "row 1 (counting from 0): 'history' holds a null"),
    ({"user_id": ["u0", "u0"], "history": [["a"], []]}, "user 'u0' has two requests (row 0 and row 1)"),
    ({"user_id": ["u0", "u1"], "history": [["a"], []], "exclude_item": [["b"], []]},
     "unknown column 'exclude_item' (did you mean 'exclude_items'?)"),
])
def test_malformed_parquet_requests_name_the_file_and_row(tmp_path, table, expected):
    path = tmp_path / "requests.parquet"
    pq.write_table(pa.table(table), path)
    with pytest.raises(ValueError) as error:
        read_requests(path)
    message = _one_line(error)
    assert message.startswith(f"{path}: ") and expected in message, message


def test_an_unknown_request_key_names_the_accepted_keys(tmp_path):
    """A misspelled key was ignored: ``"alow_items"`` served the request without its allow list. It is
    refused in one line naming the file, the line, the key and the keys a request takes."""
    path = _write_jsonl(tmp_path / "requests.jsonl", [{"user_id": "u1", "history": ["a"], "alow_items": ["a"]}])
    with pytest.raises(ValueError) as error:
        read_requests(path)
    assert _one_line(error) == (f"{path}: line 1: unknown key 'alow_items' (did you mean 'allow_items'?); a "
                                "request takes the keys user_id, history (required), allow_items, exclude_items")


def test_parquet_without_pyarrow_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "requests.parquet").write_bytes(b"")
    for call in (lambda: read_requests(tmp_path / "requests.parquet"), lambda: encode_records("parquet")):
        with pytest.raises(MissingPyarrow) as error:
            call()
        assert _one_line(error).endswith('needs pyarrow: pip install -e ".[parquet]"')


def test_per_request_item_lists_reach_the_recommender(tmp_path, data, recommender):
    histories = _histories(data)
    catalogue = data.item_ids.tolist()
    allow = [None, catalogue[::3], None, catalogue[1::2]] + [None] * (data.num_users - 4)
    exclude = [catalogue[:6], None, None, catalogue[1:9:2]] + [None] * (data.num_users - 4)
    rows = [{"user_id": u, "history": h, "allow_items": a, "exclude_items": e}
            for u, h, a, e in zip(data.user_ids, histories, allow, exclude)]
    path = tmp_path / "requests.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    _job(recommender, read_requests(path), tmp_path / "recs")
    expected = recommender.recommend(histories, top_k=5, exclude_seen=True, allow_items=allow,
                                     exclude_items=exclude)
    for u, record in enumerate(_records(tmp_path / "recs")):
        assert record["items"] == [str(i) for i, _ in expected.for_request(u)]
        assert allow[u] is None or set(record["items"]) <= set(allow[u])
        assert not set(record["items"]) & set(exclude[u] or [])


def test_a_key_given_twice_is_refused_in_request_lines_and_item_files(tmp_path):
    """JSON readers keep the last of a repeated key: a request line with two ``allow_items`` was served from
    the second list, an item file with an item given twice wrote the second entry's fields. Both are
    refused in one line naming the file, the place and the key, as the dataset files are."""
    path = tmp_path / "requests.jsonl"
    path.write_text('{"user_id": "u1", "history": ["a"]}\n'
                    '{"user_id": "u2", "history": ["a"], "allow_items": ["b"], "allow_items": ["c", "d"]}\n')
    with pytest.raises(ValueError) as error:
        read_requests(path)
    assert _one_line(error) == (f"{path}: line 2: key 'allow_items' appears 2 times in one JSON object; give "
                                "each once (JSON readers keep only the last)")
    path.write_text('{"user_id": "u1", "history": ["a:1"]}\n{"user_id" : "u2", "history" : [], "history" : ["b"]}\n')
    with pytest.raises(ValueError, match="line 2: key 'history' appears 2 times"):
        read_requests(path)
    path.write_text('{"user_id": "u1", "history": ["a:1", "b"]}\n')  # colons inside ids are not keys
    assert read_requests(path).user_ids == ["u1"]
    items = tmp_path / "x.item.json"
    items.write_text('{"a": {"title": "A"}, "b": {"title": "B"}, "a": {"title": "wrong"}}')
    with pytest.raises(ValueError) as error:
        load_item_fields(items, ["title"], ["a", "b"])
    assert _one_line(error) == (f"{items}: key 'a' appears 2 times in one JSON object; give each once "
                                "(JSON readers keep only the last)")
    items.write_text('{"a": {"title": "A", "title": "wrong"}}')
    with pytest.raises(ValueError, match="key 'title' appears 2 times"):
        load_item_fields(items, ["title"], ["a"])
