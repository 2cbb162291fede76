"""Stronger teachers for pseudo-labelling: horizontal-flip test-time averaging, EMA weights.

``merge_flip`` (pure numpy) and ``FlipTeacher`` (a wrapper module) implement
``DISTILL.TEACHER_FLIP``: the teacher sees each pool image and its mirror image, and a detection
found in one view only keeps half its score, so a single-view guess rarely passes the thresholds.
``EMAHook`` implements ``DISTILL.EMA_DECAY`` (the mean teacher of the semi-supervised detection
literature): it keeps an exponential moving average of the student's weights during a round and
saves it as ``model_ema.pth``, the next round's teacher.
"""

import logging
import os

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm

from dpsnet.distill.audit import box_iou_xywh
from dpsnet.engine.checkpoint import checkpoint_fields

logger = logging.getLogger(__name__)

__all__ = ["EMAHook", "FlipTeacher", "merge_flip", "unflip_boxes"]


def unflip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """XYXY boxes found on a horizontally flipped image -> boxes on the original image."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


def _xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def merge_flip(a: dict, b: dict, iou: float = 0.55) -> dict:
    """Merge a teacher's detections on an image (``a``) and on its flip, unflipped (``b``).

    Same-class boxes with IoU >= ``iou`` are paired greedily, highest score first; a pair becomes
    one detection whose box is the score-weighted mean and whose score is the mean of both; a
    detection of one view only gets half its score (the other view's score counts as 0).

    Args:
        a, b: dicts with "boxes" [N, 4] XYXY, "scores" [N], "classes" [N] (numpy).
        iou: pairing IoU.

    Returns:
        A dict of the same form, sorted by decreasing score.
    """
    ba, sa, ca = (np.asarray(a[k]) for k in ("boxes", "scores", "classes"))
    bb, sb, cb = (np.asarray(b[k]) for k in ("boxes", "scores", "classes"))
    ba, bb = ba.reshape(-1, 4).astype(np.float64), bb.reshape(-1, 4).astype(np.float64)
    ious = box_iou_xywh(_xyxy_to_xywh(ba), _xyxy_to_xywh(bb)) if len(ba) and len(bb) else None
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


class FlipTeacher(torch.nn.Module):
    """A detector at inference on each image and its horizontal flip, outputs merged.

    Boxes are merged by ``merge_flip``; the counting view's counts (if any) are averaged.
    """

    def __init__(self, model: torch.nn.Module, iou: float = 0.55):
        super().__init__()
        self.model = model
        self.iou = iou

    @torch.no_grad()
    def forward(self, batched_inputs):
        flipped = [{**x, "image": x["image"].flip(-1)} for x in batched_inputs]
        out_a, out_b = self.model(batched_inputs), self.model(flipped)
        merged = []
        for oa, ob in zip(out_a, out_b, strict=True):
            ia, ib = oa["instances"].to("cpu"), ob["instances"].to("cpu")
            width = ia.image_size[1]

            def view(inst, flip, width=width):
                boxes = inst.pred_boxes.tensor.float().numpy()  # bfloat16 under autocast
                return {
                    "boxes": unflip_boxes(boxes, width) if flip else boxes,
                    "scores": inst.scores.float().numpy(),
                    "classes": inst.pred_classes.numpy(),
                }

            m = merge_flip(view(ia, False), view(ib, True), self.iou)
            inst = Instances(ia.image_size)
            inst.pred_boxes = Boxes(torch.as_tensor(m["boxes"], dtype=torch.float32))
            inst.scores = torch.as_tensor(m["scores"], dtype=torch.float32)
            inst.pred_classes = torch.as_tensor(m["classes"], dtype=torch.int64)
            out = {**oa, "instances": inst}
            if "counts" in oa and "counts" in ob:
                out["counts"] = (oa["counts"] + ob["counts"]) / 2
            merged.append(out)
        return merged


class EMAHook(HookBase):
    """Exponential moving average of the model's weights, saved as ``model_ema.pth`` at the end.

    ``ema = decay * ema + (1 - decay) * weights`` after every step, starting from the weights the
    round starts with (the teacher's): with a decay near 1 the EMA is a slowly moving teacher.
    Integer buffers (e.g. BatchNorm's step counter) are copied. The average is not checkpointed:
    a round resumed mid-way restarts it from the resumed weights.
    """

    def __init__(self, decay: float, output_dir: str):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"DISTILL.EMA_DECAY must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.output_dir = output_dir
        self.state: dict[str, torch.Tensor] = {}

    def _model(self):
        model = self.trainer.model
        return getattr(model, "module", model)

    def before_train(self):
        self.state = {k: v.detach().clone() for k, v in self._model().state_dict().items()}

    @torch.no_grad()
    def after_step(self):
        for k, v in self._model().state_dict().items():
            ema = self.state[k]
            if ema.is_floating_point():
                ema.mul_(self.decay).add_(v.detach().to(ema.dtype), alpha=1.0 - self.decay)
            else:
                ema.copy_(v)

    def after_train(self):
        if comm.is_main_process() and self.state:
            path = os.path.join(self.output_dir, "model_ema.pth")
            tmp = path + ".tmp"
            state = {k: v.cpu() for k, v in self.state.items()}
            ckpt = {"model": state}
            cfg = getattr(self.trainer, "cfg", None)
            if cfg is not None:  # as in every checkpoint dpsnet saves
                ckpt["dpsnet"] = checkpoint_fields(cfg)
            torch.save(ckpt, tmp)
            os.replace(tmp, path)
            logger.info("Saved the EMA of the student's weights to %s", path)
