"""The README's Python API example runs as written: its python code block is
extracted and executed, and what it decodes is checked against the catalogue."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```python fenced blocks of ``markdown``, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)


def test_readme_python_example_runs_and_decodes_catalogue_sids():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) == 1, "the README should hold one python example (the Python API section)"
    namespace: dict = {}
    exec(compile(blocks[0], f"{README}:python", "exec"), namespace)

    out, data, sid_row_of_item = namespace["out"], namespace["data"], namespace["sid_row_of_item"]
    valid = np.asarray(out.valid)
    assert valid.shape == (4, 10) and valid.all()
    # Every decoded beam is a catalogue SID, and item_ids name the distinct-SID row of that SID.
    distinct_codes = np.zeros((sid_row_of_item.max() + 1, data.num_levels), np.int64)
    distinct_codes[sid_row_of_item] = data.sid_codes
    np.testing.assert_array_equal(np.asarray(out.sid_codes), distinct_codes[np.asarray(out.item_ids)])
    scores = np.asarray(out.scores)
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first
