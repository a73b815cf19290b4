"""Random SID catalogues and a fake prefix-hash model shared by the constrained/ tests."""

import jax.numpy as jnp
import numpy as np


def random_catalogue(rng: np.random.Generator, num_items: int, codebook_sizes) -> np.ndarray:
    """Up to ``num_items`` distinct random SIDs, ``int32[n, len(codebook_sizes)]``.

    Draws three times as many rows as asked and keeps the first occurrence of
    each SID, in draw order (so the catalogue is not sorted).
    """
    codes = np.stack([rng.integers(0, k, size=num_items * 3) for k in codebook_sizes], axis=1)
    _, first = np.unique(codes, axis=0, return_index=True)
    return codes[np.sort(first)][:num_items].astype(np.int32)


HASH_MOD = 997


class PrefixHashModel:
    """A fake model for the constrained/ tests: logits depend on the request and the whole prefix (a
    rolling hash kept in the per-slot cache), so a wrong cache reorder changes results and the
    constrained distribution differs per prefix. ``table float32[batch, levels, HASH_MOD, vocab]``."""

    def __init__(self, rng, batch, num_levels, vocab, scale=3.0):
        self.table = (scale * rng.standard_normal((batch, num_levels, HASH_MOD, vocab))).astype(np.float32)

    def step(self, shared, beam_cache, last_tokens, step):
        """The decode step (``step_fn``): logits ``[B, M, V]`` and the updated hash cache."""
        h = beam_cache["hash"]
        if step > 0:
            h = (h * 31 + last_tokens + 1) % HASH_MOD
        logits = shared["table"][jnp.arange(h.shape[0])[:, None], step, h]
        return logits, {"hash": h}

    def logits_fn(self, request, token_offsets):
        """The NumPy references' view: the logits after ``prefix`` (codes) of ``request``."""
        def fn(prefix):
            h = 0
            for level, code in enumerate(prefix):
                h = (h * 31 + token_offsets[level] + code + 1) % HASH_MOD
            return self.table[request, len(prefix), h]

        return fn

    def inputs(self, num_slots):
        """``(shared, cache)`` for a search or a draw with ``num_slots`` slots per request."""
        batch = self.table.shape[0]
        return {"table": jnp.asarray(self.table)}, {"hash": jnp.zeros((batch, num_slots), jnp.int32)}
