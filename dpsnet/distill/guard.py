"""Honesty guard: the unlabelled pool must not contain images of an evaluation split.

Pseudo-labelling the very images a model is scored on (as the authors' released code did with the
RPC test set) turns evaluation into transductive self-training and inflates the figures. The guard
compares the *content* (SHA-256 of the file bytes) of every pool image with every image of the
evaluation splits, so a renamed or copied file is caught as well as a shared path.
"""

import hashlib
import logging
import os
from collections.abc import Iterable

logger = logging.getLogger(__name__)

__all__ = ["PoolLeakError", "check_pool_disjoint", "file_digest", "shared_images"]

_CHUNK = 1 << 20


class PoolLeakError(RuntimeError):
    """The distillation pool shares images with an evaluation split."""


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def shared_images(pool_files: Iterable[str], eval_files: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs (pool file, evaluation file) whose contents are identical.

    Args:
        pool_files: image paths of the pool.
        eval_files: image paths of the evaluation split(s).

    Returns:
        One pair per pool image found in the evaluation split, in pool order.
    """
    by_digest: dict[str, str] = {}
    for path in eval_files:
        by_digest.setdefault(file_digest(path), path)
    pairs = []
    for path in pool_files:
        match = by_digest.get(file_digest(path))
        if match is not None:
            pairs.append((path, match))
    return pairs


def check_pool_disjoint(
    pool_name: str,
    pool_files: Iterable[str],
    eval_splits: dict[str, Iterable[str]],
    *,
    transductive: bool = False,
) -> dict[str, int]:
    """Refuse a pool that shares images with an evaluation split, unless ``transductive``.

    Args:
        pool_name: the pool's dataset name (for the message).
        pool_files: the pool's image paths.
        eval_splits: evaluation dataset name -> its image paths.
        transductive: allow the overlap (logged loudly); selection still never reads labels.

    Returns:
        Evaluation dataset name -> number of shared pool images (all zero unless transductive).

    Raises:
        PoolLeakError: some pool image is also in an evaluation split and not ``transductive``.
    """
    pool_files = list(pool_files)
    overlap = {}
    for name, files in eval_splits.items():
        pairs = shared_images(pool_files, files)
        overlap[name] = len(pairs)
        if not pairs:
            continue
        example = f"{pairs[0][0]} == {pairs[0][1]}"
        if not transductive:
            raise PoolLeakError(
                f"the distillation pool {pool_name!r} shares {len(pairs)} of its "
                f"{len(pool_files)} images with the evaluation split {name!r} (same file "
                f"content, e.g. {example}). Pseudo-labelling evaluation images inflates the "
                "figures; use a disjoint pool, or pass --transductive to accept a transductive "
                "protocol and report it as such."
            )
        logger.warning(
            "TRANSDUCTIVE: pool %r shares %d images with evaluation split %r (e.g. %s); "
            "results are transductive and must be reported as such",
            pool_name,
            len(pairs),
            name,
            example,
        )
    return overlap
