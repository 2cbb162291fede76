"""COCO box mAP (mAP50 and mmAP) for RPC, through pycocotools, per image subset (level).

The figures are pycocotools' own (``COCOeval`` with ``iouType="bbox"``; mmAP is AP@[.5:.95],
area "all", 100 detections per image; mAP50 is AP at IoU 0.5), as rpctool computes them. Three
shortcuts that do not change any figure:

- only the area range "all" and ``maxDets=[100]`` are evaluated (rpctool reports nothing else);
- per-image evaluation runs only for (image, category) pairs that have a box or a detection
  (pycocotools' result for the other pairs is ``None`` by definition);
- the per-image results are computed once for all images and accumulated per subset (each
  image's evaluation depends only on that image, and the subset keeps pycocotools' image order,
  so score ties are broken the same way as when the subset is evaluated alone).

Ground-truth annotation ids are renumbered 1..M: pycocotools treats a matched id of 0 as
"unmatched", and duplicate ids collapse, so a file with such ids would be mis-scored.
detectron2's fast COCO evaluator is not used: its compiled part is absent on this platform.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dpsnet.evaluation.ground_truth import RPCGroundTruth
from dpsnet.evaluation.results_io import Detections

__all__ = ["coco_map"]


class _SparseCOCOeval(COCOeval):
    """pycocotools' COCOeval that skips (image, category) pairs with neither box nor detection."""

    def evaluate(self):
        p = self.params
        p.imgIds = list(np.unique(p.imgIds))
        p.catIds = list(np.unique(p.catIds))
        p.maxDets = sorted(p.maxDets)
        self.params = p
        self._prepare()
        pairs = set(self._gts) | set(self._dts)
        self.ious = {pair: self.computeIoU(*pair) for pair in pairs}
        max_det = p.maxDets[-1]
        self.evalImgs = [
            self.evaluateImg(img, cat, area, max_det) if (img, cat) in pairs else None
            for cat in p.catIds
            for area in p.areaRng
            for img in p.imgIds
        ]
        self._paramsEval = copy.deepcopy(self.params)


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _summary(precision: np.ndarray) -> dict[str, float]:
    # precision: [T, R, K, A=1, M=1]; -1 marks categories without ground truth.
    all_ious, at_50 = precision[..., 0, -1], precision[0, :, :, 0, -1]
    valid, valid50 = all_ious[all_ious > -1], at_50[at_50 > -1]
    nan = float("nan")
    return {
        "mmAP": float(np.mean(valid)) if valid.size else nan,
        "mAP50": float(np.mean(valid50)) if valid50.size else nan,
    }


def coco_map(
    gt: RPCGroundTruth, dets: Detections, subsets: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """mAP50 and mmAP (fractions) of ``dets`` on each subset of ``gt``'s images.

    Args:
        gt: ground truth of the evaluated images.
        dets: every detection (no score threshold: AP integrates over scores).
        subsets: name -> (n,) image rows; e.g. {"averaged": all rows, "easy": ...}.

    Returns:
        name -> {"mAP50", "mmAP"}; NaN where a subset has no ground-truth box, 0 where it has
        boxes but no detection.
    """
    images = [{"id": int(i)} for i in gt.image_ids]
    categories = [{"id": int(c)} for c in gt.category_ids]
    gt_anns = [
        {"id": j + 1, "image_id": i, "category_id": c, "bbox": b, "area": a, "iscrowd": int(z)}
        for j, (i, c, b, a, z) in enumerate(
            zip(
                gt.image_ids[gt.ann_image].tolist(),
                gt.category_ids[gt.ann_category].tolist(),
                gt.ann_bbox.tolist(),
                gt.ann_area.tolist(),
                gt.ann_iscrowd.tolist(),
            )
        )
    ]
    # As pycocotools' loadRes does for boxes: area = w * h, ids 1..D, never crowd.
    dt_anns = [
        {
            "id": j + 1,
            "image_id": i,
            "category_id": c,
            "bbox": b,
            "score": s,
            "area": b[2] * b[3],
            "iscrowd": 0,
        }  # fmt: skip
        for j, (i, c, b, s) in enumerate(
            zip(
                gt.image_ids[dets.image_index].tolist(),
                gt.category_ids[dets.category_index].tolist(),
                dets.bbox.tolist(),
                dets.score.tolist(),
            )
        )
    ]
    coco_gt = _coco({"images": images, "annotations": gt_anns, "categories": categories})
    coco_dt = _coco({"images": images, "annotations": dt_anns, "categories": categories})
    evaluator = _SparseCOCOeval(coco_gt, coco_dt, iouType="bbox")
    evaluator.params.areaRng = [[0, 1e5**2]]
    evaluator.params.areaRngLbl = ["all"]
    evaluator.params.maxDets = [100]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()

    all_ids = evaluator._paramsEval.imgIds  # sorted unique image ids
    num_all = len(all_ids)
    out = {}
    for name, rows in subsets.items():
        ids = np.unique(gt.image_ids[np.asarray(rows, dtype=np.int64)])
        if not np.isin(gt.ann_image, np.asarray(rows)).any():
            out[name] = {"mAP50": float("nan"), "mmAP": float("nan")}
            continue
        positions = np.searchsorted(np.asarray(all_ids), ids)
        sub = copy.copy(evaluator)
        params = copy.deepcopy(evaluator._paramsEval)
        params.imgIds = ids.tolist()
        sub.params, sub._paramsEval = params, params
        sub.evalImgs = [
            evaluator.evalImgs[k * num_all + i]
            for k in range(len(params.catIds))
            for i in positions
        ]
        with contextlib.redirect_stdout(io.StringIO()):
            sub.accumulate()
        out[name] = _summary(sub.eval["precision"])
    return out
