"""Gallery entries from exemplar crops: each crop and its views (right-angle rotations, random
lighting) embedded, and a :class:`Gallery` of them."""

import numpy as np
import torch

from dpsnet.recognition.crops import photometric_jitter
from dpsnet.recognition.embedder import ProductEmbedder, fingerprint
from dpsnet.recognition.gallery import Gallery

__all__ = ["build_gallery", "embed_views", "num_views"]


def num_views(views: dict | None) -> int:
    """How many embeddings :func:`embed_views` makes of each exemplar."""
    if not views:
        return 1
    return 1 + 3 * bool(views.get("rotations")) + int(views.get("jitter_views", 0))


def embed_views(
    model: ProductEmbedder,
    crops: torch.Tensor,
    views: dict | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """Embeddings of exemplar crops and, for a richer gallery, of views of them: the three other
    right-angle rotations (products lie at any angle on a tray) and ``jitter_views`` copies
    under random lighting and blur (as in training: strength 0.8, blur probability 0.5), the
    k-th at rotation k mod 4 when rotations are on. Crops are processed by batches, so the
    views are never all in memory.

    Args:
        crops: (N, 3, S, S) uint8 or [0, 1] float RGB crops.
        views: ``{"rotations": bool, "jitter_views": int}``; None: the crops as they are.
        seed: seed of the jitter.

    Returns:
        (N * V, D) float32 embeddings, view-major (rows ``v * N`` to ``(v + 1) * N - 1`` are
        view ``v``), V = :func:`num_views`; product ids follow with ``np.tile(ids, V)``.
    """
    views = views or {}
    rotations, jitter = bool(views.get("rotations")), int(views.get("jitter_views", 0))
    generator = torch.Generator().manual_seed(seed)
    out: list[list[torch.Tensor]] = [[] for _ in range(num_views(views))]
    for start in range(0, len(crops), batch_size):
        x = crops[start : start + batch_size]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        batch = [x] + ([torch.rot90(x, r, (2, 3)) for r in (1, 2, 3)] if rotations else [])
        for k in range(jitter):
            base = torch.rot90(x, k % 4, (2, 3)) if rotations else x
            batch.append(photometric_jitter(base, 0.8, 0.5, generator))
        for v, view in enumerate(batch):
            out[v].append(model.embed(view, batch_size))
    if len(crops) == 0:
        return np.zeros((0, model.embed_dim), np.float32)
    return torch.cat([torch.cat(v) for v in out]).numpy()


def build_gallery(
    model: ProductEmbedder,
    crops: torch.Tensor,
    product_ids: np.ndarray,
    names: dict[int, str],
    meta: dict | None = None,
    backend: str = "numpy",
    views: dict | None = None,
    seed: int = 0,
) -> Gallery:
    """A gallery of the embeddings of exemplar crops (and of their views, see
    :func:`embed_views`; the settings are kept in the gallery's metadata so that products
    added later get the same views)."""
    emb = embed_views(model, crops, views, seed)
    product_ids = np.tile(np.asarray(product_ids), num_views(views))
    gallery_meta = {"embedder": {"arch": model.arch, "fingerprint": fingerprint(model)}}
    gallery_meta["embedder"].update(meta or {})
    gallery_meta["views"] = dict(views or {})
    present = {int(p) for p in np.unique(product_ids)}
    return Gallery(
        emb,
        product_ids,
        {p: n for p, n in names.items() if p in present},
        meta=gallery_meta,
        backend=backend,
    )
