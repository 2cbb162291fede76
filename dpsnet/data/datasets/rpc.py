"""RPC (Retail Product Checkout) registrar: the splits RPC ships, as detectron2 datasets.

Layout under the RPC root (as RPC is distributed)::

    train2019/  val2019/  test2019/
    instances_train2019.json  instances_val2019.json  instances_test2019.json

Names: ``{prefix}_train`` (exemplars), ``{prefix}_val``, ``{prefix}_test`` and per level
``{prefix}_{val,test}_{easy,medium,hard}``; ``prefix`` is ``rpc_2019`` for RPC itself.
Every split takes its classes from the training JSON's categories (all RPC files list the same
200), so contiguous ids agree across splits.
"""

import os

from dpsnet.data.datasets.checkout import CLUTTER_LEVELS, register_checkout_dataset

#: split -> (image folder, annotation file, evaluator type), relative to the RPC root.
RPC_SPLITS = {
    "train": ("train2019", "instances_train2019.json", "coco"),
    "val": ("val2019", "instances_val2019.json", "rpc"),
    "test": ("test2019", "instances_test2019.json", "rpc"),
}

#: Splits that carry a ``level`` per image and get per-level datasets.
LEVELLED_SPLITS = ("val", "test")


def register_rpc_layout(root: str | os.PathLike, prefix: str, metadata: dict | None = None) -> dict:
    """Register every split of an RPC-layout folder; reads nothing now, idempotent.

    Args:
        root: folder holding RPC's image folders and ``instances_*2019.json``.
        prefix: name prefix (``rpc_2019`` -> ``rpc_2019_train``, ``rpc_2019_test_easy``, ...).
        metadata: extra metadata for every split.

    Returns:
        dict: split key (``train``, ``val``, ``test``, ``val_easy``, ...) -> registered name.
    """
    root = os.fspath(root)
    categories_json = os.path.join(root, RPC_SPLITS["train"][1])
    names = {}
    for split, (image_dir, json_name, evaluator) in RPC_SPLITS.items():
        levels = (None, *CLUTTER_LEVELS) if split in LEVELLED_SPLITS else (None,)
        for level in levels:
            key = split if level is None else f"{split}_{level}"
            name = f"{prefix}_{key}"
            register_checkout_dataset(
                name,
                os.path.join(root, json_name),
                os.path.join(root, image_dir),
                metadata={"dataset_root": root, "split": split, **(metadata or {})},
                level=level,
                categories_json=categories_json,
                evaluator_type=evaluator,
                with_masks=False,
            )
            names[key] = name
    return names


def register_all_rpc(root: str | os.PathLike) -> dict:
    """Register RPC under ``root`` as ``rpc_2019_*`` (see ``register_rpc_layout``)."""
    return register_rpc_layout(root, "rpc_2019")
