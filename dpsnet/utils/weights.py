"""Loading weights and checkpoints safely: tensors and plain data only, pickles only on request.

A ``torch.load`` of an arbitrary pickle, or detectron2's ``pickle.load`` of a model-zoo ``.pkl``,
runs whatever code the file carries. dpsnet therefore reads every weights file with
``torch.load(..., weights_only=True)`` (tensors, numbers, strings, lists, dicts) and refuses
``.pkl`` files unless the user opts in (``MODEL.TRUST_PICKLE True`` or a tool's
``--trust-pickle``). ``install()`` (called by ``import dpsnet``) routes detectron2's
``DetectionCheckpointer`` through the same rules, so the Trainer, ``DefaultPredictor`` and every
other user of it are covered, and turns a head that does not fit its weights (another class
count) into an error instead of a silently random classifier.
"""

import logging
import os
import pickle
import zipfile
from typing import Any

import torch

from dpsnet.utils.io import BadInputError

logger = logging.getLogger(__name__)

__all__ = [
    "WeightsError",
    "check_weights_file",
    "configure",
    "install",
    "load_weights_file",
    "trust_pickle",
]

# Process-wide policy, set from the config by ``configure`` (dpsnet.engine.check_weights):
# whether pickles may be unpickled, and which files are loaded as a trunk only.
_POLICY: dict[str, Any] = {"trust_pickle": False, "trunk_only": set()}

# State-dict key prefixes of the parts that are not the trunk (detectron2's backbone, which
# includes the FPN): the heads a trunk-only load leaves at their random initialisation.
_TRUNK_PREFIX = "backbone."
# Buffers set from the config, not learnt: neither trunk nor head.
_CONFIG_BUFFERS = ("pixel_mean", "pixel_std")


def _is_head_key(key: str) -> bool:
    key = key.removeprefix("module.")
    return not key.startswith(_TRUNK_PREFIX) and key not in _CONFIG_BUFFERS


_PICKLE_HELP = (
    "pickle files can run code when loaded; convert it to a .pth state dict, or, only if you "
    "trust its source, pass --trust-pickle (MODEL.TRUST_PICKLE True)"
)


class WeightsError(BadInputError):
    """A weights file is refused (pickle), unreadable, or does not fit the model; one line."""


def configure(*, trust_pickle: bool = False, trunk_only: str | None = None) -> None:
    """Set the process-wide policy of weights loading.

    Args:
        trust_pickle: allow ``.pkl`` files (unpickling runs code they carry).
        trunk_only: a weights path to load as a trunk (backbone only, heads left random).
    """
    _POLICY["trust_pickle"] = bool(trust_pickle)
    _POLICY["trunk_only"] = {os.path.abspath(trunk_only)} if trunk_only else set()


def trust_pickle() -> bool:
    """Whether the user opted in to pickle weights files in this process."""
    return _POLICY["trust_pickle"]


def is_pickle_path(path: str) -> bool:
    """Whether a weights path names a pickle (``.pkl``) file."""
    return str(path).lower().endswith(".pkl")


def check_weights_file(path: str, what: str = "MODEL.WEIGHTS") -> None:
    """Refuse, before any work, a weights file that is a pickle (untrusted), empty or corrupt.

    Only cheap checks: the full load happens where the weights are used.

    Raises:
        WeightsError: one line naming ``what``, the file and the problem.
    """
    if is_pickle_path(path):
        if not trust_pickle():
            raise WeightsError(f"{what} {path}: refusing a .pkl weights file: {_PICKLE_HELP}")
        return
    if not os.path.isfile(path):  # remote paths are checked once fetched
        return
    if os.path.getsize(path) == 0:
        raise WeightsError(f"{what} {path}: the file is empty (an interrupted save?)")
    with open(path, "rb") as f:
        head = f.read(2)
    # torch.save writes a zip archive (PK); files from torch < 1.6 are a bare pickle (0x80).
    if head[:1] != b"\x80" and not zipfile.is_zipfile(path):
        raise WeightsError(
            f"{what} {path}: not a PyTorch checkpoint (corrupt or truncated zip archive)"
        )


def load_weights_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` that only builds tensors and plain data, with one-line errors.

    Args:
        path: a file written by ``torch.save``.
        map_location: as for ``torch.load``.

    Returns:
        The loaded object (a dict for every checkpoint dpsnet writes).

    Raises:
        WeightsError: the file is missing, empty, corrupt, or holds other Python objects.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: weights file not found")
    if os.path.getsize(path) == 0:
        raise WeightsError(f"{path}: the weights file is empty (an interrupted save?)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message advises turning weights-only loading off: never relay that.
        raise WeightsError(
            f"{path}: holds Python objects other than tensors and plain data "
            f"({_first_line(e)}); dpsnet loads weights-only files: save a state dict of "
            "tensors, numbers, strings, lists and dicts"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise WeightsError(
            f"{path}: not a readable PyTorch checkpoint (corrupt or truncated: {_first_line(e)})"
        ) from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    # torch prefixes "Weights only load failed." and then advises turning it off.
    line = line.replace("Weights only load failed. ", "")
    if "weights_only" in line:
        line = "it needs unpickling code that weights-only loading refuses"
    return " ".join(line.split())[:200]


def _class_count_hint(key: str, ckpt_shape: tuple, model_shape: tuple) -> str:
    if key.endswith("box_predictor.cls_score.weight") and ckpt_shape and model_shape:
        # Softmax classifier: one output per class plus background.
        return (
            f" (the weights were trained for {ckpt_shape[0] - 1} classes, the model has "
            f"{model_shape[0] - 1}: MODEL.ROI_HEADS.NUM_CLASSES)"
        )
    if key.startswith("counting_head.") and ckpt_shape and model_shape:
        return (
            f" (the weights count {ckpt_shape[0]} density channels, the model "
            f"{model_shape[0]}: classes per counting level)"
        )
    return ""


def _shape_mismatches(model: torch.nn.Module, state: dict) -> list[tuple[str, tuple, tuple]]:
    own = model.state_dict()
    out = []
    for key, value in state.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if name in own and hasattr(value, "shape"):
            if tuple(own[name].shape) != tuple(value.shape):
                out.append((name, tuple(value.shape), tuple(own[name].shape)))
    # The classifier first: its message names both class counts.
    out.sort(key=lambda m: (not m[0].endswith("cls_score.weight"), m[0]))
    return out


def install() -> None:
    """Route detectron2's ``DetectionCheckpointer`` through dpsnet's loading rules (idempotent).

    * ``.pkl`` is refused unless ``trust_pickle()``; ``.pth``/``.pyth`` load weights-only.
    * A parameter whose shape differs from the model's is an error naming both shapes (and
      class counts for the classifier), not a skipped layer, unless the file is the configured
      trunk-only weights: then only ``backbone.*`` is loaded and that is logged.
    * A checkpoint holding only the trunk is loaded and logged as such; the model gets a
      ``dpsnet_weights_note`` attribute saying its heads are random (the demo reports it).
    """
    from detectron2.checkpoint import DetectionCheckpointer

    if getattr(DetectionCheckpointer, "_dpsnet_safe", False):
        return
    original_load_file = DetectionCheckpointer._load_file
    original_load_model = DetectionCheckpointer._load_model

    def _load_file(self, filename):
        self._dpsnet_file = filename
        if is_pickle_path(filename):
            if not trust_pickle():
                raise WeightsError(f"{filename}: refusing a .pkl weights file: {_PICKLE_HELP}")
            logger.warning("Unpickling %s (trusted: MODEL.TRUST_PICKLE)", filename)
            try:
                return original_load_file(self, filename)
            except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
                raise WeightsError(
                    f"{filename}: not a readable pickle ({_first_line(e)})"
                ) from None
        loaded = load_weights_file(filename)
        if not isinstance(loaded, dict):
            raise WeightsError(f"{filename}: not a checkpoint (a {type(loaded).__name__})")
        if filename.endswith(".pyth"):  # pycls, as detectron2 reads it
            if "model_state" not in loaded:
                raise WeightsError(f"{filename}: pycls checkpoints must contain 'model_state'")
            state = {
                k: v
                for k, v in loaded["model_state"].items()
                if not k.endswith("num_batches_tracked")
            }
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        if "model" not in loaded:
            loaded = {"model": loaded}
        if not isinstance(loaded["model"], dict):
            raise WeightsError(f"{filename}: its 'model' entry is not a state dict")
        return loaded

    def _load_model(self, checkpoint):
        filename = getattr(self, "_dpsnet_file", "the checkpoint")
        state = checkpoint["model"]
        trunk_only = os.path.abspath(str(filename)) in _POLICY["trunk_only"]
        if trunk_only:
            dropped = [k for k in state if _is_head_key(k)]
            for k in dropped:
                state.pop(k)
            logger.info(
                "MODEL.WEIGHTS_TRUNK_ONLY: loading only the trunk of %s (%d tensors of its "
                "heads left out); the heads start from random initialisation",
                filename,
                len(dropped),
            )
        elif not checkpoint.get("matching_heuristics", False):
            mismatches = _shape_mismatches(self.model, state)
            if mismatches:
                key, ckpt_shape, model_shape = mismatches[0]
                raise WeightsError(
                    f"{filename} does not fit the model: {key} is {list(ckpt_shape)} in the "
                    f"weights but {list(model_shape)} in the model"
                    f"{_class_count_hint(key, ckpt_shape, model_shape)}"
                    f"{f' and {len(mismatches) - 1} more' if len(mismatches) > 1 else ''}; "
                    "use weights made for this config, or MODEL.WEIGHTS_TRUNK_ONLY True to "
                    "load only the backbone"
                )
        has_heads = any(_is_head_key(k) for k in state)
        incompatible = original_load_model(self, checkpoint)
        if incompatible is not None and incompatible.incorrect_shapes:  # after name matching
            key, ckpt_shape, model_shape = incompatible.incorrect_shapes[0]
            raise WeightsError(
                f"{filename} does not fit the model: {key} is {list(ckpt_shape)} in the weights "
                f"but {list(model_shape)} in the model"
                f"{_class_count_hint(key, ckpt_shape, model_shape)}; use weights made for this "
                "config, or MODEL.WEIGHTS_TRUNK_ONLY True to load only the backbone"
            )
        heads = [k for k in self.model.state_dict() if _is_head_key(k)]
        if (trunk_only or not has_heads) and heads and state:
            note = (
                f"{filename} holds only the trunk (backbone): the heads are randomly "
                "initialised, so predictions are not those of a trained model"
            )
            if not trunk_only:
                logger.info("Trunk-only checkpoint: %s", note)
            self.model.dpsnet_weights_note = note
        return incompatible

    DetectionCheckpointer._load_file = _load_file
    DetectionCheckpointer._load_model = _load_model
    DetectionCheckpointer._dpsnet_safe = True
