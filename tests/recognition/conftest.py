"""Tiny recogniser fixtures: an untrained ResNet-18 embedder on 32 px crops, saved to disk."""

import pytest
import torch

from dpsnet.recognition import ProductEmbedder, save_embedder

#: Crop geometry of the tiny embedder (small enough for a second of CPU per few hundred crops).
CROP_SIZE = 32
PADDING = 0.1


@pytest.fixture(scope="session")
def tiny_embedder():
    torch.manual_seed(0)
    return ProductEmbedder(arch="resnet18", embed_dim=16, hidden_dim=32).eval()


@pytest.fixture(scope="session")
def tiny_weights(tiny_embedder, tmp_path_factory):
    """A recogniser checkpoint as tools/train_recognizer.py writes it."""
    path = tmp_path_factory.mktemp("recognizer") / "model_final.pth"
    save_embedder(tiny_embedder, str(path), {"crop_size": CROP_SIZE, "padding": PADDING})
    return str(path)
