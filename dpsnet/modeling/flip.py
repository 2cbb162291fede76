"""Horizontal-flip test-time averaging: a detector's outputs on an image and on its mirror image.

``merge_flip`` pairs same-class detections of the two views (IoU >= ``iou``, highest score
first): a pair becomes one detection with the score-weighted mean box and the mean score; a
detection found in one view only keeps half its score, so a single-view guess rarely passes a
score threshold. ``merge_flip_outputs`` applies it to two model outputs (``instances``, and the
counting view's ``density`` and ``counts`` when present: counts are averaged, the mirrored map is
mirrored back before averaging).

Used by ``MODEL.DPSNET.TEST_FLIP`` (every inference of a DPSNet) and by the distillation
teacher's ``DISTILL.TEACHER_FLIP``.
"""

import numpy as np
import torch
from detectron2.structures import Boxes, Instances, pairwise_iou

__all__ = ["merge_flip", "merge_flip_outputs", "mirror_inputs", "unflip_boxes"]


def unflip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """XYXY boxes found on a horizontally flipped image -> boxes on the original image."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, [0, 2]] = width - out[:, [2, 0]]
    return out


def merge_flip(a: dict, b: dict, iou: float = 0.55) -> dict:
    """Merge detections on an image (``a``) and on its flip, unflipped (``b``).

    Args:
        a, b: dicts with "boxes" [N, 4] XYXY, "scores" [N], "classes" [N] (numpy).
        iou: pairing IoU.

    Returns:
        A dict of the same form, sorted by decreasing score.
    """
    ba, sa, ca = (np.asarray(a[k]) for k in ("boxes", "scores", "classes"))
    bb, sb, cb = (np.asarray(b[k]) for k in ("boxes", "scores", "classes"))
    ba, bb = ba.reshape(-1, 4).astype(np.float64), bb.reshape(-1, 4).astype(np.float64)
    ious = None
    if len(ba) and len(bb):
        ious = pairwise_iou(Boxes(torch.from_numpy(ba)), Boxes(torch.from_numpy(bb))).numpy()
    used_b = np.zeros(len(bb), dtype=bool)
    boxes, scores, classes = [], [], []
    for i in np.argsort(-sa, kind="stable"):
        j = -1
        if ious is not None:
            cand = np.where((cb == ca[i]) & ~used_b, ious[i], -1.0)
            j = int(np.argmax(cand))
            j = j if cand[j] >= iou else -1
        if j >= 0:
            used_b[j] = True
            w = np.array([sa[i], sb[j]], dtype=np.float64)
            w = w / w.sum() if w.sum() > 0 else np.full(2, 0.5)
            boxes.append(w[0] * ba[i] + w[1] * bb[j])
            scores.append((sa[i] + sb[j]) / 2)
        else:
            boxes.append(ba[i])
            scores.append(sa[i] / 2)
        classes.append(ca[i])
    for j in np.flatnonzero(~used_b):
        boxes.append(bb[j])
        scores.append(sb[j] / 2)
        classes.append(cb[j])
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return {
        "boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[order],
        "scores": np.asarray(scores, dtype=np.float64)[order],
        "classes": np.asarray(classes, dtype=np.int64)[order],
    }


def mirror_inputs(batched_inputs: list[dict]) -> list[dict]:
    """The same inputs with each ``"image"`` (C, H, W) mirrored left-right."""
    return [{**x, "image": x["image"].flip(-1)} for x in batched_inputs]


def _view(inst: Instances, mirrored: bool) -> dict:
    boxes = inst.pred_boxes.tensor.float().numpy()  # float32 whatever the autocast dtype
    width = inst.image_size[1]
    return {
        "boxes": unflip_boxes(boxes, width) if mirrored else boxes,
        "scores": inst.scores.float().numpy(),
        "classes": inst.pred_classes.numpy(),
    }


def merge_flip_outputs(out_a: dict, out_b: dict, iou: float = 0.55) -> dict:
    """One model output from the outputs on an image (``out_a``) and on its mirror (``out_b``)."""
    ia, ib = out_a["instances"].to("cpu"), out_b["instances"].to("cpu")
    m = merge_flip(_view(ia, False), _view(ib, True), iou)
    inst = Instances(ia.image_size)
    inst.pred_boxes = Boxes(torch.as_tensor(m["boxes"], dtype=torch.float32))
    inst.scores = torch.as_tensor(m["scores"], dtype=torch.float32)
    inst.pred_classes = torch.as_tensor(m["classes"], dtype=torch.int64)
    out = {**out_a, "instances": inst}
    if "counts" in out_a and "counts" in out_b:
        out["counts"] = (out_a["counts"] + out_b["counts"].to(out_a["counts"].device)) / 2
    if "density" in out_a and "density" in out_b:
        da, db = out_a["density"], out_b["density"].to(out_a["density"].device).flip(-1)
        out["density"] = (da + db) / 2 if da.shape == db.shape else da
    return out
