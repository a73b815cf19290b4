"""serving/beam_pipeline.py (and its readers, serving/beam_requests.py) on Beam's DirectRunner: the same
records as the local batch job from the same flags (dataset, Parquet requests with item lists, --users,
--item-fields, Parquet output), bad rows and failed requests in the dead-letter output while the rest
complete, and one-line errors for flags in the wrong place."""

import json
import sys

import numpy as np
import pytest

pytest.importorskip("apache_beam")

from batch_job_setup import write_served_run  # noqa: E402
from logging_state import restore_logging  # noqa: E402, F401 (autouse: cli.main configures logging)

from genrec.console import UserError  # noqa: E402
from genrec.synthetic import make_synthetic_dataset  # noqa: E402
from serving import beam_pipeline, beam_requests, cli  # noqa: E402
from serving.batch_job import run_batch_job  # noqa: E402
from serving.beam_pipeline import RecommenderModelHandler, ServedModel, run_beam_job  # noqa: E402
from serving.recommender import Recommendations, Recommender  # noqa: E402
from serving.requests_io import RequestTable  # noqa: E402

BATCH = 8
TOP_K = 5
DIRECT = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


@pytest.fixture(scope="module")
def data():
    return make_synthetic_dataset(num_items=50, num_users=19, num_levels=3, codebook_size=4, seed=5)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """A workdir holding a tiny random model over the synthetic catalogue, and the dataset's directory."""
    workdir, data_dir = write_served_run(data, tmp_path_factory.mktemp("beam"))
    titles = {str(item): {"title": f"title of {item}"} for item in data.item_ids.tolist()[1:]}  # item 0: none
    (data_dir / "toy.item.json").write_text(json.dumps(titles))
    return workdir, data_dir


@pytest.fixture(scope="module")
def recommender(run):
    return Recommender.from_workdir(run[0], num_beams=TOP_K + 1, batch_size=BATCH)


def _beam(run, out, pipeline_options=DIRECT, **kwargs):
    lines = []
    result = run_beam_job(run[0], out, top_k=TOP_K, num_beams=TOP_K + 1, batch_size=BATCH,
                          pipeline_options=pipeline_options, log=lines.append, **kwargs)
    assert len(lines) == 1 and "users/s" in lines[0]
    return result


def _records(out, pattern):
    if pattern.endswith(".parquet"):
        import pyarrow.parquet as pq

        rows = [row for path in sorted(out.glob(pattern)) for row in pq.read_table(path).to_pylist()]
    else:
        rows = [json.loads(line) for path in sorted(out.glob(pattern)) for line in path.read_text().splitlines()]
    return {json.dumps(row, sort_keys=True) for row in rows}, len(rows)


def test_beam_on_the_dataset_writes_the_local_jobs_records(tmp_path, run, data, recommender, monkeypatch):
    """With the default DirectRunner settings (two worker threads) and the dataset in 3 chunks, so both
    threads serve users: the local job's records, and one model load for the process."""
    monkeypatch.setattr(beam_pipeline, "_BATCHES_PER_CHUNK", 1)  # 19 users in 3 chunks of one batch each
    loads = []
    load_model = RecommenderModelHandler.load_model
    monkeypatch.setattr(RecommenderModelHandler, "load_model", lambda self: loads.append(1) or load_model(self))
    run_batch_job(recommender, data, tmp_path / "local", top_k=TOP_K, users_per_shard=7, exclude_seen=True,
                  log=lambda line: None)
    result = _beam(run, tmp_path / "beam", pipeline_options=(), data=run[1], exclude_seen=True)
    assert len(loads) == 1
    local, num_local = _records(tmp_path / "local", "shard-*.jsonl")
    beam, num_beam = _records(tmp_path / "beam", "shard-*.jsonl")
    assert num_local == num_beam == data.num_users == result.num_recommended
    assert beam == local  # same users, items and scores, whatever order the runner wrote them in
    assert result.num_dead_letter == 0 and _records(tmp_path / "beam", "dead-letter-*.jsonl")[1] == 0


def test_direct_runner_defaults_apply_only_where_the_caller_set_neither_option():
    defaults = list(beam_pipeline.DIRECT_RUNNER_DEFAULTS)
    assert beam_pipeline._with_direct_defaults([]) == defaults
    assert beam_pipeline._with_direct_defaults(["--runner=FlinkRunner"]) == ["--runner=FlinkRunner", *defaults]
    for own in (["--direct_num_workers=4"], ["--direct_running_mode=in_memory", "--job_name=x"]):
        assert beam_pipeline._with_direct_defaults(own) == own


def test_request_chunks_hold_the_tables_requests_in_order():
    """What the launcher hands the runner (the dataset, NAME.inter.json): chunks whose requests are the
    table's, lists and absent lists included, each chunk carrying only the item ids it uses."""
    rng = np.random.default_rng(0)
    item_ids = np.array([f"item{i}" for i in range(30)])

    def lists(p_absent):
        return [None if rng.random() < p_absent else rng.integers(0, 30, rng.integers(0, 5)).astype(np.int32)
                for _ in range(11)]

    table = RequestTable(user_ids=[f"u{i}" for i in range(11)], item_ids=item_ids, histories=lists(0.0),
                         allow_items=lists(0.5), exclude_items=None, name="t")
    for users_per_chunk in (1, 4, 11, 64):
        chunks = beam_requests._table_chunks(table, users_per_chunk)
        assert len(chunks) == -(-11 // users_per_chunk)
        assert [request for chunk in chunks for request in chunk.records()] == list(table.records())
        for chunk in chunks:
            used = {item for request in chunk.records() for key in ("history", "allow_items")
                    for item in request[key] or ()}
            assert sorted(chunk.item_ids.tolist()) == sorted(used)


def test_bad_rows_and_failed_requests_go_to_the_dead_letter_output_and_the_rest_complete(tmp_path, run, data,
                                                                                      recommender):
    histories = [[str(data.item_ids[row]) for row in sequence] for sequence in data.sequences[:BATCH + 3]]
    users = [f"u{i}" for i in range(len(histories))]
    histories[2] = histories[2] + ["no-such-item"]  # in the first batch, among good requests
    histories[9] = ["also-missing"]
    rows = [{"user_id": user, "history": history} for user, history in zip(users, histories)]
    rows += [{"user_id": "u4", "history": []}, "not a record", {"user_id": "u20", "history": "x"}]
    (tmp_path / "requests.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows) + "{broken\n")
    listed = [user for user in users if user != "u5"] + ["nobody"]  # u20: its row fails before the selection
    # exclude_seen as in the test above: the same decode shapes, so no second compile.
    result = _beam(run, tmp_path / "out", requests=str(tmp_path / "requests.jsonl"), users=listed,
                   exclude_seen=True)

    good = [i for i in range(len(users)) if i not in (2, 4, 5, 9)]
    expected = recommender.recommend([histories[i] for i in good], top_k=TOP_K, exclude_seen=True)
    assert _records(tmp_path / "out", "shard-*.jsonl")[0] == {json.dumps({
        "user": users[i], "items": [str(item) for item, _ in expected.for_request(k)],
        "scores": [round(score, 6) for _, score in expected.for_request(k)]}, sort_keys=True)
        for k, i in enumerate(good)}
    dead = [json.loads(line) for path in (tmp_path / "out").glob("dead-letter-*.jsonl")
            for line in path.read_text().splitlines()]
    assert all("\n" not in d["error"] for d in dead)
    errors = sorted((_who(d["request"]), d["error"]) for d in dead)
    requests_file = str(tmp_path / "requests.jsonl")
    assert [user for user, _ in errors] == ['"not a record"', "nobody", "u2", "u20", "u4", "u4", "u9", "{broken"]
    messages = dict(errors)
    assert messages["u2"] == ("ValueError: history item 'no-such-item' is not in the model's catalogue of 50 items; "
                              "pass --skip-unknown to drop unknown items")
    assert "'also-missing' is not in the model's catalogue" in messages["u9"]
    assert messages["u4"] == f"user 'u4' has 2 requests in {requests_file}; give each user one request"
    assert messages["nobody"].startswith("--users lists user 'nobody', who has no request")
    # Rows are refused by the local job's parser, with its words.
    assert messages["u20"] == (f"ValueError: {requests_file}: 'history' is str; give a list of item ids "
                               "(strings or integers)")
    assert messages['"not a record"'] == (f"ValueError: {requests_file}: expected an object {{\"user_id\": ..., "
                                          "\"history\": [item ids]}, got str")
    assert messages["{broken"].startswith(f"ValueError: {requests_file}: malformed JSON")
    assert (result.num_recommended, result.num_dead_letter) == (len(good), 8)


def _who(request):
    """The user id of a dead letter's request (a dict, or the JSONL line as read), else the line."""
    if isinstance(request, str):
        try:
            request = json.loads(request)
        except json.JSONDecodeError:
            return request
    return request.get("user_id") if isinstance(request, dict) else json.dumps(request)


class _FailingRecommender:
    """Knows every item but "unknown"; its recommend_rows fails a whole call when any history holds "boom"."""

    num_items = 10
    _ids = ["x", "y", "boom", "a", "b", "e", "f"]

    def __init__(self):
        self.calls = []

    def snapshot(self):
        return self

    def lookup_rows(self, item_ids):
        return np.array([self._ids.index(item) if item in self._ids else -1 for item in item_ids], np.int32)

    def recommend_rows(self, histories, *, top_k, exclude_seen, **lists):
        # Recorded as ids, so the test reads what the caller asked for.
        self.calls.append((len(histories), {name.replace("_rows", "_items"): [
            None if rows is None else [self._ids[row] for row in rows] for rows in values]
            for name, values in lists.items()}))
        if any(self._ids.index("boom") in history for history in histories):
            raise RuntimeError("boom\nin the decode")
        scores = np.array([[-float(len(h)), -9.0] for h in histories], np.float32)
        return Recommendations(item_ids=np.array([["a", ""]] * len(histories)), scores=scores,
                               item_rows=np.array([[0, -1]] * len(histories)), valid=scores > -5)


def _request(user, history, **lists):
    return {"user_id": user, "history": history, "allow_items": None, "exclude_items": None, **lists}


def test_a_request_that_fails_its_batch_fails_alone():
    handler = RecommenderModelHandler("unused", top_k=2, num_beams=2, batch_size=4)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 4, "max_batch_size": 4}
    model = _FailingRecommender()
    batch = [_request("1", ["x"]), _request("2", ["boom"]), _request("3", ["x", "y"]),
             _request("4", ["x"], exclude_items=["unknown"])]
    results = list(handler.run_inference(batch, ServedModel(model)))
    assert [r.example for r in results] == batch
    assert results[0].inference == {"record": {"user": "1", "items": ["a"], "scores": [-1.0]}}
    assert results[1].inference == {"error": "RuntimeError: boom in the decode"}
    assert results[2].inference == {"record": {"user": "3", "items": ["a"], "scores": [-2.0]}}
    assert results[3].inference["error"].startswith("ValueError: exclude_items item 'unknown' is not in")
    assert [n for n, _ in model.calls] == [3, 1, 1, 1]  # the checked three together, then one at a time


def test_item_lists_go_per_request_in_one_call():
    handler = RecommenderModelHandler("unused", top_k=2, num_beams=2, batch_size=4)
    model = _FailingRecommender()
    batch = [_request("1", ["x"], exclude_items=["e"]), _request("2", [], allow_items=["a"]), _request("3", ["y"]),
             _request("4", [], allow_items=["b"], exclude_items=["f"])]
    assert all("record" in r.inference for r in handler.run_inference(batch, ServedModel(model)))
    # One decode call; a request without a list gets None (no constraint), not an empty list.
    assert model.calls == [(4, {"allow_items": [None, ["a"], None, ["b"]],
                                "exclude_items": [["e"], None, None, ["f"]]})]
    handler.run_inference(batch[2:3], ServedModel(model))
    assert model.calls[-1] == (1, {})  # no lists at all: the call without filters


def test_both_runners_take_the_same_flags_and_write_the_same_records(tmp_path, run, data, capsys):
    """Parquet requests with item lists, --users, --item-fields and Parquet output: the same records."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = [str(item) for item in data.item_ids]
    histories = [[items[row] for row in sequence] for sequence in data.sequences[:6]]
    allow = [items[:3], None, items[:10], None, [], items[20:]]
    exclude = [None, items[:40], items[:5], None, items[30:35], items[25:45]]
    users = [f"user{i}" for i in range(6)]
    pq.write_table(pa.table({"user_id": users, "history": histories, "allow_items": allow,
                             "exclude_items": exclude}), tmp_path / "requests.parquet")
    (tmp_path / "users.txt").write_text("user5\nuser0\nuser2\nuser1\nuser4\n")
    flags = ["--workdir", run[0], "--requests", tmp_path / "requests.parquet", "--users", tmp_path / "users.txt",
             "--data", run[1], "--item-fields", "title", "--output-format", "parquet", "--top-k", TOP_K,
             "--num-beams", TOP_K + 1, "--batch-size", BATCH, "--exclude-seen"]
    flags = [str(flag) for flag in flags]
    assert cli.main(["recommend", "--out", str(tmp_path / "local"), *flags]) == 0
    assert cli.main(["recommend", "--runner", "beam", "--out", str(tmp_path / "beam"), *flags, "--", *DIRECT]) == 0
    assert "done: 5 users" in capsys.readouterr().out
    local, num_local = _records(tmp_path / "local", "shard-*.parquet")
    beam, num_beam = _records(tmp_path / "beam", "shard-*.parquet")
    assert beam == local and num_beam == num_local == 5
    records = {record["user"]: record for record in map(json.loads, beam)}
    assert set(records["user0"]["items"]) <= set(items[:3]) and records["user0"]["items"]
    assert not set(records["user1"]["items"]) & set(items[:40])
    assert set(records["user2"]["items"]) <= set(items[5:10])
    assert len(records["user4"]["items"]) == TOP_K and not set(records["user4"]["items"]) & set(items[30:35])
    assert set(records["user5"]["items"]) <= set(items[20:25] + items[45:])
    titles = [title for record in records.values() for title in record["title"]]
    assert titles and all(title == (None if item == items[0] else f"title of {item}")
                          for record in records.values() for item, title in zip(record["items"], record["title"]))


def test_beam_runner_without_apache_beam_is_one_line(tmp_path, run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # import apache_beam now raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "serving.beam_pipeline")
    status = cli.main(["recommend", "--runner", "beam", "--workdir", str(run[0]), "--out", str(tmp_path / "out")])
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'genrec recommend: error: --runner beam needs apache-beam: pip install -e ".[beam]"']
    assert not (tmp_path / "out").exists()


def test_options_after_the_separator_are_refused_by_the_local_runner(tmp_path, run, capsys):
    status = cli.main(["recommend", "--workdir", str(run[0]), "--out", str(tmp_path / "out"), "--", "--runner=X"])
    assert status == 2 and "options after -- are for --runner beam" in capsys.readouterr().err
    np.testing.assert_equal(list(tmp_path.iterdir()), [])


@pytest.mark.parametrize("extra, message", [
    (["--requests", "{tmp}/missing-*.jsonl"], "no file matches"),
    (["--requests", "{tmp}/requests.txt"], "unknown request format"),
    (["--max-shards", "1"], "--max-shards is the local job's"),
    (["--users-per-shard", "5"], "--users-per-shard is the local job's"),
    (["--", "--requests", "{tmp}/requests.jsonl"], "--requests is a genrec recommend flag: put it before --"),
    (["--", "--output-format=parquet"], "--output-format is a genrec recommend flag"),
    (["--", "--requests-format", "jsonl"], "--requests-format is gone"),
    (["--item-fields", "title"], "trained on the built-in synthetic data: pass --data DIR"),
    # Beam drops options it does not know with a log line: a misspelled --runner ran the job here, exit 0.
    (["--", "--runer=DataflowRunner", "--project=p"],
     "Beam does not know the pipeline option --runer (did you mean --runner?)"),
    (["--", "--direct_num_worker", "2"], "--direct_num_worker (did you mean --direct_num_workers?)"),
])
def test_beam_runner_mistakes_are_one_line(tmp_path, run, capsys, extra, message):
    (tmp_path / "requests.txt").write_text("{}\n")
    argv = ["recommend", "--runner", "beam", "--workdir", str(run[0]), "--out", str(tmp_path / "out")]
    assert cli.main(argv + [a.format(tmp=tmp_path) for a in extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genrec recommend: error: ") and message in err[0]
    assert not (tmp_path / "out").exists()


def test_beam_runner_refuses_a_non_empty_output_directory(tmp_path, run):
    (tmp_path / "old.jsonl").write_text("")
    with pytest.raises(UserError, match="not empty"):
        run_beam_job(run[0], tmp_path, pipeline_options=DIRECT)


def test_the_launcher_finds_a_request_in_any_file_of_a_pattern(tmp_path, monkeypatch):
    """The Beam launcher's check for an empty request input (``_files_have_requests``) reads files until one
    holds a request: blank or empty files before it (Spark writes empty part files) do not make the input
    empty; a request after 64 KiB of blank lines is found; only files without any request are."""
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "b.jsonl").write_text("\n \r\n" * 30_000)  # 90 KB of blank lines: more than one probe read
    assert not beam_requests._files_have_requests("jsonl", str(tmp_path / "*.jsonl"))
    (tmp_path / "c.jsonl").write_text("\n" * 70_000 + '{"user_id": "u", "history": []}\n')
    assert beam_requests._files_have_requests("jsonl", str(tmp_path / "*.jsonl"))
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = {"user_id": pa.string(), "history": pa.list_(pa.string())}
    pq.write_table(pa.table({"user_id": [], "history": []}, pa.schema(columns)), tmp_path / "part-0.parquet")
    assert not beam_requests._files_have_requests("parquet", str(tmp_path / "*.parquet"))
    pq.write_table(pa.table({"user_id": ["u"], "history": [["1"]]}, pa.schema(columns)), tmp_path / "part-1.parquet")
    assert beam_requests._files_have_requests("parquet", str(tmp_path / "*.parquet"))
    (tmp_path / "part-2.parquet").write_text("not parquet")  # read only when no earlier file has a row
    (tmp_path / "part-1.parquet").unlink()
    with pytest.raises(ValueError, match=r"part-2.parquet: not a readable Parquet file"):
        beam_requests._files_have_requests("parquet", str(tmp_path / "*.parquet"))


def test_jsonl_byte_ranges_read_every_line_once_in_order(tmp_path, monkeypatch):
    """Workers read a JSONL file in byte ranges: whatever the range size, every non-blank line once, in order,
    whole (lines longer than a range, CRLF endings, multi-byte characters, no final newline)."""
    lines = ['{"user_id": "a"}', "", '{"user_id": "b", "history": ["é", "日本"]}', "   ", "x" * 40 + "\r", "ü", "z"]
    text = "\n".join(lines)  # no newline at the end
    (tmp_path / "requests.jsonl").write_text(text, encoding="utf-8")
    expected = [line.removesuffix("\r") for line in lines if line.strip()]
    for range_bytes in (1, 2, 3, 5, 17, 41, len(text.encode()), 1 << 20):
        monkeypatch.setattr(beam_requests, "_RANGE_BYTES", range_bytes)
        ranges = beam_requests._jsonl_ranges(str(tmp_path / "*.jsonl"))
        assert ranges[0].start == 0 and ranges[-1].end == len(text.encode())
        read = [row for byte_range in ranges for batch in beam_requests._read_jsonl_range(byte_range)
                for row in batch.rows]
        assert read == expected, range_bytes


def test_a_chunk_looks_up_the_rows_and_requests_its_records_hold():
    """A table's chunk gives RunInference the same catalogue rows, unknown flags and dead-letter requests as
    the request dicts it stands for (the dict path: _batch_rows)."""
    rng = np.random.default_rng(1)
    item_ids = np.array([f"item{i}" for i in range(40)])

    def lists(p_absent):
        return [None if rng.random() < p_absent else rng.integers(0, 40, rng.integers(0, 6)).astype(np.int32)
                for _ in range(13)]

    table = RequestTable(user_ids=[f"u{i}" for i in range(13)], item_ids=item_ids, histories=lists(0.0),
                         allow_items=lists(0.5), exclude_items=lists(0.7), name="t")
    catalogue = _FailingRecommender()
    catalogue._ids = [f"item{i}" for i in range(0, 40, 9)]  # the rest are unknown
    flags = []
    for chunk in beam_requests._table_chunks(table, 5):
        requests = list(chunk.records())
        rows, has_unknown = chunk.catalogue_rows(catalogue)
        expected_rows, expected_unknown = beam_requests._batch_rows(requests, catalogue)
        np.testing.assert_array_equal(has_unknown, expected_unknown)
        flags.extend(has_unknown.tolist())
        for key in expected_rows:
            assert [None if r is None else r.tolist() for r in rows[key]] == [
                None if r is None else r.tolist() for r in expected_rows[key]]
        assert [chunk.request(i) for i in range(len(chunk))] == requests and chunk.user_ids == [
            request["user_id"] for request in requests]
    assert any(flags) and not all(flags)


def test_rebatch_cuts_requests_into_whole_batches_in_order():
    from apache_beam.transforms.window import GlobalWindow

    rebatch = beam_requests._Rebatch(4)
    rebatch.start_bundle()
    sizes = [3, 4, 1, 9, 4, 2]
    inputs = []
    for n in sizes:
        inputs.append(beam_requests._Requests([_request(f"u{len(inputs)}-{k}", []) for k in range(n)]))
    out = [batch for requests in inputs for batch in rebatch.process(requests, window=GlobalWindow())]
    out += [value.value for value in rebatch.finish_bundle()]
    assert [len(batch) for batch in out] == [4] * (sum(sizes) // 4) + [sum(sizes) % 4]
    assert [r for batch in out for r in batch.requests] == [r for batch in inputs for r in batch.requests]


def test_beam_on_jsonl_split_in_many_ranges_writes_the_local_jobs_records(tmp_path, run, data, recommender,
                                                                          monkeypatch):
    """JSONL requests read in small byte ranges (lines cut across ranges, lists rebatched across them) on the
    default two worker threads: the local job's records for the same requests."""
    monkeypatch.setattr(beam_requests, "_RANGE_BYTES", 100)
    table = RequestTable.from_interactions(data)
    (tmp_path / "requests.jsonl").write_text("".join(json.dumps(row) + "\n" for row in table.records()))
    run_batch_job(recommender, table, tmp_path / "local", top_k=TOP_K, exclude_seen=True, log=lambda line: None)
    result = _beam(run, tmp_path / "beam", pipeline_options=(), requests=str(tmp_path / "requests.jsonl"),
                   exclude_seen=True)
    local, num_local = _records(tmp_path / "local", "shard-*.jsonl")
    beam, num_beam = _records(tmp_path / "beam", "shard-*.jsonl")
    assert beam == local and num_beam == num_local == data.num_users == result.num_recommended
    assert result.num_dead_letter == 0


def _worker_reads(source, launcher_handle):
    """What a worker process of another machine reads: the DoFn as pickled into the job (with the launcher's
    expected users and digest), without the launcher's copy of the table (a fresh shared handle)."""
    import pickle

    from apache_beam.utils import shared

    loaded = launcher_handle.acquire(source.read, tag=source)
    dofn = beam_requests._ReadTableChunks(source, shared.Shared(), 4, (loaded.table.num_users, loaded.digest))
    return loaded.table, pickle.loads(pickle.dumps(dofn))


def test_workers_read_absolute_paths_and_the_user_ids_the_launcher_read(tmp_path, run, monkeypatch):
    """Relative --requests / --data / the run's relative data_dir, and a --users file: a worker in another
    directory, without the user list file, reads the launcher's table (same users, same requests)."""
    from apache_beam.utils import shared

    (tmp_path / "launch").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "launch" / "toy.inter.json").write_text(json.dumps({f"u{i}": [f"i{i}", f"i{i + 1}"]
                                                                    for i in range(10)}))
    users_file = tmp_path / "launch" / "users.txt"
    users_file.write_text("u7\nu3\nu8\n")
    workdir = tmp_path / "launch" / "run"  # the fixture's run, trained on ../data (relative to the launcher)
    workdir.mkdir()
    config = json.loads((run[0] / "config.json").read_text())
    config["train_config"]["data"].update(data_dir="data", name="toy")
    (workdir / "config.json").write_text(json.dumps(config))
    (tmp_path / "launch" / "data").symlink_to(run[1])

    monkeypatch.chdir(tmp_path / "launch")
    sources = [beam_requests._TableSource.on_launcher("run", None, "toy.inter.json",
                                                      beam_pipeline.read_user_list("users.txt"), "users.txt"),
               beam_requests._TableSource.on_launcher(run[0], "data", None, ["2", "0"]),
               beam_requests._TableSource.on_launcher("run", None, None, None)]
    assert sources[2].run_data_dir == str(run[1].resolve())
    launched = [_worker_reads(source, shared.Shared()) for source in sources]
    users_file.unlink()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for (table, worker), users in zip(launched, (["u7", "u3", "u8"], ["2", "0"], None)):
        worker.setup()
        chunks = list(worker.process((0, table.num_users)))
        assert [request for chunk in chunks for request in chunk.records()] == list(table.records())
        assert table.user_ids == (users or table.user_ids) and table.num_users >= 2


@pytest.mark.parametrize("change", ["history", "user"])
def test_a_worker_refuses_a_table_that_changed_after_the_launch(tmp_path, change):
    """The user ranges are positions in the launcher's table: a worker that reads another version of the file
    fails its setup with one line naming the file, instead of serving other users or histories."""
    from apache_beam.utils import shared

    requests = {f"u{i}": [f"i{i}", f"i{i + 1}"] for i in range(6)}
    path = tmp_path / "toy.inter.json"
    path.write_text(json.dumps(requests))
    source = beam_requests._TableSource.on_launcher(tmp_path, None, str(path), None)
    _, worker = _worker_reads(source, shared.Shared())
    if change == "history":  # the same users, one history longer
        requests["u2"].append("i9")
    else:  # a user more: every position after it would shift in a sorted or filtered file
        requests = {"u-new": ["i0"], **requests}
    path.write_text(json.dumps(requests))
    with pytest.raises(ValueError) as refused:
        worker.setup()
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path}: changed since the job started")
    assert ("read 7 users" if change == "user" else "read 6 users") in message


def test_row_groups_join_a_bundles_tables_in_order_up_to_the_target():
    import pyarrow as pa
    from apache_beam.transforms.window import GlobalWindow

    tables = [pa.table({"user": [f"u{k}-{i}" for i in range(n)]}) for k, n in enumerate([3, 4, 1, 5, 2])]
    merge = beam_pipeline._RowGroups(min_bytes=tables[0].nbytes + tables[1].nbytes)
    merge.start_bundle()
    out = [t for table in tables for t in merge.process(table, window=GlobalWindow())]
    out += [value.value for value in merge.finish_bundle()]
    assert all(t.nbytes >= merge._min_bytes for t in out[:-1])
    assert len(out) < len(tables)
    assert pa.concat_tables(out).equals(pa.concat_tables(tables))


def test_parquet_output_comes_in_few_large_row_groups(tmp_path, run, data, recommender, monkeypatch):
    """19 users in 3 lists of one decode batch: the local job's records, in fewer row groups than lists
    (WriteToParquetBatched wrote one row group per list)."""
    import pyarrow.parquet as pq

    monkeypatch.setattr(beam_pipeline, "_BATCHES_PER_CHUNK", 1)
    run_batch_job(recommender, data, tmp_path / "local", top_k=TOP_K, exclude_seen=True, output_format="parquet",
                  log=lambda line: None)
    _beam(run, tmp_path / "beam", data=run[1], exclude_seen=True, output_format="parquet")
    assert _records(tmp_path / "beam", "shard-*.parquet") == _records(tmp_path / "local", "shard-*.parquet")
    row_groups = [pq.ParquetFile(path).metadata.num_row_groups for path in (tmp_path / "beam").glob("shard-*")]
    assert sum(row_groups) < -(-data.num_users // BATCH)


class _PoisonedRecommender:
    """A real recommender whose decode call fails when any of its histories holds ``poison_row``; it records
    each call's number of requests."""

    def __init__(self, recommender, poison_row):
        self._recommender, self._poison_row, self.calls = recommender, poison_row, []
        self.num_items = recommender.num_items

    def snapshot(self):
        return self

    def lookup_rows(self, item_ids):
        return self._recommender.lookup_rows(item_ids)

    def recommend_rows(self, histories, **kwargs):
        self.calls.append(len(histories))
        if any(self._poison_row in history for history in histories):
            raise RuntimeError("poisoned\ndecode")
        return self._recommender.recommend_rows(histories, **kwargs)


def test_one_bad_request_in_two_decode_batches_costs_a_few_calls_and_fails_alone(data, recommender):
    """One request whose decode raises, among two decode batches: one dead letter (the words of before), the
    rest the local job's records, in 9 decode calls (whole batches, then thirds) where one call per request
    took 16."""
    items = [str(item) for item in data.item_ids]
    histories = [[items[row] for row in sequence] for sequence in data.sequences[:2 * BATCH]]
    poison = next(item for item in items if not any(item in history for history in histories))
    histories[12] = histories[12] + [poison]
    batch = [_request(f"u{i}", history) for i, history in enumerate(histories)]
    model = _PoisonedRecommender(recommender, int(recommender.lookup_rows([poison])[0]))
    handler = RecommenderModelHandler("unused", top_k=TOP_K, num_beams=TOP_K + 1, batch_size=BATCH,
                                      exclude_seen=True)
    outcomes = [result.inference for result in handler.run_inference(batch, ServedModel(model))]
    assert outcomes[12] == {"error": "RuntimeError: poisoned decode"}
    good = [i for i in range(len(batch)) if i != 12]
    expected = recommender.recommend([histories[i] for i in good], top_k=TOP_K, exclude_seen=True)
    from serving.requests_io import recommendation_records

    assert [outcomes[i] for i in good] == [{"record": record} for record in recommendation_records(
        [f"u{i}" for i in good], expected)]
    assert model.calls == [16, 8, 8, 3, 3, 1, 1, 1, 2]  # depth first: the failing third split before the last


def test_a_jsonl_line_that_is_not_utf8_is_dead_lettered_alone(tmp_path, monkeypatch):
    """One invalid byte fails its line only, whatever the byte ranges: the other lines parse, the bad one is
    one dead letter naming the file (its text with U+FFFD, so the dead letter is JSON)."""
    good = [{"user_id": f"u{i}", "history": ["é", f"i{i}"]} for i in range(4)]
    lines = [json.dumps(row, ensure_ascii=False).encode() for row in good]
    lines.insert(2, b'{"user_id": "bad\xff", "history": []}')
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    for range_bytes in (1, 9, 40, 1 << 20):
        monkeypatch.setattr(beam_requests, "_RANGE_BYTES", range_bytes)
        parse = beam_requests._ParseRequests(str(path))
        parsed = [out for byte_range in beam_requests._jsonl_ranges(str(path))
                  for batch in beam_requests._read_jsonl_range(byte_range) for out in parse.process(batch)]
        requests = [request for out in parsed if isinstance(out, beam_requests._Requests) for request in out.requests]
        dead = [out.value for out in parsed if not isinstance(out, beam_requests._Requests)]
        assert [(r["user_id"], r["history"]) for r in requests] == [(r["user_id"], r["history"]) for r in good]
        assert dead == [{"request": '{"user_id": "bad\ufffd", "history": []}',
                         "error": f"ValueError: {path}: the line is not UTF-8 (invalid start byte at byte offset 16 "
                                  "of the line); write the requests as UTF-8"}], range_bytes
        json.dumps(dead)


def test_a_beam_job_prints_only_genrec_lines(tmp_path, run, capsys):
    """Beam logs warnings about optional pieces it lacks through the root logger ("Resource module is not
    available ..." twice a job): by default a command prints only genrec's own lines (README)."""
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"user_id": "u1", "history": []}\n')
    argv = ["recommend", "--runner", "beam", "--workdir", str(run[0]), "--out", str(tmp_path / "out"),
            "--requests", str(requests)]
    assert cli.main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("done: 1 users"), lines
    assert all(line.startswith("done:") or " genrec" in line for line in lines), lines
