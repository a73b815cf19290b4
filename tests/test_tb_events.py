"""training/tb_events.py: with tensorboardX, event files whose scalars read back
as written and a tiny run whose tensorboard/ scalars equal its metrics.jsonl;
without it, the run completes with metrics.jsonl and no events."""

import json
import logging
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from training.config import load_config_file
from training.tb_events import EventWriter, open_event_writer
from training.train import train

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = [
    "data.synthetic.num_users=100", "data.synthetic.num_items=120", "data.synthetic.codebook_size=8",
    "model.num_encoder_layers=1", "model.num_decoder_layers=1",
    "batch_size=32", "num_steps=6", "eval_every=3", "log_every=2",
    "eval.max_examples=32", "eval.batch_size=16", "checkpoint.async_save=false",
]


def _read_events(path: Path) -> list:
    """The Event protos of a TFRecord file (uint64 length, uint32 crc, data, uint32 crc per record)."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    content = path.read_bytes()
    events, offset = [], 0
    while offset < len(content):
        (length,) = struct.unpack("<Q", content[offset:offset + 8])
        events.append(event_pb2.Event.FromString(content[offset + 12:offset + 12 + length]))
        offset += 12 + length + 4
    assert offset == len(content), f"{path}: torn last record"
    return events


def _read_scalars(path: Path) -> list[tuple[int, str, float]]:
    return [(event.step, value.tag, value.simple_value) for event in _read_events(path)
            for value in event.summary.value]


def _only_file(logdir: Path) -> Path:
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    return files[0]


def test_round_trip_keeps_tags_steps_and_float32_values(tmp_path):
    pytest.importorskip("tensorboardX")
    written = [
        (0, {"train/loss": 2.5, "train/learning_rate": 1e-3}),
        (2**40 + 3, {"valid/ndcg@10": 0.123456789}),
        (5, {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "int": 7}),
    ]
    with EventWriter(tmp_path) as writer:
        for step, values in written:
            writer.add_scalars(step, values, wall_time=1234.5)
        writer.add_scalars(9, {})  # nothing to write, no empty event
    events = _read_events(_only_file(tmp_path))
    assert events[0].file_version == "brain.Event:2" and not events[0].summary.value
    assert [event.wall_time for event in events[1:]] == [1234.5] * len(written)  # one Event per call

    expected = [(step, tag, float(np.float32(value))) for step, values in written for tag, value in values.items()]
    got = _read_scalars(_only_file(tmp_path))
    assert [(s, t) for s, t, _ in got] == [(s, t) for s, t, _ in expected]  # "@" kept, int64 step kept
    for (_, tag, value), (_, _, want) in zip(got, expected):
        assert value == want or (math.isnan(value) and math.isnan(want)), tag


def test_writers_opened_together_get_distinct_files(tmp_path):
    pytest.importorskip("tensorboardX")
    with EventWriter(tmp_path) as first, EventWriter(tmp_path) as second:
        first.add_scalars(1, {"a": 1.0})
        second.add_scalars(1, {"a": 2.0})
    files = sorted(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 2
    assert sorted(_read_scalars(f)[0][2] for f in files) == [1.0, 2.0]


def test_training_run_writes_the_metrics_as_scalars(tmp_path):
    pytest.importorskip("tensorboardX")
    train(load_config_file(REPO / "tpu_configs/cpu_smoke.py", TINY_RUN), tmp_path, resume=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    scalars = {(step, tag): value for step, tag, value in _read_scalars(_only_file(tmp_path / "tensorboard"))}

    valid = [r for r in records if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6]
    for record in valid:
        assert scalars[(record["step"], "valid/ndcg@10")] == pytest.approx(record["ndcg@10"], rel=1e-6, abs=1e-7)
        assert scalars[(record["step"], "valid/valid_ce")] == pytest.approx(record["valid_ce"], rel=1e-6)
    (test,) = [r for r in records if r["kind"] == "test"]
    assert scalars[(test["step"], "test/recall@10")] == pytest.approx(test["recall@10"], rel=1e-6, abs=1e-7)

    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [2, 4, 6]
    for record in train_records:
        assert scalars[(record["step"], "train/loss")] == pytest.approx(record["loss"], rel=1e-6)
        prefix_losses = record["prefix_losses"]
        assert isinstance(prefix_losses, list) and len(prefix_losses) > 1
        for i, value in enumerate(prefix_losses, start=1):
            assert scalars[(record["step"], f"train/prefix_losses/{i}")] == pytest.approx(value, rel=1e-6)
        assert (record["step"], f"train/prefix_losses/{len(prefix_losses) + 1}") not in scalars
    assert not any(tag.endswith(("/step", "/kind")) for _, tag in scalars)


def test_without_tensorboardx_training_runs_and_writes_metrics_jsonl(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` now raises ImportError
    caplog.set_level(logging.INFO, logger="genrec.train")
    assert open_event_writer(tmp_path / "probe") is None
    assert [r.getMessage() for r in caplog.records if "TensorBoard events are off" in r.getMessage()]

    overrides = [*TINY_RUN, "num_steps=2", "eval_every=0"]
    result = train(load_config_file(REPO / "tpu_configs/cpu_smoke.py", overrides), tmp_path / "run", resume=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result.final_step == 2
    assert [(r["step"], r["kind"]) for r in records] == [(2, "train"), (2, "test")]
    assert not (tmp_path / "run" / "tensorboard").exists()
