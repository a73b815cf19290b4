"""STATIC-style trie index and jit-compiled constrained beam search.

Where it sits: checkpoint -> **index -> decode** -> serve. ``decode_batch``
(:mod:`constrained.decode`) is the one jitted entry point: model + index -> items.
"""

from constrained.beam_search import (
    BeamSearchOutput,
    alive_state_table,
    constrained_beam_search,
    unconstrained_beam_search,
)
from constrained.decode import build_eval_index, decode_batch, history_tokens
from constrained.index import (
    DeviceIndex,
    DuplicateSIDError,
    IndexCapacity,
    IndexCapacityError,
    IndexFileError,
    TrieIndex,
    build_index,
    disambiguate_sids,
    find_duplicate_groups,
    pad_index,
)

__all__ = [
    "BeamSearchOutput",
    "DeviceIndex",
    "DuplicateSIDError",
    "IndexCapacity",
    "IndexCapacityError",
    "IndexFileError",
    "TrieIndex",
    "alive_state_table",
    "build_eval_index",
    "build_index",
    "constrained_beam_search",
    "decode_batch",
    "disambiguate_sids",
    "find_duplicate_groups",
    "history_tokens",
    "pad_index",
    "unconstrained_beam_search",
]
