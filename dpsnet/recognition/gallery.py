"""The product gallery: exemplar embeddings with product ids and names, in one ``.npz`` file.

Naming a crop is a 1-nearest-neighbour search; a crop farther than the unknown distance from
every exemplar is an "unknown product" (id ``UNKNOWN``) rather than a wrong name. New products
are added by embedding their exemplars; nothing is retrained.

File layout (``numpy.savez``, no pickles): ``embeddings`` (N, D) float32, ``product_ids`` (N,)
int64, ``meta`` a JSON string with ``version``, ``names`` ({id: name}), ``unknown_distance``
and the embedder's description (``embedder``: arch, fingerprint, crop size, padding).
"""

import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from dpsnet.utils.io import BadInputError, atomic_path

logger = logging.getLogger(__name__)

UNKNOWN = -1
FORMAT_VERSION = 1
BACKENDS = ("torch", "numpy", "faiss")
# Largest (queries x exemplars) distance matrix computed at once (float32: 64 MB).
_MAX_PAIRS = 1 << 24


class Gallery:
    """Exemplar embeddings of products and exact nearest-neighbour search over them.

    Args:
        embeddings: (N, D) float32.
        product_ids: (N,) product id of each row (the dataset's ``category_id``).
        names: product id -> name.
        unknown_distance: a query farther than this from its nearest exemplar is ``UNKNOWN``
            (``inf``: never).
        meta: free-form description (the embedder that made the embeddings).
        backend: "numpy" (matrix product; the default, fastest in benchmarks/bench_gallery.py),
            "torch", or "faiss" (``IndexFlatL2``, when faiss is installed).
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        product_ids: np.ndarray,
        names: dict[int, str] | None = None,
        unknown_distance: float = float("inf"),
        meta: dict | None = None,
        backend: str = "numpy",
    ):
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        product_ids = np.asarray(product_ids, dtype=np.int64)
        if embeddings.ndim != 2 or product_ids.shape != (embeddings.shape[0],):
            raise ValueError(
                f"embeddings must be (N, D) and product_ids (N,), got {embeddings.shape} and "
                f"{product_ids.shape}"
            )
        if backend not in BACKENDS:
            raise ValueError(f"unknown gallery backend {backend!r}; choose one of {BACKENDS}")
        self.embeddings = embeddings
        self.product_ids = product_ids
        self.names = {int(k): str(v) for k, v in (names or {}).items()}
        for pid in np.unique(product_ids):
            self.names.setdefault(int(pid), str(pid))
        self.unknown_distance = float(unknown_distance)
        self.meta = dict(meta or {})
        self.backend = backend
        self._index = None

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def products(self) -> list[int]:
        return sorted(int(p) for p in np.unique(self.product_ids))

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def add_product(
        self, product_id: int, name: str, embeddings: np.ndarray, replace: bool = False
    ) -> None:
        """Append the exemplar embeddings of one product.

        Raises:
            ValueError: the id is already in the gallery and ``replace`` is False, or the
                embeddings' dimension differs from the gallery's.
        """
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim == 1:
            embeddings = embeddings[None]
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"product {product_id} ({name}): embeddings of shape {embeddings.shape} do not "
                f"fit the gallery's dimension {self.dim}"
            )
        if embeddings.shape[0] == 0:
            raise ValueError(f"product {product_id} ({name}): no exemplar embeddings to add")
        exists = np.any(self.product_ids == product_id)
        if exists and not replace:
            raise ValueError(
                f"product id {product_id} is already in the gallery "
                f"({self.names.get(product_id)!r}); pass replace=True to overwrite it"
            )
        keep = self.product_ids != product_id
        self.embeddings = np.concatenate([self.embeddings[keep], embeddings])
        self.product_ids = np.concatenate(
            [self.product_ids[keep], np.full(len(embeddings), product_id, np.int64)]
        )
        self.names[int(product_id)] = str(name)
        self._index = None

    def search(self, queries: np.ndarray | torch.Tensor, k: int = 1):
        """Exact k-nearest exemplars of each query.

        Args:
            queries: (M, D).

        Returns:
            distances (M, k) float32 Euclidean, and row indices (M, k) int64 into the gallery.
        """
        if isinstance(queries, torch.Tensor):
            queries = queries.detach().cpu().numpy()
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(
                f"queries of shape {queries.shape} for a gallery of dimension {self.dim}"
            )
        if len(self) == 0 or len(queries) == 0:
            # No exemplar: every query is infinitely far (classify answers UNKNOWN).
            m = len(queries)
            return np.full((m, k), np.inf, np.float32), np.full((m, k), -1, np.int64)
        k = min(k, len(self))
        # Queries in chunks so that a (chunk, N) distance matrix stays about 64 MB.
        step = max(1, _MAX_PAIRS // len(self))
        parts = [self._search_chunk(queries[i : i + step], k) for i in range(0, len(queries), step)]
        d2 = np.concatenate([p[0] for p in parts])
        idx = np.concatenate([p[1] for p in parts])
        return np.sqrt(np.maximum(d2, 0)).astype(np.float32), idx.astype(np.int64)

    def _prepared(self):
        """The backend's view of the embeddings (faiss index, or squared norms), rebuilt when
        the embeddings array is replaced."""
        if self._index is None or self._index[0] is not self.embeddings:
            if self.backend == "faiss":
                import faiss

                index = faiss.IndexFlatL2(self.dim)
                index.add(self.embeddings)
            elif self.backend == "torch":
                g = torch.from_numpy(self.embeddings)
                index = (g, (g * g).sum(1))
            else:
                index = (self.embeddings, (self.embeddings**2).sum(1))
            self._index = (self.embeddings, index)
        return self._index[1]

    def _search_chunk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances (M, k) and indices (M, k) of the k nearest exemplars, sorted."""
        index = self._prepared()
        if self.backend == "faiss":
            return index.search(queries, k)
        if self.backend == "torch":
            g, g_sq = index
            q = torch.from_numpy(queries)
            d2 = torch.addmm(g_sq[None], q, g.T, alpha=-2) + (q * q).sum(1, keepdim=True)
            if k == 1:  # a plain min is faster than topk
                d2, idx = d2.min(1, keepdim=True)
            else:
                d2, idx = torch.topk(d2, k, dim=1, largest=False)
            return d2.numpy(), idx.numpy()
        g, g_sq = index
        d2 = (queries**2).sum(1, keepdims=True) - 2 * queries @ g.T + g_sq[None]
        if k == 1:
            idx = d2.argmin(1)[:, None]
            return np.take_along_axis(d2, idx, 1), idx
        if k < len(self):
            idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
        else:
            idx = np.broadcast_to(np.arange(len(self)), d2.shape)
        part = np.take_along_axis(d2, idx, 1)
        order = np.argsort(part, axis=1, kind="stable")
        return np.take_along_axis(part, order, 1), np.take_along_axis(idx, order, 1)

    def classify(self, queries, unknown_distance: float | None = None):
        """1-nearest-neighbour product ids, ``UNKNOWN`` beyond the unknown distance.

        Args:
            queries: (M, D) embeddings.
            unknown_distance: overrides the gallery's own threshold when given.

        Returns:
            product ids (M,) int64 and nearest distances (M,) float32.
        """
        threshold = self.unknown_distance if unknown_distance is None else unknown_distance
        dist, idx = self.search(queries, 1)
        ids = np.full(len(idx), UNKNOWN, np.int64)
        found = idx[:, 0] >= 0
        ids[found] = self.product_ids[idx[found, 0]]
        ids[dist[:, 0] > threshold] = UNKNOWN
        return ids.astype(np.int64), dist[:, 0]

    def limit_per_product(self, max_per_product: int, seed: int = 0) -> None:
        """Keep at most ``max_per_product`` exemplars of each product (chosen with ``seed``)."""
        if max_per_product <= 0:
            return
        rng = np.random.default_rng(seed)
        keep = []
        for pid in self.products:
            rows = np.flatnonzero(self.product_ids == pid)
            if len(rows) > max_per_product:
                rows = np.sort(rng.choice(rows, max_per_product, replace=False))
            keep.append(rows)
        keep = np.concatenate(keep)
        self.embeddings, self.product_ids = self.embeddings[keep], self.product_ids[keep]
        self._index = None

    def save(self, path: str | os.PathLike) -> None:
        """Write the gallery to one ``.npz`` file atomically."""
        meta = {
            **self.meta,
            "version": FORMAT_VERSION,
            "names": {str(k): v for k, v in sorted(self.names.items())},
            "unknown_distance": self.unknown_distance,
        }
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                embeddings=self.embeddings,
                product_ids=self.product_ids,
                meta=np.array(json.dumps(meta)),
            )

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "numpy") -> "Gallery":
        """Read a gallery file.

        Raises:
            BadInputError: the file is missing, not a gallery (corrupt or truncated archive,
                missing arrays, malformed metadata), or inconsistent; the message names it.
        """
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"{path}: gallery file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = {"embeddings", "product_ids", "meta"} - set(data.files)
                if missing:
                    raise BadInputError(
                        f"{path}: not a dpsnet gallery (missing arrays {sorted(missing)})"
                    )
                embeddings = data["embeddings"]
                product_ids = data["product_ids"]
                meta = json.loads(str(data["meta"]))
        except BadInputError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
            raise BadInputError(
                f"{path}: corrupt or unreadable gallery file ({type(e).__name__}: {e})"
            ) from None
        if not isinstance(meta, dict):
            raise BadInputError(f"{path}: malformed gallery metadata (not a JSON object)")
        if meta.get("version") != FORMAT_VERSION:
            raise BadInputError(f"{path}: unsupported gallery version {meta.get('version')!r}")
        if (
            embeddings.ndim != 2
            or product_ids.shape != (embeddings.shape[0],)
            or not np.issubdtype(embeddings.dtype, np.floating)
            or not np.issubdtype(product_ids.dtype, np.integer)
            or not np.isfinite(embeddings).all()
        ):
            raise BadInputError(
                f"{path}: inconsistent gallery arrays (embeddings {embeddings.shape} "
                f"{embeddings.dtype}, product_ids {product_ids.shape})"
            )
        names = {int(k): v for k, v in meta.pop("names", {}).items()}
        unknown = float(meta.pop("unknown_distance", float("inf")))
        meta.pop("version")
        return cls(embeddings, product_ids, names, unknown, meta, backend)
