"""Honesty guard: the unlabelled pool must not contain images of an evaluation split.

Pseudo-labelling the very images a model is scored on (as the authors' released code did with the
RPC test set) turns evaluation into transductive self-training and inflates the figures. The guard
compares the *content* of every pool image with every image of the evaluation splits, twice:

* SHA-256 of the file bytes: a renamed or copied file is caught as well as a shared path;
* a 64-bit difference hash (dHash) of the picture, within a small Hamming radius, confirmed by a
  32 x 32 thumbnail: a re-encoded (other JPEG quality, PNG), resized or slightly re-toned copy is
  caught too, which the bytes alone would let through.
"""

import hashlib
import logging
import os
from collections.abc import Iterable

import cv2
import numpy as np

from dpsnet.utils.io import try_read_image

logger = logging.getLogger(__name__)

__all__ = [
    "PoolLeakError",
    "check_pool_disjoint",
    "dhash",
    "file_digest",
    "hamming",
    "shared_images",
]

_CHUNK = 1 << 20

#: Largest Hamming distance (of 64 bits) between the dHashes of two copies of one picture.
#: Re-encoding or resizing moves a few bits; different checkout scenes differ in dozens.
DHASH_RADIUS = 6
#: Largest mean absolute difference (grey levels, 32 x 32 thumbnails normalised for brightness
#: and contrast) that confirms a dHash match; it keeps two look-alike scenes apart.
THUMB_MAX_DIFF = 8.0


class PoolLeakError(RuntimeError):
    """The distillation pool shares images with an evaluation split."""


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _picture(path: str) -> tuple[int, np.ndarray] | None:
    """(64-bit dHash, normalised 32 x 32 thumbnail) of an image; None if it cannot be read."""
    # A reduced decode (JPEG DCT scaling) is plenty for a 9 x 8 hash and a 32 x 32 thumbnail.
    grey = try_read_image(path, cv2.IMREAD_REDUCED_GRAYSCALE_4)
    if grey is None or grey.size == 0:
        return None
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    value = int(np.packbits(bits).view(">u8")[0])
    thumb = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    thumb = (thumb - thumb.mean()) / (thumb.std() + 1e-6) * 48.0  # brightness, contrast
    return value, thumb


def dhash(path: str | os.PathLike) -> int | None:
    """64-bit difference hash of an image (row-wise brightness gradients of a 9 x 8 thumbnail).

    Returns:
        The hash as an int, or None for a file that is not a readable image.
    """
    picture = _picture(os.fspath(path))
    return None if picture is None else picture[0]


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two hashes."""
    return (a ^ b).bit_count()


def shared_images(
    pool_files: Iterable[str],
    eval_files: Iterable[str],
    *,
    perceptual: bool = True,
    radius: int = DHASH_RADIUS,
) -> list[tuple[str, str]]:
    """Pairs (pool file, evaluation file) that hold the same picture.

    Args:
        pool_files: image paths of the pool.
        eval_files: image paths of the evaluation split(s).
        perceptual: also match re-encoded or resized copies (dHash within ``radius``, confirmed
            by the thumbnails); False: identical bytes only.
        radius: largest Hamming distance of two matching dHashes.

    Returns:
        One pair per pool image found in the evaluation split, in pool order.
    """
    pool_files, eval_files = list(pool_files), list(eval_files)
    by_digest: dict[str, str] = {}
    for path in eval_files:
        by_digest.setdefault(file_digest(path), path)
    matches: dict[str, str] = {}
    for path in pool_files:
        match = by_digest.get(file_digest(path))
        if match is not None:
            matches[path] = match
    rest = [p for p in pool_files if p not in matches]
    if perceptual and rest and eval_files:
        matches.update(_perceptual_matches(rest, eval_files, radius))
    return [(p, matches[p]) for p in pool_files if p in matches]


def _perceptual_matches(pool_files: list, eval_files: list, radius: int) -> dict[str, str]:
    evals = [(path, pic) for path in eval_files if (pic := _picture(path)) is not None]
    if not evals:
        return {}
    hashes = np.array([pic[0] for _, pic in evals], dtype=np.uint64)
    out = {}
    for path in pool_files:
        pic = _picture(path)
        if pic is None:
            continue
        distance = _popcount(hashes ^ np.uint64(pic[0]))
        for k in np.flatnonzero(distance <= radius)[np.argsort(distance[distance <= radius])]:
            if float(np.abs(evals[k][1][1] - pic[1]).mean()) <= THUMB_MAX_DIFF:
                out[path] = evals[k][0]
                break
    return out


def _popcount(x: np.ndarray) -> np.ndarray:
    # Bits set per uint64 (numpy < 2.0 has no bitwise_count).
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


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
                f"content or a re-encoded/resized copy, e.g. {example}). Pseudo-labelling "
                "evaluation images inflates the figures; use a disjoint pool, or pass "
                "--transductive to accept a transductive protocol and report it as such."
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
