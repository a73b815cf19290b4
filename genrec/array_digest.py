"""Content hashes of arrays and pytrees of arrays: the identity of a checkpoint's weights.

A checkpoint is named by its step, but a step says nothing about its content:
a retrained workdir reuses step numbers, and a flipped byte keeps them. These
digests bind a result (a batch job's manifest, a checkpoint's checksum record)
to the exact bytes of the arrays it was made from (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["array_digest", "digest_of_digests", "tree_digest", "tree_digests"]


def array_digest(array: Any) -> str:
    """``sha256:<hex>`` of an array's dtype, shape and bytes (host copy; C order)."""
    host = np.ascontiguousarray(np.asarray(array))
    digest = hashlib.sha256()
    digest.update(f"{host.dtype.str}{host.shape}".encode())
    digest.update(memoryview(host.reshape(-1).view(np.uint8)))
    return "sha256:" + digest.hexdigest()


def tree_digests(tree: Any) -> dict[str, str]:
    """One :func:`array_digest` per leaf, keyed by the leaf's path (``"decoder/0/kernel"``)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_name(path): array_digest(leaf) for path, leaf in leaves}


def tree_digest(tree: Any) -> str:
    """One ``sha256:<hex>`` over every leaf's path and digest (order-independent of dict insertion)."""
    return digest_of_digests(tree_digests(tree))


def digest_of_digests(digests: Mapping[str, str]) -> str:
    """``sha256:<hex>`` of a ``{path: digest}`` record, paths sorted."""
    combined = hashlib.sha256()
    for name in sorted(digests):
        combined.update(f"{name}={digests[name]}\n".encode())
    return "sha256:" + combined.hexdigest()


def _path_name(path: tuple[Any, ...]) -> str:
    parts = []
    for key in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(key, attribute):
                parts.append(str(getattr(key, attribute)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)
