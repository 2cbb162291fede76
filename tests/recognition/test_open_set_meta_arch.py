"""DPSNetOpenSet: detector boxes -> crops -> embeddings -> gallery names, unknown products."""

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from torch import nn

from dpsnet.engine import load_config, load_external_parts
from dpsnet.recognition import UNKNOWN, DPSNetOpenSet, Gallery, load_open_set_parts
from dpsnet.recognition.crops import bgr_to_rgb01, crop_boxes
from dpsnet.utils.io import BadInputError

HERE = Path(__file__).resolve().parent

# Boxes in the input image's pixels (XYXY); the input is 64 x 96, the original 128 x 192.
BOXES = torch.tensor([[4.0, 6.0, 34.0, 40.0], [50.0, 10.0, 90.0, 50.0], [30.0, 30.0, 60.0, 62.0]])


class FixedDetector(nn.Module):
    """Returns BOXES, scaled to the original size as detectron2's postprocessing does."""

    def forward(self, batched_inputs):
        out = []
        for inputs in batched_inputs:
            h, w = inputs["height"], inputs["width"]
            scale = torch.tensor([w / 96, h / 64, w / 96, h / 64])
            inst = Instances((h, w))
            inst.pred_boxes = Boxes(BOXES * scale)
            inst.scores = torch.tensor([0.9, 0.8, 0.7])
            inst.pred_classes = torch.zeros(3, dtype=torch.int64)
            out.append({"instances": inst})
        return out


@pytest.fixture
def image():
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 60, (3, 64, 96), generator=g, dtype=torch.uint8)
    img[:, 6:40, 4:34] = torch.tensor([200, 40, 40], dtype=torch.uint8)[:, None, None]
    img[:, 10:50, 50:90] = torch.tensor([30, 220, 90], dtype=torch.uint8)[:, None, None]
    img[2, 30:62, 30:60] = 250
    return img


def _model(embedder, image, policy="drop", extra_product=False):
    crops = crop_boxes(bgr_to_rgb01(image), BOXES, 32, 0.1)
    emb = embedder.embed(crops).numpy()
    d_third = np.linalg.norm(emb[2] - emb[:2], axis=1).min()
    ids = [11, 22] + ([33] if extra_product else [])
    gallery = Gallery(emb[: len(ids)], ids, {11: "cola", 22: "chips"}, d_third / 2)
    model = DPSNetOpenSet(
        detector=FixedDetector(),
        embedder=embedder,
        gallery=gallery,
        class_map={11: 0, 22: 1},
        crop_size=32,
        padding=0.1,
        unknown_policy=policy,
    )
    return model.eval()


def test_names_known_products_and_drops_unknown_ones(tiny_embedder, image):
    model = _model(tiny_embedder, image)
    (out,) = model([{"image": image, "height": 128, "width": 192}])
    inst, unknown = out["instances"], out["unknown_instances"]
    assert inst.image_size == (128, 192)
    assert inst.pred_classes.tolist() == [0, 1]
    assert inst.product_ids.tolist() == [11, 22]
    assert inst.embed_distances.max() < 1e-3
    assert torch.allclose(inst.scores, torch.tensor([0.9, 0.8]))
    assert len(unknown) == 1 and unknown.product_ids.tolist() == [UNKNOWN]
    assert unknown.embed_distances[0] > model.gallery.unknown_distance
    assert model.product_name(22) == "chips" and model.product_name(UNKNOWN) == "unknown product"


def test_keep_policy_and_products_outside_the_class_map(tiny_embedder, image):
    model = _model(tiny_embedder, image, policy="keep", extra_product=True)
    (out,) = model([{"image": image, "height": 64, "width": 96}])
    inst = out["instances"]
    assert "unknown_instances" not in out
    # Product 33 is in the gallery but not in the dataset's classes: class -1, id kept.
    assert inst.pred_classes.tolist() == [0, 1, UNKNOWN]
    assert inst.product_ids.tolist() == [11, 22, 33]


def test_does_not_train(tiny_embedder, image):
    model = _model(tiny_embedder, image).train()
    with pytest.raises(NotImplementedError, match="train_recognizer"):
        model([{"image": image}])


def _pipeline_cfg(mini_world, weights, gallery_file, extra=()):
    return load_config(
        None,
        [
            "MODEL.META_ARCHITECTURE", "DPSNetOpenSet",
            "MODEL.DEVICE", "cpu",
            "RECOGNITION.DETECTOR.CONFIG_FILE", str(HERE / "tiny_agnostic_frcnn.yaml"),
            "RECOGNITION.EMBEDDER.WEIGHTS", weights,
            "RECOGNITION.GALLERY.FILE", str(gallery_file),
            "RECOGNITION.CLASS_MAP_DATASET", mini_world.names["val"],
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
            "TEST.DETECTIONS_PER_IMAGE", "7",
            *extra,
        ],
    )  # fmt: skip


def _gallery_file(mini_world, tmp_path):
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(mini_world.names["val"])
    products = sorted(meta.thing_dataset_id_to_contiguous_id)
    gallery = Gallery(np.eye(16, dtype=np.float32)[: len(products)], products, unknown_distance=5)
    gallery.save(tmp_path / "g.npz")
    return tmp_path / "g.npz", meta, products


def test_built_from_config_then_loaded(mini_world, tiny_weights, tmp_path):
    gallery_file, meta, products = _gallery_file(mini_world, tmp_path)
    cfg = _pipeline_cfg(mini_world, tiny_weights, gallery_file)
    model = build_model(cfg)
    assert isinstance(model, DPSNetOpenSet)
    # Built from the config alone: the config's embedder, an empty gallery, no class map.
    assert model.embedder.embed_dim == cfg.RECOGNITION.EMBEDDER.EMBED_DIM != 16
    assert len(model.gallery) == 0 and model.class_map == {}
    assert model.crop_size == cfg.RECOGNITION.CROP.SIZE != 32
    assert load_external_parts(model, cfg) is model  # the tools' generic hook
    assert model.embedder.embed_dim == 16 and len(model.gallery) == len(products)
    assert model.crop_size == 32  # from the checkpoint
    assert model.class_map == {p: meta.thing_dataset_id_to_contiguous_id[p] for p in products}
    assert model.detector.roi_heads.box_predictor.test_topk_per_image == 7
    image = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)
    (out,) = model.eval()([{"image": image, "height": 96, "width": 128}])
    classes = out["instances"].pred_classes
    assert len(out["instances"]) + len(out["unknown_instances"]) <= 7
    assert ((classes >= 0) & (classes < len(products))).all()


def test_building_reads_no_file(mini_world, tiny_weights, tmp_path, monkeypatch):
    """build_model opens no file but the detector's config; the loader reads the parts."""
    gallery_file, _, _ = _gallery_file(mini_world, tmp_path)
    detector_weights = tmp_path / "detector.pth"
    detector = build_model(load_config(str(HERE / "tiny_agnostic_frcnn.yaml")))
    torch.save({"model": detector.state_dict()}, detector_weights)
    # The class map's dataset, registered afresh: its categories are read on first use.
    from detectron2.data import MetadataCatalog

    from dpsnet.data.datasets.checkout import register_checkout_dataset

    val = MetadataCatalog.get(mini_world.names["val"])
    fresh = f"{mini_world.names['val']}_unread"
    register_checkout_dataset(fresh, val.json_file, val.image_root)
    extra = ["RECOGNITION.DETECTOR.WEIGHTS", str(detector_weights)]
    extra += ["RECOGNITION.CLASS_MAP_DATASET", fresh]
    cfg = _pipeline_cfg(mini_world, tiny_weights, gallery_file, extra)
    opened = []
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if not str(file).endswith(".yaml"):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def refuse(*args, **kwargs):
        opened.append(f"load {args[:1]}")
        raise AssertionError("a file was loaded while building")

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", guarded_open)
        m.setattr(torch, "load", refuse)
        m.setattr(np, "load", refuse)
        model = build_model(cfg)
    assert opened == []
    assert len(model.gallery) == 0 and model.class_map == {}
    before = model.detector.state_dict()["proposal_generator.rpn_head.conv.weight"].clone()
    load_open_set_parts(model, cfg)
    after = model.detector.state_dict()["proposal_generator.rpn_head.conv.weight"]
    assert not torch.equal(before, after)  # the detector's weights were loaded
    torch.testing.assert_close(
        after, detector.state_dict()["proposal_generator.rpn_head.conv.weight"]
    )
    assert len(model.gallery) > 0 and model.class_map


def test_loader_errors(mini_world, tiny_weights, tmp_path):
    def build_and_load(cfg):
        return load_open_set_parts(build_model(cfg), cfg)

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a gallery")
    build_model(_pipeline_cfg(mini_world, tiny_weights, bad))  # building reads no file
    with pytest.raises(BadInputError, match="bad.npz"):
        build_and_load(_pipeline_cfg(mini_world, tiny_weights, bad))
    gallery = Gallery(np.ones((1, 8), np.float32), [1])
    gallery.save(tmp_path / "dim8.npz")
    with pytest.raises(ValueError, match="dimension"):
        build_and_load(_pipeline_cfg(mini_world, tiny_weights, tmp_path / "dim8.npz"))
    extra = ["RECOGNITION.DETECTOR.WEIGHTS", str(tmp_path / "missing.pth")]
    with pytest.raises(
        BadInputError, match="RECOGNITION.DETECTOR.WEIGHTS not found: .*missing.pth"
    ):
        build_and_load(_pipeline_cfg(mini_world, tiny_weights, tmp_path / "dim8.npz", extra))


@pytest.mark.slow
def test_train_net_eval_only_runs_the_rpc_evaluator(mini_world, tiny_weights, tmp_path):
    """tools/train_net.py --eval-only evaluates the pipeline like any model (random detector,
    untrained embedder: only the wiring is checked, not the figures)."""
    import runpy

    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(mini_world.names["test"])
    products = sorted(meta.thing_dataset_id_to_contiguous_id)
    Gallery(np.eye(16, dtype=np.float32)[: len(products)], products).save(tmp_path / "g.npz")
    cli = runpy.run_path(str(HERE.parents[1] / "tools" / "train_net.py"))["cli"]
    argv = ["--config-file", str(HERE.parents[1] / "configs/OpenSet/openset_R_18_FPN_mini.yaml")]
    argv += ["--eval-only", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "out")]
    argv += ["RECOGNITION.DETECTOR.CONFIG_FILE", str(HERE / "tiny_agnostic_frcnn.yaml")]
    argv += ["RECOGNITION.DETECTOR.WEIGHTS", "", "RECOGNITION.EMBEDDER.WEIGHTS", tiny_weights]
    argv += ["RECOGNITION.GALLERY.FILE", str(tmp_path / "g.npz")]
    argv += ["DATASETS.TEST", f"('{mini_world.names['test']}',)", "INPUT.MIN_SIZE_TEST", "96"]
    argv += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5"]
    assert cli(argv) == 0
    import json

    (written,) = (tmp_path / "out").rglob("rpc_metrics.json")
    result = json.loads(written.read_text())
    assert result["num_images"] == mini_world.counts["test"]["images"]
    assert 0 < result["num_detections"] <= 5 * result["num_images"]
    assert "cAcc" in result["metrics"]
