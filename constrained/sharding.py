"""Where a decode call runs: the request batch split over the local devices.

Where it sits: checkpoint -> index -> **decode layout** -> decode -> serve /
evaluate. ``serving.recommender.Recommender``, the batch job built on it and
``training.evaluate.evaluate_split`` decode through
``constrained.decode.decode_batch``; a :class:`DecodeLayout` places its inputs
so that one call uses every local device: the rows of the batch (history
tokens, masks, per-request filters) are split along axis 0 over a 1-D mesh
``("data",)``, the weights and the trie index are copied to every device. Rows
are decoded independently, so each device runs the same program on
``batch / num_devices`` requests and the results are those of one device
(docs/serving.md, "All local devices"; speed in docs/benchmarks.md).

One device is today's placement exactly: nothing is moved, the arrays go to
the jitted call as they are.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["DATA_AXIS", "DecodeLayout", "local_layout"]

DATA_AXIS = "data"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, eq=False)
class DecodeLayout:
    """The devices one decode call spans (build it with :func:`local_layout`).

    Attributes:
      mesh: 1-D mesh ``("data",)`` over the devices, or None for one device
        (arrays are passed on unplaced, as before data parallelism).
    """

    mesh: Mesh | None

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else int(self.mesh.size)

    def round_batch(self, batch_size: int) -> int:
        """``batch_size`` rounded up to a multiple of the device count (every device gets as many rows)."""
        return -(-int(batch_size) // self.num_devices) * self.num_devices

    def replicate(self, tree: T) -> T:
        """``tree`` (weights, a ``DeviceIndex``) copied to every device; a no-op when already there."""
        if self.mesh is None:
            return tree
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def shard_rows(self, array: Any) -> Any:
        """``array[B, ...]`` split along axis 0 over the devices (``B`` a multiple of
        :attr:`num_devices`, see :meth:`round_batch`); None stays None."""
        if self.mesh is None or array is None:
            return array
        if np.shape(array)[0] % self.num_devices:
            raise ValueError(
                f"a batch of {np.shape(array)[0]} rows does not split over {self.num_devices} devices; "
                f"pad it to {self.round_batch(np.shape(array)[0])} rows (DecodeLayout.round_batch)"
            )
        return jax.device_put(array, NamedSharding(self.mesh, PartitionSpec(DATA_AXIS)))


def local_layout(devices: int | None = None) -> DecodeLayout:
    """The layout over the first ``devices`` local devices of the default backend.

    Args:
      devices: how many; None = all local devices (``jax.local_device_count()``)
        in a single-process program. With several processes (multi-host
        training) None means 1: the caller's weights may live on other hosts'
        devices too, and decoding keeps them where they are.

    Raises:
      ValueError: ``devices`` is not in ``[1, jax.local_device_count()]``.
    """
    available = jax.local_devices()
    if devices is None:
        devices = len(available) if jax.process_count() == 1 else 1
    devices = int(devices)
    if not 1 <= devices <= len(available):
        raise ValueError(
            f"devices={devices}, but this process has {len(available)} local {available[0].platform} device(s); "
            f"pass a number in [1, {len(available)}] (--devices)"
        )
    if devices == 1:
        return DecodeLayout(mesh=None)
    return DecodeLayout(mesh=Mesh(np.asarray(available[:devices]), (DATA_AXIS,)))
