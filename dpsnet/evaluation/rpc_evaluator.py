"""``RPCEvaluator``: detectron2's DatasetEvaluator for RPC-style checkout datasets.

Used for datasets whose metadata ``evaluator_type`` is "rpc". It collects each image's
detections (and the counting view's counts, when the model outputs them), gathers them on rank 0,
and runs :func:`dpsnet.evaluation.rpc_report.evaluate_rpc` against the ground truth, which it
alone reads (from the metadata's ``json_file``, else from the dataset's records).
"""

from __future__ import annotations

import itertools
import logging
import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from dpsnet.data.catalogue import Catalogue, CountingLayout
from dpsnet.evaluation.ground_truth import RPCGroundTruth
from dpsnet.evaluation.results_io import Detections
from dpsnet.evaluation.rpc_markdown import markdown_report
from dpsnet.evaluation.rpc_report import evaluate_rpc, write_report

__all__ = ["RPCEvaluator"]

logger = logging.getLogger(__name__)


class RPCEvaluator(DatasetEvaluator):
    """Checkout metrics (cAcc, ACD, mCCD, mCIoU), mAP50 / mmAP, per level and averaged.

    The headline figures count detections with ``score >= score_threshold`` (a fixed threshold,
    as a deployed checkout does). With ``search_threshold`` it also reports rpctool's protocol
    (threshold searched on the evaluated set itself, under ``search/``). Outputs may carry
    ``"counts"``: a (C,) tensor of the counting view's counts, C = 1 (total),
    ``len(metadata.supercategory_names)`` (per supercategory, through
    ``metadata.thing_supercategory_ids``) or ``len(metadata.thing_classes)`` (per category);
    count-only metrics are then reported under ``count/`` (``count/total_MAE``: the mean absolute
    error of the total count). A counting view with several levels (``count_levels``, e.g.
    ``["total", "category"]``, channels laid out level after level) is evaluated on its finest
    level.

    The evaluated images are those passed to :meth:`process` (every image of the dataset in a
    normal inference run); an image without detection still counts. Writes to ``output_dir``:
    ``coco_instances_results.json``, ``rpc_metrics.json`` and ``rpc_metrics.md`` (with the most
    miscounted and most confused categories).

    Args:
        dataset_name: a registered dataset.
        output_dir: where to write the files (None: write nothing).
        score_threshold: the fixed score threshold of the headline figures.
        search_threshold: also report rpctool's searched-threshold protocol.
        distributed: gather predictions from every process to rank 0.
        compute_map: compute mAP50 / mmAP with pycocotools.
        levels: levels to report besides "averaged" (None: every level present).
        top_k: rows of the miscounted / confused tables.
        match_iou: IoU of a box match in the confusion table.
        count_levels: the counting view's levels in channel order (``MODEL.COUNTING_HEAD.LEVELS``);
            None: one level, recognised from the number of channels.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        score_threshold: float = 0.5,
        search_threshold: bool = True,
        distributed: bool = True,
        compute_map: bool = True,
        levels: list[str] | None = None,
        top_k: int = 10,
        match_iou: float = 0.5,
        count_levels: list[str] | None = None,
    ):
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        self._output_dir = output_dir
        self._score_threshold = float(score_threshold)
        self._search_threshold = bool(search_threshold)
        self._distributed = distributed
        self._compute_map = compute_map
        self._levels = None
        if levels:
            self._levels = list(levels) + ([] if "averaged" in levels else ["averaged"])
        self._top_k = top_k
        self._match_iou = match_iou
        self._count_levels = list(count_levels) if count_levels else None
        self._predictions: list[dict] = []

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str | None = None) -> RPCEvaluator:
        """Build from ``cfg.TEST.RPC`` (see ``dpsnet.config``)."""
        rpc = cfg.TEST.RPC
        return cls(
            dataset_name,
            output_dir,
            score_threshold=rpc.SCORE_THRESHOLD,
            search_threshold=rpc.SEARCH_THRESHOLD,
            compute_map=rpc.COMPUTE_MAP,
            levels=list(rpc.LEVELS) or None,
            top_k=rpc.TOP_K,
            match_iou=rpc.MATCH_IOU,
            count_levels=list(cfg.MODEL.COUNTING_HEAD.LEVELS),
        )

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs, outputs) -> None:
        """Keep each image's detections (XYWH float64, scores, contiguous classes) and counts."""
        for inp, out in zip(inputs, outputs):
            pred = {"image_id": inp["image_id"]}
            if "instances" in out:
                inst = out["instances"].to("cpu")
                # float64 before numpy: under bfloat16 autocast (dpsnet.utils.precision) scores
                # come out as bfloat16, which numpy has no type for.
                boxes = inst.pred_boxes.tensor.to(torch.float64).numpy()
                pred["boxes"] = BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
                pred["scores"] = inst.scores.to(torch.float64).numpy()
                pred["classes"] = inst.pred_classes.numpy().astype(np.int64)
            if "counts" in out:
                counts = out["counts"]
                if isinstance(counts, torch.Tensor):
                    counts = counts.detach().to("cpu", torch.float64).numpy()
                pred["counts"] = np.asarray(counts, dtype=np.float64).reshape(-1)
            self._predictions.append(pred)

    def _ground_truth(self) -> RPCGroundTruth:
        json_file = getattr(self._metadata, "json_file", None)
        if json_file and os.path.isfile(json_file):
            return RPCGroundTruth.from_json(json_file)
        if json_file:
            logger.warning(
                "%s: json_file %s not found; using the dataset records",
                self._dataset_name,
                json_file,
            )
        return RPCGroundTruth.from_records(
            DatasetCatalog.get(self._dataset_name),
            self._metadata,
            source=f"dataset '{self._dataset_name}'",
        )

    def _contiguous_to_category_ids(self, gt: RPCGroundTruth) -> np.ndarray:
        """(C,) dataset category id of each contiguous class id the model predicts."""
        if not getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None):
            return gt.category_ids  # records without an id map: classes in the GT's id order
        return np.asarray(Catalogue.from_metadata(self._metadata).ids, np.int64)

    def _count_layout(self, num_channels: int, gt: RPCGroundTruth) -> CountingLayout:
        """What the counting view's channels mean (the metadata's classes, else the GT's)."""
        if getattr(self._metadata, "thing_classes", None):
            catalogue = Catalogue.from_metadata(self._metadata)
        else:
            catalogue = Catalogue(gt.category_ids.tolist(), gt.category_names)
        levels = self._count_levels if self._count_levels and len(self._count_levels) > 1 else None
        layout = CountingLayout.infer(catalogue, num_channels, levels)
        if layout is not None:
            return layout
        if levels:
            raise ValueError(
                f"{self._dataset_name}: the model outputs {num_channels} count channels, which "
                f"do not fit the counting levels {levels} ({catalogue.num_classes} categories, "
                f"{catalogue.num_supercategories} supercategories)"
            )
        raise ValueError(
            f"{self._dataset_name}: the model outputs {num_channels} count channels, but the "
            f"dataset has {catalogue.num_classes} categories and "
            f"{len(catalogue.supercategory_names)} supercategories "
            "(expected 1, one per supercategory or one per category)"
        )

    def evaluate(self) -> dict:
        """Gather, evaluate and write; returns ``{"rpc": {flat metrics}}`` on rank 0, else {}."""
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        if not predictions:
            logger.warning("[RPCEvaluator] %s: no predictions to evaluate", self._dataset_name)
            return {}
        seen: dict = {}
        for pred in predictions:  # an image seen twice (sampler padding) counts once
            seen.setdefault(pred["image_id"], pred)
        predictions = list(seen.values())

        gt_all = self._ground_truth()
        gt = gt_all.subset(
            gt_all.image_rows([p["image_id"] for p in predictions], what="model outputs")
        )
        dets = self._detections(predictions, gt)
        counts, groups, kind = self._counts(predictions, gt)
        report = evaluate_rpc(
            gt,
            dets,
            levels=self._levels,
            score_threshold=self._score_threshold,
            search_threshold=self._search_threshold,
            compute_map=self._compute_map,
            counts=counts,
            count_groups=groups,
            count_kind=kind,
            top_k=self._top_k,
            match_iou=self._match_iou,
        )
        report["dataset"] = self._dataset_name
        if self._output_dir:
            write_report(self._output_dir, report, dets.to_coco_results(gt))
        logger.info(
            "\n%s", markdown_report(report, title=f"RPC evaluation of {self._dataset_name}")
        )
        return {"rpc": report["metrics"]}

    def _detections(self, predictions: list[dict], gt: RPCGroundTruth) -> Detections:
        to_id = self._contiguous_to_category_ids(gt)
        with_dets = [(row, p) for row, p in enumerate(predictions) if "boxes" in p]
        sizes = [p["scores"].size for _, p in with_dets]
        classes = np.concatenate([p["classes"] for _, p in with_dets] or [np.zeros(0, np.int64)])
        if classes.size and (classes.min() < 0 or classes.max() >= to_id.size):
            raise ValueError(
                f"{self._dataset_name}: predicted class id out of range: {classes.max()}"
            )
        return Detections(
            image_index=np.repeat([row for row, _ in with_dets], sizes).astype(np.int64),
            category_index=gt.category_rows(to_id[classes].tolist(), what="model outputs"),
            bbox=np.concatenate([p["boxes"] for _, p in with_dets] or [np.zeros((0, 4))]),
            score=np.concatenate([p["scores"] for _, p in with_dets] or [np.zeros(0)]),
        )

    def _counts(self, predictions: list[dict], gt: RPCGroundTruth):
        """(N, C) counting-view counts, (K,) channel of each category, kind; or Nones."""
        have = [p for p in predictions if "counts" in p]
        if not have:
            return None, None, "total"
        if len(have) < len(predictions) or len({p["counts"].size for p in have}) > 1:
            logger.warning(
                "%s: counts missing or of varying length on some images; count metrics skipped",
                self._dataset_name,
            )
            return None, None, "total"
        counts = np.stack([p["counts"] for p in predictions])
        layout = self._count_layout(counts.shape[1], gt)
        finest = layout.finest_level
        counts = counts[:, layout.level_slices()[finest]]
        # the channel of each ground-truth category, through its contiguous class
        to_id = self._contiguous_to_category_ids(gt)
        contiguous = np.zeros(gt.num_categories, np.int64)
        contiguous[gt.category_rows(to_id.tolist(), what="metadata thing classes")] = np.arange(
            to_id.size
        )
        return counts, layout.group_of_class(finest)[contiguous], finest
