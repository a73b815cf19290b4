"""Fault suite: SID codes far out of range are refused with one clear error
(docs/reliability.md), instead of a MemoryError or a huge index."""

import json

import pytest

from genrec.datasets import load_sid_dataset
from genrec.vocab import MAX_CODEBOOK_SIZE, SIDVocabulary


def write_dataset(folder, far_code: int):
    index = {str(i): [f"<a_{i % 3}>", f"<b_{i}>"] for i in range(6)}
    index["5"] = [f"<a_{far_code}>", "<b_5>"]
    (folder / "T.index.rq-kmeans.json").write_text(json.dumps(index))
    (folder / "T.inter.json").write_text(json.dumps({"u0": [0, 1, 2, 3, 4, 5]}))


@pytest.mark.parametrize("far_code", [2_000_000_000, 50_000_000, MAX_CODEBOOK_SIZE])
def test_out_of_range_code_is_one_clear_error(tmp_path, far_code):
    write_dataset(tmp_path, far_code)
    with pytest.raises(ValueError) as error:
        load_sid_dataset(tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert "T.index.rq-kmeans.json" in message and f"{far_code + 1} codes" in message


def test_largest_allowed_codebook_still_loads(tmp_path):
    write_dataset(tmp_path, MAX_CODEBOOK_SIZE - 1)
    data = load_sid_dataset(tmp_path, min_interactions=1)
    assert data.vocab.codebook_sizes[0] == MAX_CODEBOOK_SIZE
    with pytest.raises(ValueError, match="more than the"):
        SIDVocabulary((3, MAX_CODEBOOK_SIZE + 1))
