"""On two processes the pool is split across ranks and the pseudo-labels gathered on rank 0."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

PROBE = Path(__file__).resolve().parent / "gather_probe.py"


@pytest.mark.slow
def test_pool_split_across_two_processes(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    images = []
    for i in range(1, 8):
        cv2.imwrite(str(data / f"{i}.png"), np.full((32, 32, 3), 10 * i, np.uint8))
        images.append({"id": i, "file_name": f"{i}.png", "width": 32, "height": 32})
    categories = [{"id": 5, "name": "thing", "supercategory": "s"}]
    (data / "train.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": categories})
    )
    (data / "pool.json").write_text(json.dumps({"images": images, "categories": categories}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(PROBE), str(data), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    seen0, seen1 = set(ranks[0]["seen"]), set(ranks[1]["seen"])
    assert seen0 and seen1 and not seen0 & seen1 and seen0 | seen1 == set(range(1, 8))
    assert ranks[1]["stats"] is None  # only rank 0 holds the gathered labels
    assert ranks[0]["stats"]["pool_images"] == 7
    assert ranks[0]["stats"]["image_level_images"] == 3  # ids 2, 4, 6
    labels = json.loads((out / "pseudo_labels.json").read_text())
    assert [img["id"] for img in labels["images"]] == [2, 4, 6]
    assert {a["category_id"] for a in labels["annotations"]} == {5}
