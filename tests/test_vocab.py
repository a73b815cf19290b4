import json

import numpy as np
import pytest

from genrec.vocab import (
    BOS_ID,
    PAD_ID,
    SIDVocabulary,
    format_sid_tokens,
    parse_sid_token,
    parse_sid_tokens,
)


def test_token_layout_matches_formula():
    vocab = SIDVocabulary((3, 5, 2))
    assert (PAD_ID, BOS_ID) == (0, 1)
    np.testing.assert_array_equal(vocab.level_offsets, [2, 5, 10])
    assert vocab.vocab_size == 12
    # Every (level, code) gets its own id, covering 2..11 exactly once.
    ids = [2 + sum(vocab.codebook_sizes[:level]) + code
           for level, size in enumerate(vocab.codebook_sizes) for code in range(size)]
    assert ids == list(range(2, 12))
    assert [vocab.level_token_range(l) for l in range(3)] == [(2, 5), (5, 10), (10, 12)]


def test_codes_tokens_round_trip_random():
    rng = np.random.default_rng(0)
    sizes = (7, 4, 9, 3)
    vocab = SIDVocabulary(sizes)
    codes = np.stack([rng.integers(0, s, size=(5, 6)) for s in sizes], axis=-1)
    tokens = vocab.codes_to_tokens(codes)
    expected = np.empty_like(codes)
    for level in range(len(sizes)):
        expected[..., level] = 2 + sum(sizes[:level]) + codes[..., level]
    np.testing.assert_array_equal(tokens, expected)
    assert tokens.dtype == np.int32
    np.testing.assert_array_equal(vocab.tokens_to_codes(tokens), codes)


def test_out_of_range_codes_and_tokens_rejected():
    vocab = SIDVocabulary((3, 5))
    with pytest.raises(ValueError, match="outside"):
        vocab.codes_to_tokens(np.array([[3, 0]]))
    with pytest.raises(ValueError, match="outside"):
        vocab.codes_to_tokens(np.array([[0, -1]]))
    # A level-1 token placed at level 0 is not a level-0 code token.
    with pytest.raises(ValueError, match="level 0"):
        vocab.tokens_to_codes(np.array([[5, 5]]))
    with pytest.raises(ValueError, match="level 1"):
        vocab.tokens_to_codes(np.array([[2, PAD_ID]]))
    with pytest.raises(ValueError, match="last axis"):
        vocab.codes_to_tokens(np.zeros((2, 3), dtype=int))


def test_from_codes_uses_max_plus_one_unless_given():
    codes = np.array([[0, 4, 1], [2, 0, 0]])
    assert SIDVocabulary.from_codes(codes).codebook_sizes == (3, 5, 2)
    assert SIDVocabulary.from_codes(codes, (8, 8, 8)).codebook_sizes == (8, 8, 8)
    with pytest.raises(ValueError):
        SIDVocabulary.from_codes(codes, (2, 8, 8))


def test_parse_sid_tokens():
    assert parse_sid_token("<c_83>") == (2, 83)
    assert parse_sid_tokens(["<a_32>", "<b_18>", "<c_83>", "<d_135>"]) == [32, 18, 83, 135]
    assert parse_sid_tokens(format_sid_tokens([5, 0, 255])) == [5, 0, 255]
    assert format_sid_tokens(np.array([1, 2])) == ["<a_1>", "<b_2>"]
    with pytest.raises(ValueError, match="expected 'b'"):
        parse_sid_tokens(["<a_1>", "<c_2>"])
    with pytest.raises(ValueError, match="unknown SID level letter"):
        parse_sid_token("<A_1>")
    with pytest.raises(ValueError, match="unknown SID level letter"):
        parse_sid_token("<ab_1>")
    for bad in ["a_1", "<a_>", "<a_-1>", "<a_1> ", "<_1>", 7]:
        with pytest.raises(ValueError):
            parse_sid_token(bad)
    with pytest.raises(ValueError):
        parse_sid_tokens("<a_1>")


def test_save_load_round_trip_and_version_check(tmp_path):
    vocab = SIDVocabulary((256, 256, 256, 7))
    path = vocab.save(tmp_path / "sub" / "vocab.json")
    assert SIDVocabulary.load(path) == vocab
    # No temp files left behind by the atomic write.
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]

    payload = json.loads(path.read_text())
    payload["format_version"] = 999
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="format_version"):
        SIDVocabulary.load(path)
    payload["format_version"] = 1
    payload["vocab_size"] = 3
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="vocab_size"):
        SIDVocabulary.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="malformed JSON"):
        SIDVocabulary.load(path)
