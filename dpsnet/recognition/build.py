"""Gallery jobs behind tools/build_gallery.py and tools/add_product.py."""

import logging

import numpy as np
import torch

from dpsnet.recognition.crops import bgr_to_rgb01, crop_boxes
from dpsnet.recognition.embedder import fingerprint, load_embedder
from dpsnet.recognition.evaluate import calibrate_unknown_distance
from dpsnet.recognition.gallery import Gallery
from dpsnet.recognition.products import load_crops
from dpsnet.recognition.views import build_gallery, embed_views
from dpsnet.utils.io import BadInputError, read_image

logger = logging.getLogger(__name__)


def build_gallery_file(
    weights: str,
    datasets: list[str],
    output: str,
    products: list[int] | None = None,
    max_per_product: int = 0,
    calibrate_datasets: list[str] | None = None,
    unknown_distance: float | None = None,
    seed: int = 0,
    rotations: bool = False,
    jitter_views: int = 0,
) -> Gallery:
    """Embed every exemplar box of ``datasets`` and write the gallery to ``output``.

    Args:
        weights: recogniser checkpoint (``model_final.pth`` of tools/train_recognizer.py).
        datasets: registered exemplar datasets.
        products: only these product ids (None: all).
        max_per_product: keep at most this many exemplars per product (0: all).
        calibrate_datasets: labelled datasets (e.g. validation checkout images) whose crops set
            the unknown distance (98% of their correctly named crops fall inside it).
        unknown_distance: a fixed unknown distance instead (None and no calibration: never).
        rotations, jitter_views: extra views of each exemplar (see ``train.embed_views``);
            kept in the gallery, so that tools/add_product.py embeds new products alike.
    """
    model, extra = load_embedder(weights)
    size, padding = extra.get("crop_size", 224), extra.get("padding", 0.1)
    crops, ids, names = load_crops(datasets, size, padding, products=products)
    if len(ids) == 0:
        raise BadInputError(f"no exemplar boxes in {datasets} (products {products})")
    views = {"rotations": rotations, "jitter_views": jitter_views}
    gallery = build_gallery(
        model,
        crops,
        ids,
        names,
        {"crop_size": size, "padding": padding, "weights": weights},
        views=views,
        seed=seed,
    )
    gallery.limit_per_product(max_per_product, seed)
    if unknown_distance is not None:
        gallery.unknown_distance = unknown_distance
    elif calibrate_datasets:
        val_crops, val_ids, _ = load_crops(calibrate_datasets, size, padding)
        pred, dist = gallery.classify(model.embed(val_crops), float("inf"))
        known = np.isin(val_ids, gallery.products)
        gallery.unknown_distance = calibrate_unknown_distance(
            dist[known], pred[known] == val_ids[known]
        )
    gallery.save(output)
    logger.info(
        "Wrote %s: %d embeddings of %d products, unknown distance %.3f",
        output,
        len(gallery),
        len(gallery.products),
        gallery.unknown_distance,
    )
    return gallery


def exemplar_crops_from_images(
    image_paths: list[str], size: int, padding: float, boxes: list | None = None
) -> torch.Tensor:
    """Crops of one product from its photos; the box is the whole image when not given.

    Args:
        boxes: one XYWH box per image, or None.

    Returns:
        (N, 3, size, size) uint8 RGB crops.
    """
    out = []
    for i, path in enumerate(image_paths):
        image = bgr_to_rgb01(read_image(path))
        h, w = image.shape[-2:]
        x, y, bw, bh = boxes[i] if boxes else (0, 0, w, h)
        box = torch.tensor([[x, y, x + bw, y + bh]], dtype=torch.float32)
        # A whole-image box already holds its context: no padding around it.
        pad = padding if boxes else 0.0
        out.append((crop_boxes(image, box, size, pad) * 255).round().to(torch.uint8))
    return torch.cat(out)


def add_product_to_gallery(
    gallery_path: str,
    weights: str,
    product_id: int,
    name: str,
    images: list[str] | None = None,
    dataset: str | list[str] | None = None,
    replace: bool = False,
) -> Gallery:
    """Embed a product's exemplars and append them to the gallery file (rewritten atomically).

    Exemplars come from photos (``images``, one product filling each) or from the boxes of that
    product id in one or more registered datasets (``dataset``: e.g. its exemplar set and
    checkout scenes synthesized from those exemplars, ``configs/OpenSet/gallery_scenes_mini.yaml``).

    Raises:
        BadInputError: unreadable gallery/checkpoint/images, or no exemplar found.
        ValueError: the id is already in the gallery and ``replace`` is False, or the gallery
            was built with another embedder.
    """
    gallery = Gallery.load(gallery_path)
    model, extra = load_embedder(weights)
    made_by = gallery.meta.get("embedder", {}).get("fingerprint")
    if made_by and made_by != fingerprint(model):
        raise ValueError(
            f"{gallery_path} was built with another recogniser than {weights} "
            f"(fingerprint {made_by} vs {fingerprint(model)}); rebuild it with build_gallery.py"
        )
    size, padding = extra.get("crop_size", 224), extra.get("padding", 0.1)
    if images:
        crops = exemplar_crops_from_images(images, size, padding)
    elif dataset:
        datasets = [dataset] if isinstance(dataset, str) else list(dataset)
        crops, _, names = load_crops(datasets, size, padding, products=[product_id])
        name = name or names.get(product_id, str(product_id))
    else:
        raise ValueError("give the product's exemplar images or a dataset holding them")
    if len(crops) == 0:
        raise BadInputError(f"no exemplars of product {product_id} in {images or dataset}")
    emb = embed_views(model, crops, gallery.meta.get("views"), seed=product_id)
    gallery.add_product(product_id, name or str(product_id), emb, replace)
    gallery.save(gallery_path)
    logger.info(
        "Added product %d (%s) to %s from %d exemplars",
        product_id,
        name,
        gallery_path,
        len(crops),
    )
    return gallery
