"""Fault suite: `genrec build-index` reads only what it needs, the SID file (and
the vocabulary): it works, and builds the same index, when the interaction file is
absent or malformed (docs/reliability.md). It used to parse the whole interaction
file (2.6 GB of memory for a 200 MB file) and fail on it."""

import numpy as np
import pytest
from logging_state import kept_logging

from constrained.decode import build_eval_index
from constrained.index import TrieIndex
from genrec.synthetic import make_synthetic_dataset, write_sid_dataset
from serving.cli import main


@pytest.mark.parametrize("interactions", ["absent", "malformed"])
def test_build_index_never_reads_the_interactions(interactions, tmp_path, capsys):
    data = make_synthetic_dataset(num_items=60, num_users=10, codebook_size=8)
    paths = write_sid_dataset(data, tmp_path / "data", "toy")
    if interactions == "absent":
        paths["inter"].unlink()
    else:
        paths["inter"].write_text('{"u1": ["0", "1"')
    with kept_logging():
        assert main(["build-index", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "index.npz")]) == 0, \
            capsys.readouterr().err
    assert capsys.readouterr().err == ""
    saved = TrieIndex.load(tmp_path / "index.npz")
    expected, _ = build_eval_index(data.sid_codes, data.vocab)
    assert saved._meta() == expected._meta()
    for name, array in expected._arrays().items():
        np.testing.assert_array_equal(getattr(saved, name), array, err_msg=name)
