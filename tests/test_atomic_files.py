"""Atomic writes: a failed write leaves the old file intact and no temp file."""

import pytest

from genrec.atomic_files import atomic_open, write_json_atomic, write_text_atomic


def test_success_replaces_and_failure_keeps_old_content(tmp_path):
    path = tmp_path / "sub" / "file.txt"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as f:
            f.write("half-written")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["file.txt"]
    write_json_atomic(path, {"a": 1})
    assert path.read_text() == '{"a": 1}'
    with atomic_open(path, "wb") as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
