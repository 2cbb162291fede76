"""Fixtures of the evaluation tests: small generated RPC-like sets (no images needed)."""

import pytest

from dpsnet.evaluation.synthetic import make_ground_truth, make_results


@pytest.fixture(scope="session")
def small_gt():
    """45 images (15 per level), 12 categories in 3 supercategories, every category present."""
    gt = make_ground_truth(45, num_categories=12, num_supercategories=3, seed=3, image_size=600)
    assert len({a["category_id"] for a in gt["annotations"]}) == 12
    return gt


@pytest.fixture(scope="session")
def small_results(small_gt):
    """A noisy detector on ``small_gt`` with a confident detection in every image."""
    return make_results(small_gt, seed=4, miss_rate=0.05, confusion_rate=0.05)
