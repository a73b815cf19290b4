"""Damage one file of an Orbax checkpoint item so that what it reads back changes (tests of damaged
checkpoints: tests/reliability/test_checkpoint_integrity.py, the damaged starts of warm starts and RL runs)."""

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp


def read_back(item_dir: Path) -> list[np.ndarray] | None:
    """The arrays Orbax reads from a checkpoint item, unverified (None: it cannot read them)."""
    try:
        with ocp.StandardCheckpointer() as reader:
            return [np.asarray(leaf) for leaf in jax.tree.leaves(reader.restore(item_dir))]
    except Exception:
        return None


def damage(item_dir: Path, how: str, intact: list[np.ndarray]) -> Path:
    """Damages one file of a checkpoint item so that what Orbax reads back changes, and returns it.

    ``flip``: one bit of a byte (the middle one, else at a quarter), read back
    without any error as other values (what the issue saw); ``truncate``: a file's second half cut;
    ``delete``: a file removed. Files are tried largest first: a file the
    reader does not use (OCDBT keeps some) is put back and the next one tried.
    """
    files = sorted((path for path in item_dir.rglob("*") if path.is_file()), key=lambda path: -path.stat().st_size)
    for target in files:
        before = target.read_bytes()
        for position in (0.5, 0.25, 0.75) if how == "flip" else (None,):
            if how == "flip":
                data = bytearray(before)
                data[int(len(data) * position)] ^= 0x01
                target.write_bytes(bytes(data))
            elif how == "truncate":
                target.write_bytes(before[: len(before) // 2])
            else:
                target.unlink()
            values = read_back(item_dir)
            changed = values is not None and any(not np.array_equal(a, b) for a, b in zip(values, intact))
            if changed or (values is None and how != "flip"):
                return target
            target.write_bytes(before)
    raise AssertionError(f"no {how} of one file under {item_dir} changes what Orbax reads")


def delete_a_used_file(checkpoint_dir: Path) -> Path:
    """Removes one file of ``checkpoint_dir``'s params item (``<dir>/<step>/params``) that Orbax needs to read
    it back, and returns it: a file OCDBT keeps but does not read would leave the checkpoint loadable."""
    item_dir = next(checkpoint_dir.glob("*/params"))
    return damage(item_dir, "delete", read_back(item_dir))

