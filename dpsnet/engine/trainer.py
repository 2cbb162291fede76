"""The Trainer used by tools/train_net.py and the distillation loop.

detectron2's DefaultTrainer with only what dpsnet changes: the dataset mapper (density targets
for DPSNet), the evaluators (RPC checkout metrics for datasets whose ``evaluator_type`` is
"rpc"), and the test loader using the same mapper.
"""

import logging
import os

from detectron2.data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators

logger = logging.getLogger(__name__)


def build_mapper(cfg, is_train: bool):
    """DPSNet's mapper (with density targets) for DPSNet, detectron2's for other models."""
    if cfg.MODEL.META_ARCHITECTURE == "DPSNet":
        from dpsnet.data.mapper import DPSNetDatasetMapper

        return DPSNetDatasetMapper(cfg, is_train)
    return DatasetMapper(cfg, is_train)


def build_evaluator(cfg, dataset_name: str, output_folder: str | None = None):
    """The evaluator a dataset's metadata asks for: "rpc" or "coco"."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
    if evaluator_type == "rpc":
        from dpsnet.evaluation import RPCEvaluator

        return RPCEvaluator.from_config(cfg, dataset_name, output_folder)
    if evaluator_type == "coco":
        # use_fast_impl needs detectron2's compiled extension, absent in the pure-Python build.
        from dpsnet.compat import has_compiled_ops

        return COCOEvaluator(
            dataset_name, output_dir=output_folder, use_fast_impl=has_compiled_ops()
        )
    raise NotImplementedError(
        f"no evaluator for evaluator_type {evaluator_type!r} ({dataset_name})"
    )


class Trainer(DefaultTrainer):
    """DefaultTrainer with dpsnet's mapper and evaluators."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_mapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=build_mapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return DatasetEvaluators([build_evaluator(cfg, dataset_name, output_folder)])
