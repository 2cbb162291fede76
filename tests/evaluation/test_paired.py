"""Paired comparison of two models' cAcc on the same images (dpsnet.evaluation.paired)."""

import pytest

from dpsnet.evaluation.paired import paired_cacc_difference


def _per_image(exact, ids=None):
    return {"image_ids": list(ids if ids is not None else range(len(exact))), "exact": exact}


def test_difference_counts_only_discordant_images():
    a = _per_image([True] * 60 + [False] * 40)
    b = _per_image([True] * 50 + [False] * 40 + [True] * 10)  # 10 lost, 20 won
    found = paired_cacc_difference(a, b)
    assert found["difference"] == pytest.approx(0.0)
    assert (found["first_only"], found["second_only"], found["images"]) == (10, 10, 100)
    assert found["low"] < 0 < found["high"]


def test_clear_win_interval_excludes_zero_and_is_seeded():
    a = _per_image([True] * 70 + [False] * 30)
    b = _per_image([True] * 50 + [False] * 50)
    one = paired_cacc_difference(a, b, seed=3)
    assert one["difference"] == pytest.approx(20.0)
    assert 0 < one["low"] < 20.0 < one["high"] < 40.0
    assert paired_cacc_difference(a, b, seed=3) == one
    assert "seed 3" in one["method"]
    assert paired_cacc_difference(b, a, seed=3)["difference"] == pytest.approx(-20.0)


def test_pairs_by_image_id_on_the_shared_images():
    a = _per_image([True, False, True], ids=[7, 8, 9])
    b = _per_image([False, True], ids=[9, 8])  # 7 was not evaluated for b
    found = paired_cacc_difference(a, b)
    assert found["images"] == 2
    assert found["difference"] == pytest.approx(0.0)  # 8: -1, 9: +1
    assert paired_cacc_difference(a, _per_image([True], ids=[1])) is None


def test_identical_models_have_a_zero_width_interval():
    a = _per_image([True, False] * 10)
    found = paired_cacc_difference(a, a)
    assert found["difference"] == found["low"] == found["high"] == 0.0


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="3 image ids but 2"):
        paired_cacc_difference(_per_image([True, False], ids=[1, 2, 3]), _per_image([True]))
