"""Fault suite: ``genrec recommend`` inputs and output directories that used to give a silently wrong
result. An allow list whose ids are all unknown recommends nothing under ``--skip-unknown`` (both
runners, as ``Recommender.recommend``); a ``NAME.inter.json`` of another catalogue is refused as
``--data`` refuses it; shard files of another job in ``--out`` are refused rather than left beside the
new job's; an empty request file is one line; the Parquet output directory reads as one table the
way docs/serving.md shows."""

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from batch_job_setup import write_served_run
from logging_state import restore_logging  # noqa: F401 (autouse: every test keeps the logging state)

from genrec.console import user_error_message
from genrec.datasets import write_sid_dataset
from genrec.synthetic import make_synthetic_dataset
from serving.batch_job import MANIFEST_FILE, run_batch_job
from serving.cli import main
from serving.recommender import Recommender
from serving.requests_io import read_requests

REPO = Path(__file__).resolve().parents[2]
TOP_K = 4
JOB = ["--which", "best", "--num-beams", str(TOP_K + 1), "--top-k", str(TOP_K), "--batch-size", "8"]
HAS_BEAM = importlib.util.find_spec("apache_beam") is not None
DIRECT = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A workdir holding a tiny random model over a 50-item synthetic catalogue, and its dataset directory."""
    data = make_synthetic_dataset(num_items=50, num_users=12, num_levels=3, codebook_size=4, seed=5)
    return write_served_run(data, tmp_path_factory.mktemp("inputs"))


def _recommend(capsys, run, out, *extra) -> tuple[int, str, str]:
    """``genrec recommend`` of ``run``'s workdir in this process (``--data``: its dataset, unless ``extra``
    gives one): (exit status, stdout, stderr)."""
    capsys.readouterr()
    data = [] if "--data" in extra else ["--data", str(run[1])]
    code = main(["recommend", "--workdir", str(run[0]), "--out", str(out), *JOB, *data, *map(str, extra)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _records(out: Path, pattern: str = "shard-*.jsonl") -> dict[str, dict]:
    rows = [json.loads(line) for path in sorted(out.glob(pattern)) for line in path.read_text().splitlines()]
    records = {row["user"]: row for row in rows}
    assert len(records) == len(rows)
    return records


def test_an_allow_list_of_only_unknown_ids_recommends_nothing(tmp_path, run, capsys):
    """``--skip-unknown`` drops the unknown ids of an allow list; a list left empty allows nothing (the
    Recommender's ``on_unknown="skip"``), not the whole catalogue; both runners write the same records."""
    workdir = run[0]
    requests = [{"user_id": "a", "history": ["5"], "allow_items": ["nope"]},
                {"user_id": "d", "history": ["5"], "allow_items": ["nope", "1"]},
                {"user_id": "e", "history": ["5", "7"], "exclude_items": ["nope"]},
                {"user_id": "f", "history": ["5"]}]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    code, _, err = _recommend(capsys, run, tmp_path / "local", "--requests", path, "--skip-unknown")
    assert code == 0, err
    local = _records(tmp_path / "local")
    recommender = Recommender.from_workdir(workdir, "best", num_beams=TOP_K + 1, batch_size=8)
    expected = recommender.recommend([r["history"] for r in requests], top_k=TOP_K, on_unknown="skip",
                                     allow_items=[r.get("allow_items") for r in requests],
                                     exclude_items=[r.get("exclude_items") for r in requests])
    assert local["a"]["items"] == [] and local["d"]["items"] == ["1"]
    for i, request in enumerate(requests):
        assert local[request["user_id"]]["items"] == expected.item_ids[i][expected.valid[i]].tolist()
    assert len(local["e"]["items"]) == len(local["f"]["items"]) == TOP_K
    if HAS_BEAM:
        code, _, err = _recommend(capsys, run, tmp_path / "beam", "--requests", path, "--skip-unknown",
                                  "--runner", "beam", "--", *DIRECT)
        assert code == 0, err
        assert _records(tmp_path / "beam") == local


@pytest.mark.parametrize("runner", ["local", "beam"])
def test_an_inter_json_of_another_catalogue_is_refused_as_data_is(tmp_path, run, capsys, runner):
    """A ``NAME.inter.json`` beside its ``NAME.index.rq-kmeans.json`` is checked to be the model's catalogue,
    by the check ``--data`` makes: another catalogue's numeric ids would read as unrelated items."""
    if runner == "beam" and not HAS_BEAM:
        pytest.skip("apache_beam is not installed")
    other = make_synthetic_dataset(num_items=50, num_users=10, num_levels=3, codebook_size=4, seed=7)
    # Another catalogue of the same shape, its ids 40..89: only 40..49 are ids of the model's catalogue.
    other = dataclasses.replace(other, item_ids=np.array([str(row + 40) for row in range(50)]))
    write_sid_dataset(other, tmp_path / "other", "other")
    beam = ["--runner", "beam", "--", *DIRECT] if runner == "beam" else []
    code, out, err = _recommend(capsys, run, tmp_path / "recs", "--requests", tmp_path / "other/other.inter.json",
                                "--skip-unknown", *beam)
    assert code != 0
    assert "only 10 of its 50 items are in the catalogue" in err and "it is another catalogue" in err
    assert not list((tmp_path / "recs").glob("shard-*"))
    # --data says the same.
    code, _, data_err = _recommend(capsys, run, tmp_path / "recs2", "--data", tmp_path / "other",
                                   "--skip-unknown", *beam)
    assert code != 0 and "only 10 of its 50 items are in the catalogue" in data_err
    # The model's own dataset as a request file still serves.
    code, _, err = _recommend(capsys, run, tmp_path / "own", "--requests", run[1] / "toy.inter.json", *beam)
    assert code == 0, err
    assert len(_records(tmp_path / "own")) == 12


def test_the_python_api_refuses_an_inter_json_of_another_catalogue(tmp_path, run):
    """``read_requests("X.inter.json")`` + ``run_batch_job``, the CLI's job from Python: the table keeps the
    file's catalogue (its ``NAME.index.rq-kmeans.json``), and the job checks it against the recommender's
    before it writes anything, as the CLI checks it against the workdir's (its ids were served as this
    catalogue's items, silently with ``skip_unknown``)."""
    other = make_synthetic_dataset(num_items=50, num_users=10, num_levels=3, codebook_size=4, seed=7)
    other = dataclasses.replace(other, item_ids=np.array([str(row + 40) for row in range(50)]))
    write_sid_dataset(other, tmp_path / "other", "other")
    recommender = Recommender.from_workdir(run[0], "best", num_beams=TOP_K + 1, batch_size=8)
    requests = read_requests(tmp_path / "other/other.inter.json")
    for table in (requests, requests.select_users(requests.user_ids[:3])):
        with pytest.raises(ValueError) as error:
            run_batch_job(recommender, table, tmp_path / "recs", top_k=TOP_K, skip_unknown=True, log=lambda _: None)
        message = user_error_message(error.value)
        assert message is not None and "\n" not in message, message
        assert message.startswith("other: only 10 of its 50 items are in the catalogue of the recommender"), message
        assert not (tmp_path / "recs").exists()
    # The model's own dataset file serves.
    own = read_requests(run[1] / "toy.inter.json")
    assert run_batch_job(recommender, own, tmp_path / "own", top_k=TOP_K, log=lambda _: None).finished


@pytest.mark.parametrize("case", ["manifest-removed", "other-shard-size"])
def test_shards_of_another_job_in_out_are_refused(tmp_path, run, capsys, case):
    out = tmp_path / "recs"
    code, _, err = _recommend(capsys, run, out, "--users-per-shard", "2")
    assert code == 0, err
    assert len(list(out.glob("shard-*.jsonl"))) == 6
    if case == "manifest-removed":
        (out / MANIFEST_FILE).unlink()
        code, _, err = _recommend(capsys, run, out, "--users-per-shard", "5")
    else:  # the manifest is of a job that stopped, but shard files of a bigger one lie beside it
        for name in ("shard-00006.jsonl", "shard-00010.jsonl"):
            (out / name).write_text('{"user": "x", "items": [], "scores": []}\n')
        code, _, err = _recommend(capsys, run, out, "--users-per-shard", "2")
    assert code != 0
    lines = err.strip().splitlines()
    stray = "shard-00000.jsonl" if case == "manifest-removed" else "shard-00006.jsonl"
    assert len(lines) == 1 and str(out) in lines[0] and stray in lines[0], err
    assert len(list(out.glob("shard-*.jsonl"))) == (6 if case == "manifest-removed" else 8)


def test_an_own_unrecorded_shard_still_resumes(tmp_path, run, capsys):
    """A shard of this job written before its manifest entry (a crash between the two) is not a stray."""
    out = tmp_path / "recs"
    code, _, err = _recommend(capsys, run, out, "--users-per-shard", "5", "--max-shards", "1")
    assert code == 0, err
    (out / "shard-00002.jsonl").write_text("half a shard")
    code, _, err = _recommend(capsys, run, out, "--users-per-shard", "5")
    assert code == 0, err
    assert len(_records(out)) == 12


@pytest.mark.parametrize("runner", ["local", "beam"])
def test_a_misspelled_request_key_is_refused_naming_it(tmp_path, run, capsys, runner):
    """``"alow_items"`` (for ``allow_items``) was ignored: the request was served from the whole catalogue.
    The local job refuses the file in one line naming the line and the key, before the model loads (exit
    2); the Beam runner dead-letters that row with the same words and serves the others (exit 1), as it
    does any bad row."""
    if runner == "beam" and not HAS_BEAM:
        pytest.skip("apache_beam is not installed")
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps({"user_id": "a", "history": ["5"]}) + "\n"
                    + json.dumps({"user_id": "b", "history": ["5"], "alow_items": ["1"]}) + "\n")
    beam = ["--runner", "beam", "--", *DIRECT] if runner == "beam" else []
    code, _, err = _recommend(capsys, run, tmp_path / "recs", "--requests", path, *beam)
    named = "unknown key 'alow_items' (did you mean 'allow_items'?); a request takes the keys user_id, history"
    if runner == "local":
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"genrec recommend: error: {path}: line 2: {named}"), err
        assert not (tmp_path / "recs").exists()
        return
    assert code == 1, err
    assert list(_records(tmp_path / "recs", "shard-*.jsonl")) == ["a"]
    dead = [json.loads(line) for part in (tmp_path / "recs").glob("dead-letter-*.jsonl")
            for line in part.read_text().splitlines()]
    assert len(dead) == 1 and f"{path}: {named}" in dead[0]["error"], dead


@pytest.mark.parametrize("runner", ["local", "beam"])
def test_a_pandas_index_column_is_not_an_unknown_request_column(tmp_path, run, capsys, runner):
    """``DataFrame.to_parquet`` of a filtered frame writes its row labels as a column ``__index_level_0__``
    (named in the file's pandas metadata): not a request column, so not refused, on both runners; another
    column is."""
    if runner == "beam" and not HAS_BEAM:
        pytest.skip("apache_beam is not installed")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"user_id": ["a", "b"], "history": [["5"], ["5", "7"]], "__index_level_0__": [3, 8]})
    pandas = {b"pandas": json.dumps({"index_columns": ["__index_level_0__"]}).encode()}
    pq.write_table(table.replace_schema_metadata(pandas), tmp_path / "requests.parquet")
    beam = ["--runner", "beam", "--", *DIRECT] if runner == "beam" else []
    code, _, err = _recommend(capsys, run, tmp_path / "recs", "--requests", tmp_path / "requests.parquet", *beam)
    assert code == 0, err
    assert sorted(_records(tmp_path / "recs", "shard-*.jsonl")) == ["a", "b"]
    if runner == "local":  # without the metadata the column is an unknown one
        pq.write_table(table, tmp_path / "other.parquet")
        code, _, err = _recommend(capsys, run, tmp_path / "recs2", "--requests", tmp_path / "other.parquet")
        assert code == 2 and "unknown column '__index_level_0__'" in err, err


def _write_empty_requests(tmp_path: Path, content: str) -> Path:
    """A request file without a request: JSONL of ``content`` (blank lines or nothing), or ``"parquet"``: a
    Parquet file of the request columns and no row (pyarrow is an optional extra: skipped without it)."""
    if content != "parquet":
        path = tmp_path / "empty.jsonl"
        path.write_text(content)
        return path
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"user_id": pa.array([], pa.string()),
                             "history": pa.array([], pa.list_(pa.string()))}), path)
    return path


@pytest.mark.parametrize("runner", ["local", "beam"])
@pytest.mark.parametrize("content", ["", "\n\n", "parquet"], ids=["empty", "blank-lines", "parquet"])
def test_an_empty_request_file_is_one_line(tmp_path, run, capsys, content, runner):
    """Both runners refuse a request file without a request in one line (exit status 2) before any work: the
    local job before the model loads, the Beam launcher before the pipeline runs (it was a "done: 0 users"
    job on the beam runner, which reads JSONL and Parquet on its workers)."""
    if runner == "beam" and not HAS_BEAM:
        pytest.skip("apache_beam is not installed")
    path = _write_empty_requests(tmp_path, content)
    beam = ["--runner", "beam", "--", *DIRECT] if runner == "beam" else []
    code, out, err = _recommend(capsys, run, tmp_path / "recs", "--requests", path, *beam)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "no requests in the file" in lines[0], err
    assert "done:" not in out, out
    assert not (tmp_path / "recs").exists()  # nothing written: no manifest, no shard


def test_the_docs_read_of_a_parquet_output_directory_works(tmp_path, run, capsys):
    """docs/serving.md's pyarrow.dataset read of the output directory (beside manifest.json) gives every record."""
    ds = pytest.importorskip("pyarrow.dataset")
    out = tmp_path / "recs"
    code, _, err = _recommend(capsys, run, out, "--users-per-shard", "5", "--output-format", "parquet")
    assert code == 0, err
    docs = (REPO / "docs/serving.md").read_text()
    snippet = re.search(r"```python\n(import pyarrow\.dataset as ds\n.*?)```", docs, re.S)
    assert snippet, "docs/serving.md shows how to read the Parquet output directory"
    scope = {"OUT": str(out)}
    exec(snippet.group(1).replace('"recs"', "OUT"), scope)  # noqa: S102 - the docs' own example
    table = scope["table"]
    assert table.num_rows == 12 and sorted(table.column("user").to_pylist()) == sorted(str(u) for u in range(12))
    # The directory itself, as the docs' other spelling reads it.
    assert "exclude_invalid_files=True" in docs
    assert ds.dataset(out, format="parquet", exclude_invalid_files=True).to_table().equals(table)
