"""RPC checkout evaluation: pure metrics on arrays and detectron2's ``RPCEvaluator``."""

from dpsnet.evaluation.ground_truth import RPCGroundTruth
from dpsnet.evaluation.results_io import Detections, parse_results
from dpsnet.evaluation.rpc_evaluator import RPCEvaluator
from dpsnet.evaluation.rpc_markdown import markdown_report
from dpsnet.evaluation.rpc_metrics import (
    CheckoutCounter,
    ThresholdSearch,
    aggregate_counts,
    checkout_metrics,
    counts_from_detections,
    round_counts,
    search_score_threshold,
    total_count_metrics,
)
from dpsnet.evaluation.rpc_report import evaluate_rpc, write_report

__all__ = [
    "CheckoutCounter",
    "Detections",
    "RPCEvaluator",
    "RPCGroundTruth",
    "ThresholdSearch",
    "aggregate_counts",
    "checkout_metrics",
    "counts_from_detections",
    "evaluate_rpc",
    "markdown_report",
    "parse_results",
    "round_counts",
    "search_score_threshold",
    "total_count_metrics",
    "write_report",
]
