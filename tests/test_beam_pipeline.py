"""serving/beam_pipeline.py on Beam's DirectRunner: the same records as the local
batch job, failed requests in the dead-letter output while the rest complete,
per-request item lists, and the one-line error without apache-beam."""

import inspect
import json
import sys

import numpy as np
import pytest
from flax import nnx

pytest.importorskip("apache_beam")

from genrec.console import UserError  # noqa: E402
from genrec.datasets import write_sid_dataset  # noqa: E402
from genrec.models import ModelConfig, build_model  # noqa: E402
from genrec.synthetic import make_synthetic_dataset  # noqa: E402
from serving import cli  # noqa: E402
from serving.batch_job import run_batch_job  # noqa: E402
from serving.beam_pipeline import RecommenderModelHandler, run_beam_job  # noqa: E402
from serving.recommender import Recommendations, Recommender  # noqa: E402

BATCH = 8
TOP_K = 5
DIRECT = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


@pytest.fixture(scope="module")
def data():
    return make_synthetic_dataset(num_items=50, num_users=19, num_levels=3, codebook_size=4, seed=5)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """A workdir holding a tiny random model over the synthetic catalogue, and the dataset's directory."""
    from training.checkpoint import Checkpointer, TrainingProgress, write_run_files
    from training.config import CheckpointConfig, DataConfig, TrainConfig

    root = tmp_path_factory.mktemp("beam")
    workdir, data_dir = root / "run", root / "data"
    model = build_model(ModelConfig.tiny(data.vocab.vocab_size, data.num_levels, num_encoder_layers=1,
                                         num_decoder_layers=1), rngs=nnx.Rngs(0))
    write_run_files(workdir, TrainConfig(data=DataConfig(max_history=5)), model.config, data.vocab, data.sid_codes,
                    data.item_ids)
    checkpointer = Checkpointer(workdir, CheckpointConfig(async_save=False))
    checkpointer.save_best(nnx.state(model, nnx.Param), TrainingProgress(step=1, data_step=1, rng_key=(0, 0)),
                           {"ndcg@10": 0.0})
    checkpointer.close()
    write_sid_dataset(data, data_dir, "toy")
    return workdir, data_dir


@pytest.fixture(scope="module")
def recommender(run):
    return Recommender.from_workdir(run[0], num_beams=TOP_K + 1, batch_size=BATCH)


def _beam(run, out, **kwargs):
    lines = []
    result = run_beam_job(run[0], out, top_k=TOP_K, num_beams=TOP_K + 1, batch_size=BATCH, pipeline_options=DIRECT,
                          log=lines.append, **kwargs)
    assert len(lines) == 1 and "users/s" in lines[0]
    return result


def _records(out, pattern):
    if pattern.endswith(".parquet"):
        import pyarrow.parquet as pq

        rows = [row for path in sorted(out.glob(pattern)) for row in pq.read_table(path).to_pylist()]
    else:
        rows = [json.loads(line) for path in sorted(out.glob(pattern)) for line in path.read_text().splitlines()]
    return {json.dumps(row, sort_keys=True) for row in rows}, len(rows)


def test_beam_on_the_dataset_writes_the_local_jobs_records(tmp_path, run, data, recommender):
    run_batch_job(recommender, data, tmp_path / "local", top_k=TOP_K, users_per_shard=7, exclude_seen=True,
                  log=lambda line: None)
    result = _beam(run, tmp_path / "beam", data=run[1], exclude_seen=True)
    local, num_local = _records(tmp_path / "local", "shard-*.jsonl")
    beam, num_beam = _records(tmp_path / "beam", "shard-*.jsonl")
    assert num_local == num_beam == data.num_users == result.num_recommended
    assert beam == local  # same users, items and scores, whatever order the runner wrote them in
    assert result.num_dead_letter == 0 and _records(tmp_path / "beam", "dead-letter-*.jsonl")[1] == 0


def test_failed_requests_go_to_the_dead_letter_output_and_the_rest_complete(tmp_path, run, data, recommender):
    import pyarrow as pa
    import pyarrow.parquet as pq

    histories = [[str(data.item_ids[row]) for row in sequence] for sequence in data.sequences[:BATCH + 3]]
    users = [f"u{i}" for i in range(len(histories))]
    histories[2] = histories[2] + ["no-such-item"]  # in the first batch, among good requests
    histories[9] = ["also-missing"]
    pq.write_table(pa.table({"user": users, "history": histories}), tmp_path / "requests.parquet")
    # exclude_seen as in the test above: the same decode shapes, so no second compile.
    result = _beam(run, tmp_path / "out", requests=str(tmp_path / "requests.parquet"), exclude_seen=True)

    good = [i for i in range(len(users)) if i not in (2, 9)]
    expected = recommender.recommend([histories[i] for i in good], top_k=TOP_K, exclude_seen=True)
    assert _records(tmp_path / "out", "shard-*.jsonl")[0] == {json.dumps({
        "user": users[i], "items": [str(item) for item, _ in expected.for_request(k)],
        "scores": [round(score, 6) for _, score in expected.for_request(k)]}, sort_keys=True)
        for k, i in enumerate(good)}
    dead = [json.loads(line) for path in (tmp_path / "out").glob("dead-letter-*.jsonl")
            for line in path.read_text().splitlines()]
    assert sorted(d["request"]["user"] for d in dead) == ["u2", "u9"]
    assert all("not in the model's catalogue" in d["error"] and "\n" not in d["error"] for d in dead)
    assert {d["request"]["user"]: d["error"].split("'")[1] for d in dead} == {"u2": "no-such-item",
                                                                              "u9": "also-missing"}
    assert (result.num_recommended, result.num_dead_letter) == (len(good), 2)


class _FailingRecommender:
    """Knows every item; its recommend fails a whole call when any history holds "boom" (a bug in one request)."""

    num_items = 10

    def __init__(self):
        self.calls = []

    def lookup_rows(self, item_ids):
        return np.zeros(len(item_ids), np.int32)

    def recommend(self, histories, *, top_k, exclude_seen, on_unknown):
        self.calls.append(len(histories))
        return self._answer(histories)

    @staticmethod
    def _answer(histories):
        if any("boom" in history for history in histories):
            raise RuntimeError("boom\nin the decode")
        scores = np.array([[-float(len(h)), -9.0] for h in histories], np.float32)
        return Recommendations(item_ids=np.array([["a", ""]] * len(histories)), scores=scores,
                               item_rows=np.array([[0, -1]] * len(histories)), valid=scores > -5)


def test_a_request_that_fails_its_batch_fails_alone():
    handler = RecommenderModelHandler("unused", top_k=2, num_beams=2, batch_size=4)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 4, "max_batch_size": 4}
    model = _FailingRecommender()
    batch = [{"user": 1, "history": ["x"]}, {"user": 2, "history": ["boom"]}, {"user": 3, "history": ["x", "y"]},
             {"user": 4, "history": "x"}]
    results = list(handler.run_inference(batch, model))
    assert [r.example for r in results] == batch
    assert results[0].inference == {"record": {"user": "1", "items": ["a"], "scores": [-1.0]}}
    assert results[1].inference == {"error": "RuntimeError: boom in the decode"}
    assert results[2].inference == {"record": {"user": "3", "items": ["a"], "scores": [-2.0]}}
    assert results[3].inference["error"].startswith("ValueError: history is 'x', not a list")
    assert model.calls == [3, 1, 1, 1]  # the checked three together, then one at a time


class _ListRecommender(_FailingRecommender):
    """Records the item lists each recommend call received."""

    def recommend(self, histories, *, top_k, exclude_seen, on_unknown, allow_items=None, exclude_items=None):
        self.calls.append((allow_items, exclude_items))
        return self._answer(histories)


def test_item_lists_are_passed_per_request_with_one_call_per_filter_kind(monkeypatch):
    monkeypatch.setattr("serving.beam_pipeline._HAS_ITEM_LISTS", True)
    handler = RecommenderModelHandler("unused", top_k=2, num_beams=2, batch_size=4)
    model = _ListRecommender()
    batch = [{"user": 1, "history": ["x"], "exclude_items": ["e"]}, {"user": 2, "history": [], "allow_items": ["a"]},
             {"user": 3, "history": ["y"]}, {"user": 4, "history": [], "allow_items": ["b"], "exclude_items": ["f"]}]
    assert all("record" in r.inference for r in handler.run_inference(batch, model))
    # Requests with an allow list go together; the others get no allow list at all (not an empty one).
    assert model.calls == [([["a"], ["b"]], [[], ["f"]]), (None, [["e"], []])]
    monkeypatch.setattr("serving.beam_pipeline._HAS_ITEM_LISTS", False)
    errors = [r.inference.get("error") for r in handler.run_inference(batch, _FailingRecommender())]
    assert errors[2] is None and all("need Recommender.recommend(allow_items" in e for e in errors[:2] + errors[3:])


def test_per_request_item_lists_reach_the_recommender(tmp_path, run, data):
    if not {"allow_items", "exclude_items"} <= set(inspect.signature(Recommender.recommend).parameters):
        pytest.skip("Recommender.recommend has no allow_items / exclude_items yet (issue 23, section 2)")
    items = [str(item) for item in data.item_ids]
    histories = [[items[row] for row in sequence] for sequence in data.sequences[:4]]
    requests = [{"user": "allow", "history": histories[0], "allow_items": items[:3]},
                {"user": "exclude", "history": histories[1], "exclude_items": items[:40]},
                {"user": "both", "history": histories[2], "allow_items": items[:10], "exclude_items": items[:5]},
                {"user": "plain", "history": histories[3]},
                "not a record"]
    (tmp_path / "requests.jsonl").write_text("\n".join(map(json.dumps, requests)) + "\n{broken\n")
    result = _beam(run, tmp_path / "out", requests=str(tmp_path / "requests.jsonl"), output_format="parquet",
                   exclude_seen=True)
    import pyarrow.parquet as pq

    records = {row["user"]: row["items"] for path in (tmp_path / "out").glob("shard-*.parquet")
               for row in pq.read_table(path).to_pylist()}
    assert sorted(records) == ["allow", "both", "exclude", "plain"]
    assert set(records["allow"]) <= set(items[:3]) and records["allow"]
    assert not set(records["exclude"]) & set(items[:40])
    assert set(records["both"]) <= set(items[5:10])
    assert len(records["plain"]) == TOP_K
    assert result.num_dead_letter == 2  # the string record and the broken line


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
    (["--", "--requests", "{tmp}/missing-*.jsonl"], "no file matches"),
    (["--", "--requests", "{tmp}/requests.txt"], "cannot tell JSONL from Parquet"),
    (["--max-shards", "1"], "--max-shards is the local job's"),
    (["--data", "{tmp}", "--", "--requests", "{tmp}/requests.txt"], "pass one"),
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
