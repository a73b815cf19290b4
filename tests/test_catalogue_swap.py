"""benchmarks/catalogue_swap.py: the catalogues it swaps between. Speed is
measured on the GPU, never here (the script's CPU smoke is in its docstring)."""

import numpy as np

from constrained.index import IndexCapacity
from tests.benchmark_scripts import load_script

swap = load_script("catalogue_swap")


def test_next_day_retires_and_adds_the_churn_and_fits_the_capacity():
    rng = np.random.default_rng(0)
    num_items, churn = 2000, 0.05
    pool_codes, pool_ids = swap.day_zero(rng, num_items, churn)
    assert len(np.unique(pool_codes, axis=0)) == len(pool_codes) == num_items + 100
    codes, ids = swap.next_day(rng, pool_codes, pool_ids, num_items, churn)
    assert len(ids) == num_items and len(np.unique(ids)) == num_items
    assert len(np.setdiff1d(pool_ids[:num_items], ids)) == 100  # retired
    np.testing.assert_array_equal(ids[-100:], pool_ids[num_items:])  # the new items, added at the end
    np.testing.assert_array_equal(codes, pool_codes[ids])
    capacity = IndexCapacity.for_catalogue(pool_codes[:num_items], headroom=1.25, codebook_sizes=(256,) * 4)
    assert capacity.covers(IndexCapacity.for_catalogue(codes, headroom=1.0))
    assert capacity.level_prefixes[0] == 256  # no more length-1 prefixes than level-0 codes
