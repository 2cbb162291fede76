"""Ignore regions for ``DISTILL.UNCERTAIN_MODE "ignore"``: neither foreground nor background.

An instance-level pseudo-labelled image keeps its uncertain detections as crowd annotations
(``iscrowd=1``, see ``labeller.pseudo_label_json``). detectron2's mapper drops crowd boxes from
the targets, so on their own they would teach "background" exactly where an unlabelled product
probably lies. Here:

* ``add_ignore_regions(mapper)`` makes a training mapper also return the crowd boxes, transformed
  like the image, as ``"ignore_boxes"`` ([M, 4] XYXY tensor);
* ``enable_ignore_regions(model)`` makes a GeneralizedRCNN leave out of its losses the anchors and
  proposals labelled background that lie mostly inside an ignore region (anchor labels set to
  -1, the RPN's "ignore"; such proposals dropped from the ROI heads' sampled batch).

The counting view's density target is built from the kept boxes only, so it still misses the
ignored objects (the "paint" mode removes them from the image instead).
"""

import numpy as np
import torch
from detectron2.structures import Boxes, BoxMode, pairwise_ioa

__all__ = ["IGNORE_IOA", "add_ignore_regions", "enable_ignore_regions", "inside_ignore"]

#: An anchor/proposal is ignored when at least this fraction of its area is inside a region.
IGNORE_IOA = 0.5


def inside_ignore(boxes: torch.Tensor, regions: torch.Tensor | None, min_ioa=IGNORE_IOA):
    """[R] bool: which XYXY ``boxes`` have at least ``min_ioa`` of their area in a region."""
    boxes = torch.as_tensor(boxes).reshape(-1, 4)
    if regions is None or len(regions) == 0 or len(boxes) == 0:
        return torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    regions = torch.as_tensor(regions, dtype=boxes.dtype, device=boxes.device).reshape(-1, 4)
    ioa = pairwise_ioa(Boxes(regions), Boxes(boxes))  # [M, R]: intersection / box area
    return ioa.max(dim=0).values >= min_ioa


def add_ignore_regions(mapper):
    """Make a detectron2 training ``mapper`` also output ``"ignore_boxes"`` (its crowd boxes).

    Returns the same mapper object (its ``_transform_annotations`` wrapped).
    """
    transform_annotations = mapper._transform_annotations

    def _transform(dataset_dict, transforms, image_shape):
        crowd = [a for a in dataset_dict.get("annotations", []) if a.get("iscrowd", 0)]
        boxes = np.zeros((0, 4), dtype=np.float32)
        if crowd:
            boxes = np.array(
                [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in crowd],
                dtype=np.float32,
            )
            boxes = transforms.apply_box(boxes).clip(min=0)
            h, w = image_shape
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(max=w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(max=h)
        dataset_dict["ignore_boxes"] = torch.as_tensor(boxes)
        transform_annotations(dataset_dict, transforms, image_shape)

    mapper._transform_annotations = _transform
    return mapper


def enable_ignore_regions(model, min_ioa: float = IGNORE_IOA):
    """Leave anchors/proposals inside the batch's ``"ignore_boxes"`` out of the losses.

    Args:
        model: a GeneralizedRCNN (``proposal_generator`` an RPN, ``roi_heads`` StandardROIHeads).
        min_ioa: see ``inside_ignore``.

    Returns:
        The same model, with its forward and its two labelling methods wrapped.
    """
    forward = model.forward
    regions: list = []

    def _forward(batched_inputs, *args, **kwargs):
        regions[:] = [x.get("ignore_boxes") for x in batched_inputs] if model.training else []
        return forward(batched_inputs, *args, **kwargs)

    model.forward = _forward
    rpn = getattr(model, "proposal_generator", None)
    if rpn is not None and hasattr(rpn, "label_and_sample_anchors"):
        label_anchors = rpn.label_and_sample_anchors

        def _label_anchors(anchors, gt_instances):
            gt_labels, matched = label_anchors(anchors, gt_instances)
            if any(r is not None and len(r) for r in regions):
                boxes = Boxes.cat(anchors).tensor
                for labels, r in zip(gt_labels, regions, strict=False):
                    labels[inside_ignore(boxes, r, min_ioa) & (labels == 0)] = -1
            return gt_labels, matched

        rpn.label_and_sample_anchors = _label_anchors
    heads = getattr(model, "roi_heads", None)
    if heads is not None and hasattr(heads, "label_and_sample_proposals"):
        label_proposals = heads.label_and_sample_proposals

        def _label_proposals(proposals, targets):
            sampled = label_proposals(proposals, targets)
            out = []
            for inst, r in zip(sampled, regions or [None] * len(sampled), strict=False):
                if r is not None and len(r):
                    background = inst.gt_classes == heads.num_classes
                    inst = inst[
                        ~(background & inside_ignore(inst.proposal_boxes.tensor, r, min_ioa))
                    ]
                out.append(inst)
            return out

        heads.label_and_sample_proposals = _label_proposals
    return model
