"""DPSNetOpenSet: a class-agnostic detector, then the recogniser, then the gallery.

Used like any detectron2 model at inference (``tools/train_net.py --eval-only``, the RPC
evaluator, ``demo/demo.py``): it returns ``[{"instances": Instances}]`` at each input's
original size, with ``pred_classes`` in the contiguous ids of a dataset's metadata
(``RECOGNITION.CLASS_MAP_DATASET``, default ``DATASETS.TEST[0]``).

Unknown products, i.e. crops farther than the gallery's unknown distance from every exemplar,
and products that the gallery knows but the dataset's class list does not: with
``RECOGNITION.UNKNOWN_POLICY`` "drop" they leave ``instances`` and are returned under
``"unknown_instances"`` (``product_ids`` -1 for unknown, the gallery's id otherwise); with
"keep" they stay in ``instances`` with ``pred_classes`` -1. Every instance carries
``product_ids`` and ``embed_distances`` (distance to the nearest exemplar).

The parts are trained separately (``tools/train_net.py`` with ``RECOGNITION.CLASS_AGNOSTIC``
for the detector, ``tools/train_recognizer.py`` for the embedder); this model does not train.
``build_model(cfg)`` builds them from the config alone, untrained and empty (no file read but
the detector's config); :func:`load_open_set_parts` (the model's ``load_external_parts``, which
the tools call) reads the weights, the gallery and the class map the config names.
"""

import logging
import os

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from torch import nn

from dpsnet.recognition.crops import bgr_to_rgb01, crop_boxes
from dpsnet.recognition.embedder import (
    ProductEmbedder,
    _load_trunk,
    fingerprint,
    load_embedder,
)
from dpsnet.recognition.gallery import UNKNOWN, Gallery
from dpsnet.recognition.products import product_catalog
from dpsnet.utils.io import BadInputError

logger = logging.getLogger(__name__)

__all__ = ["DPSNetOpenSet", "load_open_set_parts"]


@META_ARCH_REGISTRY.register()
class DPSNetOpenSet(nn.Module):
    """Open-set checkout model: detect "objects", embed their crops, name them by 1-NN."""

    @configurable
    def __init__(
        self,
        *,
        detector: nn.Module,
        embedder: ProductEmbedder,
        gallery: Gallery,
        class_map: dict[int, int],
        crop_size: int = 224,
        padding: float = 0.1,
        input_format: str = "BGR",
        unknown_policy: str = "drop",
        unknown_distance: float | None = None,
    ):
        """
        Args:
            detector: any detectron2 model returning ``instances`` (class-agnostic).
            embedder: the product embedder.
            gallery: exemplar embeddings of the products.
            class_map: product id -> contiguous class id of the output dataset.
            crop_size, padding: crop geometry (must match the embedder's training).
            input_format: channel order of the input images ("BGR" or "RGB").
            unknown_policy: "drop" or "keep" (see the module docstring).
            unknown_distance: overrides the gallery's own threshold when given.
        """
        super().__init__()
        if unknown_policy not in ("drop", "keep"):
            raise ValueError(f"unknown_policy must be 'drop' or 'keep', got {unknown_policy!r}")
        _check_dimensions(gallery, embedder)
        self.detector = detector
        self.embedder = embedder
        self.gallery = gallery
        self.class_map = dict(class_map)
        self.crop_size = crop_size
        self.padding = padding
        self.input_format = input_format
        self.unknown_policy = unknown_policy
        self.unknown_distance = unknown_distance

    @classmethod
    def from_config(cls, cfg):
        """The parts as the config shapes them, untrained and empty: no file is read here.

        The detector's own config file (``RECOGNITION.DETECTOR.CONFIG_FILE``) is read, as the
        rest of the config; the trained parts (detector and embedder weights, the gallery) and
        the class map (the dataset's categories) are loaded by :func:`load_open_set_parts`,
        which the tools call through :meth:`load_external_parts` once the model is built.
        """
        from dpsnet.engine.setup import load_config

        r = cfg.RECOGNITION
        if not r.DETECTOR.CONFIG_FILE:
            raise ValueError("DPSNetOpenSet needs RECOGNITION.DETECTOR.CONFIG_FILE")
        det_cfg = load_config(r.DETECTOR.CONFIG_FILE)
        det_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
        # Test-time settings come from the pipeline's config, so that overrides (and the demo's
        # --confidence-threshold) reach the detector.
        det_cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
        det_cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST
        det_cfg.MODEL.RETINANET.SCORE_THRESH_TEST = cfg.MODEL.RETINANET.SCORE_THRESH_TEST
        det_cfg.MODEL.RETINANET.NMS_THRESH_TEST = cfg.MODEL.RETINANET.NMS_THRESH_TEST
        det_cfg.TEST.DETECTIONS_PER_IMAGE = cfg.TEST.DETECTIONS_PER_IMAGE
        if det_cfg.MODEL.META_ARCHITECTURE == "DPSNetOpenSet":
            raise ValueError(f"{r.DETECTOR.CONFIG_FILE}: the detector cannot be DPSNetOpenSet")
        e = r.EMBEDDER
        # No trunk_weights: a file, read by the loader (only when EMBEDDER.WEIGHTS is empty).
        embedder = ProductEmbedder(
            arch=e.ARCH, embed_dim=e.EMBED_DIM, hidden_dim=e.HIDDEN_DIM, normalize=e.NORMALIZE
        )
        return {
            "detector": build_model(det_cfg),
            "embedder": embedder,
            "gallery": _empty_gallery(embedder.embed_dim),
            "class_map": {},
            "crop_size": r.CROP.SIZE,
            "padding": r.CROP.PADDING,
            "input_format": cfg.INPUT.FORMAT,
            "unknown_policy": r.UNKNOWN_POLICY,
            "unknown_distance": r.GALLERY.UNKNOWN_DISTANCE
            if r.GALLERY.UNKNOWN_DISTANCE > 0
            else None,
        }

    def load_external_parts(self, cfg) -> "DPSNetOpenSet":
        """Load the files the config names into this model (see :func:`load_open_set_parts`).

        The generic hook the tools call on any model they build (``getattr(model,
        "load_external_parts", None)``), so that code below this package needs not import it.
        """
        return load_open_set_parts(self, cfg)

    @property
    def device(self) -> torch.device:
        return self.embedder.pixel_mean.device

    def forward(self, batched_inputs: list[dict]):
        if self.training:
            raise NotImplementedError(
                "DPSNetOpenSet is not trained end to end: train the detector with "
                "tools/train_net.py (RECOGNITION.CLASS_AGNOSTIC True) and the recogniser with "
                "tools/train_recognizer.py, then evaluate with --eval-only"
            )
        return self.inference(batched_inputs)

    @torch.no_grad()
    def inference(self, batched_inputs: list[dict]) -> list[dict]:
        """
        Args:
            batched_inputs: detectron2 inputs: ``image`` (C, H, W) in ``input_format``, and
                optional ``height``/``width`` of the original image.

        Returns:
            One dict per image: ``instances`` and ``unknown_instances`` (see module docstring).
        """
        detections = self.detector.eval()(batched_inputs)
        outputs = []
        for inputs, det in zip(batched_inputs, detections):
            inst = det["instances"].to(self.device)
            image = inputs["image"].to(self.device)
            h_in, w_in = image.shape[-2:]
            h_out, w_out = inst.image_size
            boxes = inst.pred_boxes.tensor.clone()
            boxes[:, 0::2] *= w_in / w_out
            boxes[:, 1::2] *= h_in / h_out
            crops = crop_boxes(
                bgr_to_rgb01(image, self.input_format), boxes, self.crop_size, self.padding
            )
            emb = self.embedder.embed(crops)
            product_ids, dist = self.gallery.classify(emb, self.unknown_distance)
            classes = [
                self.class_map.get(int(p), UNKNOWN) if p != UNKNOWN else UNKNOWN
                for p in product_ids
            ]
            inst.pred_classes = torch.as_tensor(classes, dtype=torch.int64, device=self.device)
            inst.product_ids = torch.as_tensor(product_ids, device=self.device)
            inst.embed_distances = torch.as_tensor(dist, device=self.device)
            known = inst.pred_classes >= 0
            if self.unknown_policy == "drop":
                outputs.append({"instances": inst[known], "unknown_instances": inst[~known]})
            else:
                outputs.append({"instances": inst})
        return outputs

    def product_name(self, product_id: int) -> str:
        """The gallery's name for a product id ("unknown product" for ``UNKNOWN``)."""
        if product_id == UNKNOWN:
            return "unknown product"
        return self.gallery.names.get(int(product_id), str(product_id))


def load_open_set_parts(model: DPSNetOpenSet, cfg) -> DPSNetOpenSet:
    """Read the files ``cfg`` names and load them into a built :class:`DPSNetOpenSet`.

    ``RECOGNITION.DETECTOR.WEIGHTS`` into the detector, ``RECOGNITION.EMBEDDER.WEIGHTS`` as the
    embedder (its crop geometry with it; else ``EMBEDDER.TRUNK_WEIGHTS`` into the untrained
    embedder's trunk), ``RECOGNITION.GALLERY.FILE`` as the gallery, and the class map from the
    metadata of ``RECOGNITION.CLASS_MAP_DATASET`` (default ``DATASETS.TEST[0]``). An empty key
    leaves its part untrained or empty, with a warning.

    Returns:
        ``model``, loaded in place.

    Raises:
        BadInputError: a named file is missing or is not what its key says (one line).
        ValueError: the gallery was built with an embedder of another dimension.
    """
    from detectron2.checkpoint import DetectionCheckpointer

    r = cfg.RECOGNITION
    if r.DETECTOR.WEIGHTS:
        if not os.path.isfile(r.DETECTOR.WEIGHTS):
            raise BadInputError(f"RECOGNITION.DETECTOR.WEIGHTS not found: {r.DETECTOR.WEIGHTS}")
        DetectionCheckpointer(model.detector).load(r.DETECTOR.WEIGHTS)
    else:
        logger.warning("RECOGNITION.DETECTOR.WEIGHTS is empty: the detector is untrained")
    if r.EMBEDDER.WEIGHTS:
        # The checkpoint carries its own architecture, which may differ from the config's.
        embedder, extra = load_embedder(r.EMBEDDER.WEIGHTS, cfg.MODEL.DEVICE)
        model.embedder = embedder
        model.crop_size = extra.get("crop_size", model.crop_size)
        model.padding = extra.get("padding", model.padding)
    else:
        logger.warning("RECOGNITION.EMBEDDER.WEIGHTS is empty: the embedder is untrained")
        if r.EMBEDDER.TRUNK_WEIGHTS:
            _load_trunk(model.embedder.trunk, r.EMBEDDER.TRUNK_WEIGHTS)
    if r.GALLERY.FILE:
        gallery = Gallery.load(r.GALLERY.FILE, backend=r.GALLERY.BACKEND)
        made_by = gallery.meta.get("embedder", {}).get("fingerprint")
        if made_by and r.EMBEDDER.WEIGHTS and made_by != fingerprint(model.embedder):
            logger.warning(
                "%s was built with another embedder (fingerprint %s, this one %s); rebuild "
                "it with tools/build_gallery.py",
                r.GALLERY.FILE,
                made_by,
                fingerprint(model.embedder),
            )
    else:
        logger.warning("RECOGNITION.GALLERY.FILE is empty: every product will be unknown")
        gallery = _empty_gallery(model.embedder.embed_dim)
    _check_dimensions(gallery, model.embedder)
    model.gallery = gallery
    map_name = r.CLASS_MAP_DATASET or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
    to_product, _ = product_catalog(map_name) if map_name else ({}, {})
    if to_product and len(to_product) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        logger.warning(
            "%s has %d classes but MODEL.ROI_HEADS.NUM_CLASSES is %d: set it to the number "
            "of products, which tools reading the config (demo receipts) take as the classes",
            map_name,
            len(to_product),
            cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        )
    model.class_map = {p: c for c, p in to_product.items()}
    return model


def _empty_gallery(dim: int) -> Gallery:
    return Gallery(np.zeros((0, dim), np.float32), np.zeros(0, np.int64))


def _check_dimensions(gallery: Gallery, embedder: ProductEmbedder) -> None:
    if gallery.dim != embedder.embed_dim and len(gallery):
        raise ValueError(
            f"gallery embeddings have dimension {gallery.dim} but the embedder makes "
            f"{embedder.embed_dim}: the gallery was built with another recogniser"
        )
