"""constrained/sharding.py with its users: on the 8 fake CPU devices
(conftest.py) the Recommender, the batch job and evaluate_split give exactly
the single-device results, and a batch size that does not split over the
devices is rounded up.

The single-device reference decodes ``PER_DEVICE`` = 2 requests per call, the
rows each of the 8 devices decodes from a batch of 16: then items, float32
scores and the job's files are equal bit for bit, so sharding adds no
arithmetic of its own (rows never mix: nothing reduces over the batch). At
another batch size one device's scores differ by float32 rounding (4e-6 at
most on this model: the compiled kernels for another batch shape sum in
another order), as they do on one device alone when the batch size changes
(tests/test_recommender.py::test_batch_equals_single_calls, atol 1e-5).
"""

import jax
import numpy as np
import pytest
from flax import nnx

from constrained.decode import build_eval_index
from constrained.sharding import local_layout
from genrec.models import ModelConfig, build_model
from genrec.split import leave_one_out_split
from genrec.synthetic import make_synthetic_dataset
from serving.batch_job import MANIFEST_FILE, run_batch_job
from serving.recommender import Recommender
from training.evaluate import evaluate_split

BATCH = 12  # not a multiple of 8: rounded up to 16 on 8 devices
PER_DEVICE = 2  # rows per device of that batch: the single-device reference's batch size
MAX_HISTORY = 5
BEAMS = 6


@pytest.fixture(scope="module")
def data():
    return make_synthetic_dataset(num_items=50, num_users=21, num_levels=3, codebook_size=4, seed=7)


@pytest.fixture(scope="module")
def model(data):
    config = ModelConfig.tiny(data.vocab.vocab_size, data.num_levels, num_encoder_layers=1, num_decoder_layers=1)
    return build_model(config, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def recommenders(data, model):
    """``{1: one device, None: all eight}``, same model, catalogue and settings."""
    assert jax.local_device_count() == 8
    return {devices: Recommender(model, data.vocab, data.sid_codes, data.item_ids, num_beams=BEAMS,
                                 batch_size=batch_size, max_history=MAX_HISTORY, devices=devices)
            for devices, batch_size in ((1, PER_DEVICE), (None, BATCH))}


def test_batch_size_rounds_up_to_the_devices(recommenders):
    assert recommenders[1].num_devices == 1 and recommenders[1].batch_size == PER_DEVICE
    assert recommenders[None].num_devices == 8 and recommenders[None].batch_size == 8 * PER_DEVICE
    with pytest.raises(ValueError, match="devices=9, but this process has 8 local cpu device"):
        local_layout(9)
    with pytest.raises(ValueError, match="12 rows does not split over 8 devices; pad it to 16 rows"):
        local_layout(8).shard_rows(np.zeros((BATCH, 3)))


def test_recommender_equals_one_device(data, recommenders):
    """The dense filter path (allow mask + exclude_seen); 21 requests = two chunks of 16, the last padded."""
    histories = [[data.item_ids[r] for r in seq] for seq in data.sequences]
    allow = np.random.default_rng(0).random((len(histories), data.num_items)) < 0.5
    one, eight = (recommenders[d].recommend(histories, top_k=BEAMS, allow_mask=allow, exclude_seen=True)
                  for d in (1, None))
    assert one.valid.sum() > len(histories)
    np.testing.assert_array_equal(eight.item_ids, one.item_ids)
    np.testing.assert_array_equal(eight.valid, one.valid)
    np.testing.assert_array_equal(eight.scores, one.scores)


def test_batch_job_files_equal_one_device(tmp_path, data, recommenders):
    """The unfiltered path (compiled once per layout, shared with test_evaluate_split_equals_one_device)."""
    outputs = {}
    for devices, recommender in recommenders.items():
        out_dir = tmp_path / str(devices)
        result = run_batch_job(recommender, data, out_dir, top_k=4, users_per_shard=10, log=lambda line: None)
        assert result.finished and result.num_shards == 3
        outputs[devices] = {p.name: p.read_bytes() for p in sorted(out_dir.glob("*.json*"))}
    assert sorted(outputs[1]) == [MANIFEST_FILE, "shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]
    assert outputs[None] == outputs[1]  # shards byte for byte, and the same manifest (devices are not identity)


def test_evaluate_split_equals_one_device(data, model):
    """The unfiltered path; 21 examples = two batches of 16 (and 11 of 2 on one device); the same
    compiled decode as the batch job's (same shapes and placement)."""
    split = leave_one_out_split(data.sequences, MAX_HISTORY)
    index, _ = build_eval_index(data.sid_codes, data.vocab)
    results = {devices: evaluate_split(model, index, data, split.test, num_beams=BEAMS, batch_size=batch_size,
                                       ks=(1, 5), devices=devices)
               for devices, batch_size in ((1, PER_DEVICE), (None, BATCH))}
    assert results[1].ranks.shape == (data.num_users,) and (results[1].ranks > 0).any()
    np.testing.assert_array_equal(results[None].ranks, results[1].ranks)
    assert results[None].metrics == results[1].metrics

