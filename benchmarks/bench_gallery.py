#!/usr/bin/env python
"""Gallery nearest-neighbour search at 200 and 10,000 products: torch against numpy (and faiss
when it is installed), in the same run, on the same arrays.

    python benchmarks/bench_gallery.py [--per-product 10] [--dim 128] [--repeats 7]

The galleries hold random unit embeddings (``--per-product`` exemplars of each product, as
RECOGNITION.EMBEDDER.NORMALIZE makes them); the queries are noisy copies of gallery rows, so the
true nearest exemplar is known. Two query batches per gallery: one checkout image (12 crops, what
the pipeline sends per image) and a validation run (1,000 crops). Each timing is the median of
``--repeats`` calls of ``Gallery.classify`` after one warm-up call (which builds the backend's
cached norms or index), the backends taking turns within each repeat so that they share the
machine's load alike; every backend must return the same nearest exemplars. numpy is the
baseline: ``speedup`` = numpy time / backend time. Torch runs with the thread count given
(default 1: the machine is shared), numpy with its BLAS defaults.

Writes ``benchmarks/results/bench_gallery.json`` with the fastest backend per case and
``chosen_default``: the fastest for one checkout image at 10,000 products, which
RECOGNITION.GALLERY.BACKEND's default follows.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6)

# isort: split
import argparse
import importlib.util
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dpsnet.recognition.gallery import Gallery
from dpsnet.utils.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
PRODUCTS = (200, 10_000)
BATCHES = {"checkout_image": 12, "validation_run": 1000}


def make_case(products: int, per_product: int, dim: int, queries: int, seed: int):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(products * per_product, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.repeat(np.arange(1, products + 1), per_product)
    rows = rng.integers(0, len(emb), queries)
    q = emb[rows] + 0.02 * rng.normal(size=(queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return emb, ids, q, rows


def time_backends(galleries: dict, queries: np.ndarray, repeats: int):
    """Median seconds of ``classify`` per backend; the backends take turns within each repeat,
    so all of them see the same load on a shared machine. Also their nearest exemplars."""
    times = {name: [] for name in galleries}
    for gallery in galleries.values():
        gallery.classify(queries)  # warm-up: cached norms / index
    for _ in range(repeats):
        for name, gallery in galleries.items():
            t0 = time.perf_counter()
            gallery.classify(queries)
            times[name].append(time.perf_counter() - t0)
    found = {name: g.search(queries, 1)[1][:, 0] for name, g in galleries.items()}
    return {name: statistics.median(t) for name, t in times.items()}, found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-product", type=int, default=10, help="exemplars per product")
    parser.add_argument("--dim", type=int, default=128, help="embedding dimension")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/bench_gallery.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    backends = ["numpy", "torch"]
    if importlib.util.find_spec("faiss") is not None:
        backends.append("faiss")
    results = []
    for products in PRODUCTS:
        emb, ids, all_q, rows = make_case(
            products, args.per_product, args.dim, max(BATCHES.values()), args.seed
        )
        for batch_name, size in BATCHES.items():
            q, truth = all_q[:size], rows[:size]
            row = {
                "products": products,
                "exemplars": len(emb),
                "batch": batch_name,
                "queries": size,
                "seconds": {},
                "speedup_vs_numpy": {},
            }
            galleries = {b: Gallery(emb, ids, backend=b) for b in backends}
            row["seconds"], found = time_backends(galleries, q, args.repeats)
            base = row["seconds"]["numpy"]
            for backend in backends:
                row["speedup_vs_numpy"][backend] = base / row["seconds"][backend]
            row["same_neighbours"] = all(np.array_equal(found["numpy"], f) for f in found.values())
            row["true_neighbour_rate"] = float(np.mean(found["numpy"] == truth))
            results.append(row)
            print(
                f"{products:>6} products ({len(emb)} exemplars), {size:>4} queries: "
                + ", ".join(f"{b} {row['seconds'][b] * 1e3:.2f} ms" for b in backends)
                + f"  (torch x{row['speedup_vs_numpy']['torch']:.2f} vs numpy)"
            )
    # The default: the fastest for the pipeline's per-image batch; where the sizes disagree,
    # the one fastest at 10,000 products (a large store's latency is what matters).
    winners = {
        f"{r['products']}/{r['batch']}": min(r["seconds"], key=r["seconds"].get) for r in results
    }
    choice = winners[f"{PRODUCTS[-1]}/checkout_image"]
    summary = {
        "benchmark": "gallery nearest-neighbour search (Gallery.classify)",
        "backends": backends,
        "faiss_installed": "faiss" in backends,
        "per_product": args.per_product,
        "dim": args.dim,
        "repeats": args.repeats,
        "torch_threads": args.threads,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "results": results,
        "fastest": winners,
        "chosen_default": choice,
    }
    atomic_write_json(args.output, summary, indent=2)
    print(f"default backend: {choice}; wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
