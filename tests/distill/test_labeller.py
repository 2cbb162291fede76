"""Pseudo-labelling the mini world's pool with a scripted teacher: JSON, painting, registration."""

import builtins
import json

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from dpsnet.config import add_dpsnet_config
from dpsnet.distill.labeller import register_pseudo_labels
from dpsnet.distill.loop import Detectron2Steps, pseudo_dataset_name
from dpsnet.distill.trainer import mixing_weights
from dpsnet.utils.io import load_json, read_image


class ScriptedTeacher(torch.nn.Module):
    """Per pool image (by rank in id order): agreeing, half-confident, or unsure detections."""

    def __init__(self, ids):
        super().__init__()
        self.rank = {image_id: i for i, image_id in enumerate(sorted(ids))}

    def forward(self, inputs):
        outs = []
        for x in inputs:
            k = self.rank[x["image_id"]]
            boxes = [
                [10.0, 10.0, 50.0, 60.0],
                [100.0, 100.0, 150.0, 140.0],
                [40.0, 40.0, 90.0, 90.0],
            ]
            if k == 0:  # three detections >= 0.8 and a count of 3: image level
                scores, count = [0.99, 0.9, 0.85], 3.2
            elif k == 1:  # the count says 4: instance level, two uncertain ones painted
                scores, count = [0.97, 0.6, 0.4], 4.0
            else:  # nothing confident: rejected
                scores, count = [0.5, 0.4, 0.1], 3.0
            inst = Instances((x["height"], x["width"]))
            inst.pred_boxes = Boxes(torch.tensor(boxes))
            inst.scores = torch.tensor(scores)
            inst.pred_classes = torch.tensor([0, 1, 2])
            outs.append({"instances": inst, "counts": torch.tensor([count])})
        return outs


class ScriptedSteps(Detectron2Steps):
    def __init__(self, ids):
        self.ids = ids

    def _load(self, cfg, weights):
        return ScriptedTeacher(self.ids)


def _labelling_cfg(names: dict, out_dir) -> object:
    """A frozen config that labels the mini world's pool with a "total" counting view."""
    cfg = get_cfg()
    add_dpsnet_config(cfg)
    cfg.DATASETS.TRAIN = (names["train"],)
    cfg.DISTILL.POOL_DATASET = names["pool"]
    cfg.DISTILL.COUNT_LEVELS = ["total"]
    cfg.OUTPUT_DIR = str(out_dir)
    cfg.freeze()
    return cfg


def test_label_pool_writes_registers_and_never_reads_pool_truth(mini_world, tmp_path, monkeypatch):
    names = mini_world.names
    cfg = _labelling_cfg(names, tmp_path)
    pool = DatasetCatalog.get(names["pool"])
    ids = [r["image_id"] for r in pool]

    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        assert "pool_groundtruth" not in str(file), "selection read the pool's ground truth"
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    out_json = tmp_path / "round_1" / "pseudo_labels.json"
    stats = ScriptedSteps(ids).label(cfg, "teacher.pth", 1, out_json)
    monkeypatch.undo()

    n = len(ids)
    assert stats["image_level_images"] == 1 and stats["instance_level_images"] == 1
    assert stats["rejected_images"] == n - 2
    assert stats["image_level_boxes"] == 3 and stats["instance_level_boxes"] == 1
    assert stats["painted_boxes"] == 2

    data = load_json(out_json)
    assert data["info"]["threshold"] == 0.80
    kinds = {img["pool_image_id"]: img["pseudo_kind"] for img in data["images"]}
    first, second = sorted(ids)[:2]
    assert kinds == {first: "image", second: "instance"}
    # Pseudo labels carry the dataset's category ids, not contiguous indices.
    train_ids = {c["id"] for c in load_json(mini_world.paths["train_json"])["categories"]}
    assert {a["category_id"] for a in data["annotations"]} <= train_ids

    # The instance-level image is a painted copy: the uncertain box at (100..150, 100..140) is
    # flat pixel mean; the kept box (10..50, 10..60) is untouched.
    inst = next(img for img in data["images"] if img["pseudo_kind"] == "instance")
    original = read_image(next(r["file_name"] for r in pool if r["image_id"] == second))
    painted = read_image(inst["file_name"])
    mean_bgr = np.round(cfg.MODEL.PIXEL_MEAN).astype(np.uint8)
    assert (painted[110:130, 110:140] == mean_bgr).all()
    assert np.array_equal(painted[10:60, 10:50], original[10:60, 10:50])
    assert np.array_equal(painted[170:, 170:], original[170:, 170:])

    # Registered with the training classes; mixing weights follow MIX_RATIO.
    name = pseudo_dataset_name(cfg, 1)
    register_pseudo_labels(name, str(out_json), MetadataCatalog.get(names["train"]))
    try:
        records = DatasetCatalog.get(name)
        assert len(records) == 2 and sum(len(r["annotations"]) for r in records) == 4
        w = mixing_weights([8, len(records)], [False, True], [1.0, 3.0])
        assert w[:8].sum() == pytest.approx(0.25) and w[8:].sum() == pytest.approx(0.75)
    finally:
        DatasetCatalog.remove(name)


def test_count_guided_comparison_one_pass(mini_world, tmp_path):
    """Off: a true object at 0.4 is missed. On: the count (right) promotes it and drops a 0.25
    false positive. On + fixed threshold 0.5: the promoted object is cut again."""
    from dpsnet.distill.loop import CountGuidedComparison

    name = mini_world.names["test"]
    cfg = get_cfg()
    add_dpsnet_config(cfg)
    cfg.TEST.RPC.COMPUTE_MAP = False
    cfg.TEST.RPC.SEARCH_THRESHOLD = False
    cfg.freeze()
    guided = {
        "class_to_group": torch.zeros(6, dtype=torch.long),
        "offset": 0,
        "num_groups": 1,
        "min_score": 0.2,
        "keep_score": 0.9,
    }
    evaluator = CountGuidedComparison(cfg, name, tmp_path, guided)
    evaluator.reset()
    for r in DatasetCatalog.get(name):
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in r["annotations"])]
        classes = [a["category_id"] for a in r["annotations"]]
        scores = [0.95] * len(boxes)
        scores[0] = 0.4
        boxes.append([0.0, 0.0, 10.0, 10.0])
        classes.append(classes[0])
        scores.append(0.25)
        inst = Instances((r["height"], r["width"]))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.scores = torch.tensor(scores)
        inst.pred_classes = torch.tensor(classes)
        counts = torch.tensor([float(len(r["annotations"]))])
        evaluator.process([{"image_id": r["image_id"]}], [{"instances": inst, "counts": counts}])
    results = evaluator.evaluate()
    assert results["count_guided_off"]["rpc"]["cAcc"] == 0.0
    assert results["count_guided_on"]["rpc"]["cAcc"] == 100.0
    assert results["count_guided_on_fixed"]["rpc"]["cAcc"] == 0.0


def test_ignore_mode_keeps_image_and_loader_returns_regions(mini_world, tmp_path):
    """UNCERTAIN_MODE "ignore": no painted copy; the uncertain boxes reach the student's batches
    as ``ignore_boxes`` (crowd annotations), not as labels."""
    import itertools

    from dpsnet.distill.trainer import DistillTrainer
    from dpsnet.engine import load_config

    names = mini_world.names
    pool = DatasetCatalog.get(names["pool"])
    ids = [r["image_id"] for r in pool]
    opts = [
        "DATASETS.TRAIN", f"('{names['train']}',)",
        "DISTILL.POOL_DATASET", names["pool"],
        "DISTILL.COUNT_LEVELS", "['total']",
        "DISTILL.UNCERTAIN_MODE", "ignore",
        "DISTILL.MIX_RATIO", "[0.0, 1.0]",
        "OUTPUT_DIR", str(tmp_path),
        "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2",
        "INPUT.MIN_SIZE_TRAIN", "(96,)",
        "MODEL.ROI_HEADS.NUM_CLASSES", str(mini_world.sizes["num_products"]),
    ]  # fmt: skip
    cfg = load_config(None, opts)
    out_json = tmp_path / "round_1" / "pseudo_labels.json"
    stats = ScriptedSteps(ids).label(cfg, "teacher.pth", 1, out_json)
    assert stats["painted_boxes"] == 0 and stats["ignored_boxes"] == 2
    data = load_json(out_json)
    inst = next(img for img in data["images"] if img["pseudo_kind"] == "instance")
    assert inst["file_name"] == next(r["file_name"] for r in pool if r["image_id"] == inst["id"])
    assert sum(a["iscrowd"] for a in data["annotations"]) == 2

    name = pseudo_dataset_name(cfg, 1)
    register_pseudo_labels(name, str(out_json), MetadataCatalog.get(names["train"]))
    try:
        c = cfg.clone()
        c.defrost()
        c.DATASETS.TRAIN = (names["train"], name)
        c.freeze()
        loader = DistillTrainer.build_train_loader(c)
        seen = {}
        for batch in itertools.islice(loader, 6):
            for x in batch:
                seen[x["image_id"]] = (len(x["ignore_boxes"]), len(x["instances"]))
        assert seen[inst["id"]] == (2, 1)  # two ignore regions, one label
        assert all(n == 0 for image_id, (n, _) in seen.items() if image_id != inst["id"])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_flip_teacher_merges_views():
    from dpsnet.distill.teacher import FlipTeacher

    class OneBox(torch.nn.Module):
        """A detector that finds one box at the image's left edge, whatever the image."""

        def forward(self, inputs):
            outs = []
            for x in inputs:
                inst = Instances((20, 100))
                inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
                inst.scores = torch.tensor([0.9])
                inst.pred_classes = torch.tensor([1])
                outs.append(
                    {"instances": inst, "counts": torch.tensor([float(x["image"][0, 0, 0])])}
                )
            return outs

    image = torch.zeros(3, 20, 100)
    image[0, 0, 0], image[0, 0, -1] = 2.0, 4.0
    out = FlipTeacher(OneBox())([{"image": image}])[0]
    # The flipped view's box unflips to the right edge: two single-view boxes at half score.
    assert out["instances"].scores.tolist() == pytest.approx([0.45, 0.45])
    assert sorted(out["instances"].pred_boxes.tensor[:, 0].tolist()) == [0.0, 90.0]
    assert out["counts"].item() == pytest.approx(3.0)


def test_evaluator_takes_bfloat16_outputs(mini_world, tmp_path):
    """Under bfloat16 autocast (MODEL.PRECISION) scores come out as bfloat16."""
    from dpsnet.evaluation import RPCEvaluator

    name = mini_world.names["test"]
    evaluator = RPCEvaluator(name, None, compute_map=False, search_threshold=False)
    evaluator.reset()
    for r in DatasetCatalog.get(name):
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in r["annotations"])]
        inst = Instances((r["height"], r["width"]))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.scores = torch.full((len(boxes),), 0.9, dtype=torch.bfloat16)
        inst.pred_classes = torch.tensor([a["category_id"] for a in r["annotations"]])
        evaluator.process([{"image_id": r["image_id"]}], [{"instances": inst}])
    assert evaluator.evaluate()["rpc"]["cAcc"] == 100.0


def test_unreadable_pool_images_are_rejected_not_fatal(mini_world, tmp_path, monkeypatch):
    import struct
    import zlib

    from dpsnet.distill import steps as steps_module
    from dpsnet.distill.labeller import pool_records

    names = mini_world.names
    cfg = _labelling_cfg(names, tmp_path)
    good = pool_records(names["pool"])[:2]
    # A PNG whose header claims 60000 x 60000 pixels, and a truncated JPEG.
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(open(good[0]["file_name"], "rb").read()[:300])
    bad = [
        {**good[0], "image_id": 10**9 + 1, "file_name": str(bomb)},
        {**good[0], "image_id": 10**9 + 2, "file_name": str(cut)},
    ]
    monkeypatch.setattr(steps_module, "pool_records", lambda _name: good + bad)
    ids = [r["image_id"] for r in good + bad]
    stats = ScriptedSteps(ids).label(cfg, "teacher.pth", 1, tmp_path / "pl.json")
    assert stats["pool_images"] == 4
    assert stats["unreadable_images"] == 2  # the two bad files, with their reasons
    assert stats["rejected_images"] >= 2
    assert stats["image_level_images"] == 1  # the good images were still labelled


@pytest.mark.parametrize("teacher_flip", [False, True])
def test_teacher_flip_follows_its_own_key_not_test_flip(mini_world, tmp_path, teacher_flip):
    """A DPSNet teacher built with MODEL.DPSNET.TEST_FLIP labels with DISTILL.TEACHER_FLIP only."""
    names = mini_world.names
    ids = [r["image_id"] for r in DatasetCatalog.get(names["pool"])]
    teacher = ScriptedTeacher(ids)
    teacher.test_flip = not teacher_flip  # as the model's config said

    class Steps(ScriptedSteps):
        def _load(self, cfg, weights):
            return teacher

    cfg = _labelling_cfg(names, tmp_path).clone()
    cfg.defrost()
    cfg.DISTILL.TEACHER_FLIP = teacher_flip
    cfg.freeze()
    Steps(ids).label(cfg, "teacher.pth", 1, tmp_path / "round_1" / "pseudo_labels.json")
    assert teacher.test_flip is teacher_flip


@pytest.mark.parametrize("teacher_min_size", [0, 288])
def test_teacher_min_size_sets_the_labelling_resize(
    mini_world, tmp_path, monkeypatch, teacher_min_size
):
    """DISTILL.TEACHER_MIN_SIZE is the teacher's test resize (0: INPUT.MIN_SIZE_TEST)."""
    from dpsnet.distill import steps as steps_module

    names = mini_world.names
    ids = [r["image_id"] for r in DatasetCatalog.get(names["pool"])]
    seen = []
    real = steps_module.build_mapper

    def recording(cfg, is_train):
        seen.append((cfg.INPUT.MIN_SIZE_TEST, is_train))
        return real(cfg, is_train)

    monkeypatch.setattr(steps_module, "build_mapper", recording)
    cfg = _labelling_cfg(names, tmp_path).clone()
    cfg.defrost()
    cfg.DISTILL.TEACHER_MIN_SIZE = teacher_min_size
    cfg.freeze()
    out = tmp_path / "round_1" / "pseudo_labels.json"
    ScriptedSteps(ids).label(cfg, "teacher.pth", 1, out)
    expected = teacher_min_size or cfg.INPUT.MIN_SIZE_TEST
    assert seen == [(expected, False)]
    assert json.loads(out.read_text())["info"]["teacher_min_size"] == expected


def test_ambiguous_kept_boxes_become_ignore_regions(one_image_labelling):
    from dpsnet.distill.labeller import summarize

    output, label = one_image_labelling.output, one_image_labelling.label
    # Object A: product 0 at 0.9 with product 1 at 0.25 on it; object B: product 2 alone.
    out = output(
        [[0.0, 0.0, 20.0, 20.0], [1.0, 0.0, 21.0, 20.0], [50.0, 50.0, 70.0, 70.0]],
        [0.9, 0.25, 0.7],
        [0, 1, 2],
        3.0,  # the counting view disagrees: instance level
    )
    r = label(out, ambiguous_score=0.2)
    assert r["kind"] == "instance"
    assert [a["category_id"] for a in r["annotations"]] == [12]
    assert [b["category_id"] for b in r["ignore_boxes"]] == [10]
    assert r["ambiguous_boxes"] == 1
    # Off (0): the product-0 box is a label again.
    r_off = label(out, ambiguous_score=0.0)
    assert sorted(a["category_id"] for a in r_off["annotations"]) == [10, 12]
    # Only an ambiguous box was kept: the image is rejected, and counted as such.
    alone = output([[0.0, 0.0, 20.0, 20.0], [1.0, 0.0, 21.0, 20.0]], [0.9, 0.25], [0, 1], 3.0)
    r_alone = label(alone, ambiguous_score=0.2)
    assert r_alone["kind"] == "rejected" and r_alone["reason"] == "ambiguous"
    stats = summarize([r, r_alone])
    assert stats["ambiguous_boxes"] == 2 and stats["dropped_ambiguous_images"] == 1


class HesitantTeacher(ScriptedTeacher):
    """With class probabilities (DISTILL.CLASS_SET_*). Even-ranked pool images: product 0 with
    product 1 close behind, and a sure product 2; odd-ranked: a sure product 1 and product 2."""

    def forward(self, inputs):
        outs = []
        for x in inputs:
            even = self.rank[x["image_id"]] % 2 == 0
            inst = Instances((x["height"], x["width"]))
            inst.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 50.0, 60.0], [80, 80, 120, 120]]))
            inst.scores = torch.tensor([0.9, 0.95])
            inst.pred_classes = torch.tensor([0 if even else 1, 2])
            first = [0.9, 0.08, 0.0] if even else [0.0, 0.9, 0.0]
            inst.pred_probs = torch.tensor([first + [0.0] * 17, [0.0, 0.0, 0.95] + [0.0] * 17])
            outs.append({"instances": inst, "counts": torch.tensor([2.0])})
        return outs


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_label_pool_finds_confusable_pairs_over_the_pool(mini_world, tmp_path, share):
    from dpsnet.engine import load_config

    class Steps(ScriptedSteps):
        def _load(self, cfg, weights):
            return HesitantTeacher(self.ids)

    names = mini_world.names
    opts = [
        "DATASETS.TRAIN", f"('{names['train']}',)",
        "DISTILL.POOL_DATASET", names["pool"],
        "DISTILL.COUNT_LEVELS", "['total']",
        "DISTILL.CLASS_SET_RATIO", "0.05",
        "DISTILL.CLASS_SET_PAIR_SHARE", str(share),
        "DISTILL.INSTANCE_THRESHOLD", "0.6",
        "OUTPUT_DIR", str(tmp_path),
    ]  # fmt: skip
    cfg = load_config(None, opts)
    out_json = tmp_path / "pseudo_labels.json"
    ids_pool = [r["image_id"] for r in DatasetCatalog.get(names["pool"])]
    stats = Steps(ids_pool).label(cfg, "teacher.pth", 1, out_json)
    data = json.loads(out_json.read_text())
    ids = [c["id"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    sets = {a["category_id"]: a.get("category_set") for a in data["annotations"]}
    assert sets[ids[0]] == [ids[0], ids[1]]  # its own hesitation
    assert sets[ids[2]] is None  # sure, and confusable with nothing
    if share:
        # Every box named 0 hesitated towards 1: the pair is confusable, and the sure boxes
        # named 1 carry 0 too.
        assert stats["confusable_pairs"] == [[ids[0], ids[1]]]
        assert sets[ids[1]] == [ids[0], ids[1]]
    else:
        assert stats["confusable_pairs"] == [] and sets[ids[1]] is None
