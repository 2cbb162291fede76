"""Triplet losses with a soft margin, softplus(d(a, p) - d(a, n)), over a K x P batch."""

import torch
import torch.nn.functional as F


def pairwise_distances(embeddings: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances between all rows.

    Args:
        embeddings: (N, D).

    Returns:
        (N, N) distances; the square root is taken of max(d^2, eps) so its gradient stays finite
        on the diagonal.
    """
    sq = (embeddings * embeddings).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * embeddings @ embeddings.T
    return d2.clamp(min=eps).sqrt()


def soft_margin(d_ap: torch.Tensor, d_an: torch.Tensor) -> torch.Tensor:
    """The soft-margin triplet term softplus(d_ap - d_an), elementwise."""
    return F.softplus(d_ap - d_an)


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def batch_all_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean soft-margin loss over every valid triplet (a, p, n) of the batch.

    Args:
        embeddings: (N, D).
        labels: (N,) integer labels.

    Returns:
        Scalar; 0 (with a gradient path) when the batch has no valid triplet.
    """
    d = pairwise_distances(embeddings)
    pos, neg = _masks(labels)
    valid = pos[:, :, None] & neg[:, None, :]  # [a, p, n]
    if not valid.any():
        return embeddings.sum() * 0.0
    losses = soft_margin(d[:, :, None], d[:, None, :])
    return losses[valid].mean()


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over anchors of softplus(hardest positive distance - hardest negative distance).

    Anchors without a positive or a negative in the batch are left out.

    Args:
        embeddings: (N, D).
        labels: (N,) integer labels.

    Returns:
        Scalar; 0 (with a gradient path) when no anchor has both.
    """
    d = pairwise_distances(embeddings)
    pos, neg = _masks(labels)
    keep = pos.any(1) & neg.any(1)
    if not keep.any():
        return embeddings.sum() * 0.0
    hardest_pos = d.masked_fill(~pos, float("-inf")).max(1).values
    hardest_neg = d.masked_fill(~neg, float("inf")).min(1).values
    return soft_margin(hardest_pos[keep], hardest_neg[keep]).mean()


class BNNeckClassifier(torch.nn.Module):
    """A training-only softmax classifier over the embedding ("BNNeck", Luo et al., "Bag of
    Tricks and a Strong Baseline for Deep Person Re-identification"): batch normalisation, then
    a linear layer without bias. The triplet loss acts on the embedding, the cross-entropy on
    the normalised one, so the two do not fight over its scale. It is dropped after training:
    the gallery names crops, so products added later need no classifier weights.
    """

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(embed_dim)
        self.bn.bias.requires_grad_(False)  # as in the paper: no shift before the classifier
        self.fc = torch.nn.Linear(embed_dim, num_classes, bias=False)
        torch.nn.init.normal_(self.fc.weight, std=0.001)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, D) embeddings -> (N, C) logits."""
        return self.fc(self.bn(embeddings))
