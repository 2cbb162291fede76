"""Soft-margin triplet losses on hand-computed triplets."""

import math

import pytest
import torch

from dpsnet.recognition.losses import (
    BNNeckClassifier,
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    pairwise_distances,
    soft_margin,
)


def sp(x):
    return math.log1p(math.exp(x))


# Four points on a line: products A at 0 and 1, products B at 3 and 7.
POINTS = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
LABELS = torch.tensor([0, 0, 1, 1])


def test_pairwise_distances():
    d = pairwise_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    assert torch.allclose(d, torch.tensor([[0.0, 5.0], [5.0, 0.0]]), atol=1e-5)


def test_soft_margin_is_softplus_of_the_difference():
    got = soft_margin(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0]))
    assert torch.allclose(got, torch.tensor([sp(-2.0), math.log(2.0)]))


def test_batch_all_by_hand():
    # Every (anchor, positive, negative), d(a, p) - d(a, n):
    #   a=0 p=1: n=2 -> 1-3, n=3 -> 1-7;   a=1 p=0: n=2 -> 1-2, n=3 -> 1-6
    #   a=2 p=3: n=0 -> 4-3, n=1 -> 4-2;   a=3 p=2: n=0 -> 4-7, n=1 -> 4-6
    diffs = [-2, -6, -1, -5, 1, 2, -3, -2]
    expected = sum(sp(x) for x in diffs) / len(diffs)
    got = batch_all_triplet_loss(POINTS, LABELS)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_batch_hard_by_hand():
    # Hardest positive / negative per anchor: a=0: 1 / 3; a=1: 1 / 2; a=2: 4 / 2; a=3: 4 / 6.
    expected = (sp(1 - 3) + sp(1 - 2) + sp(4 - 2) + sp(4 - 6)) / 4
    got = batch_hard_triplet_loss(POINTS, LABELS)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_anchors_without_positive_are_left_out():
    # A third product with a single point at 10: an anchor without a positive, only a negative.
    points = torch.cat([POINTS, torch.tensor([[10.0]])])
    labels = torch.cat([LABELS, torch.tensor([2])])
    hard = (sp(1 - 3) + sp(1 - 2) + sp(4 - 2) + sp(4 - 3)) / 4  # a=3's hardest negative: 10
    assert batch_hard_triplet_loss(points, labels).item() == pytest.approx(hard, rel=1e-5)


def test_gradients_pull_positives_together_and_push_negatives_apart():
    x = POINTS.clone().requires_grad_(True)
    batch_hard_triplet_loss(x, LABELS).backward()
    assert torch.isfinite(x.grad).all()
    # Point 2 (product B at 3, nearest to A) must move away from A (grad negative = move up).
    assert x.grad[2, 0] < 0


@pytest.mark.parametrize("loss", [batch_all_triplet_loss, batch_hard_triplet_loss])
def test_no_valid_triplet_gives_zero_with_a_gradient_path(loss):
    x = torch.randn(3, 4, requires_grad=True)
    value = loss(x, torch.tensor([0, 1, 2]))
    assert value.item() == 0.0
    value.backward()
    assert x.grad is not None


def test_bnneck_classifier_learns_to_separate_labels():
    torch.manual_seed(0)
    emb = torch.randn(16, 4)
    labels = torch.arange(16) % 2
    emb[labels == 1, 0] += 3.0
    head = BNNeckClassifier(4, 2)
    assert not head.bn.bias.requires_grad
    optimizer = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=0.1)
    first = None
    for _ in range(50):
        loss = torch.nn.functional.cross_entropy(head(emb), labels)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first == pytest.approx(math.log(2), abs=0.01)  # starts uniform (tiny weights)
    assert loss.item() < 0.2 and (head(emb).argmax(1) == labels).all()
