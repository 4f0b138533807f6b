import numpy as np
import pytest

from workflow_scripts.split import split_by_group


@pytest.fixture
def groups():
    rng = np.random.default_rng(0)
    names = np.array([f"plate1_well{i:03d}" for i in range(50)])
    return names[rng.integers(0, 50, size=5000)]


def test_no_group_on_both_sides(groups):
    is_val = split_by_group(groups, 0.2, seed=1)
    assert is_val.dtype == bool and is_val.shape == groups.shape
    assert not set(groups[is_val]) & set(groups[~is_val])


def test_fraction_of_groups(groups):
    for fraction in (0.1, 0.2, 0.5, 0.9):
        n_val = len(set(groups[split_by_group(groups, fraction, seed=0)]))
        assert n_val == round(fraction * 50)


def test_both_sides_non_empty():
    names = ["a", "b", "a", "b"]
    for fraction in (0.01, 0.99):
        is_val = split_by_group(names, fraction)
        assert is_val.any() and not is_val.all()


def test_deterministic_and_row_order_independent(groups):
    is_val = split_by_group(groups, 0.3, seed=5)
    np.testing.assert_array_equal(is_val, split_by_group(list(groups), 0.3, seed=5))
    perm = np.random.default_rng(1).permutation(len(groups))
    np.testing.assert_array_equal(split_by_group(groups[perm], 0.3, seed=5), is_val[perm])
    assert set(groups[split_by_group(groups, 0.3, seed=6)]) != set(groups[is_val])


def test_adding_a_group_moves_at_most_one_existing_group(groups):
    before = set(groups[split_by_group(groups, 0.2, seed=2)])
    grown = np.r_[groups, ["plate2_well000"] * 10]
    after = set(grown[split_by_group(grown, 0.2, seed=2)]) - {"plate2_well000"}
    assert len(before ^ after) <= 1


def test_integer_group_names():
    is_val = split_by_group(np.repeat(np.arange(10), 3), 0.2)
    assert is_val.sum() == 6


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((["only"] * 5,), "groups"),
        (([],), "groups"),
        ((np.zeros((3, 2)),), "groups"),
        (("abc",), "groups"),
        ((["a", "b"], 0.0), "val_fraction"),
        ((["a", "b"], 1.0), "val_fraction"),
        ((["a", "b"], True), "val_fraction"),
        ((["a", "b"], 0.5, 1.5), "seed"),
    ],
)
def test_invalid_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        split_by_group(*args)
