"""Random SID catalogues shared by the constrained/ tests."""

import numpy as np


def random_catalogue(rng: np.random.Generator, num_items: int, codebook_sizes) -> np.ndarray:
    """Up to ``num_items`` distinct random SIDs, ``int32[n, len(codebook_sizes)]``.

    Draws three times as many rows as asked and keeps the first occurrence of
    each SID, in draw order (so the catalogue is not sorted).
    """
    codes = np.stack([rng.integers(0, k, size=num_items * 3) for k in codebook_sizes], axis=1)
    _, first = np.unique(codes, axis=0, return_index=True)
    return codes[np.sort(first)][:num_items].astype(np.int32)
