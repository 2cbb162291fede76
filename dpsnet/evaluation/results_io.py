"""Detections for RPC evaluation, as arrays indexed into an ``RPCGroundTruth``.

Detections come from a COCO result list ``[{image_id, category_id, bbox [x, y, w, h], score},
...]`` (``parse_results``), checked entry by entry: an error names the problem and the first
offending entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from dpsnet.evaluation.ground_truth import RPCGroundTruth, is_box, short_repr
from dpsnet.utils.io import BadInputError

__all__ = ["Detections", "parse_results"]

RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


@dataclass
class Detections:
    """Detections as arrays, indexed into an ``RPCGroundTruth``'s images and categories.

    Attributes:
        image_index: (D,) int64 image rows.
        category_index: (D,) int64 category indices.
        bbox: (D, 4) float64 boxes, XYWH absolute.
        score: (D,) float64 scores.
    """

    image_index: np.ndarray
    category_index: np.ndarray
    bbox: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return int(self.score.size)

    def select(self, keep: np.ndarray) -> Detections:
        """The detections where the boolean mask (or index array) ``keep`` selects them."""
        return Detections(
            self.image_index[keep], self.category_index[keep], self.bbox[keep], self.score[keep]
        )

    def to_coco_results(self, gt: RPCGroundTruth) -> list[dict]:
        """The detections as a COCO result list (dataset image and category ids)."""
        image_ids = gt.image_ids[self.image_index].tolist()
        cat_ids = gt.category_ids[self.category_index].tolist()
        return [
            {"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(image_ids, cat_ids, self.bbox.tolist(), self.score.tolist())
        ]


def _first_bad_entry(results: list, source: str) -> None:
    """Scan entry by entry and raise for the first malformed one (the slow, precise path)."""
    for j, d in enumerate(results):
        if not isinstance(d, dict):
            raise BadInputError(f"{source}: entry {j} is not an object: {short_repr(d)}")
        missing = [k for k in RESULT_KEYS if k not in d]
        if missing:
            raise BadInputError(
                f"{source}: entry {j} misses key(s) {', '.join(missing)}: {short_repr(d)}"
            )
        for key in ("image_id", "category_id"):
            if not isinstance(d[key], Integral) or isinstance(d[key], bool):
                raise BadInputError(f"{source}: entry {j} has a non-integer {key}: {short_repr(d)}")
        score = d["score"]
        if not isinstance(score, Real) or isinstance(score, bool):
            raise BadInputError(f"{source}: entry {j} has a non-numeric score: {short_repr(d)}")
        if not np.isfinite(score):
            raise BadInputError(
                f"{source}: entry {j} has a non-finite score ({score}): {short_repr(d)}"
            )
        if not 0.0 <= score <= 1.0:  # a logit or a percentage would rank and threshold wrongly
            raise BadInputError(
                f"{source}: entry {j} has a score outside [0, 1] ({score}): {short_repr(d)}"
            )
        if not is_box(d["bbox"]):
            raise BadInputError(
                f"{source}: entry {j} has a malformed bbox (need [x, y, w, h]): {short_repr(d)}"
            )
        if not all(np.isfinite(d["bbox"])) or d["bbox"][2] < 0 or d["bbox"][3] < 0:
            raise BadInputError(
                f"{source}: entry {j} has a non-finite or negative-size bbox: {short_repr(d)}"
            )


def parse_results(results: Any, gt: RPCGroundTruth, source: str = "results") -> Detections:
    """Check a COCO result list against the ground truth and turn it into arrays.

    Args:
        results: ``[{image_id, category_id, bbox [x, y, w, h], score}, ...]`` (extra keys are
            ignored).
        gt: the annotation set the ids must belong to.
        source: name of the results (a file path) used in error messages.

    Returns:
        Detections, in the order of ``results``.

    Raises:
        BadInputError: results not a list; an entry not an object, missing a key, with a
            non-numeric or non-finite score or box, a score outside [0, 1], a negative box
            size; an image or category id not in the ground truth. The message names the problem
            and the first offending entry.
    """
    if not isinstance(results, list):
        raise BadInputError(
            f"{source}: expected a list of detections "
            f"[{{image_id, category_id, bbox, score}}, ...], got {type(results).__name__}"
        )
    n = len(results)
    if n == 0:
        return Detections(
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0)
        )
    # Fast path: pull every column at once; any irregularity sends us to the precise scan.
    try:
        image_ids = [d["image_id"] for d in results]
        category_ids = [d["category_id"] for d in results]
        scores = [d["score"] for d in results]
        boxes = [d["bbox"] for d in results]
    except (TypeError, KeyError, IndexError):
        _first_bad_entry(results, source)
        raise  # unreachable: the scan raises
    ok = {type(s) for s in scores} <= {float, int} and {type(b) for b in boxes} <= {list, tuple}
    if ok:
        try:
            score = np.array(scores, dtype=np.float64)
            bbox = np.array(boxes, dtype=np.float64)
            ok = bbox.shape == (n, 4) and np.isfinite(score).all() and np.isfinite(bbox).all()
            ok = ok and (bbox[:, 2:] >= 0).all() and ((score >= 0) & (score <= 1)).all()
        except (TypeError, ValueError):
            ok = False
    if not ok:
        _first_bad_entry(results, source)
        # The scan accepts numpy scalars and other numbers the fast path does not: convert them.
        score = np.array([float(s) for s in scores], dtype=np.float64)
        bbox = np.array([[float(v) for v in b] for b in boxes], dtype=np.float64).reshape(n, 4)
    return Detections(
        image_index=gt.image_rows(image_ids, what=source),
        category_index=gt.category_rows(category_ids, what=source),
        bbox=bbox,
        score=score,
    )
