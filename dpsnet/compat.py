"""Compatibility shims that let detectron2 0.6 (pure-Python build) run on today's stack.

Applied by ``import dpsnet`` before any detectron2 module is imported. Each shim is applied only
when it is needed, and ``APPLIED`` records which ones were, so tests can check them.
See REFERENCE.md section 5 for the pitfalls each one addresses.
"""

import importlib.util
import sys
import types
import warnings

import numpy as np
from PIL import Image

APPLIED: list[str] = []

_OP_USERS = {
    "deform_conv": "deformable convolutions (DeformConv, ModulatedDeformConv)",
    "modulated_deform_conv": "deformable convolutions (DeformConv, ModulatedDeformConv)",
    "box_iou_rotated": "rotated boxes (pairwise_iou_rotated, RotatedBoxes)",
    "roi_align_rotated": "rotated boxes (ROIAlignRotated)",
    "nms_rotated": "rotated boxes (nms_rotated)",
    "COCOeval": "the fast COCO evaluator (use COCOEvaluator(..., use_fast_impl=False))",
    "InstanceAnnotation": "the fast COCO evaluator (use COCOEvaluator(..., use_fast_impl=False))",
}


class MissingCompiledOpsError(RuntimeError):
    """Raised when code asks for one of detectron2's compiled C++/CUDA ops that is absent."""


class _MissingCompiledOps(types.ModuleType):
    """Stands in for ``detectron2._C`` when detectron2 was installed without its extension.

    Importing it succeeds (detectron2 imports it at module level in a few places); using any of
    its ops raises ``MissingCompiledOpsError`` naming the op and how to get it.
    """

    __file__ = "<dpsnet placeholder for detectron2._C>"

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        feature = next((v for k, v in _OP_USERS.items() if name.startswith(k)), "this feature")
        raise MissingCompiledOpsError(
            f"detectron2 compiled op '{name}' is not available: this detectron2 was installed "
            f"without its C++/CUDA extension, so {feature} cannot run. Build detectron2 from "
            "source with its ops (pip install 'git+https://github.com/facebookresearch/"
            "detectron2.git') into this environment, then rerun `make install`."
        )

    def get_compiler_version(self) -> str:
        return "not compiled"

    def get_cuda_version(self) -> str:
        return "not compiled"

    def has_cuda(self) -> bool:
        return False


def _shim_pillow_linear() -> None:
    # Pillow >= 10 removed Image.LINEAR; detectron2 0.6 uses it as a default argument at import.
    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
        APPLIED.append("pillow_linear")


def _shim_numpy_aliases() -> None:
    # numpy >= 1.24 removed np.float / np.int (np.bool came back in 2.0); detectron2 0.6 still
    # uses them on a few paths (empty polygon masks, semantic-segmentation evaluation).
    for name, value in (("bool", np.bool_), ("float", float), ("int", int)):
        if name not in np.__dict__:
            setattr(np, name, value)
            APPLIED.append(f"numpy_{name}")


def _shim_missing_extension() -> None:
    if "detectron2._C" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("detectron2._C")
    except ModuleNotFoundError:  # detectron2 itself is missing: dpsnet/__init__ reports it
        return
    if spec is None:
        sys.modules["detectron2._C"] = _MissingCompiledOps("detectron2._C")
        APPLIED.append("detectron2_C_placeholder")


def _shim_cpu_ddp() -> None:
    # detectron2 0.6's create_ddp_model always passes device_ids=[local_rank], which
    # DistributedDataParallel rejects for a CPU module; DefaultTrainer calls it by module-level
    # name, so the replacement goes there. CUDA modules keep detectron2's behaviour.
    from detectron2.engine import defaults

    if getattr(defaults.create_ddp_model, "_dpsnet_cpu_aware", False):
        return
    original = defaults.create_ddp_model

    def create_ddp_model(model, *, fp16_compression=False, **kwargs):
        first = next(model.parameters(), None)
        if first is not None and first.device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return original(model, fp16_compression=fp16_compression, **kwargs)

    create_ddp_model._dpsnet_cpu_aware = True
    defaults.create_ddp_model = create_ddp_model
    APPLIED.append("cpu_ddp")


def _shim_safe_checkpoints() -> None:
    # detectron2's checkpointer unpickles .pkl files (running any code they carry) and lets a
    # head of another shape load as random weights; dpsnet's rules replace both
    # (dpsnet/utils/weights.py, README "Bad inputs and safety").
    from detectron2.checkpoint import DetectionCheckpointer

    if getattr(DetectionCheckpointer, "_dpsnet_safe", False):
        return
    from dpsnet.utils import weights

    weights.install()
    APPLIED.append("safe_checkpoints")


def _shim_retinanet_gn_probe() -> None:
    # detectron2 0.6's RetinaNetHead probes its norm's type with get_norm(norm, 1); for "GN" that
    # is GroupNorm(32, 1), which torch 2 rejects, so no RetinaNet with MODEL.RETINANET.NORM "GN"
    # can be built. The one-channel probe gets a one-group norm (same type); the head's layers
    # are built as before.
    from detectron2.modeling.meta_arch import retinanet
    from torch import nn

    if getattr(retinanet.get_norm, "_dpsnet_probe_safe", False):
        return
    original = retinanet.get_norm

    def get_norm(norm, out_channels):
        if norm == "GN" and out_channels == 1:
            return nn.GroupNorm(1, 1)
        return original(norm, out_channels)

    get_norm._dpsnet_probe_safe = True
    retinanet.get_norm = get_norm
    APPLIED.append("retinanet_gn_probe")


def has_compiled_ops() -> bool:
    """Whether detectron2's compiled extension is present (not our placeholder)."""
    return not isinstance(sys.modules.get("detectron2._C"), _MissingCompiledOps)


def _quiet_known_warnings() -> None:
    # detectron2 0.6 scripts a few helpers with torch.jit.script at import time and imports
    # pkg_resources; both warn on every run with today's torch/setuptools, for nothing a user
    # can act on.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated", category=UserWarning)


def apply() -> None:
    """Apply every shim that is needed; safe to call more than once."""
    if importlib.util.find_spec("detectron2") is None:
        raise ImportError(
            "dpsnet needs detectron2, which is not installed in this environment. Run "
            "`make install` at the dpsnet repo root (it builds detectron2 0.6 as pure Python), "
            "or install detectron2 from source: https://detectron2.readthedocs.io/"
        )
    _quiet_known_warnings()
    _shim_pillow_linear()
    _shim_numpy_aliases()
    _shim_missing_extension()
    _shim_cpu_ddp()
    _shim_retinanet_gn_probe()
    _shim_safe_checkpoints()


apply()
