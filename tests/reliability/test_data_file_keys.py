"""Fault suite: a user or item id given twice in one data file is an error naming
the file and the id (docs/reliability.md). JSON readers keep the last value
silently: a user's first interactions, or an item's first SID, were lost."""

import json
from pathlib import Path

import pytest

from genrec.datasets import load_sid_catalogue, load_sid_dataset

INDEX = {"i1": ["<a_0>", "<b_1>"], "i2": ["<a_1>", "<b_0>"], "i3": ["<a_1>", "<b_1>"]}
INTER = {"u1": ["i1", "i2", "i3"], "u2": ["i3", "i2", "i1"]}


def _object_text(pairs: list[tuple[str, object]]) -> str:
    """A JSON object with these key-value pairs in order, repeated keys kept (json.dumps cannot write them)."""
    return "{" + ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in pairs) + "}"


def _write(directory: Path, inter_pairs, index_pairs) -> None:
    (directory / "toy.inter.json").write_text(_object_text(inter_pairs))
    (directory / "toy.index.rq-kmeans.json").write_text(_object_text(index_pairs))


def test_repeated_user_id_names_the_file_and_the_user(tmp_path):
    _write(tmp_path, [*INTER.items(), ("u1", ["i2", "i3", "i1"])], list(INDEX.items()))
    with pytest.raises(ValueError) as error:
        load_sid_dataset(tmp_path)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "toy.inter.json")) and "user id 'u1' appears 2 times" in message
    assert "\n" not in message


@pytest.mark.parametrize("load", [load_sid_dataset, load_sid_catalogue])
def test_repeated_item_id_names_the_file_and_the_item(tmp_path, load):
    _write(tmp_path, list(INTER.items()), [*INDEX.items(), ("i2", ["<a_0>", "<b_0>"]), ("i2", ["<a_0>", "<b_0>"])])
    with pytest.raises(ValueError) as error:
        load(tmp_path)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "toy.index.rq-kmeans.json")) and "item id 'i2' appears 3 times" in message


def test_distinct_ids_load_as_written(tmp_path):
    _write(tmp_path, list(INTER.items()), list(INDEX.items()))
    data = load_sid_dataset(tmp_path)
    assert data.item_ids.tolist() == list(INDEX) and data.user_ids == list(INTER)
    assert [[data.item_ids[row] for row in sequence] for sequence in data.sequences] == list(INTER.values())
