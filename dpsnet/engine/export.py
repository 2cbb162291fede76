"""Exporting a DPSNet checkpoint for deployment: TorchScript (tracing) or ONNX, checked.

The exported graph takes one image as a float (3, H, W) tensor in the model's input format,
already resized the way the predictor resizes it (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``),
and returns, flattened by detectron2's ``TracingAdapter``: boxes (XYXY, in that resized image),
scores, classes (contiguous), the density map and the counts of the counting view. Resizing and
the receipt (names, ids from the checkpoint's catalogue) stay in Python around it.

Count-guided post-processing is switched off for the export: its selection runs data-dependent
Python that a traced graph would freeze; the counts are exported, so a deployment can apply it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from dpsnet.engine.checkpoint import config_from_checkpoint
from dpsnet.engine.trainer import load_external_parts

__all__ = [
    "ExportCheck",
    "check_export",
    "export_model",
    "load_eager",
    "preprocess",
    "tracing_adapter",
]

logger = logging.getLogger(__name__)

#: Agreement required between the exported and the eager model (absolute, float32 on CPU).
BOX_ATOL = 1e-2  # pixels of the resized image
SCORE_ATOL = 1e-4
COUNT_ATOL = 1e-3  # objects


def _tracing_adapter_class():
    """detectron2's ``TracingAdapter``.

    detectron2 0.6's ``detectron2.export`` imports caffe2 (long gone from torch) at package
    level; its ``flatten`` module, which holds the adapter, needs none of it. Where the package
    fails on caffe2, the package is stood in by a bare one and ``flatten`` imported alone.
    """
    try:
        from detectron2.export import TracingAdapter

        return TracingAdapter
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("caffe2"):
            raise
    import sys
    import types

    import detectron2

    package = types.ModuleType("detectron2.export")
    package.__path__ = [str(Path(detectron2.__file__).parent / "export")]
    sys.modules["detectron2.export"] = package
    from detectron2.export.flatten import TracingAdapter

    package.TracingAdapter = TracingAdapter
    return TracingAdapter


def load_eager(weights: str, config_file: str | None = None, opts: list[str] | None = None):
    """(model in eval mode on CPU, cfg, checkpoint fields) with count-guided selection off."""
    opts = list(opts or []) + ["MODEL.DEVICE", "cpu"]
    cfg, meta = config_from_checkpoint(weights, config_file, opts)
    if "DPSNET" in cfg.MODEL:
        cfg.MODEL.DPSNET.COUNT_GUIDED.ENABLED = False
        if cfg.MODEL.DPSNET.TEST_FLIP:
            logger.warning(
                "%s was configured with MODEL.DPSNET.TEST_FLIP: the export runs one view per "
                "image (run the mirror image yourself and merge with "
                "dpsnet.modeling.flip.merge_flip to match it; its stored threshold was chosen "
                "on merged scores)",
                weights,
            )
        if cfg.MODEL.DPSNET.CROSS_CLASS_IOU > 0:
            logger.warning(
                "%s was configured with MODEL.DPSNET.CROSS_CLASS_IOU: the export leaves "
                "detections of different products apart (apply "
                "dpsnet.modeling.postprocess.merge_across_classes to its outputs to match it; its "
                "stored threshold was chosen on merged scores)",
                weights,
            )
    cfg.freeze()
    model = load_external_parts(build_model(cfg), cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model.eval(), cfg, meta


def preprocess(cfg, image_bgr: np.ndarray) -> torch.Tensor:
    """An image as the predictor feeds it: resized, in the model's channel order, (3, H, W)."""
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    image = image_bgr[:, :, ::-1] if cfg.INPUT.FORMAT == "RGB" else image_bgr
    image = aug.get_transform(image).apply_image(image)
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)).astype("float32"))


def tracing_adapter(model, image: torch.Tensor):
    def inference(model, inputs):
        instances, densities, counts = model.inference(inputs, do_postprocess=False)
        inst = instances[0]
        return (
            inst.pred_boxes.tensor,
            inst.scores,
            inst.pred_classes,
            densities[0],
            counts[0],
        )

    adapter = _tracing_adapter_class()
    # eval(): torch.onnx.export restores the exported module's mode, and that mode recurses into
    # the model; the adapter's default (training) would switch the model to training.
    return adapter(model, [{"image": image}], inference_func=inference).eval()


def export_model(model, cfg, image: torch.Tensor, fmt: str, output: str | Path) -> Path:
    """Trace ``model`` on ``image`` and write it as ``fmt`` ("torchscript" or "onnx")."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    adapter = tracing_adapter(model, image)
    with torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
            tmp = output.with_name(f".{output.name}.tmp")
            traced.save(str(tmp))
            tmp.replace(output)
        elif fmt == "onnx":
            tmp = output.with_name(f".{output.name}.tmp")
            torch.onnx.export(
                adapter,
                adapter.flattened_inputs,
                str(tmp),
                input_names=["image"],
                output_names=["boxes", "scores", "classes", "density", "counts"],
                # No dynamic axes: the exporter freezes the counting view's crop to the traced
                # size (boxes stay right at other sizes, counts do not), so the graph is
                # declared for that size and refuses others instead of miscounting.
                opset_version=17,
                dynamo=False,
            )
            tmp.replace(output)
        else:
            raise ValueError(f"unknown export format {fmt!r}: torchscript or onnx")
    return output


def _load_exported(path: Path, fmt: str):
    if fmt == "torchscript":
        module = torch.jit.load(str(path))
        return lambda image: [t.numpy() for t in module(image)]
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), onnx_session_options(), ["CPUExecutionProvider"])
    return lambda image: session.run(None, {"image": image.numpy()})


def onnx_session_options():
    """ONNX Runtime options with torch's thread count, so that both are timed alike."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return options


@dataclass
class ExportCheck:
    """How the exported model compares with the eager one on the sample images."""

    images: int
    match: bool
    max_box_diff: float
    max_score_diff: float
    max_count_diff: float
    class_mismatches: int
    eager_ms: float
    exported_ms: float
    problems: list

    def as_dict(self) -> dict:
        return {
            **self.__dict__,
            "tolerance": {"boxes": BOX_ATOL, "scores": SCORE_ATOL, "counts": COUNT_ATOL},
        }


def check_export(model, path: Path, fmt: str, images: list[torch.Tensor]) -> ExportCheck:
    """Run the eager and the exported model on ``images``; compare outputs and time them."""
    run = _load_exported(path, fmt)
    eager_fn = tracing_adapter(model, images[0])
    box = score = count = 0.0
    wrong_classes, problems = 0, []
    eager_s = exported_s = 0.0
    with torch.no_grad():
        for _ in range(2):  # warm-up: TorchScript's profiling executor optimises on early calls
            eager_fn(images[0])
            run(images[0])
        for i, image in enumerate(images):
            start = time.perf_counter()
            ref = [t.numpy() for t in eager_fn(image)]
            eager_s += time.perf_counter() - start
            start = time.perf_counter()
            try:
                got = run(image)
            except Exception as e:  # e.g. ONNX Runtime refusing another input size
                problems.append(f"image {i} {tuple(image.shape)}: {' '.join(str(e).split())[:200]}")
                continue
            exported_s += time.perf_counter() - start
            if ref[0].shape != got[0].shape:
                problems.append(f"image {i}: {len(ref[0])} eager vs {len(got[0])} exported boxes")
                continue
            if len(ref[0]):
                box = max(box, float(np.abs(ref[0] - got[0]).max()))
                score = max(score, float(np.abs(ref[1] - got[1]).max()))
                wrong_classes += int((ref[2] != got[2]).sum())
            count = max(count, float(np.abs(ref[4] - got[4]).max()))
    match = (
        not problems
        and box <= BOX_ATOL
        and score <= SCORE_ATOL
        and count <= COUNT_ATOL
        and wrong_classes == 0
    )
    n = max(len(images), 1)
    return ExportCheck(
        len(images),
        match,
        box,
        score,
        count,
        wrong_classes,
        round(1000 * eager_s / n, 1),
        round(1000 * exported_s / n, 1),
        problems,
    )
