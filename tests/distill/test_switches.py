"""The ablation switches of distillation, on small hand-made inputs."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances

from dpsnet.config import add_dpsnet_config
from dpsnet.distill.audit import audit_pseudo_labels
from dpsnet.distill.evaluation import threshold_choice
from dpsnet.distill.ignore import add_ignore_regions, enable_ignore_regions, inside_ignore
from dpsnet.distill.labeller import pseudo_label_json
from dpsnet.distill.loop import control_config, round_config
from dpsnet.distill.pseudo_labels import (
    IMAGE_LEVEL,
    INSTANCE_LEVEL,
    REJECTED,
    CountLayout,
    accept_view,
    select_image,
)
from dpsnet.distill.teacher import EMAHook, merge_flip, unflip_boxes

# Total + one channel per category (3 categories).
TOTAL_CAT = CountLayout(("total", "category"), num_classes=3)


def _select(scores, classes, counts, layout, **kw):
    return select_image(
        np.array(scores),
        np.array(classes),
        np.array(counts, dtype=float),
        layout,
        threshold=0.8,
        instance_threshold=0.95,
        uncertain_threshold=0.3,
        **kw,
    )


def test_accept_rule_per_category_needs_the_right_products():
    # Two confident detections of class 0; the view says one of class 0 and one of class 1.
    counts = [2.0, 1.0, 1.0, 0.0]
    total = _select([0.9, 0.85], [0, 0], counts, TOTAL_CAT, accept_rule="total")
    per_cat = _select([0.9, 0.85], [0, 0], counts, TOTAL_CAT, accept_rule="per_category")
    assert total.kind == IMAGE_LEVEL  # the total (2) agrees
    assert per_cat.kind == REJECTED  # the products do not
    right = _select([0.9, 0.85], [0, 1], counts, TOTAL_CAT, accept_rule="per_category")
    assert right.kind == IMAGE_LEVEL


def test_accept_view_channels_and_errors():
    view, layout = accept_view(np.array([2.0, 1.0, 1.0, 0.0]), TOTAL_CAT, "per_category")
    assert view.tolist() == [1.0, 1.0, 0.0] and layout.levels == ("category",)
    cat_only = CountLayout(("category",), num_classes=3)
    view, layout = accept_view(np.array([1.0, 0.6, 0.0]), cat_only, "total")
    assert view.tolist() == [pytest.approx(1.6)] and layout.levels == ("total",)
    with pytest.raises(ValueError, match="category channels"):
        accept_view(np.array([3.0]), CountLayout(("total",), num_classes=3), "per_category")
    with pytest.raises(ValueError, match="ACCEPT_RULE"):
        accept_view(np.array([3.0]), CountLayout(("total",), num_classes=3), "most")


def test_uncertain_modes():
    # Count 5 disagrees with 2 confident detections: instance level, one uncertain (0.5).
    args = ([0.99, 0.97, 0.5, 0.1], [0, 1, 2, 2], [5.0, 0.0, 0.0, 0.0], TOTAL_CAT)
    for mode in ("paint", "ignore"):
        sel = _select(*args, uncertain_mode=mode)
        assert sel.kind == INSTANCE_LEVEL and sel.ignore.tolist() == [2]
    dropped = _select(*args, uncertain_mode="drop")
    assert dropped.kind == REJECTED and dropped.reason == "uncertain"
    # Without uncertain detections "drop" keeps the image.
    clean = _select([0.99, 0.97, 0.1], [0, 1, 2], [5.0, 0, 0, 0], TOTAL_CAT, uncertain_mode="drop")
    assert clean.kind == INSTANCE_LEVEL
    with pytest.raises(ValueError, match="UNCERTAIN_MODE"):
        _select(*args, uncertain_mode="blur")


def test_ignore_boxes_become_crowd_annotations_and_audit_skips_them():
    result = {
        "pool_image_id": 7,
        "pool_file_name": "/pool/7.jpg",
        "kind": INSTANCE_LEVEL,
        "file_name": "/pool/7.jpg",
        "width": 100,
        "height": 50,
        "painted_boxes": [],
        "ignore_boxes": [{"category_id": 3, "bbox_xyxy": [50.0, 0.0, 100.0, 50.0]}],
        "annotations": [{"category_id": 2, "bbox": [0.0, 0.0, 10.0, 10.0], "score": 0.99}],
    }
    data = pseudo_label_json([result], [{"id": 2}, {"id": 3}], {})
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["bbox"] == [50.0, 0.0, 50.0, 50.0]
    assert data["images"][0]["ignore_boxes"] == [[50.0, 0.0, 100.0, 50.0]]
    gt = {
        "images": [{"id": 7, "width": 100, "height": 50}, {"id": 8, "width": 100, "height": 50}],
        "annotations": [
            {"image_id": 7, "category_id": 2, "bbox": [0, 0, 10, 10]},
            {"image_id": 7, "category_id": 3, "bbox": [60, 10, 20, 20]},
        ],
    }
    audit = audit_pseudo_labels(data, gt)
    assert audit["all"]["boxes"] == 1 and audit["all"]["precision"] == 1.0
    assert audit["instance_missed_painted"] == 1.0  # the missed object lies in the ignore region
    assert audit["area_ignored_fraction"] == pytest.approx(2500 / 10000)
    assert audit["area_painted_fraction"] == 0.0


def test_inside_ignore():
    boxes = torch.tensor([[0.0, 0, 10, 10], [8, 0, 18, 10], [50, 50, 60, 60]])
    regions = torch.tensor([[0.0, 0, 12, 10]])
    assert inside_ignore(boxes, regions).tolist() == [True, False, False]  # 2nd: 40 % inside
    assert inside_ignore(boxes, None).tolist() == [False] * 3


class _Mapper:
    """Stands for a detectron2 mapper: its own annotation transform drops crowd boxes."""

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        dataset_dict["kept"] = [a for a in dataset_dict.pop("annotations") if not a["iscrowd"]]


def test_mapper_outputs_transformed_ignore_boxes():
    mapper = add_ignore_regions(_Mapper())
    record = {
        "annotations": [
            {"bbox": [10, 0, 20, 5], "bbox_mode": BoxMode.XYWH_ABS, "iscrowd": 1},
            {"bbox": [0, 0, 5, 5], "bbox_mode": BoxMode.XYWH_ABS, "iscrowd": 0},
        ]
    }
    mapper._transform_annotations(record, T.HFlipTransform(100), (50, 100))
    assert record["ignore_boxes"].tolist() == [[70.0, 0.0, 90.0, 5.0]]
    assert len(record["kept"]) == 1


class _RPN:
    def label_and_sample_anchors(self, anchors, gt_instances):
        n = sum(len(a) for a in anchors)
        return [torch.zeros(n, dtype=torch.int64) for _ in gt_instances], None


class _Heads:
    num_classes = 3

    def label_and_sample_proposals(self, proposals, targets):
        out = []
        for p in proposals:
            inst = Instances((50, 50))
            inst.proposal_boxes = p
            inst.gt_classes = torch.tensor([3, 0, 3])  # background, foreground, background
            out.append(inst)
        return out


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proposal_generator, self.roi_heads = _RPN(), _Heads()
        self.result = None

    def forward(self, batched_inputs):
        boxes = Boxes(torch.tensor([[0.0, 0, 10, 10], [1, 1, 9, 9], [30, 30, 40, 40]]))
        labels, _ = self.proposal_generator.label_and_sample_anchors([boxes], [None])
        sampled = self.roi_heads.label_and_sample_proposals([boxes], [None])
        self.result = labels[0], sampled[0]
        return {}


def test_model_leaves_ignored_anchors_and_proposals_out():
    model = enable_ignore_regions(_Model())
    model.train()
    model([{"ignore_boxes": torch.tensor([[0.0, 0, 12, 12]])}])
    labels, sampled = model.result
    assert labels.tolist() == [-1, -1, 0]  # background anchors inside the region: ignored
    # The background proposal inside the region is dropped; foreground ones are kept.
    assert sampled.gt_classes.tolist() == [0, 3]
    model([{}])  # no region: nothing changes
    assert model.result[0].tolist() == [0, 0, 0] and len(model.result[1]) == 3


def test_merge_flip_averages_and_halves_single_views():
    assert unflip_boxes(np.array([[10.0, 1, 30, 5]]), 100).tolist() == [[70.0, 1, 90, 5]]
    a = {"boxes": [[0.0, 0, 10, 10], [50, 50, 60, 60]], "scores": [0.9, 0.8], "classes": [1, 2]}
    b = {"boxes": [[1.0, 0, 11, 10], [0, 0, 10, 10]], "scores": [0.7, 0.6], "classes": [1, 0]}
    m = merge_flip(a, b)
    assert m["scores"].tolist() == pytest.approx([0.8, 0.4, 0.3])
    assert m["classes"].tolist() == [1, 2, 0]
    assert m["boxes"][0, 0] == pytest.approx(0.7 / 1.6)  # score-weighted mean of 0 and 1
    empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, int)}
    assert merge_flip(empty, empty)["boxes"].shape == (0, 4)


class _Trainer:
    def __init__(self, model):
        self.model = model


def test_ema_hook(tmp_path):
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    hook = EMAHook(0.5, str(tmp_path))
    hook.trainer = _Trainer(model)
    hook.before_train()
    for value in (3.0, 5.0):
        with torch.no_grad():
            model.weight.fill_(value)
        hook.after_step()
    assert hook.state["weight"].item() == pytest.approx(0.25 * 1 + 0.25 * 3 + 0.5 * 5)
    hook.after_train()
    saved = torch.load(tmp_path / "model_ema.pth", weights_only=True)
    assert saved["model"]["weight"].item() == pytest.approx(3.5)
    with pytest.raises(ValueError, match="EMA_DECAY"):
        EMAHook(1.0, str(tmp_path))


def test_student_schedule_and_control_config(tmp_path):
    cfg = get_cfg()
    add_dpsnet_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.DATASETS.TRAIN = ("synth",)
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS = 0.01, 400, 50
    cfg.DISTILL.ITERS_PER_ROUND = 100
    cfg.DISTILL.STUDENT_LR_FACTOR = 0.1
    cfg.DISTILL.EMA_DECAY = 0.99
    cfg.freeze()
    r0 = round_config(cfg, 0, None)
    assert r0.DISTILL.EMA_DECAY == 0.0 and r0.SOLVER.BASE_LR == 0.01
    student = round_config(cfg, 2, "prev.pth")
    assert student.SOLVER.BASE_LR == pytest.approx(0.001) and student.SOLVER.WARMUP_ITERS == 10
    assert student.DATASETS.TRAIN[-1].endswith("_pseudo_r2")
    control = control_config(cfg, 2, "prev_control.pth")
    assert control.DATASETS.TRAIN == ("synth",) and control.MODEL.WEIGHTS == "prev_control.pth"
    assert control.OUTPUT_DIR.endswith("round_2/control")
    assert student.DISTILL.EMA_DECAY == 0.99 and control.DISTILL.EMA_DECAY == 0.0
    for key in ("SOLVER.BASE_LR", "SOLVER.WARMUP_ITERS", "SOLVER.MAX_ITER", "SEED"):
        a, b = student, control
        for part in key.split("."):
            a, b = a[part], b[part]
        assert a == b, key
    c = cfg.clone()
    c.defrost()
    c.DISTILL.STUDENT_WARMUP_ITERS = 0
    assert round_config(c, 1, "w.pth").SOLVER.WARMUP_ITERS == 0


def test_average_decay_config_for_both_arms(tmp_path):
    cfg = get_cfg()
    add_dpsnet_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.DATASETS.TRAIN = ("synth",)
    cfg.DISTILL.AVERAGE_DECAY = 0.98
    assert round_config(cfg, 0, None).DISTILL.EMA_DECAY == 0.0
    assert round_config(cfg, 1, "w.pth").DISTILL.EMA_DECAY == 0.98
    assert control_config(cfg, 1, "c.pth").DISTILL.EMA_DECAY == 0.98
    cfg.DISTILL.EMA_DECAY = 0.99
    with pytest.raises(ValueError, match="exclude each other"):
        round_config(cfg, 1, "w.pth")


def test_threshold_choice():
    metrics = {
        "count_guided_off": {"rpc": {"search/threshold": 0.42, "search/cAcc": 30.0}},
        "count_guided_on": {"rpc": {"cAcc": 25.0}},
    }
    choice = threshold_choice(metrics, "val")
    assert choice["threshold"] == 0.42 and choice["count_guided_default"] is False
    metrics["count_guided_on"]["rpc"]["cAcc"] = 31.0
    assert threshold_choice(metrics, "val")["count_guided_default"] is True
    default_only = {"default": {"rpc": {"search/threshold": 0.5, "search/cAcc": 1.0}}}
    assert threshold_choice(default_only, "val")["count_guided_cAcc"] is None
    with pytest.raises(KeyError, match="searched threshold"):
        threshold_choice({"default": {"rpc": {"cAcc": 1.0}}}, "val")


def test_threshold_holdout_of_the_scenes():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from dpsnet.distill.holdout import apply_holdout, holdout_split

    records = [{"file_name": f"s{i}.png", "image_id": i} for i in range(10)]
    kept, held = holdout_split(records, 0.2, seed=1)
    assert len(held) == 2 and len(kept) == 8
    assert {r["image_id"] for r in kept} | {r["image_id"] for r in held} == set(range(10))
    assert holdout_split(records, 0.2, seed=1) == (kept, held)  # the same split every time
    assert holdout_split(records, 0.2, seed=2)[1] != held
    with pytest.raises(ValueError, match="THRESHOLD_HOLDOUT"):
        holdout_split(records, 0.01, seed=1)

    DatasetCatalog.register("holdout_test_synth", lambda: records)
    MetadataCatalog.get("holdout_test_synth").set(thing_classes=["a"])
    try:
        cfg = get_cfg()
        add_dpsnet_config(cfg)
        cfg.DATASETS.TRAIN = ("holdout_test_synth",)
        cfg.SEED = 1
        cfg.freeze()
        assert apply_holdout(cfg) is cfg  # off by default
        c = cfg.clone()
        c.defrost()
        c.DISTILL.THRESHOLD_HOLDOUT = 0.2
        out = apply_holdout(c)
        assert out.DATASETS.TRAIN == ("holdout_test_synth_fit",)
        assert out.DISTILL.THRESHOLD_DATASET == "holdout_test_synth_holdout"
        assert DatasetCatalog.get("holdout_test_synth_holdout") == held
        assert len(DatasetCatalog.get("holdout_test_synth_fit")) == 8
        meta = MetadataCatalog.get("holdout_test_synth_holdout")
        assert meta.thing_classes == ["a"] and meta.evaluator_type == "rpc"
        c.DISTILL.THRESHOLD_DATASET = "val"
        assert apply_holdout(c) is c  # a labelled split wins
    finally:
        for n in ("holdout_test_synth", "holdout_test_synth_fit", "holdout_test_synth_holdout"):
            if n in DatasetCatalog.list():
                DatasetCatalog.remove(n)
            if n in MetadataCatalog.list():
                MetadataCatalog.remove(n)


def test_image_level_sample_keeps_near_misses_as_ignore_regions_in_ignore_mode():
    # Two confident detections agree with the total count of 2; one more just below threshold.
    counts = [2.0, 1.0, 1.0, 0.0]
    scores, classes = [0.9, 0.85, 0.6, 0.1], [0, 1, 2, 2]
    ignore = _select(
        scores, classes, counts, TOTAL_CAT, accept_rule="total", uncertain_mode="ignore"
    )
    paint = _select(scores, classes, counts, TOTAL_CAT, accept_rule="total", uncertain_mode="paint")
    assert ignore.kind == paint.kind == IMAGE_LEVEL
    assert ignore.keep.tolist() == paint.keep.tolist() == [0, 1]
    assert ignore.ignore.tolist() == [2]  # not background: maybe an object the others missed
    assert paint.ignore.tolist() == []  # painting a whole accepted image is not done
