"""The counting head: registry, channels from the config and dataset metadata, losses."""

import uuid

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.layers import ShapeSpec

from dpsnet.modeling.counting_head import (
    COUNTING_HEAD_REGISTRY,
    DensityCountingHead,
    build_counting_head,
    num_density_channels,
)

SHAPES = {"count": ShapeSpec(channels=16, stride=8), "p2": ShapeSpec(channels=16, stride=4)}


@pytest.fixture
def dataset_with_supercategories():
    name = f"counting_head_test_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(thing_classes=["a", "b", "c"], thing_supercategory_ids=[0, 1, 1])
    yield name
    MetadataCatalog.remove(name)


def test_build_from_registry(cfg):
    assert "DensityCountingHead" in COUNTING_HEAD_REGISTRY
    head = build_counting_head(cfg, SHAPES).eval()
    assert isinstance(head, DensityCountingHead)
    density, losses = head({"count": torch.randn(2, 16, 7, 9)})
    assert density.shape == (2, 1, 7, 9) and losses == {}
    assert (density >= 0).all()


@pytest.mark.parametrize(
    "levels,expected", [(["total"], 1), (["supercategory"], 2), (["category"], 3),
                        (["total", "supercategory", "category"], 6)]
)  # fmt: skip
def test_channels_from_levels_and_metadata(cfg, dataset_with_supercategories, levels, expected):
    cfg.DATASETS.TRAIN = (dataset_with_supercategories,)
    cfg.MODEL.COUNTING_HEAD.LEVELS = levels
    assert num_density_channels(cfg) == expected
    assert build_counting_head(cfg, SHAPES).num_channels == expected


def test_supercategory_level_needs_metadata(cfg):
    cfg.DATASETS.TRAIN = (f"no_such_dataset_{uuid.uuid4().hex[:8]}",)
    cfg.MODEL.COUNTING_HEAD.LEVELS = ["supercategory"]
    with pytest.raises(ValueError, match="thing_supercategory_ids"):
        num_density_channels(cfg)
    cfg.MODEL.COUNTING_HEAD.NUM_CHANNELS = 17  # explicit: the model builds without metadata
    assert num_density_channels(cfg) == 17


def test_supercategory_channels_come_from_metadata_in_memory(cfg, tmp_path):
    """The head reads no categories JSON: the tool does (read_layout_categories), then it builds."""
    import json

    from dpsnet.data.datasets import read_layout_categories
    from dpsnet.data.datasets.checkout import register_checkout_dataset, unregister_dataset
    from dpsnet.utils.io import BadInputError

    cats = [{"id": i, "name": n, "supercategory": s} for i, n, s in
            ((1, "a", "drink"), (2, "b", "food"), (3, "c", "food"))]  # fmt: skip
    (tmp_path / "cats.json").write_text(json.dumps({"images": [], "categories": cats}))
    name = f"counting_head_lazy_{uuid.uuid4().hex[:8]}"
    register_checkout_dataset(name, tmp_path / "cats.json", tmp_path)  # reads nothing now
    cfg.DATASETS.TRAIN = (name,)
    cfg.MODEL.COUNTING_HEAD.LEVELS = ["total", "supercategory"]
    try:
        with pytest.raises(ValueError, match="not read yet"):
            build_counting_head(cfg, SHAPES)
        assert "thing_supercategory_ids" not in MetadataCatalog.get(name).__dict__  # unread
        read_layout_categories(cfg)  # what load_config and the Trainer do
        assert build_counting_head(cfg, SHAPES).num_channels == 1 + 2
        (tmp_path / "cats.json").unlink()  # in memory now: the file is not needed any more
        assert num_density_channels(cfg) == 3
        register_checkout_dataset(name, tmp_path / "cats.json", tmp_path)  # a missing file
        read_layout_categories(cfg)  # absent: left for the build to report
        with pytest.raises(BadInputError, match="categories file not found: .*cats.json"):
            build_counting_head(cfg, SHAPES)
    finally:
        unregister_dataset(name)


def test_wrong_feature_or_stride_is_a_clear_error(cfg):
    cfg.MODEL.COUNTING_HEAD.IN_FEATURE = "p9"
    with pytest.raises(ValueError, match="p9"):
        build_counting_head(cfg, SHAPES)
    cfg.MODEL.COUNTING_HEAD.IN_FEATURE = "p2"
    with pytest.raises(ValueError, match="stride 4"):
        build_counting_head(cfg, SHAPES)


def test_losses():
    head = DensityCountingHead(
        in_feature="count", in_channels=16, num_channels=2, output_norm="", count_loss_weight=0.5
    ).train()
    features = {"count": torch.randn(2, 16, 6, 5)}
    density, _ = head(features, torch.zeros(2, 2, 6, 5))
    target = density.detach().clone()
    _, losses = head(features, target)
    assert losses["loss_density"].item() == 0 and losses["loss_count"].item() == 0
    target[0, 1, 2, 2] += 200.0  # two more objects in one channel of one image
    _, losses = head(features, target)
    assert losses["loss_count"].item() == pytest.approx(0.5 * 2.0 / 4, rel=1e-5)
    assert losses["loss_density"].item() == pytest.approx((200.0 - 0.5) / (2 * 2 * 6 * 5))
    with pytest.raises(ValueError, match="do not match"):
        head(features, torch.zeros(2, 2, 6, 4))


@pytest.mark.parametrize("activation, alive", [("relu", False), ("softplus", True)])
def test_output_activation_keeps_gradient_when_all_inputs_negative(activation, alive):
    """A dead ReLU passes no gradient; softplus keeps the head trainable."""
    head = DensityCountingHead(
        in_feature="count",
        in_channels=8,
        num_channels=1,
        output_norm="",
        output_activation=activation,
        count_loss_weight=1.0,
    )
    head.train()
    with torch.no_grad():
        head.predictor.bias.fill_(-20.0)  # every output pixel far below zero
    feats = {"count": torch.randn(2, 8, 6, 6)}
    targets = torch.full((2, 1, 6, 6), 5.0)
    _, losses = head(feats, targets)
    sum(losses.values()).backward()
    grad = head.predictor.bias.grad.abs().sum().item()
    assert (grad > 0) == alive


def test_unknown_output_activation_is_refused():
    with pytest.raises(ValueError, match="OUTPUT_ACTIVATION must be one of"):
        DensityCountingHead(
            in_feature="count", in_channels=8, num_channels=1, output_activation="tanh"
        )


def test_per_image_weights_leave_out_images_whose_map_is_incomplete():
    head = DensityCountingHead(
        in_feature="count", in_channels=16, num_channels=1, output_norm="", count_loss_weight=0.5
    ).train()
    features = {"count": torch.randn(2, 16, 6, 5)}
    density, _ = head(features, torch.zeros(2, 1, 6, 5))
    target = density.detach().clone()
    target[1, 0, 3, 3] += 300.0  # image 1 has three objects its map does not show
    _, full = head(features, target)
    _, ones = head(features, target, torch.ones(2))
    _, left_out = head(features, target, torch.tensor([1.0, 0.0]))
    _, none = head(features, target, torch.zeros(2))
    assert full["loss_count"].item() > 0
    for k in full:
        assert ones[k].item() == pytest.approx(full[k].item())
        assert left_out[k].item() == pytest.approx(0.0, abs=1e-6)
        assert none[k].item() == 0.0
    none["loss_density"].backward()  # still part of the graph


def test_ignore_regions_switch_off_the_counting_loss_of_that_image(cfg, make_input):
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    model = build_model(cfg)
    x = make_input(96, 128, [[10, 10, 50, 60]], [1])
    with EventStorage(0):
        plain = model([x])
        x["ignore_boxes"] = torch.tensor([[60.0, 20.0, 110.0, 80.0]])
        ignored = model([x])
    assert plain["loss_density"].item() > 0
    assert ignored["loss_density"].item() == 0.0
