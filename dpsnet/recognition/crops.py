"""Product crops: one geometry for training, gallery building and the pipeline.

A crop is the square around a box's centre whose side is the box's longer side plus context
padding on each side, resampled to ``size x size``. Training stores a wider square (room to
rotate) and re-crops it on the fly with :func:`augment_crops`, so a rotated exemplar looks like
the axis-aligned box of a rotated product in a checkout image.
"""

import logging
import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from tqdm import tqdm

from dpsnet.utils.io import BadInputError, read_image

logger = logging.getLogger(__name__)

# Stored training crops cover this many times the side of a plain crop: enough for a 45-degree
# rotation of a square box plus scale jitter.
STORE_FACTOR = 1.5


def crop_boxes(
    image: torch.Tensor, boxes: torch.Tensor, size: int, padding: float, factor: float = 1.0
) -> torch.Tensor:
    """Square crops around boxes, resampled with adaptive averaging (no aliasing).

    Args:
        image: (3, H, W) float image.
        boxes: (N, 4) boxes, XYXY absolute pixels of ``image``.
        size: side of the output crops.
        padding: context on each side, as a fraction of the box's longer side.
        factor: extra scale of the square (``STORE_FACTOR`` for stored training crops).

    Returns:
        (N, 3, size, size) crops; pixels outside the image are 0.
    """
    if boxes.numel() == 0:
        return image.new_zeros((0, image.shape[0], size, size))
    boxes = boxes.to(image.dtype)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1).max(dim=1).values
    half = side * (1 + 2 * padding) * factor / 2
    rois = torch.stack([torch.zeros_like(cx), cx - half, cy - half, cx + half, cy + half], dim=1)
    return roi_align(image[None], rois, (size, size), 1.0, sampling_ratio=0, aligned=True)


def bgr_to_rgb01(image: np.ndarray | torch.Tensor, input_format: str = "BGR") -> torch.Tensor:
    """(H, W, 3) uint8 array or (3, H, W) tensor in ``input_format`` -> (3, H, W) RGB in [0, 1]."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    image = image.float() / 255.0
    if input_format == "BGR":
        image = image.flip(0)
    elif input_format != "RGB":
        raise ValueError(f"unsupported input format {input_format!r} (BGR or RGB)")
    return image


def extract_crops(
    dataset_dicts: Iterable[dict],
    size: int,
    padding: float,
    factor: float = 1.0,
    category_ids: set[int] | None = None,
    desc: str = "crops",
) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """Crop every annotated box of a detectron2 dataset (``category_id`` as in the dataset).

    Unreadable images are skipped and reported in the log, not fatal.

    Args:
        dataset_dicts: detectron2 dataset dicts with ``file_name`` and ``annotations`` whose
            boxes are XYWH_ABS or XYXY_ABS.
        size, padding, factor: see :func:`crop_boxes`.
        category_ids: keep only boxes of these ``category_id`` values (None: all).

    Returns:
        crops (N, 3, size, size) uint8 RGB, labels (N,) int64 ``category_id`` values, and the
        file each crop came from.
    """
    from detectron2.structures import BoxMode

    crops, labels, files, skipped = [], [], [], []
    for record in tqdm(list(dataset_dicts), desc=desc, leave=False):
        anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        if category_ids is not None:
            anns = [a for a in anns if a["category_id"] in category_ids]
        if not anns:
            continue
        try:
            image = bgr_to_rgb01(read_image(record["file_name"]))
        except BadInputError as e:
            skipped.append(str(e))
            continue
        boxes = torch.tensor(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns],
            dtype=torch.float32,
        )
        out = crop_boxes(image, boxes, size, padding, factor)
        crops.append((out * 255).round().clamp(0, 255).to(torch.uint8))
        labels.extend(a["category_id"] for a in anns)
        files.extend([record["file_name"]] * len(anns))
    if skipped:
        logger.warning("%s: skipped %d unreadable images, e.g. %s", desc, len(skipped), skipped[0])
    if not crops:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8), np.zeros(0, np.int64), []
    return torch.cat(crops), np.asarray(labels, dtype=np.int64), files


def augment_crops(
    stored: torch.Tensor,
    size: int,
    generator: torch.Generator,
    rotate: bool = True,
    scale_jitter: float = 0.1,
    shift_jitter: float = 0.05,
) -> torch.Tensor:
    """Random re-crops of stored (``STORE_FACTOR``-wide) crops, as a rotated product's box.

    The stored square holds the box with its context; a rotation by theta turns a w x h box into
    a (|w cos| + |h sin|) x (|w sin| + |h cos|) box, and the output is the plain crop of *that*
    box, as the detector would see the rotated product. The box is assumed square here (its
    aspect is lost in the stored crop), so the crop grows by |cos| + |sin|.

    Args:
        stored: (N, 3, S, S) float crops made with ``factor=STORE_FACTOR``.
        size: output side.
        generator: source of randomness (seeded by the caller).
        rotate: draw theta uniformly in [0, 2 pi) (else 0).
        scale_jitter, shift_jitter: uniform jitter of the crop's side and centre, as fractions.

    Returns:
        (N, 3, size, size) float crops.
    """
    n = stored.shape[0]
    u = torch.rand((n, 4), generator=generator)
    theta = u[:, 0] * 2 * math.pi if rotate else torch.zeros(n)
    grow = theta.cos().abs() + theta.sin().abs()
    # Side of the output relative to the stored square (normalised coordinates span [-1, 1]).
    scale = grow / STORE_FACTOR * (1 + scale_jitter * (2 * u[:, 1] - 1))
    cos, sin = theta.cos() * scale, theta.sin() * scale
    tx = shift_jitter * (2 * u[:, 2] - 1)
    ty = shift_jitter * (2 * u[:, 3] - 1)
    affine = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(affine, (n, stored.shape[1], size, size), align_corners=False)
    return F.grid_sample(
        stored, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def random_erase(
    crops: torch.Tensor, prob: float, generator: torch.Generator, area=(0.02, 0.3)
) -> torch.Tensor:
    """Random erasing (Zhong et al.): a random rectangle of each crop, with probability ``prob``,
    is filled with uniform noise.

    Args:
        crops: (N, 3, S, S) float crops, changed in place and returned.
    """
    n, _, h, w = crops.shape
    draw = torch.rand((n, 5), generator=generator)
    for i in range(n):
        if draw[i, 0] >= prob:
            continue
        frac = area[0] + (area[1] - area[0]) * draw[i, 1].item()
        aspect = math.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * draw[i, 2].item())
        eh = min(h, max(1, int(round(math.sqrt(frac * h * w * aspect)))))
        ew = min(w, max(1, int(round(math.sqrt(frac * h * w / aspect)))))
        y = int(draw[i, 3].item() * (h - eh + 1))
        x = int(draw[i, 4].item() * (w - ew + 1))
        crops[i, :, y : y + eh, x : x + ew] = torch.rand((3, eh, ew), generator=generator)
    return crops


def photometric_jitter(
    crops: torch.Tensor, strength: float, blur_prob: float, generator: torch.Generator
) -> torch.Tensor:
    """Random lighting of training crops: brightness, contrast, a per-channel colour cast,
    Gaussian blur and pixel noise, so that exemplars shot under one light match checkout images
    under another.

    Args:
        crops: (N, 3, S, S) float crops in [0, 1].
        strength: 0 (off) to 1 (brightness x[0.5, 1.3], contrast x[0.6, 1.4], channel gains
            x[0.75, 1.25], noise sigma up to 0.05); the ranges scale linearly with it.
        blur_prob: probability of a blur with sigma uniform in [0.2, 1.5] * S / 96 px.
        generator: source of randomness.

    Returns:
        (N, 3, S, S) jittered crops in [0, 1] (a new tensor).
    """
    n, _, size, _ = crops.shape
    if strength <= 0 and blur_prob <= 0:
        return crops

    def uniform(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand((n, *shape), generator=generator)

    out = crops
    if blur_prob > 0:
        blurred = []
        draw = torch.rand((n, 2), generator=generator)
        for i in range(n):
            if draw[i, 0] < blur_prob:
                sigma = (0.2 + 1.3 * draw[i, 1].item()) * size / 96
                k = 2 * int(math.ceil(2.5 * sigma)) + 1
                blurred.append(_gaussian_blur(out[i], k, sigma))
            else:
                blurred.append(out[i])
        out = torch.stack(blurred)
    if strength > 0:
        s = strength
        brightness = uniform(1 - 0.5 * s, 1 + 0.3 * s, 1, 1, 1)
        gains = uniform(1 - 0.25 * s, 1 + 0.25 * s, 3, 1, 1)
        contrast = uniform(1 - 0.4 * s, 1 + 0.4 * s, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * contrast + mean) * brightness * gains
        sigma = uniform(0, 0.05 * s, 1, 1, 1)
        out = out + sigma * torch.randn(out.shape, generator=generator)
    return out.clamp(0, 1)


def _gaussian_blur(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of one (C, H, W) image with reflected borders."""
    x = torch.arange(kernel_size, dtype=image.dtype) - kernel_size // 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    w = w / w.sum()
    c = image.shape[0]
    pad = kernel_size // 2
    img = F.pad(image[None], (pad, pad, pad, pad), mode="reflect")
    img = F.conv2d(img, w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    img = F.conv2d(img, w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return img[0]


def paste_clutter(
    crops: torch.Tensor, prob: float, generator: torch.Generator, max_pieces: int = 2
) -> torch.Tensor:
    """Neighbouring products cutting into the crop, as on a crowded checkout tray: with
    probability ``prob`` a crop gets 1..``max_pieces`` rectangles cut from *other* crops of the
    batch, pasted so that each overlaps the crop's border.

    Args:
        crops: (N, 3, S, S) float crops (N >= 2), not changed.
        prob: probability per crop.
        generator: source of randomness.

    Returns:
        (N, 3, S, S) new crops.
    """
    n, _, size, _ = crops.shape
    out = crops.clone()
    if prob <= 0 or n < 2:
        return out
    draw = torch.rand((n, 2 + 7 * max_pieces), generator=generator)
    for i in range(n):
        if draw[i, 0] >= prob:
            continue
        pieces = 1 + int(draw[i, 1].item() * max_pieces) % max_pieces
        for j in range(pieces):
            u = draw[i, 2 + 7 * j : 9 + 7 * j].tolist()
            src = (i + 1 + int(u[0] * (n - 1))) % n  # any other crop of the batch
            h = max(2, int(size * (0.25 + 0.3 * u[1])))
            w = max(2, int(size * (0.25 + 0.3 * u[2])))
            sy, sx = int(u[3] * (size - h)), int(u[4] * (size - w))
            # The piece's top-left corner: along one of the four borders, sticking out of it.
            side, along = int(u[5] * 4) % 4, u[6]
            if side < 2:  # top or bottom
                y = -h // 2 if side == 0 else size - h // 2
                x = int(along * (size - w))
            else:  # left or right
                x = -w // 2 if side == 2 else size - w // 2
                y = int(along * (size - h))
            y0, x0 = max(y, 0), max(x, 0)
            y1, x1 = min(y + h, size), min(x + w, size)
            out[i, :, y0:y1, x0:x1] = crops[
                src, :, sy + y0 - y : sy + y1 - y, sx + x0 - x : sx + x1 - x
            ]
    return out
