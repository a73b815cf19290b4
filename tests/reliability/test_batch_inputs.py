"""Fault suite: ``genrec recommend`` inputs that used to give a silently wrong result. An allow list
whose ids are all unknown recommends nothing under ``--skip-unknown`` (both runners, as
``Recommender.recommend``)."""

import importlib.util
import json
from pathlib import Path

import pytest
from flax import nnx
from logging_state import kept_logging

from genrec.datasets import write_sid_dataset
from genrec.models import ModelConfig, build_model
from genrec.synthetic import make_synthetic_dataset
from serving.cli import main
from serving.recommender import Recommender

TOP_K = 4
JOB = ["--which", "best", "--num-beams", str(TOP_K + 1), "--top-k", str(TOP_K), "--batch-size", "8"]
HAS_BEAM = importlib.util.find_spec("apache_beam") is not None
DIRECT = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


@pytest.fixture(autouse=True)
def restore_logging():
    with kept_logging():
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A workdir holding a tiny random model over a 50-item synthetic catalogue, and its dataset directory."""
    from training.checkpoint import Checkpointer, TrainingProgress, write_run_files
    from training.config import CheckpointConfig, DataConfig, TrainConfig

    data = make_synthetic_dataset(num_items=50, num_users=12, num_levels=3, codebook_size=4, seed=5)
    root = tmp_path_factory.mktemp("inputs")
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
