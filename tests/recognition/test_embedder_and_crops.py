"""The embedder (shapes, checkpoints, trunk weights) and the crop geometry."""

import numpy as np
import pytest
import torch
import torchvision

from dpsnet.recognition import ProductEmbedder, load_embedder
from dpsnet.recognition.crops import augment_crops, bgr_to_rgb01, crop_boxes, random_erase
from dpsnet.recognition.embedder import fingerprint
from dpsnet.utils.io import BadInputError


def test_embeddings_are_unit_vectors(tiny_embedder):
    crops = torch.rand(3, 3, 32, 32)
    emb = tiny_embedder.embed(crops, batch_size=2)
    assert emb.shape == (3, 16)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    u8 = (crops * 255).round().to(torch.uint8)
    assert torch.allclose(tiny_embedder.embed(u8), emb, atol=1e-2)
    assert tiny_embedder.embed(torch.zeros(0, 3, 32, 32)).shape == (0, 16)


def test_checkpoint_round_trip(tiny_embedder, tiny_weights):
    model, extra = load_embedder(tiny_weights)
    assert extra["crop_size"] == 32
    assert fingerprint(model) == fingerprint(tiny_embedder)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model.embed(x), tiny_embedder.embed(x), atol=1e-6)


@pytest.mark.parametrize("content", [b"", b"garbage" * 20, "dict"])
def test_bad_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content == "dict":
        torch.save({"model": {}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(BadInputError, match="bad.pth"):
        load_embedder(str(path))
    with pytest.raises(BadInputError, match="not found"):
        load_embedder(str(tmp_path / "missing.pth"))


def test_trunk_weights_by_path(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = ProductEmbedder(arch="resnet18", embed_dim=8, hidden_dim=16, trunk_weights=str(path))
    assert torch.equal(model.trunk.conv1.weight, source.conv1.weight)
    torch.save({"conv1.weight": source.conv1.weight}, tmp_path / "partial.pth")
    with pytest.raises(BadInputError, match="partial.pth"):
        ProductEmbedder(arch="resnet18", trunk_weights=str(tmp_path / "partial.pth"))
    with pytest.raises(ValueError, match="arch"):
        ProductEmbedder(arch="vgg16")


def test_crop_geometry():
    """A crop is the padded square around the box's centre, resampled to size x size."""
    image = torch.zeros(3, 100, 200)
    image[:, 20:60, 50:90] = 1.0  # a 40 x 40 product
    box = torch.tensor([[50.0, 20.0, 90.0, 60.0]])
    crop = crop_boxes(image, box, size=24, padding=0.25)
    # Side 40 * 1.5 = 60 px -> 24 px: the product covers the central 16 px, context 4 px.
    assert crop.shape == (1, 3, 24, 24)
    assert crop[0, :, 5:19, 5:19].min() > 0.99
    assert crop[0, :, :3].max() < 0.01 and crop[0, :, :, -3:].max() < 0.01
    # A wide box gives a square crop around its centre (its longer side sets the scale).
    wide = crop_boxes(image, torch.tensor([[40.0, 30.0, 100.0, 50.0]]), 30, 0.0)
    assert wide.shape == (1, 3, 30, 30)
    assert crop_boxes(image, torch.zeros(0, 4), 8, 0.1).shape == (0, 3, 8, 8)


def test_bgr_to_rgb():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    rgb = bgr_to_rgb01(bgr)
    assert rgb.shape == (3, 2, 3) and rgb[2].min() == 1.0 and rgb[0].max() == 0.0
    with pytest.raises(ValueError):
        bgr_to_rgb01(bgr, "YUV")


def test_augmentation_is_seeded_and_keeps_shapes():
    stored = torch.rand(4, 3, 48, 48)
    a = augment_crops(stored, 32, torch.Generator().manual_seed(0))
    b = augment_crops(stored, 32, torch.Generator().manual_seed(0))
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b)
    plain = augment_crops(stored, 32, torch.Generator().manual_seed(0), rotate=False)
    assert not torch.equal(a, plain)
    erased = random_erase(torch.zeros(50, 3, 16, 16), 0.5, torch.Generator().manual_seed(0))
    touched = (erased.flatten(1) != 0).any(1).float().mean().item()
    assert 0.25 < touched < 0.75


def test_photometric_jitter():
    from dpsnet.recognition.crops import photometric_jitter

    crops = torch.rand(8, 3, 24, 24)
    assert photometric_jitter(crops, 0.0, 0.0, torch.Generator()) is crops
    a = photometric_jitter(crops, 0.8, 0.5, torch.Generator().manual_seed(1))
    b = photometric_jitter(crops, 0.8, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == crops.shape
    assert a.min() >= 0 and a.max() <= 1 and not torch.allclose(a, crops)
    # A blur alone keeps a flat image flat and lowers the variance of a noisy one.
    flat = torch.full((2, 3, 24, 24), 0.4)
    assert torch.allclose(photometric_jitter(flat, 0.0, 1.0, torch.Generator()), flat)
    blurred = photometric_jitter(crops, 0.0, 1.0, torch.Generator().manual_seed(0))
    assert blurred.var() < crops.var()


def test_paste_clutter_cuts_other_products_into_the_border():
    from dpsnet.recognition.crops import paste_clutter

    n, s = 6, 40
    crops = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, s, s) / 10
    out = paste_clutter(crops, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(crops[:, :, 0, 0], torch.arange(n).view(n, 1).expand(n, 3) / 10)  # kept
    centre = slice(int(0.3 * s), int(0.7 * s))
    assert torch.equal(out[:, :, centre, centre], crops[:, :, centre, centre])
    for i in range(n):
        changed = (out[i] != crops[i]).any(0)
        assert changed.any()
        values = set(out[i, 0][changed].tolist())
        assert crops[i, 0, 0, 0].item() not in values  # pieces come from other crops
        border = (
            changed[0].any() or changed[-1].any() or changed[:, 0].any() or changed[:, -1].any()
        )
        assert border
    assert torch.equal(paste_clutter(crops, 0.0, torch.Generator()), crops)
