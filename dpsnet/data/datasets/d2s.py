"""D2S (MVTec Densely Segmented Supermarket) registrar: COCO JSONs with RLE masks.

Layout under the D2S root (as MVTec distributes it)::

    images/*.jpg
    annotations/D2S_training.json, D2S_validation.json, D2S_augmented.json,
                D2S_test_info.json, D2S_validation_wo_occlusion.json, ...

Each ``annotations/D2S_<key>.json`` becomes ``{prefix}_<key>`` (``d2s_training``,
``d2s_validation_wo_occlusion``, ...). Records also carry the capture encoded in D2S image ids:
``d2s_scene`` = id // 100, ``d2s_lighting`` = (id % 100) // 10, ``d2s_rotation`` = id % 10.
"""

import os

from detectron2.data import DatasetCatalog

from dpsnet.data.datasets.checkout import (
    load_checkout_json,
    register_checkout_dataset,
)

#: The files D2S ships (key -> has annotations). Other ``D2S_*.json`` found on disk at
#: registration time are registered too.
D2S_FILES = {
    "training": True,
    "validation": True,
    "augmented": True,
    "test_info": False,
    "validation_wo_occlusion": True,
    "validation_clutter": True,
    "validation_random_background": True,
}


def d2s_capture(image_id: int) -> dict:
    """Scene, lighting and rotation encoded in a D2S image id."""
    return {
        "d2s_scene": image_id // 100,
        "d2s_lighting": (image_id % 100) // 10,
        "d2s_rotation": image_id % 10,
    }


def load_d2s_json(json_file, image_root, id_map=None) -> list:
    """``load_checkout_json`` with masks, plus the capture fields of ``d2s_capture``."""
    records = load_checkout_json(json_file, image_root, id_map=id_map, with_masks=True)
    for r in records:
        r.update(d2s_capture(int(r["image_id"])))
    return records


def register_d2s_layout(root: str | os.PathLike, prefix: str, keys=None) -> dict:
    """Register D2S annotation files under ``root``; idempotent.

    Args:
        root: folder with ``images/`` and ``annotations/``.
        prefix: name prefix (``d2s`` -> ``d2s_training``).
        keys: which ``D2S_<key>.json`` to register (default: ``D2S_FILES`` plus any other
            ``D2S_*.json`` present in ``annotations/``). Only the folder listing is read now.

    Returns:
        dict: key -> registered name.
    """
    root = os.fspath(root)
    ann_dir = os.path.join(root, "annotations")
    if keys is None:
        keys = list(D2S_FILES)
        if os.path.isdir(ann_dir):
            for f in sorted(os.listdir(ann_dir)):
                if f.startswith("D2S_") and f.endswith(".json") and f[4:-5] not in keys:
                    keys.append(f[4:-5])
    categories_json = os.path.join(ann_dir, "D2S_training.json")
    image_root = os.path.join(root, "images")
    names = {}
    for key in keys:
        name = f"{prefix}_{key}"
        json_file = os.path.join(ann_dir, f"D2S_{key}.json")
        labelled = D2S_FILES.get(key, True)
        register_checkout_dataset(
            name,
            json_file,
            image_root,
            metadata={"dataset_root": root, "split": key},
            categories_json=categories_json,
            evaluator_type="coco" if labelled else None,
        )
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, _d2s_loader(name, json_file, image_root))
        names[key] = name
    return names


def _d2s_loader(name, json_file, image_root):
    def _load():
        from detectron2.data import MetadataCatalog

        meta = MetadataCatalog.get(name)
        return load_d2s_json(json_file, image_root, meta.thing_dataset_id_to_contiguous_id)

    return _load


def register_all_d2s(root: str | os.PathLike) -> dict:
    """Register D2S under ``root`` as ``d2s_*``."""
    return register_d2s_layout(root, "d2s")
