import itertools

import numpy as np
import pytest

from genrec.batching import BatchIterator
from genrec.split import leave_one_out_split
from genrec.synthetic import make_synthetic_dataset
from genrec.vocab import PAD_ID


@pytest.fixture(scope="module")
def data_and_split():
    data = make_synthetic_dataset(num_items=120, num_users=40, num_levels=3, codebook_size=8,
                                  min_length=4, max_length=9, seed=5)
    return data, leave_one_out_split(data.sequences, max_history=5)


def _iterator(data, part, batch_size, **kwargs):
    return BatchIterator.from_split(part, data.sid_codes, data.vocab, batch_size, **kwargs)


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_start_step_resumes_exactly(data_and_split, drop_remainder):
    data, split = data_and_split
    fresh = _iterator(data, split.train, 16, seed=7, drop_remainder=drop_remainder)
    reference = list(itertools.islice(fresh, 3 * fresh.steps_per_epoch + 2))
    assert fresh.step == len(reference)
    for start in [0, 1, fresh.steps_per_epoch - 1, fresh.steps_per_epoch, 2 * fresh.steps_per_epoch + 1]:
        resumed = _iterator(data, split.train, 16, seed=7, drop_remainder=drop_remainder, start_step=start)
        for offset, batch in enumerate(itertools.islice(resumed, 3)):
            _assert_batches_equal(batch, reference[start + offset])


def test_each_epoch_is_a_new_permutation(data_and_split):
    data, split = data_and_split
    iterator = _iterator(data, split.train, 16, seed=3, drop_remainder=False, num_epochs=2)
    assert len(iterator) == 2 * iterator.steps_per_epoch
    batches = list(iterator)
    assert len(batches) == 2 * iterator.steps_per_epoch and len(iterator) == 0
    num_examples = split.train.num_examples
    # Compare epochs to the split as multisets of (history, target) rows.
    all_examples = np.concatenate([split.train.histories, split.train.targets[:, None]], axis=1)
    seen_orders = []
    for epoch in range(2):
        epoch_batches = batches[epoch * iterator.steps_per_epoch : (epoch + 1) * iterator.steps_per_epoch]
        examples = np.concatenate(
            [np.concatenate([b["history_items"], b["target_items"][:, None]], axis=1) for b in epoch_batches])
        mask = np.concatenate([b["example_mask"] for b in epoch_batches])
        # Every example exactly once per epoch; padding only at the very end.
        assert mask[:num_examples].all() and not mask[num_examples:].any()
        for got, want in zip(np.unique(examples[mask], axis=0, return_counts=True),
                             np.unique(all_examples, axis=0, return_counts=True)):
            np.testing.assert_array_equal(got, want)
        seen_orders.append(examples[mask])
    assert not np.array_equal(seen_orders[0], seen_orders[1])
    in_order = _iterator(data, split.train, 16, shuffle=False, drop_remainder=False, num_epochs=1)
    np.testing.assert_array_equal(
        np.concatenate([b["target_items"] for b in in_order])[: split.train.num_examples], split.train.targets
    )
    other_seed = _iterator(data, split.train, 16, seed=4)
    assert not np.array_equal(next(other_seed)["target_items"], batches[0]["target_items"])


def test_tokens_match_reference_and_round_trip(data_and_split):
    data, split = data_and_split
    vocab, num_levels, max_history = data.vocab, data.num_levels, split.test.max_history
    # The test split holds users with short histories, so left padding is exercised.
    batch_size = 32
    iterator = _iterator(data, split.test, batch_size, shuffle=False, drop_remainder=False, num_epochs=1)
    for step, batch in enumerate(iterator):
        rows = range(step * batch_size, min((step + 1) * batch_size, split.test.num_examples))
        for b, example in enumerate(rows):
            history = [item for item in split.test.histories[example] if item >= 0]
            tokens = [2 + sum(vocab.codebook_sizes[:l]) + data.sid_codes[item, l]
                      for item in history for l in range(num_levels)]
            expected = [PAD_ID] * (max_history * num_levels - len(tokens)) + tokens
            np.testing.assert_array_equal(batch["history_tokens"][b], expected)
            np.testing.assert_array_equal(batch["history_mask"][b], np.array(expected) != PAD_ID)
        real = batch["example_mask"]
        np.testing.assert_array_equal(batch["target_items"][real], split.test.targets[list(rows)])
        # Round trips: tokens -> codes recovers the items' SIDs.
        np.testing.assert_array_equal(vocab.tokens_to_codes(batch["target_tokens"][real]),
                                      batch["target_codes"][real])
        np.testing.assert_array_equal(batch["target_codes"][real], data.sid_codes[batch["target_items"][real]])
        history_tokens = batch["history_tokens"].reshape(batch_size, max_history, num_levels)
        is_item = batch["history_items"] >= 0
        np.testing.assert_array_equal(vocab.tokens_to_codes(history_tokens[is_item]),
                                      data.sid_codes[batch["history_items"][is_item]])
        # Padding rows are inert.
        pad = ~real
        assert (batch["target_items"][pad] == -1).all() and (batch["target_tokens"][pad] == PAD_ID).all()
        assert not batch["history_mask"][pad].any() and (batch["history_tokens"][pad] == PAD_ID).all()
        for key, dtype in [("history_tokens", np.int32), ("history_mask", np.bool_),
                           ("target_codes", np.int32), ("target_tokens", np.int32),
                           ("target_items", np.int32), ("example_mask", np.bool_)]:
            assert batch[key].dtype == dtype, key
    assert step == 1 and (~real).sum() == 2 * batch_size - split.test.num_examples


def test_invalid_inputs_rejected(data_and_split):
    data, split = data_and_split
    histories = split.train.histories.copy()
    histories[0] = [3, -1, 4, 5, 6]
    with pytest.raises(ValueError, match="history row 0 has padding after an item"):
        BatchIterator(histories, split.train.targets, data.sid_codes, data.vocab, 4)
    with pytest.raises(ValueError, match="no batch"):
        _iterator(data, split.test, 1000)
    targets = split.train.targets.copy()
    targets[1] = data.num_items
    with pytest.raises(ValueError, match="targets"):
        BatchIterator(split.train.histories, targets, data.sid_codes, data.vocab, 4)
