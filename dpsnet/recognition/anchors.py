"""Anchor optimisation: anchor sizes and aspect ratios that fit a dataset's boxes.

Boxes and anchors are compared by shape alone (centres aligned), the usual proxy for how well
an anchor set can match ground truth; boxes are first scaled as the test-time resize would.
The search keeps the pyramid's doubling of anchor size per level (each level's stride doubles)
and tunes the base size and a shared set of aspect ratios, maximising the mean best-anchor IoU.
"""

import numpy as np

DEFAULT_SIZES = (32.0, 64.0, 128.0, 256.0, 512.0)
DEFAULT_RATIOS = (0.5, 1.0, 2.0)


def anchor_shapes(sizes, ratios) -> np.ndarray:
    """(A, 2) anchor widths and heights; ratio = height / width, as detectron2 defines it."""
    shapes = []
    for s in sizes:
        for r in ratios:
            w = s / np.sqrt(r)
            shapes.append((w, w * r))
    return np.asarray(shapes, dtype=np.float64)


def shape_iou(boxes_wh: np.ndarray, anchors_wh: np.ndarray) -> np.ndarray:
    """IoU of centre-aligned boxes.

    Args:
        boxes_wh: (N, 2) widths and heights.
        anchors_wh: (A, 2).

    Returns:
        (N, A) IoU.
    """
    inter = np.minimum(boxes_wh[:, None, 0], anchors_wh[None, :, 0]) * np.minimum(
        boxes_wh[:, None, 1], anchors_wh[None, :, 1]
    )
    area_b = boxes_wh[:, 0] * boxes_wh[:, 1]
    area_a = anchors_wh[:, 0] * anchors_wh[:, 1]
    return inter / (area_b[:, None] + area_a[None, :] - inter)


def mean_best_iou(boxes_wh: np.ndarray, sizes, ratios) -> float:
    """Mean over boxes of the IoU of the best-fitting anchor."""
    if len(boxes_wh) == 0:
        return float("nan")
    return float(shape_iou(boxes_wh, anchor_shapes(sizes, ratios)).max(1).mean())


def level_sizes(base: float, num_levels: int, scales_per_level: int) -> list[list[float]]:
    """FPN anchor sizes: level l holds base * 2^l * 2^(j / scales_per_level), j < scales."""
    return [
        [base * 2**lvl * 2 ** (j / scales_per_level) for j in range(scales_per_level)]
        for lvl in range(num_levels)
    ]


def optimize_anchors(
    boxes_wh: np.ndarray,
    num_levels: int = 5,
    scales_per_level: int = 1,
    num_ratios: int = 3,
    rounds: int = 4,
    grid: int = 41,
) -> tuple[list[list[float]], list[float], float]:
    """Search FPN anchor sizes and shared aspect ratios for ``boxes_wh``.

    Sizes keep the pyramid's structure (doubling per level, as the strides do, with
    ``scales_per_level`` octave steps inside a level), so only the base size is free; the
    aspect ratios are free. Coordinate ascent on the mean best-anchor IoU from quantile starts
    (ratio quantiles of h / w); deterministic.

    Args:
        boxes_wh: (N, 2) box widths and heights at the model's input scale.
        num_levels: pyramid levels (one size list per level).
        scales_per_level: sizes per level (3 for RetinaNet).
        num_ratios: aspect ratios (height / width) shared by all levels.
        rounds: passes of coordinate ascent.
        grid: candidate values tried per coordinate per round.

    Returns:
        sizes per level, ratios (rounded) and their mean best-anchor IoU.
    """
    boxes_wh = np.asarray(boxes_wh, dtype=np.float64)
    boxes_wh = boxes_wh[(boxes_wh > 0).all(1)]
    if len(boxes_wh) == 0:
        raise ValueError("no boxes with positive width and height")
    aspect = boxes_wh[:, 1] / boxes_wh[:, 0]
    ratios = list(np.quantile(aspect, (np.arange(num_ratios) + 0.5) / num_ratios))

    def score(base, ratios):
        flat = [s for lvl in level_sizes(base, num_levels, scales_per_level) for s in lvl]
        return mean_best_iou(boxes_wh, flat, ratios)

    # The base size: the best of a log grid from 2 px to the median box scale.
    median = float(np.median(np.sqrt(boxes_wh.prod(1))))
    bases = np.geomspace(2.0, max(median, 4.0), 4 * grid)
    base = max(bases, key=lambda b: score(b, ratios))
    best = score(base, ratios)
    span = np.geomspace(0.5, 2.0, grid)
    for _ in range(rounds):
        for cand in base * np.geomspace(0.8, 1.25, grid):
            value = score(cand, ratios)
            if value > best + 1e-9:
                best, base = value, cand
        for i in range(len(ratios)):
            for cand in ratios[i] * span:
                trial = ratios.copy()
                trial[i] = cand
                value = score(base, trial)
                if value > best + 1e-9:
                    best, ratios = value, trial
        span = np.geomspace(0.8, 1.25, grid)
    sizes = [
        [round(float(s), 1) for s in lvl] for lvl in level_sizes(base, num_levels, scales_per_level)
    ]
    ratios = sorted(round(float(r), 3) for r in ratios)
    return sizes, ratios, mean_best_iou(boxes_wh, [s for lvl in sizes for s in lvl], ratios)


def dataset_boxes_wh(dataset_dicts, min_size: int = 0, max_size: int = 0) -> np.ndarray:
    """(N, 2) box widths and heights of a detectron2 dataset, scaled as ResizeShortestEdge
    to ``min_size`` (capped by ``max_size``) would scale them; 0 keeps the original scale."""
    from detectron2.structures import BoxMode

    out = []
    for record in dataset_dicts:
        h, w = record.get("height"), record.get("width")
        factor = 1.0
        if min_size and h and w:
            factor = min_size / min(h, w)
            if max_size and max(h, w) * factor > max_size:
                factor = max_size / max(h, w)
        for a in record.get("annotations", []):
            x0, y0, x1, y1 = BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
            out.append(((x1 - x0) * factor, (y1 - y0) * factor))
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)
