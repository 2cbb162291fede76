"""COCO run-length encoding of a mask given as a crop placed in a larger image.

``pycocotools.mask.encode`` needs the whole image's mask; a pasted item's visible mask is known
on its own small crop. ``crop_to_rle`` reads the runs off the crop (COCO RLE runs down the
columns, so a crop's runs only need shifting to their column of the full image) and lets
pycocotools compress them: same result as encoding the full mask, at the crop's cost.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def crop_to_rle(crop: np.ndarray, x: int, y: int, height: int, width: int) -> dict:
    """Compressed COCO RLE of a ``height`` x ``width`` mask that is ``crop`` at ``(x, y)``.

    Args:
        crop: (h, w) bool mask; must lie inside the image at ``(x, y)``.
        x, y: top-left of the crop in the image.
        height, width: image size.

    Returns:
        ``{"size": [height, width], "counts": str}`` (what ``mask_utils.encode`` gives for the
        full mask, with ``counts`` decoded to text for JSON).
    """
    h, w = crop.shape
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(f"a {w}x{h} crop at ({x}, {y}) leaves the {width}x{height} image")
    padded = np.zeros((w, h + 2), np.int8)  # one column of the crop per row, zero above/below
    padded[:, 1:-1] = crop.T
    d = np.diff(padded.ravel())
    starts = np.flatnonzero(d == 1) + 1
    ends = np.flatnonzero(d == -1) + 1
    col, row = np.divmod(starts, h + 2)
    first = (x + col).astype(np.int64) * height + y + row - 1
    bounds = np.empty(2 * len(first) + 2, np.int64)
    bounds[0], bounds[-1] = 0, height * width
    bounds[1:-1:2] = first
    bounds[2:-1:2] = first + (ends - starts)
    counts = np.diff(bounds)
    if len(counts) > 1 and counts[-1] == 0:
        counts = counts[:-1]  # pycocotools ends on the last run of ones
    rle = mask_utils.frPyObjects(
        {"counts": counts.tolist(), "size": [height, width]}, height, width
    )
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
