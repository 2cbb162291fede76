"""Stronger teachers for pseudo-labelling: horizontal-flip test-time averaging, EMA weights.

``merge_flip`` (pure numpy) and ``FlipTeacher`` (a wrapper module) implement
``DISTILL.TEACHER_FLIP``: the teacher sees each pool image and its mirror image, and a detection
found in one view only keeps half its score, so a single-view guess rarely passes the thresholds.
``EMAHook`` implements ``DISTILL.EMA_DECAY`` (the mean teacher of the semi-supervised detection
literature): it keeps an exponential moving average of the student's weights during a round and
saves it as ``model_ema.pth``, the next round's teacher.
"""

import logging
import os

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from dpsnet.engine.checkpoint import checkpoint_fields
from dpsnet.modeling.flip import merge_flip, merge_flip_outputs, mirror_inputs, unflip_boxes

logger = logging.getLogger(__name__)

EMA_FILE = "model_ema.pth"  # the average's file name in the training's OUTPUT_DIR

__all__ = ["EMA_FILE", "EMAHook", "FlipTeacher", "merge_flip", "unflip_boxes"]


class FlipTeacher(torch.nn.Module):
    """A detector at inference on each image and its horizontal flip, outputs merged.

    Boxes are merged by ``merge_flip``; the counting view's counts (if any) are averaged. (A
    DPSNet flips by itself with ``MODEL.DPSNET.TEST_FLIP``; this wraps any detector.)
    """

    def __init__(self, model: torch.nn.Module, iou: float = 0.55):
        super().__init__()
        self.model = model
        self.iou = iou

    @torch.no_grad()
    def forward(self, batched_inputs):
        out_a, out_b = self.model(batched_inputs), self.model(mirror_inputs(batched_inputs))
        return [merge_flip_outputs(a, b, self.iou) for a, b in zip(out_a, out_b, strict=True)]


class EMAHook(HookBase):
    """Exponential moving average of the model's weights, saved as ``model_ema.pth`` at the end.

    ``ema = decay * ema + (1 - decay) * weights`` after every step, starting from the weights the
    round starts with (the teacher's): with a decay near 1 the EMA is a slowly moving teacher.
    Integer buffers (e.g. BatchNorm's step counter) are copied. The average is not checkpointed:
    a round resumed mid-way restarts it from the resumed weights.
    """

    def __init__(self, decay: float, output_dir: str):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"DISTILL.EMA_DECAY must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.output_dir = output_dir
        self.state: dict[str, torch.Tensor] = {}
        self._floats: tuple[list, list] = ([], [])
        self._others: tuple[list, list] = ([], [])

    def _model(self):
        model = self.trainer.model
        return getattr(model, "module", model)

    def before_train(self):
        live = self._model().state_dict()  # tensors sharing the model's storage, updated in place
        self.state = {k: v.detach().clone() for k, v in live.items()}
        floats = [k for k, v in self.state.items() if v.is_floating_point()]
        self._floats = ([self.state[k] for k in floats], [live[k] for k in floats])
        others = [k for k in self.state if k not in set(floats)]
        self._others = ([self.state[k] for k in others], [live[k] for k in others])

    @torch.no_grad()
    def after_step(self):
        # One fused update over every tensor (this runs after every step).
        emas, live = self._floats
        if emas:
            torch._foreach_lerp_(emas, live, 1.0 - self.decay)
        for ema, v in zip(*self._others, strict=True):
            ema.copy_(v)

    def after_train(self):
        if comm.is_main_process() and self.state:
            path = os.path.join(self.output_dir, EMA_FILE)
            tmp = path + ".tmp"
            state = {k: v.cpu() for k, v in self.state.items()}
            ckpt = {"model": state}
            cfg = getattr(self.trainer, "cfg", None)
            if cfg is not None:  # as in every checkpoint dpsnet saves
                ckpt["dpsnet"] = checkpoint_fields(cfg)
            torch.save(ckpt, tmp)
            os.replace(tmp, path)
            logger.info("Saved the EMA of the student's weights to %s", path)
