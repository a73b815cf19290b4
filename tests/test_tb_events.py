"""training/tb_events.py: TensorBoard event files written and read back in plain
Python (CRC-32C, TFRecord framing, hand-encoded Event protobufs), and a tiny
training run whose tensorboard/ scalars equal its metrics.jsonl."""

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from training.config import load_config_file
from training.tb_events import FILE_VERSION, EventWriter, crc32c, masked_crc32c, read_events, read_scalars
from training.train import train

REPO = Path(__file__).resolve().parents[1]


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    # TFRecord's mask: rotate right by 15, add the constant.
    crc = crc32c(b"abc")
    assert masked_crc32c(b"abc") == ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _only_file(logdir: Path) -> Path:
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    return files[0]


def test_round_trip_and_file_version(tmp_path):
    written = [
        (0, {"train/loss": 2.5, "train/lr": 1e-3}),
        (-7, {"neg": -1.25}),
        (2**40 + 3, {"big": 123456.789}),
        (2**63 - 1, {"max_step": 0.0}),
        (5, {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "huge": 1e300, "int": 7}),
    ]
    with EventWriter(tmp_path) as writer:
        for step, values in written:
            writer.add_scalars(step, values, wall_time=1234.5)
        writer.add_scalars(9, {})  # nothing to write, no empty event
    path = _only_file(tmp_path)
    assert path.name.startswith("events.out.tfevents.")

    events = read_events(path)
    assert events[0].file_version == FILE_VERSION and events[0].values == () and events[0].wall_time > 1e9
    assert all(event.file_version is None for event in events[1:])
    assert [event.wall_time for event in events[1:]] == [1234.5] * len(written)

    def as_float32(value):  # past float32's range: stored as +-inf (tb_events._float32)
        if math.isfinite(value) and abs(value) > 1e39:
            return math.copysign(math.inf, value)
        return float(np.float32(value))

    expected = [(step, tag, as_float32(value)) for step, values in written for tag, value in values.items()]
    got = read_scalars(path)
    assert [(s, t) for s, t, _ in got] == [(s, t) for s, t, _ in expected]
    for (_, tag, value), (_, _, want) in zip(got, expected):
        if math.isnan(want):
            assert math.isnan(value), tag
        else:
            assert value == want, tag  # exact: both are the float32 rounding


def test_appending_writers_get_distinct_files(tmp_path):
    with EventWriter(tmp_path) as first, EventWriter(tmp_path) as second:
        first.add_scalars(1, {"a": 1.0})
        second.add_scalars(1, {"a": 2.0})
    files = sorted(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 2
    assert sorted(read_scalars(f)[0][2] for f in files) == [1.0, 2.0]


def test_unknown_fields_are_skipped(tmp_path):
    # An Event with fields this module does not write (source_metadata = 8 (bytes), a varint 99,
    # a fixed32 98, a fixed64 97) around a scalar: the reader must step over each by wire type.
    from training.tb_events import _frame, _key  # noqa: PLC0415 (test-only access to the encoding helpers)

    value = b"\x0a\x01x" + b"\x15" + struct.pack("<f", 3.0)
    event = (_key(8, 2) + b"\x03abc" + _key(99, 0) + b"\x96\x01" + _key(98, 5) + b"\0\0\0\0" + _key(97, 1) + b"\0" * 8
             + b"\x10\x04" + b"\x2a" + bytes([len(value) + 2]) + b"\x0a" + bytes([len(value)]) + value)
    path = tmp_path / "events.out.tfevents.test"
    path.write_bytes(_frame(event))
    assert read_scalars(path) == [(4, "x", 3.0)]


def test_corruption_and_truncation_raise(tmp_path):
    with EventWriter(tmp_path) as writer:
        writer.add_scalars(3, {"loss": 1.0})
    path = _only_file(tmp_path)
    content = path.read_bytes()
    first_record = 8 + 4 + struct.unpack("<Q", content[:8])[0] + 4

    for position, what in ((first_record + 20, "data CRC"), (first_record + 1, "length CRC")):
        corrupted = bytearray(content)
        corrupted[position] ^= 0x01
        path.write_bytes(bytes(corrupted))
        with pytest.raises(ValueError, match=f"byte offset {first_record}: {what} mismatch"):
            read_scalars(path)

    path.write_bytes(content[:-3])  # a torn last record, as a SIGKILL mid-write could leave
    with pytest.raises(ValueError, match=f"{path.name} at byte offset {first_record}: truncated"):
        read_scalars(path)


def test_training_run_writes_the_metrics_as_scalars(tmp_path):
    overrides = [
        "data.synthetic.num_users=100", "data.synthetic.num_items=120", "data.synthetic.codebook_size=8",
        "model.num_encoder_layers=1", "model.num_decoder_layers=1",
        "batch_size=32", "num_steps=6", "eval_every=3", "log_every=2",
        "eval.max_examples=32", "eval.batch_size=16", "checkpoint.async_save=false",
    ]
    config = load_config_file(REPO / "tpu_configs/cpu_smoke.py", overrides)
    train(config, tmp_path, resume=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    scalars = {(step, tag): value for step, tag, value in read_scalars(_only_file(tmp_path / "tensorboard"))}

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
