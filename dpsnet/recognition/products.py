"""The products a recogniser sees: ids and names from dataset metadata, crops of their boxes,
and the seeded split into known and held-out products.

Product ids everywhere are the dataset's own category ids (RPC: 1..200), recovered from the
metadata's ``thing_dataset_id_to_contiguous_id``; names come from ``thing_classes``.
"""

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from dpsnet.data.catalogue import Catalogue
from dpsnet.recognition.crops import extract_crops

__all__ = ["load_crops", "product_catalog", "split_products"]


def product_catalog(dataset_name: str) -> tuple[dict[int, int], dict[int, str]]:
    """Contiguous class id -> product id, and product id -> name, from a dataset's metadata."""
    catalogue = Catalogue.from_metadata(MetadataCatalog.get(dataset_name))
    return dict(enumerate(catalogue.ids)), dict(zip(catalogue.ids, catalogue.names))


def load_crops(
    dataset_names, size: int, padding: float, factor: float = 1.0, products=None
) -> tuple[torch.Tensor, np.ndarray, dict[int, str]]:
    """Crops of every box of the named datasets, labelled with product ids.

    Args:
        products: keep only these product ids (None: all).

    Returns:
        crops (N, 3, S, S) uint8 RGB, product ids (N,), and product id -> name.
    """
    all_crops, all_ids, all_names = [], [], {}
    for name in dataset_names:
        to_product, names = product_catalog(name)
        all_names.update(names)
        wanted = None
        if products is not None:
            wanted = {c for c, p in to_product.items() if p in set(products)}
        crops, labels, _ = extract_crops(
            DatasetCatalog.get(name), size, padding, factor, wanted, desc=name
        )
        all_crops.append(crops)
        all_ids.append(np.asarray([to_product.get(int(c), int(c)) for c in labels], np.int64))
    return torch.cat(all_crops), np.concatenate(all_ids), all_names


def split_products(products, holdout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split product ids into (known, held out); the held-out share is rounded, seeded."""
    products = sorted(int(p) for p in products)
    n_out = int(round(holdout_fraction * len(products)))
    rng = np.random.default_rng(seed)
    held = sorted(int(p) for p in rng.choice(products, n_out, replace=False)) if n_out else []
    return [p for p in products if p not in set(held)], held
