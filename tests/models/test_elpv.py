import numpy as np

from edgefpga.models import elpv


def test_dataset_is_the_real_elpv(elpv_data):
    assert elpv_data.images.shape == (2624, 300, 300)
    assert elpv_data.images.dtype == np.uint8
    assert set(np.round(elpv_data.proba * 3).astype(int)) == {0, 1, 2, 3}
    assert int(elpv_data.labels.sum()) == 821


def test_contract_split_sizes_and_disjoint(elpv_data):
    train, test = elpv.stratified_split(elpv_data.proba, elpv_data.types)
    assert (len(train), len(test)) == (1970, 654)
    assert not set(train) & set(test)
    assert len(set(train) | set(test)) == 2624


def test_split_is_stratified(elpv_data):
    train, test = elpv.stratified_split(elpv_data.proba, elpv_data.types)
    strata = elpv.strata_of(elpv_data.proba, elpv_data.types)
    for s in np.unique(strata):
        total = int((strata == s).sum())
        assert int((strata[test] == s).sum()) == int(round(0.25 * total))


def test_split_is_deterministic(elpv_data):
    a = elpv.stratified_split(elpv_data.proba, elpv_data.types)
    b = elpv.stratified_split(elpv_data.proba, elpv_data.types)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_validation_comes_from_train_only(elpv_data):
    parts = elpv.split(elpv_data)
    _, test = elpv.stratified_split(elpv_data.proba, elpv_data.types)
    assert np.array_equal(parts.test, test)
    assert not set(parts.val) & set(parts.test)
    assert not set(parts.val) & set(parts.fit)
    assert len(parts.train) == 1970
    assert 0.13 < len(parts.val) / 1970 < 0.17
