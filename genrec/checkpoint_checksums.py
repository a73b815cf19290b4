"""Checksums of a checkpoint's arrays: recorded when it is saved, verified when it is restored.

Where it sits: train loop -> checkpoint (**records**: training/checkpoint.py)
-> resume / run files (**verifies**: training/checkpoint.py, genrec/run_files.py).
A flipped byte in an Orbax/TensorStore file reads back as other finite
weights without any error; the record, saved in the checkpoint's ``meta``
JSON item (so it commits atomically with the arrays), turns that into a
refusal naming the array (docs/training.md, "Damaged checkpoints").

The record of one checkpoint (``meta["checksums"]``)::

    {"params": {"tree": "sha256:...", "arrays": {"decoder_layers/0/ffn/up/kernel": "sha256:...", ...}},
     "opt_state": {...}}

``arrays`` holds one :func:`genrec.array_digest.array_digest` per leaf (its
dtype, shape and bytes), ``tree`` their :func:`genrec.array_digest.digest_of_digests`
(the weights' identity, as ``tree_digest`` of the saved pytree gives it).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import jax

from genrec.array_digest import digest_of_digests, tree_digests

__all__ = [
    "CHECKSUMS_KEY",
    "CheckpointDamaged",
    "checksum_record",
    "local_replica",
    "quiet_abandoned_reads",
    "reading_error",
    "verify_checksums",
]

# The key of the record in a checkpoint's ``meta`` JSON item.
CHECKSUMS_KEY = "checksums"
# Longest reason quoted from a reading error (TensorStore's run to kilobytes).
_MAX_REASON_CHARS = 240


class CheckpointDamaged(ValueError):
    """A checkpoint whose files cannot be read, or whose arrays differ from the checksums saved with them.

    Attributes:
      step: the checkpoint's step.
      reason: what is wrong, in a few words (``"params/decoder/kernel checksum mismatch"``).
    """

    def __init__(self, message: str, *, step: int, reason: str):
        super().__init__(message)
        self.step = step
        self.reason = reason


def local_replica(leaf: Any) -> Any:
    """This process's copy of an array: the whole array where it is addressable here,
    else (multi-process data parallelism: replicated weights) the replica on a local device.

    Arrays split over processes (neither) give None: they are not checksummed.
    """
    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
        return leaf
    if leaf.is_fully_replicated:
        return leaf.addressable_shards[0].data
    return None


def _digests(tree: Any) -> dict[str, str]:
    """Per-leaf digests of ``tree``'s process-local values (leaves split over processes left out)."""
    return tree_digests(jax.tree.map(local_replica, tree))


def checksum_record(**items: Any) -> dict[str, dict[str, Any]]:
    """The record of a checkpoint's array items (e.g. ``params=pure_dict, opt_state=state``).

    Costs one host copy and one SHA-256 pass over every array.
    """
    record = {}
    for name, tree in items.items():
        arrays = _digests(tree)
        record[name] = {"tree": digest_of_digests(arrays), "arrays": arrays}
    return record


def verify_checksums(record: Mapping[str, Any], **items: Any) -> str | None:
    """Why restored array items do not match their record (the first bad array named), or None if they do.

    Args:
      record: ``meta["checksums"]`` of the checkpoint.
      items: the restored trees, by item name (``params=...``).
    """
    for name, tree in items.items():
        saved = record.get(name) if isinstance(record, Mapping) else None
        if not isinstance(saved, Mapping) or not isinstance(saved.get("arrays"), Mapping):
            return f"its checksum record has no {name} entry"
        if digest_of_digests(saved["arrays"]) != saved.get("tree"):
            return f"its {name} checksum record is inconsistent"
        restored = _digests(tree)
        for path in sorted(set(saved["arrays"]) | set(restored)):
            if path not in restored:
                return f"{name}/{path} is missing"
            if path not in saved["arrays"]:
                return f"{name}/{path} is not in its checksum record"
            if restored[path] != saved["arrays"][path]:
                return f"{name}/{path} checksum mismatch"
    return None


def reading_error(error: BaseException) -> str:
    """A one-line reason from an exception raised while reading a checkpoint.

    The innermost cause says most (TensorStore's ``Error reading "x/0.0" ...:
    Truncated Zstd-compressed stream``; Orbax wraps it in a page of spec).
    Also quiets what the failed read leaves behind (:func:`quiet_abandoned_reads`).
    """
    quiet_abandoned_reads()
    innermost = error
    while innermost.__cause__ is not None or innermost.__context__ is not None:
        innermost = innermost.__cause__ or innermost.__context__
    lines = [line.strip() for line in str(innermost).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 3] + "..."
    return f"unreadable: {type(innermost).__name__}: {text}" if text else f"unreadable: {type(innermost).__name__}"


# What a failed Orbax read leaves behind: its sibling TensorStore reads finish after
# Orbax closed their event loop, each reporting "Event loop is closed" (or its own
# read error) as an unraisable exception, and asyncio logs their unretrieved
# futures: pages of tracebacks after the one-line message that says it all.
_ABANDONED_READ_ERRORS = ("Event loop is closed", "Encountered error while reading array index")
_UNRETRIEVED = ("Future exception was never retrieved", "Task exception was never retrieved")
_quieted = False


def quiet_abandoned_reads() -> None:
    """Silences the leftovers of a failed checkpoint read (process-wide, from the first call on).

    Only those: an unraisable exception whose message starts with one of
    ``_ABANDONED_READ_ERRORS``, and asyncio's "exception was never retrieved"
    records; everything else still reaches the previous hook and handlers.
    """
    global _quieted
    if _quieted:
        return
    _quieted = True
    previous_hook = sys.unraisablehook

    def unraisable_hook(unraisable: Any) -> None:
        if not str(unraisable.exc_value).startswith(_ABANDONED_READ_ERRORS):
            previous_hook(unraisable)

    sys.unraisablehook = unraisable_hook
    logging.getLogger("asyncio").addFilter(lambda record: not str(record.msg).startswith(_UNRETRIEVED))
