"""The DPSNet backbone: detectron2's FPN untouched, plus the counting pyramid's "count" feature."""

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from dpsnet.modeling.backbone import COUNT_FEATURE, CountingPyramid, DPSNetFPN, max_pool


def test_outputs_and_shapes_for_odd_sizes(cfg):
    backbone = build_backbone(cfg)
    assert isinstance(backbone, DPSNetFPN)
    shapes = backbone.output_shape()
    assert shapes[COUNT_FEATURE] == ShapeSpec(channels=32, stride=8)
    assert [k for k in shapes if k != COUNT_FEATURE] == ["p2", "p3", "p4", "p5", "p6"]
    for h, w in [(96, 160), (64, 32)]:  # padded sizes (multiples of size_divisibility 32)
        out = backbone(torch.randn(2, 3, h, w))
        assert out[COUNT_FEATURE].shape == (2, 32, h // 8, w // 8)
        assert out["p2"].shape == (2, 32, h // 4, w // 4)
    assert backbone.size_divisibility == 32


def test_detection_pyramid_keeps_detectron2_names(cfg):
    """A detectron2 FPN checkpoint maps onto the detection pyramid key for key."""
    ours = build_backbone(cfg).state_dict()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    stock = build_backbone(cfg).state_dict()
    detection = {k: v.shape for k, v in ours.items() if not k.startswith("count_pyramid.")}
    assert detection == {k: v.shape for k, v in stock.items()}
    assert any(k.startswith("count_pyramid.") for k in ours)


def test_counting_pyramid_fuses_every_level():
    shapes = {f"p{i}": ShapeSpec(channels=4, stride=2**i) for i in range(2, 7)}
    pyramid = CountingPyramid(shapes, out_stride=8, out_channels=6)
    feats = {
        f"p{i}": torch.randn(1, 4, 64 // 2**i, 96 // 2**i, requires_grad=True) for i in range(2, 7)
    }
    out = pyramid(feats)
    assert out.shape == (1, 6, 8, 12)
    out.square().sum().backward()
    for name, x in feats.items():  # P2 (pooled), P3 (lateral), P4-P6 (top-down) all contribute
        assert x.grad is not None and x.grad.abs().sum() > 0, name


def test_counting_pyramid_handles_non_divisible_sizes():
    shapes = {f"p{i}": ShapeSpec(channels=4, stride=2**i) for i in range(2, 5)}
    pyramid = CountingPyramid(shapes, out_stride=8, out_channels=4)
    feats = {"p2": torch.randn(1, 4, 25, 13), "p3": torch.randn(1, 4, 13, 7)}
    feats["p4"] = torch.randn(1, 4, 7, 4)
    assert pyramid(feats).shape == (1, 4, 13, 7)


def test_fusion_stride_must_be_an_input_level(cfg):
    cfg.MODEL.COUNTING_HEAD.STRIDE = 2
    with pytest.raises(ValueError, match="fusion stride 2"):
        build_backbone(cfg)


@pytest.mark.parametrize("shape,k", [((2, 3, 8, 12), 2), ((1, 2, 16, 8), 4), ((1, 2, 9, 7), 2)])
def test_max_pool_matches_torch(shape, k):
    x = torch.randn(shape)
    expected = torch.nn.functional.max_pool2d(x, k, k, ceil_mode=True)
    assert torch.equal(max_pool(x, k), expected)


def test_instance_norm_of_the_head_is_per_channel_per_image(cfg):
    from dpsnet.modeling.counting_head import _norm

    norm = _norm("IN", 4)
    x = torch.randn(2, 4, 5, 6) * 3 + 7
    torch.testing.assert_close(norm(x), torch.nn.functional.instance_norm(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("detach", [False, True])
def test_detached_counting_pyramid_keeps_its_gradient_out_of_the_detector(cfg, detach):
    cfg.MODEL.DPSNET.COUNT_PYRAMID.DETACH_INPUT = detach
    backbone = build_backbone(cfg)
    out = backbone(torch.randn(1, 3, 128, 128))
    out[COUNT_FEATURE].square().mean().backward()
    stem = backbone.fpn_output3.weight.grad
    assert (stem is not None and stem.abs().sum() > 0) != detach
    lateral = next(backbone.count_pyramid.parameters()).grad
    assert lateral is not None and lateral.abs().sum() > 0
    # The detection levels are the same either way.
    torch.manual_seed(0)
    x = torch.randn(1, 3, 128, 128)
    assert torch.equal(backbone(x)["p3"], backbone(x)["p3"])
