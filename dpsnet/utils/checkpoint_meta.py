"""dpsnet's own fields inside a checkpoint file, beside detectron2's ``model`` state.

A checkpoint that dpsnet saves is a product: next to the weights it carries, under the key
``"dpsnet"``, plain data only (numbers, strings, lists, dicts) so that it loads with
``torch.load(..., weights_only=True)``: the product catalogue, the counting layout, the score
threshold chosen without test labels, the input sizes and the training config.
"""

import os
from pathlib import Path

import torch

from dpsnet.utils.io import atomic_path
from dpsnet.utils.weights import load_weights_file

__all__ = ["META_KEY", "read_meta", "update_meta"]

#: The top-level key of dpsnet's fields in a checkpoint dict.
META_KEY = "dpsnet"


def read_meta(path: str | os.PathLike) -> dict:
    """dpsnet's fields of a checkpoint (``{}`` for one saved without them)."""
    ckpt = load_weights_file(path)  # weights-only; one-line errors
    meta = ckpt.get(META_KEY) if isinstance(ckpt, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def update_meta(path: str | os.PathLike, **fields) -> dict:
    """Set ``fields`` in a checkpoint's dpsnet fields, rewriting the file atomically.

    Args:
        path: a ``.pth`` checkpoint (a dict with at least ``"model"``).
        fields: plain-data values to set (existing keys are replaced).

    Returns:
        The checkpoint's dpsnet fields after the update.
    """
    path = Path(path)
    ckpt = load_weights_file(path)  # weights-only; one-line errors
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a checkpoint dict; cannot store dpsnet's fields in it")
    meta = dict(ckpt.get(META_KEY) or {})
    meta.update(fields)
    ckpt[META_KEY] = meta
    with atomic_path(path, suffix=".tmp") as tmp:  # the user's umask, not mkstemp's 0600
        torch.save(ckpt, tmp)
    return meta
