import json
import logging
from pathlib import Path

import numpy as np
import pytest

from genrec.datasets import (
    InteractionData,
    find_duplicate_sids,
    load_sid_dataset,
    write_sid_dataset,
)
from genrec.vocab import SIDVocabulary

TINY_DIR = Path(__file__).parent / "data" / "tiny"


def _write_dataset(directory: Path, inter, index, name="toy"):
    (directory / f"{name}.inter.json").write_text(json.dumps(inter))
    (directory / f"{name}.index.rq-kmeans.json").write_text(json.dumps(index))
    return directory


GOOD_INDEX = {"1": ["<a_0>", "<b_1>"], "2": ["<a_1>", "<b_0>"], "3": ["<a_1>", "<b_1>"]}


def test_tiny_dataset_loads_expected_arrays(caplog):
    with caplog.at_level(logging.INFO, logger="genrec.datasets"):
        data = load_sid_dataset(TINY_DIR)
    assert data.name == "tiny"
    assert data.item_ids.tolist() == ["10", "11", "12", "13", "14", "15"]
    np.testing.assert_array_equal(
        data.sid_codes,
        [[0, 1, 0], [0, 2, 0], [1, 0, 0], [1, 0, 1], [2, 1, 0], [0, 1, 0]],
    )
    assert data.sid_codes.dtype == np.int32
    assert data.vocab == SIDVocabulary((3, 3, 2))
    assert data.user_ids == ["u1", "u2", "u4"]
    expected = [[0, 1, 2, 3, 4, 5], [2, 3, 0], [5, 4, 3, 2, 1]]
    assert [s.tolist() for s in data.sequences] == expected
    assert all(s.dtype == np.int32 for s in data.sequences)
    assert data.num_interactions == 14
    # Skipped users and duplicate SIDs are logged, never silent.
    assert "skipped 1 of 4 users" in caplog.text
    assert "1 SIDs are shared" in caplog.text


def test_find_duplicate_sids_matches_brute_force():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 3, size=(200, 3))
    groups = find_duplicate_sids(codes)
    expected = {}
    for row, sid in enumerate(map(tuple, codes)):
        expected.setdefault(sid, []).append(row)
    expected_groups = sorted((rows for rows in expected.values() if len(rows) > 1), key=lambda g: g[0])
    assert [g.tolist() for g in groups] == expected_groups
    assert find_duplicate_sids(np.arange(12).reshape(4, 3)) == []
    assert [g.tolist() for g in find_duplicate_sids(load_sid_dataset(TINY_DIR).sid_codes)] == [[0, 5]]


def test_write_then_load_round_trip(tmp_path):
    data = load_sid_dataset(TINY_DIR)
    paths = write_sid_dataset(data, tmp_path, "copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())
    again = load_sid_dataset(tmp_path)
    assert again.name == "copy"
    np.testing.assert_array_equal(again.item_ids, data.item_ids)
    np.testing.assert_array_equal(again.sid_codes, data.sid_codes)
    assert again.user_ids == data.user_ids
    assert [s.tolist() for s in again.sequences] == [s.tolist() for s in data.sequences]
    assert again.vocab == data.vocab


def test_vocab_file_and_argument_fix_codebook_sizes(tmp_path):
    _write_dataset(tmp_path, {"u": [1, 2, 3]}, GOOD_INDEX)
    assert load_sid_dataset(tmp_path).vocab.codebook_sizes == (2, 2)
    SIDVocabulary((4, 8)).save(tmp_path / "toy.vocab.json")
    assert load_sid_dataset(tmp_path).vocab.codebook_sizes == (4, 8)
    assert load_sid_dataset(tmp_path, vocab=SIDVocabulary((2, 5))).vocab.codebook_sizes == (2, 5)
    with pytest.raises(ValueError, match="do not fit"):
        load_sid_dataset(tmp_path, vocab=SIDVocabulary((1, 8)))
    with pytest.raises(ValueError, match="levels"):
        load_sid_dataset(tmp_path, vocab=SIDVocabulary((4, 8, 8)))


@pytest.mark.parametrize(
    "index, message",
    [
        ({**GOOD_INDEX, "4": ["<a_0>", "<b_1>", "<c_2>"]}, r"item '4' has a SID of 3 levels.*'1' has 2"),
        ({**GOOD_INDEX, "4": ["<a_0>", "<x_1>"]}, r"item '4'.*level letter 'x'.*expected 'b'"),
        ({**GOOD_INDEX, "4": ["<a_0>", "<B_1>"]}, r"item '4'.*unknown SID level letter 'B'"),
        ({**GOOD_INDEX, "4": ["<a_0>", "b_1"]}, r"item '4'.*malformed SID token 'b_1'"),
        ({**GOOD_INDEX, "4": "<a_0><b_1>"}, r"item '4'.*non-empty list"),
        ([["<a_0>"]], r"expected a non-empty JSON object"),
    ],
)
def test_bad_index_errors_name_file_and_item(tmp_path, index, message):
    _write_dataset(tmp_path, {"u": [1, 2, 3]}, index)
    with pytest.raises(ValueError, match=message) as info:
        load_sid_dataset(tmp_path, "toy")
    assert "toy.index.rq-kmeans.json" in str(info.value)


def test_missing_items_error_lists_them(tmp_path):
    _write_dataset(tmp_path, {"u": [1, 2, 3, 7], "v": [9, 1, 2], "w": [7, 8]}, GOOD_INDEX)
    with pytest.raises(ValueError) as info:
        load_sid_dataset(tmp_path)
    message = str(info.value)
    assert "toy.inter.json" in message and "3 item id(s)" in message
    assert "'7' (user 'u')" in message and "'9' (user 'v')" in message and "'8' (user 'w')" in message


def test_malformed_json_and_missing_files(tmp_path):
    _write_dataset(tmp_path, {"u": [1, 2, 3]}, GOOD_INDEX)
    (tmp_path / "toy.inter.json").write_text('{"u": [1, 2,, 3]}')
    with pytest.raises(ValueError, match=r"toy.inter.json: malformed JSON at line 1, column 13"):
        load_sid_dataset(tmp_path)
    (tmp_path / "toy.index.rq-kmeans.json").unlink()
    with pytest.raises(FileNotFoundError, match="toy.index.rq-kmeans.json"):
        load_sid_dataset(tmp_path)


def test_name_inference_needs_exactly_one_dataset(tmp_path):
    with pytest.raises(ValueError, match="found 0"):
        load_sid_dataset(tmp_path)
    _write_dataset(tmp_path, {"u": [1, 2, 3]}, GOOD_INDEX, name="a")
    _write_dataset(tmp_path, {"u": [1, 2, 3]}, GOOD_INDEX, name="b")
    # The fix it names exists from the CLI too (genrec train/demo have no name flag: docs/data.md).
    with pytest.raises(ValueError, match=r"found 2.*\(a, b\).*--set data\.name=NAME"):
        load_sid_dataset(tmp_path)
    assert load_sid_dataset(tmp_path, "b").name == "b"


def test_all_users_too_short_is_an_error(tmp_path):
    _write_dataset(tmp_path, {"u": [1, 2], "v": [3]}, GOOD_INDEX)
    with pytest.raises(ValueError, match="no user has at least 3"):
        load_sid_dataset(tmp_path)
    assert load_sid_dataset(tmp_path, min_interactions=2).user_ids == ["u"]


def test_interaction_data_checks_consistency():
    with pytest.raises(ValueError, match="levels"):
        InteractionData(
            item_ids=np.array(["a"]), sid_codes=np.zeros((1, 2), np.int32),
            vocab=SIDVocabulary((1, 1, 1)), user_ids=[], sequences=[],
        )


def test_shared_sids_warning_says_what_they_do_to_metrics_and_stays_short(tmp_path, caplog):
    """The warning said the index "resolves" shared SIDs (it counts a hit for every item of one) and listed
    the whole first group (125 ids on a cut index). It gives the share of items and bounds the list."""
    index = {str(i): ["<a_0>", "<b_0>"] if i < 30 else ["<a_1>", f"<b_{i}>"] for i in range(40)}
    inter = {"u": [str(i) for i in range(40)]}
    with caplog.at_level(logging.WARNING, logger="genrec.datasets"):
        load_sid_dataset(_write_dataset(tmp_path, inter, index))
    message = caplog.records[-1].getMessage()
    assert "1 SIDs are shared by 30 items (75.0% of the catalogue)" in message, message
    assert "resolves" not in message and "counts a hit" in message, message
    assert "items '0', '1', '2', '3', '4', ... (30 in all)" in message, message
