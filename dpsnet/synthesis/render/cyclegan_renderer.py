"""Rendering with a trained CycleGAN generator (A -> B: synthesized scenes toward real checkout
images), its checkpoint files, and the image <-> tensor conversions training shares."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from dpsnet.synthesis.render.cyclegan import ResnetGenerator, pad_to_multiple
from dpsnet.utils.io import BadInputError
from dpsnet.utils.weights import load_weights_file

__all__ = [
    "FINAL_MODEL",
    "LAST_CHECKPOINT",
    "CycleGANRenderer",
    "load_generator",
    "resize_longer",
    "resolve_device",
    "to_image",
    "to_tensor",
]

LAST_CHECKPOINT = "last_checkpoint.pth"
FINAL_MODEL = "model_final.pth"


def resolve_device(name: str) -> torch.device:
    """ "" picks CUDA when available, else CPU."""
    if not name:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resize_longer(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = size / max(h, w)
    if abs(s - 1.0) < 1e-6:
        return image
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 BGR (H, W, 3) -> float (3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 127.5 - 1.0


def to_image(x: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [-1, 1] -> float32 (H, W, 3) in [0, 255] (not rounded)."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).permute(1, 2, 0).cpu().numpy().astype(np.float32)


def load_generator(path: str | os.PathLike, device: torch.device) -> ResnetGenerator:
    """The A -> B generator from ``model_final.pth`` or ``last_checkpoint.pth``."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(
            f"{path}: CycleGAN weights not found (train with tools/render.py train)"
        )
    state = load_weights_file(path, map_location=device)  # tensors and plain data only
    try:
        g = ResnetGenerator(**state["generator"])
        g.load_state_dict(state["g_ab"])
    except (RuntimeError, KeyError, EOFError, OSError, TypeError) as e:
        raise BadInputError(f"{path}: not a dpsnet CycleGAN checkpoint ({e})") from None
    return g.to(device).eval()


class CycleGANRenderer:
    """Renders with a trained A -> B generator.

    The image is translated at a working size (longer side ``infer_size``, the scale the
    generator was trained at); with ``residual_detail`` only the generator's *change* is
    upsampled and added to the full-resolution source, which keeps fine print sharp.

    Args:
        generator: the A -> B generator.
        infer_size: longer side at which to translate (0 = native resolution).
        residual_detail: add the upsampled change instead of the upsampled output.
        device: where the generator runs.
    """

    name = "cyclegan"
    parallel_safe = False

    def __init__(self, generator, *, infer_size: int, residual_detail: bool = True, device=None):
        self.generator = generator
        self.infer_size = infer_size
        self.residual_detail = residual_detail
        self.device = device or next(generator.parameters()).device

    @classmethod
    def from_config(cls, cfg, weights: str | None = None) -> CycleGANRenderer:
        c = cfg.RENDER.CYCLEGAN
        device = resolve_device(c.DEVICE)
        path = weights or c.WEIGHTS or os.path.join(c.OUTPUT_DIR, FINAL_MODEL)
        return cls(
            load_generator(path, device),
            infer_size=c.INFER_SIZE or c.LOAD_SIZE,
            residual_detail=c.RESIDUAL_DETAIL,
            device=device,
        )

    @torch.no_grad()
    def render(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """uint8 BGR (H, W, 3) -> uint8 BGR (H, W, 3); deterministic (``rng`` is unused)."""
        h, w = image.shape[:2]
        small = image
        if self.infer_size > 0 and max(h, w) > self.infer_size:
            small = resize_longer(image, self.infer_size)
        x, (sh, sw) = pad_to_multiple(to_tensor(small)[None].to(self.device), 4)
        y = to_image(self.generator(x)[0, :, :sh, :sw])
        if small is image:
            out = y
        elif self.residual_detail:
            delta = y - small.astype(np.float32)
            out = image.astype(np.float32) + cv2.resize(
                delta, (w, h), interpolation=cv2.INTER_LINEAR
            )
        else:
            out = cv2.resize(y, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
