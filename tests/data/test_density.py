"""Density targets: mass per object and per channel, the sigma rule, borders, flips, layouts."""

import numpy as np
import pytest
import torch

from dpsnet.data.density import DensityLayout, DensityTargetGenerator

# classes 0, 1 -> supercategory 0; class 2 -> supercategory 1
LAYOUT = DensityLayout(("total", "supercategory", "category"), 3, (0, 0, 1))


def test_layout_channels():
    assert LAYOUT.num_channels == 1 + 2 + 3
    assert [LAYOUT.level_offset(lv) for lv in LAYOUT.levels] == [0, 1, 3]
    assert LAYOUT.channel_table().tolist() == [[0, 1, 3], [0, 1, 4], [0, 2, 5]]
    with pytest.raises(ValueError, match="supercategory"):
        DensityLayout(("supercategory",), 3)
    with pytest.raises(ValueError, match="subset"):
        DensityLayout(("per_shelf",), 3)


@pytest.mark.parametrize("image_size", [(97, 123), (64, 64), (33, 250)])
def test_map_integrates_to_the_count_per_channel(image_size):
    rng = np.random.default_rng(sum(image_size))
    h, w = image_size
    n = 7
    x0, y0 = rng.uniform(0, w - 2, n), rng.uniform(0, h - 2, n)
    boxes = np.stack([x0, y0, np.minimum(x0 + rng.uniform(2, 60, n), w),
                      np.minimum(y0 + rng.uniform(2, 60, n), h)], axis=1)  # fmt: skip
    classes = np.array([0, 2, 2, 1, 0, 2, 2])
    out = DensityTargetGenerator(LAYOUT, stride=8, mass=100.0)(boxes, classes, image_size)
    assert out.shape == (6, -(-h // 8), -(-w // 8)) and out.dtype == torch.float32
    assert (out >= 0).all()
    per_class = np.bincount(classes, minlength=3)
    expected = [n, per_class[0] + per_class[1], per_class[2], *per_class]
    torch.testing.assert_close(out.sum(dim=(1, 2)), 100.0 * torch.tensor(expected).float())


def test_objects_at_the_border_keep_their_mass():
    gen = DensityTargetGenerator(DensityLayout(("total",), 1), stride=8)
    boxes = [[0, 0, 4, 4], [90, 50, 100, 60], [0, 0, 100, 60]]  # corners and the whole image
    out = gen(boxes, [0, 0, 0], (60, 100))
    assert out.sum().item() == pytest.approx(300.0, rel=1e-5)


def test_sigma_rule():
    """sigma = max(min_sigma, min(w, h) / 2 * 5 / 12) in map pixels: a big box spreads wider."""
    gen = DensityTargetGenerator(DensityLayout(("total",), 1), stride=8, min_sigma=1.0)
    size = (400, 400)

    def spread(box):
        m = gen([box], [0], size)[0].double()
        ys = torch.arange(m.shape[0], dtype=torch.float64) + 0.5
        py = m.sum(dim=1) / m.sum()
        mean = (py * ys).sum()
        return float(((py * (ys - mean) ** 2).sum()).sqrt())

    # a 96-px box: 12 map px, sigma = 12 / 2 * 5 / 12 = 2.5 (pixel integration adds 1/12)
    assert spread([152, 152, 248, 248]) == pytest.approx((2.5**2 + 1 / 12) ** 0.5, rel=0.02)
    # a 16-px box: 2 map px -> 0.42, clamped to min_sigma 1
    assert spread([192, 192, 208, 208]) == pytest.approx((1.0 + 1 / 12) ** 0.5, rel=0.02)


def test_horizontal_flip_flips_the_map():
    """Boxes mirrored across an image whose width is a multiple of the stride: mirrored map."""
    gen = DensityTargetGenerator(LAYOUT, stride=8)
    w, h = 160, 96
    boxes = np.array([[5.0, 6.0, 40.0, 31.0], [50.0, 20.0, 158.0, 71.0]])
    flipped = boxes.copy()
    flipped[:, [0, 2]] = w - boxes[:, [2, 0]]
    a = gen(boxes, [0, 2], (h, w))
    b = gen(flipped, [0, 2], (h, w))
    torch.testing.assert_close(b, a.flip(-1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, a.flip(-1), atol=1e-3)  # the test would notice a no-op


def test_empty_and_bad_input():
    gen = DensityTargetGenerator(LAYOUT)
    out = gen(np.zeros((0, 4)), [], (50, 70))
    assert out.shape == (6, 7, 9) and out.abs().sum() == 0
    with pytest.raises(ValueError, match="out of range"):
        gen([[0, 0, 5, 5]], [3], (50, 70))
    with pytest.raises(ValueError, match="1 boxes but 2 classes"):
        gen([[0, 0, 5, 5]], [0, 1], (50, 70))
    with pytest.raises(ValueError, match="bad density parameters"):
        DensityTargetGenerator(LAYOUT, mass=0)
