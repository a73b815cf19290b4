"""A workdir's catalogue has an identity; a dataset of another catalogue is
refused by ``genrec recommend --data`` / ``genrec eval --data`` instead of
having its numeric item ids taken as the model's items."""

import dataclasses

import numpy as np
import pytest

from genrec.run_files import catalogue_fingerprint, check_same_catalogue
from genrec.synthetic import make_synthetic_dataset

CATALOGUE = make_synthetic_dataset(num_items=60, num_users=10, codebook_size=8, seed=0)


def test_fingerprint_is_the_ids_and_codes_in_order():
    ids, codes = CATALOGUE.item_ids, CATALOGUE.sid_codes
    assert catalogue_fingerprint(ids, codes) == catalogue_fingerprint(ids.copy(), codes.copy())
    recoded = codes.copy()
    recoded[3, 1] += 1
    assert catalogue_fingerprint(ids, recoded) != catalogue_fingerprint(ids, codes)
    assert catalogue_fingerprint(ids[::-1], codes[::-1]) != catalogue_fingerprint(ids, codes)


def test_the_same_catalogue_and_a_few_new_or_recoded_items_pass():
    check_same_catalogue(CATALOGUE, CATALOGUE.item_ids, CATALOGUE.sid_codes, "run")
    ids = CATALOGUE.item_ids.astype(object)
    ids[:20] = [f"new-{i}" for i in range(20)]  # a third unknown: still this catalogue
    codes = CATALOGUE.sid_codes.copy()
    codes[20:30, 0] = (codes[20:30, 0] + 1) % 8  # a quarter of the shared items recoded
    check_same_catalogue(dataclasses.replace(CATALOGUE, item_ids=ids.astype(str), sid_codes=codes),
                         CATALOGUE.item_ids, CATALOGUE.sid_codes, "run")


def test_ids_that_mostly_miss_are_refused_naming_examples():
    # Another dataset with the same numeric ids at the start and many more items
    # (Beauty's ids 0-12100 against Office's 0-2419).
    bigger = make_synthetic_dataset(num_items=200, num_users=10, codebook_size=8, seed=1)
    with pytest.raises(ValueError, match=r"only 60 of its 200 items are in the catalogue of run \(e\.g\. '60'"):
        check_same_catalogue(bigger, CATALOGUE.item_ids, CATALOGUE.sid_codes, "run")


def test_same_ids_with_other_sids_are_refused():
    other = make_synthetic_dataset(num_items=60, num_users=10, codebook_size=8, seed=1)
    assert np.array_equal(other.item_ids, CATALOGUE.item_ids)
    with pytest.raises(ValueError, match="items it shares with the catalogue of run have other SIDs") as error:
        check_same_catalogue(other, CATALOGUE.item_ids, CATALOGUE.sid_codes, "run")
    assert "\n" not in str(error.value)
    assert "np.str_" not in str(error.value)  # the item as the user wrote it, not NumPy's repr


def test_sids_of_another_depth_are_refused_in_one_line():
    # An index rebuilt with another number of levels (compared element-wise, NumPy could not broadcast).
    deeper = make_synthetic_dataset(num_items=60, num_users=10, codebook_size=8, num_levels=4, seed=0)
    with pytest.raises(ValueError, match="its SIDs have 4 levels, those of the catalogue of run 3"):
        check_same_catalogue(deeper, CATALOGUE.item_ids, CATALOGUE.sid_codes, "run")
