"""Inputs for the composer's tests: masks indexes made without the masks stage (the mini
world's: ``dpsnet.synthesis.items.mini_world_index``)."""

import json
from pathlib import Path

import cv2
import numpy as np

#: Small scenes: the composer's tests must stay cheap.
SMALL = [
    "SYNTHESIS.COMPOSE.IMAGE_SIZE",
    "[160, 160]",
    "SYNTHESIS.COMPOSE.SCALE_RANGE",
    "[0.25, 0.35]",
    "SYNTHESIS.COMPOSE.CATEGORIES",
    "[[2, 3], [3, 4], [4, 5]]",
    "SYNTHESIS.COMPOSE.INSTANCES",
    "[[2, 4], [4, 6], [6, 8]]",
    "SYNTHESIS.COMPOSE.NUM_GENERATED_BACKGROUNDS",
    "2",
]


def flat_colour_index(out_dir: Path, num_categories: int = 8, size: int = 96) -> tuple:
    """Exemplars that are flat ellipses, one per category, each of its own colour.

    Returns:
        (index path, {category_id: BGR colour}).
    """
    out_dir = Path(out_dir)
    (out_dir / "photos").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items, colours, categories = [], {}, []
    for k in range(num_categories):
        cat = k + 1
        # fully saturated hues (a channel at 0, one at 255): never a tray's grey, never a blend
        hsv = np.uint8([[[int(180 * k / num_categories), 255, 255]]])
        colour = tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
        colours[cat] = colour
        photo = np.full((size, size, 3), 200, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        axes = (int(rng.integers(size // 5, size // 3)), int(rng.integers(size // 8, size // 4)))
        cv2.ellipse(mask, (size // 2, size // 2), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        photo[mask > 0] = colour
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        cv2.imwrite(str(out_dir / "photos" / f"{cat}.png"), photo)
        cv2.imwrite(str(out_dir / "masks" / f"{cat}.png"), mask[y0:y1, x0:x1])
        items.append(
            {
                "image_id": cat,
                "file_name": str((out_dir / "photos" / f"{cat}.png").resolve()),
                "category_id": cat,
                "bbox": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
                "extent": [int(x0), int(y0), int(x1), int(y1)],
                "mask": f"masks/{cat}.png",
                "quality": 1.0,
                "coarse_quality": 1.0,
                "area": int((mask > 0).sum()),
                "area_ratio": 1.0,
                "kept": True,
                "drop_reason": "",
            }
        )
        categories.append({"supercategory": "flat", "id": cat, "name": f"flat_{cat}"})
    index = out_dir / "index.json"
    index.write_text(json.dumps({"version": 1, "items": items, "categories": categories}))
    return index, colours
