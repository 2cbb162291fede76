"""Pseudo-labelling a pool of unlabelled checkout images with a teacher model.

The teacher runs on every pool image (split across processes by detectron2's inference sampler);
``pseudo_labels.select_image`` decides per image; instance-level samples get a painted copy of the
image (uncertain detections covered with the pixel mean, see ``pseudo_labels.paint_regions``);
rank 0 gathers the records, writes the round's JSON atomically (RPC/COCO layout, plus a few
``pseudo_*`` fields) and every process registers it as a dataset.

Why painting rather than an ignore flag in the loss: it needs no change to detectron2's RPN and
box-head losses, and it keeps the *counting* target honest too: a painted-over object is gone from
the image, so the density map built from the kept boxes is right for what the student sees. An
ignore flag would leave an unlabelled object in the image with no Gaussian in the density target.

Only ``file_name``, ``image_id``, ``height`` and ``width`` of the pool's records are used: any
annotation the pool dataset might carry is dropped before the teacher sees the images.
"""

import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.utils import comm

from dpsnet.data.catalogue import Catalogue
from dpsnet.distill.class_sets import class_set, pool_confusable_pairs
from dpsnet.distill.pseudo_labels import (
    IMAGE_LEVEL,
    INSTANCE_LEVEL,
    REJECTED,
    CountLayout,
    Selection,
    class_ambiguous,
    paint_regions,
    select_image,
)
from dpsnet.utils.io import BadInputError, atomic_write_image, atomic_write_json, read_image

logger = logging.getLogger(__name__)

__all__ = [
    "count_layout_from_metadata",
    "label_pool",
    "pool_records",
    "register_pseudo_labels",
]

# Keys of a pool record the labeller may read: never its annotations.
_POOL_KEYS = ("file_name", "image_id", "height", "width")


def pool_records(pool_name: str) -> list[dict]:
    """The pool's images, stripped of anything but where they are and their size."""
    return [{k: r[k] for k in _POOL_KEYS if k in r} for r in DatasetCatalog.get(pool_name)]


#: Layouts the labeller recognises from a channel count alone (exactly one must fit).
_INFERRED_LEVELS = (
    ("total",),
    ("category",),
    ("total", "supercategory", "category"),
    ("supercategory",),
    ("total", "supercategory"),
)


def count_layout_from_metadata(
    meta, num_channels: int, levels: list[str] | tuple[str, ...] = ()
) -> CountLayout:
    """The counting view's channel layout, given explicitly or inferred from its channel count.

    Args:
        meta: metadata of the training datasets (``thing_classes``, optional
            ``thing_supercategory_ids``).
        num_channels: C, the number of channels the counting view predicts.
        levels: explicit levels (``cfg.DISTILL.COUNT_LEVELS``); empty: infer from C.

    Raises:
        ValueError: the layout cannot be inferred unambiguously or does not match C.
    """
    catalogue = Catalogue.from_metadata(meta)
    if levels:
        layout = CountLayout.from_catalogue(catalogue, tuple(levels))
    else:
        layout = CountLayout.infer(catalogue, num_channels, None, _INFERRED_LEVELS, unique=True)
        if layout is None:
            raise ValueError(
                f"cannot tell which levels {num_channels} counting channels hold "
                f"({catalogue.num_classes} categories, {catalogue.num_supercategories} "
                "supercategories): set DISTILL.COUNT_LEVELS"
            )
    if layout.num_channels != num_channels:
        raise ValueError(
            f"DISTILL.COUNT_LEVELS {list(layout.levels)} means {layout.num_channels} channels, "
            f"the counting view has {num_channels}"
        )
    return layout


def _xyxy_to_xywh(box) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def _label_one(record, output, layout, params, image_dir, contiguous_to_dataset) -> dict:
    """Selection, painting and annotation records for one image (runs on the image's rank)."""
    inst = output["instances"].to("cpu")
    # float() first: under bfloat16 autocast the outputs may be bfloat16, which numpy lacks.
    boxes = inst.pred_boxes.tensor.float().numpy().astype(np.float64)
    scores = inst.scores.float().numpy()
    classes = inst.pred_classes.numpy()
    counts = output["counts"].detach().cpu().float().numpy().reshape(-1)
    ratio = float(params.get("class_set_ratio", 0.0))
    probs = inst.pred_probs.float().numpy() if ratio > 0 and inst.has("pred_probs") else None
    pairs = params.get("class_set_pairs")
    sel = select_image(
        scores,
        classes,
        counts,
        layout,
        threshold=params["threshold"],
        instance_threshold=params["instance_threshold"],
        uncertain_threshold=params["uncertain_threshold"],
        accept_rule=params.get("accept_rule", "all"),
        uncertain_mode=params.get("uncertain_mode", "paint"),
    )
    ambiguous = class_ambiguous(
        boxes, scores, classes, sel.keep, min_score=params.get("ambiguous_score", 0.0)
    )
    if ambiguous.size:  # neither label nor background: an ignore region (painted in "paint")
        sel.keep = np.setdiff1d(sel.keep, ambiguous)
        sel.ignore = np.union1d(sel.ignore, ambiguous)
        if sel.keep.size == 0:
            sel = Selection(REJECTED, sel.keep, sel.keep[:0], "ambiguous")
    result = {
        "pool_image_id": record["image_id"],
        "pool_file_name": record["file_name"],
        "kind": sel.kind,
        "ambiguous_boxes": int(ambiguous.size),
        "predicted_count": float(counts[0]) if layout.levels[0] == "total" else float(counts.sum()),
    }
    if sel.kind == REJECTED:
        result["reason"] = sel.reason
        return result
    file_name = os.path.abspath(record["file_name"])
    uncertain = boxes[sel.ignore]
    ignore_mode = params.get("uncertain_mode", "paint") == "ignore"
    # In "ignore" mode the image stays as it is and the uncertain boxes become ignore regions.
    painted_boxes = uncertain[:0] if ignore_mode else uncertain
    painted_pixels = 0
    if sel.kind == INSTANCE_LEVEL and len(painted_boxes):
        image = read_image(record["file_name"])
        color = params["paint_color_bgr"]
        painted, painted_pixels = paint_regions(image, painted_boxes, boxes[sel.keep], color)
        stem = Path(record["file_name"]).stem
        file_name = os.path.abspath(Path(image_dir) / f"{record['image_id']}_{stem}.png")
        atomic_write_image(file_name, painted)
    height = record.get("height") or int(output.get("height", 0))
    width = record.get("width") or int(output.get("width", 0))
    result.update(
        file_name=file_name,
        height=height,
        width=width,
        painted_boxes=[[round(float(v), 2) for v in b] for b in painted_boxes],
        painted_pixels=painted_pixels,
        ignore_boxes=[
            {
                "category_id": contiguous_to_dataset[int(classes[i])],
                "bbox_xyxy": [round(float(v), 2) for v in boxes[i]],
            }
            for i in (sel.ignore if ignore_mode else [])
        ],
        annotations=[
            _annotation(i, boxes, scores, classes, probs, (ratio, pairs), contiguous_to_dataset)
            for i in sel.keep
        ],
    )
    result["class_set_boxes"] = sum("category_set" in a for a in result["annotations"])
    return result


def _annotation(i, boxes, scores, classes, probs, sets, contiguous_to_dataset) -> dict:
    ann = {
        "category_id": contiguous_to_dataset[int(classes[i])],
        "bbox": [round(v, 2) for v in _xyxy_to_xywh(boxes[i])],
        "score": round(float(scores[i]), 4),
    }
    ratio, pairs = sets
    if probs is not None and ratio > 0:
        members = class_set(probs[i], int(classes[i]), ratio, pairs)
        if len(members) > 1:  # DISTILL.CLASS_SET_RATIO: "one of these products"
            ann["category_set"] = [contiguous_to_dataset[int(c)] for c in members]
    return ann


def label_pool(
    model,
    records: list[dict],
    mapper,
    *,
    layout_fn,
    params: dict,
    image_dir: str | os.PathLike,
    contiguous_to_dataset: dict[int, int],
) -> list[dict] | None:
    """Run the teacher on this process's share of ``records`` and gather the results on rank 0.

    Args:
        model: the teacher, in eval mode, with count-guided inference off (the two views must be
            independent for their agreement to mean anything).
        records: the pool's records (see ``pool_records``); every rank passes the full list.
        mapper: the test-time dataset mapper.
        layout_fn: C -> CountLayout, called once with the counting view's channel count.
        params: threshold, instance_threshold, uncertain_threshold, paint_color_bgr, and
            optionally accept_rule ("all") and uncertain_mode ("paint"), see ``select_image``,
            ambiguous_score (0) and class_set_ratio (0: hard labels; else kept boxes get a
            ``category_set`` from the detections' ``pred_probs``, see ``class_sets``) with
            class_set_pair_share (0: no pool-wide confusable products; else this function
            sets ``params["class_set_pairs"]``, the (K, K) bool matrix it found).
        image_dir: where painted copies go.
        contiguous_to_dataset: contiguous class index -> dataset category id.

    Returns:
        On rank 0, one result per pool image, sorted by image id; None on other ranks.
    """
    # A pool photo that cannot be read (oversized header, truncated, not an image) is a
    # rejected image with its reason, not the end of the round.
    results, readable = [], []
    for record in records:
        try:
            read_image(record["file_name"])
        except BadInputError as e:
            logger.warning("pool image skipped: %s", e)
            results.append(
                {
                    "pool_image_id": record["image_id"],
                    "pool_file_name": record["file_name"],
                    "kind": REJECTED,
                    "reason": f"unreadable: {e}",
                }
            )
            continue
        readable.append(record)
    if comm.get_rank() != 0:
        results = []  # every rank checks every record; rank 0 reports the skipped ones
    loader = build_detection_test_loader(dataset=readable, mapper=mapper)
    layout = None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    it = loader
    if tqdm is not None and comm.is_main_process():
        it = tqdm(loader, desc=f"pseudo-labelling (rank 0 of {comm.get_world_size()})")
    # The teacher's outputs first (detections and counts, on the CPU), then the selection: the
    # confusable products of DISTILL.CLASS_SET_PAIR_SHARE are a statistic of the whole pool.
    seen = []
    with torch.no_grad():
        for inputs in it:
            outputs = model(inputs)
            for inp, out in zip(inputs, outputs, strict=True):
                if layout is None:
                    layout = layout_fn(int(out["counts"].numel()))
                record = {k: inp[k] for k in _POOL_KEYS if k in inp}
                kept = {"instances": out["instances"].to("cpu"), "counts": out["counts"].cpu()}
                kept.update({k: out[k] for k in ("height", "width") if k in out})
                seen.append((record, kept))
    params["class_set_pairs"] = pool_confusable_pairs(  # the caller may report them
        [out["instances"] for _, out in seen],
        params.get("class_set_ratio", 0.0),
        params.get("class_set_pair_share", 0.0),
        params.get("instance_threshold", 0.0),
    )
    for record, out in seen:
        results.append(_label_one(record, out, layout, params, image_dir, contiguous_to_dataset))
    gathered = comm.gather(results, dst=0)
    if not comm.is_main_process():
        return None
    merged = [r for part in gathered for r in part]
    merged.sort(key=lambda r: r["pool_image_id"])
    return merged


def summarize(results: list[dict]) -> dict:
    """Statistics of a round's selection: images and boxes per kind."""
    kinds = Counter(r["kind"] for r in results)
    boxes = Counter()
    for r in results:
        boxes[r["kind"]] += len(r.get("annotations", []))
    n = max(len(results), 1)
    counted = [r["predicted_count"] for r in results if "predicted_count" in r]
    return {
        "pool_images": len(results),
        "image_level_images": kinds[IMAGE_LEVEL],
        "instance_level_images": kinds[INSTANCE_LEVEL],
        "rejected_images": kinds[REJECTED],
        "image_level_boxes": boxes[IMAGE_LEVEL],
        "instance_level_boxes": boxes[INSTANCE_LEVEL],
        "boxes": boxes[IMAGE_LEVEL] + boxes[INSTANCE_LEVEL],
        "painted_boxes": sum(len(r.get("painted_boxes", [])) for r in results),
        "painted_pixels": sum(r.get("painted_pixels", 0) for r in results),
        "ignored_boxes": sum(len(r.get("ignore_boxes", [])) for r in results),
        "dropped_uncertain_images": sum(r.get("reason") == "uncertain" for r in results),
        "ambiguous_boxes": sum(r.get("ambiguous_boxes", 0) for r in results),
        "dropped_ambiguous_images": sum(r.get("reason") == "ambiguous" for r in results),
        "class_set_boxes": sum(r.get("class_set_boxes", 0) for r in results),
        "image_level_fraction": kinds[IMAGE_LEVEL] / n,
        "mean_predicted_count": float(np.mean(counted)) if counted else 0.0,
        "unreadable_images": sum(
            str(r.get("reason", "")).startswith("unreadable") for r in results
        ),
    }


def pseudo_label_json(results: list[dict], categories: list[dict], info: dict) -> dict:
    """The round's dataset in RPC/COCO layout; rejected images are left out."""
    images, annotations = [], []
    for r in results:
        if r["kind"] == REJECTED:
            continue
        images.append(
            {
                "id": r["pool_image_id"],
                "file_name": r["file_name"],
                "width": r["width"],
                "height": r["height"],
                "pool_image_id": r["pool_image_id"],
                "pool_file_name": r["pool_file_name"],
                "pseudo_kind": r["kind"],
                "painted_boxes": r["painted_boxes"],
                "ignore_boxes": [b["bbox_xyxy"] for b in r.get("ignore_boxes", [])],
            }
        )
        for a in r["annotations"]:
            x, y, w, h = a["bbox"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": r["pool_image_id"],
                    "category_id": a["category_id"],
                    "bbox": a["bbox"],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                    "score": a["score"],
                    **({"category_set": a["category_set"]} if "category_set" in a else {}),
                    "point_xy": [round(x + w / 2, 2), round(y + h / 2, 2)],
                }
            )
        # Ignore regions as crowd boxes: detectron2's mapper drops them from the targets, and
        # dpsnet.distill.ignore turns them into regions the RPN/ROI sampling leaves out.
        for b in r.get("ignore_boxes", []):
            x0, y0, x1, y1 = b["bbox_xyxy"]
            w, h = round(x1 - x0, 2), round(y1 - y0, 2)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": r["pool_image_id"],
                    "category_id": b["category_id"],
                    "bbox": [x0, y0, w, h],
                    "area": round(w * h, 2),
                    "iscrowd": 1,
                }
            )
    return {"info": info, "categories": categories, "images": images, "annotations": annotations}


def write_pseudo_labels(path: str | os.PathLike, data: dict) -> None:
    atomic_write_json(path, data)


def register_pseudo_labels(name: str, json_file: str, train_meta) -> None:
    """Register (or re-register) a round's pseudo-labels under ``name``.

    The classes come from the training datasets' categories (same order, whatever the JSON
    holds), and the metadata carries ``distill_pseudo=True`` for the mixing sampler.
    """
    from dpsnet.data.datasets import register_checkout_dataset

    register_checkout_dataset(
        name,
        json_file,
        "",  # file names in the pseudo-label JSON are absolute
        metadata={"distill_pseudo": True},
        categories_json=train_meta.get("categories_json", None) or json_file,
        evaluator_type=None,
        with_masks=False,
    )
