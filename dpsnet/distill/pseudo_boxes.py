"""``DISTILL.PSEUDO_BOX_REGRESSION False``: pseudo boxes teach what, not exactly where.

A teacher's score says how sure it is of a product, not how well its box fits (Unbiased
Teacher, Soft Teacher); regressing the student's boxes onto the teacher's teaches its
localisation errors back, while the synthesized scenes carry exact boxes. With this switch the
boxes of pseudo-labelled images still decide which proposals are foreground and of which
product (RPN and box classifier as before), but the box head's regression loss is taken on the
synthesized images' proposals only.

* ``mark_pseudo_instances(mapper)``: a training mapper's instances of a record marked
  ``PSEUDO_KEY`` carry ``gt_pseudo`` ((N,) bool, all True); detectron2's proposal matching copies
  the field to the proposals matched to them;
* ``disable_pseudo_box_regression(model)``: the box predictor's regression loss leaves out the
  proposals matched to such boxes (their classification loss is unchanged). The loss keeps
  detectron2's normaliser (all sampled proposals), so a batch without pseudo images trains
  exactly as before.
"""

import torch
from detectron2.layers import cat

__all__ = ["PSEUDO_KEY", "disable_pseudo_box_regression", "mark_pseudo_instances"]

#: Record key marking a pseudo-labelled image in the student's dataset.
PSEUDO_KEY = "distill_pseudo"


def mark_pseudo_instances(mapper):
    """Wrap a training ``mapper`` so that pseudo-labelled records' instances carry ``gt_pseudo``.

    Returns a callable mapping a record as ``mapper`` does.
    """

    def _map(dataset_dict: dict):
        out = mapper(dataset_dict)
        if out is not None and dataset_dict.get(PSEUDO_KEY) and "instances" in out:
            inst = out["instances"]
            inst.gt_pseudo = torch.ones(len(inst), dtype=torch.bool)
        return out

    return _map


def disable_pseudo_box_regression(model):
    """Leave proposals matched to ``gt_pseudo`` boxes out of the box regression loss.

    Returns the model (its ``roi_heads.box_predictor.losses`` wrapped; composes with
    ``class_sets.enable_class_sets``, which replaces the classification loss only).
    """
    predictor = model.roi_heads.box_predictor
    losses = predictor.losses

    def _losses(predictions, proposals):
        out = losses(predictions, proposals)
        if not any(p.has("gt_pseudo") for p in proposals):
            return out
        num_classes = predictor.num_classes
        gt_classes = []
        for p in proposals:
            g = p.gt_classes
            if p.has("gt_pseudo") and len(p):
                # Background for the regression only: detectron2 regresses foreground alone.
                g = torch.where(p.gt_pseudo.to(g.device), torch.full_like(g, num_classes), g)
            gt_classes.append(g)
        boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        gt_boxes = cat(
            [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals],
            dim=0,
        )
        reg = predictor.box_reg_loss(boxes, gt_boxes, predictions[1], cat(gt_classes, dim=0))
        out["loss_box_reg"] = reg * predictor.loss_weight.get("loss_box_reg", 1.0)
        return out

    predictor.losses = _losses
    return model
