"""STATIC-style trie index and jit-compiled constrained beam search."""

from constrained.beam_search import (
    BeamSearchOutput,
    alive_state_table,
    constrained_beam_search,
    make_decoder,
    unconstrained_beam_search,
)
from constrained.index import (
    DeviceIndex,
    DuplicateSIDError,
    IndexFileError,
    TrieIndex,
    build_index,
    disambiguate_sids,
    find_duplicate_groups,
)

__all__ = [
    "BeamSearchOutput",
    "DeviceIndex",
    "DuplicateSIDError",
    "IndexFileError",
    "TrieIndex",
    "alive_state_table",
    "build_index",
    "constrained_beam_search",
    "disambiguate_sids",
    "find_duplicate_groups",
    "make_decoder",
    "unconstrained_beam_search",
]
