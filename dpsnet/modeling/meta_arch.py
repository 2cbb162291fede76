"""DPSNet: Faster R-CNN with FPN plus the counting view (counting pyramid and density head).

Training returns detectron2's detection losses plus the counting head's losses, weighted by
``MODEL.DPSNET.DENSITY_LOSS_WEIGHT``. Inference returns, per image::

    {"instances": Instances, "density": Tensor (C, h, w), "counts": Tensor (C,)}

``density`` is the predicted map over the network's input image (resized, unpadded) at stride
``MODEL.COUNTING_HEAD.STRIDE``, so h = ceil(H_in / stride); ``counts`` is its sum per channel
divided by ``MODEL.COUNTING_HEAD.MASS`` (real-valued; round for a receipt).
"""

import logging

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage

from dpsnet.data.density import density_layout_from_config
from dpsnet.modeling.backbone import DPSNetFPN
from dpsnet.modeling.counting_head import build_counting_head
from dpsnet.modeling.flip import merge_flip_outputs, mirror_inputs
from dpsnet.modeling.postprocess import merge_across_classes, select_by_count

__all__ = ["DPSNet"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class DPSNet(GeneralizedRCNN):
    """Generalized R-CNN with a counting view.

    Args:
        counting_head: module mapping the backbone features (and, in training, the padded
            (B, C, h, w) density targets) to ``(density, losses)``; see
            :func:`~dpsnet.modeling.counting_head.build_counting_head`.
        density_loss_weight: multiplies every counting-head loss.
        density_stride: stride of the density maps (to crop them to each image).
        mass: density mass of one object; counts = map sum / mass.
        count_guided: None, or a dict with ``class_to_group`` ((K,) long tensor: group of each
            class), ``offset`` (first channel of the guiding level), ``num_groups``,
            ``min_score`` and ``keep_score``; see :mod:`dpsnet.modeling.postprocess`.
        test_flip: at inference (``forward`` in eval mode), also run each image's mirror image
            and merge the two views (:mod:`dpsnet.modeling.flip`); ``inference`` itself is
            always one view.
        cross_class_iou: above 0, ``forward`` in eval mode (after the flip merge) makes
            detections of different products overlapping above this IoU one detection, scored
            by their summed scores (:func:`~dpsnet.modeling.postprocess.merge_across_classes`);
            ``inference`` itself leaves them apart.
        **kwargs: as :class:`detectron2.modeling.GeneralizedRCNN`.
    """

    @configurable
    def __init__(
        self,
        *,
        counting_head: torch.nn.Module,
        density_loss_weight: float = 1.0,
        density_stride: int = 8,
        mass: float = 100.0,
        count_guided: dict | None = None,
        test_flip: bool = False,
        cross_class_iou: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.counting_head = counting_head
        self.density_loss_weight = density_loss_weight
        self.density_stride = density_stride
        self.mass = mass
        self.count_guided = count_guided
        self.test_flip = test_flip
        self.cross_class_iou = cross_class_iou
        self.register_load_state_dict_post_hook(_fresh_counting_view_hook)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["counting_head"] = build_counting_head(cfg, ret["backbone"].output_shape())
        ret["density_loss_weight"] = cfg.MODEL.DPSNET.DENSITY_LOSS_WEIGHT
        ret["density_stride"] = cfg.MODEL.COUNTING_HEAD.STRIDE
        ret["mass"] = cfg.MODEL.COUNTING_HEAD.MASS
        ret["test_flip"] = cfg.MODEL.DPSNET.TEST_FLIP
        ret["cross_class_iou"] = cfg.MODEL.DPSNET.CROSS_CLASS_IOU
        guided = cfg.MODEL.DPSNET.COUNT_GUIDED
        if guided.ENABLED:
            layout = density_layout_from_config(cfg, in_memory=True)  # reads no file
            if guided.LEVEL not in layout.levels:
                raise ValueError(
                    f"MODEL.DPSNET.COUNT_GUIDED.LEVEL {guided.LEVEL!r} is not among "
                    f"MODEL.COUNTING_HEAD.LEVELS {list(layout.levels)}"
                )
            ret["count_guided"] = {
                "class_to_group": torch.as_tensor(layout.group_of_class(guided.LEVEL)),
                "offset": layout.level_offset(guided.LEVEL),
                "num_groups": layout.level_size(guided.LEVEL),
                "min_score": guided.MIN_SCORE,
                "keep_score": guided.KEEP_SCORE,
            }
        return ret

    def forward(self, batched_inputs: list[dict]):
        """Training: dict of losses. Inference: see :meth:`inference`.

        Args:
            batched_inputs: as for GeneralizedRCNN; in training each dict also has ``"density"``,
                a (C, h_i, w_i) map with h_i <= padded height / stride (the mapper's output).
        """
        if not self.training:
            if self.test_flip:
                outputs = self._flip_inference(batched_inputs)
            else:
                outputs = self.inference(batched_inputs)
            if self.cross_class_iou > 0:
                for out in outputs:
                    out["instances"] = merge_across_classes(out["instances"], self.cross_class_iou)
            return outputs
        images = self.preprocess_image(batched_inputs)
        gt_instances = None
        if "instances" in batched_inputs[0]:
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        if self.proposal_generator is not None:
            proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        else:
            proposals = [x["proposals"].to(self.device) for x in batched_inputs]
            proposal_losses = {}
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)

        targets = self._density_targets(batched_inputs, features[self.counting_head.in_feature])
        # An image with ignore regions (pseudo-labels whose uncertain objects are neither kept
        # nor painted out) has objects its density target does not show: no counting loss.
        weights = torch.tensor(
            [0.0 if len(x.get("ignore_boxes", ())) else 1.0 for x in batched_inputs],
            device=targets.device,
        )
        _, density_losses = self.counting_head(features, targets, weights)
        losses = {k: v * self.density_loss_weight for k, v in density_losses.items()}
        losses.update(detector_losses)
        losses.update(proposal_losses)
        return losses

    def _density_targets(self, batched_inputs: list[dict], feature: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) targets, each image's map zero-padded like the image (bottom/right)."""
        if "density" not in batched_inputs[0]:
            raise ValueError(
                "DPSNet training inputs need a 'density' map: use DPSNetDatasetMapper "
                "(dpsnet.data.mapper), which builds it from the boxes"
            )
        maps = [x["density"] for x in batched_inputs]
        h, w = feature.shape[-2:]
        # float32 whatever the features' dtype (bfloat16 under CPU autocast): a target's sum is
        # a count
        out = torch.zeros(
            (len(maps), maps[0].shape[0], h, w), dtype=torch.float32, device=feature.device
        )
        for i, m in enumerate(maps):
            if m.shape[0] != out.shape[1] or m.shape[1] > h or m.shape[2] > w:
                raise ValueError(
                    f"density target {tuple(m.shape)} does not fit the predicted maps "
                    f"{tuple(out.shape[1:])} (channels, or stride vs. padding, differ)"
                )
            out[i, :, : m.shape[1], : m.shape[2]] = m.to(out.device)
        return out

    def inference(
        self,
        batched_inputs: list[dict],
        detected_instances: list[Instances] | None = None,
        do_postprocess: bool = True,
    ):
        """Detections plus density maps and counts.

        Returns:
            With ``do_postprocess``: one dict per image with "instances" (in the original image
            resolution), "density" ((C, h, w) over the resized input, stride
            ``density_stride``) and "counts" ((C,)). Without: ``(list[Instances], densities,
            counts)`` in the resized input's resolution.
        """
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        if detected_instances is None:
            if self.proposal_generator is not None:
                proposals, _ = self.proposal_generator(images, features, None)
            else:
                proposals = [x["proposals"].to(self.device) for x in batched_inputs]
            results, _ = self.roi_heads(images, features, proposals, None)
        else:
            detected_instances = [x.to(self.device) for x in detected_instances]
            results = self.roi_heads.forward_with_given_boxes(features, detected_instances)
        density, _ = self.counting_head(features)
        densities, counts = self._crop_density(density, images)
        if self.count_guided is not None and detected_instances is None:
            results = [self._select(r, c) for r, c in zip(results, counts)]
        if not do_postprocess:
            return results, densities, counts
        processed = GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
        for out, d, c in zip(processed, densities, counts):
            out["density"] = d
            out["counts"] = c
        return processed

    def _flip_inference(self, batched_inputs: list[dict]) -> list[dict]:
        """``inference`` on each image and its mirror image in one batch, merged per image."""
        outs = self.inference([*batched_inputs, *mirror_inputs(batched_inputs)])
        n = len(batched_inputs)
        return [merge_flip_outputs(a, b) for a, b in zip(outs[:n], outs[n:], strict=True)]

    def _crop_density(self, density: torch.Tensor, images: ImageList):
        """Per image: the map over its unpadded area, and its counts (sum / mass)."""
        densities, counts = [], []
        s = self.density_stride
        for i, (h, w) in enumerate(images.image_sizes):
            d = density[i, :, : -(-h // s), : -(-w // s)]
            densities.append(d)
            counts.append(d.sum(dim=(1, 2)) / self.mass)
        return densities, counts

    def _select(self, instances: Instances, counts: torch.Tensor) -> Instances:
        g = self.count_guided
        level_counts = counts[g["offset"] : g["offset"] + g["num_groups"]]
        return select_by_count(
            instances,
            level_counts,
            g["class_to_group"],
            min_score=g["min_score"],
            keep_score=g["keep_score"],
        )


def _counting_view_keys(model: DPSNet) -> set[str]:
    keys = {f"counting_head.{k}" for k in model.counting_head.state_dict()}
    if isinstance(model.backbone, DPSNetFPN):
        keys |= {f"backbone.count_pyramid.{k}" for k in model.backbone.count_pyramid.state_dict()}
    return keys


def _fresh_counting_view_hook(model: DPSNet, incompatible) -> None:
    """Loading a checkpoint without any counting-view weights (a detectron2 detector): say so in
    one line instead of listing every missing tensor; a partial counting view is still reported.
    """
    view = _counting_view_keys(model)
    missing = [k for k in incompatible.missing_keys if _strip_to(k, view)]
    if not missing or len(missing) < len(view):
        return
    for k in missing:
        incompatible.missing_keys.remove(k)
    logger.info(
        "Checkpoint has no counting view: the counting pyramid and density head (%d tensors) "
        "start from random initialisation.",
        len(missing),
    )


def _strip_to(key: str, names: set[str]) -> bool:
    """Whether ``key`` is one of ``names``, possibly under a parent module's prefix."""
    return key in names or any(key.endswith("." + n) for n in names)
