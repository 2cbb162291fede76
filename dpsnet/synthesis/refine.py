"""Mask refinement: a boundary snap from the compositing equation, and the method's small net.

Two refinements, usable together (``cfg.SYNTHESIS.MASKS.REFINE.METHOD``):

- ``"matting"``: re-decide the pixels near the outline. Near the edge of a product, a pixel's
  colour is a mix ``I = a * F + (1 - a) * B`` of the product's colour ``F`` just inside and the
  background's colour ``B`` just outside (the compositing equation). ``F`` and ``B`` are local
  means of the pixels well inside / well outside the current mask (normalised Gaussian
  convolution); a pixel of the outline band belongs to the product when its estimated ``a`` is
  at least 0.5, which is exactly how a rendered or photographed edge is cut at half coverage.
  Low-contrast stretches (``|F - B|`` small) keep their current label.
- ``"net"``: as the authors did, a small salient-object network trained on the coarse masks that
  passed the quality check, then applied to every exemplar; its thresholded output is snapped
  with ``"matting"``. It learns what "product" looks like across the whole exemplar set, so it
  can correct a coarse mask that the photo's own colour statistics got wrong.

Masks are box-sized bool arrays (see ``dpsnet.synthesis.coarse``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dpsnet.synthesis.coarse import box_extent, context_window

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MattingParams:
    """Settings of the boundary snap (``cfg.SYNTHESIS.MASKS.REFINE``)."""

    band: int = 1  # half-width of the outline band re-decided, pixels
    radius: float = 3.0  # Gaussian sigma of the local foreground/background colour means, pixels
    min_contrast: float = 12.0  # least |F - B| (grey levels, Euclidean over BGR) to re-decide
    iterations: int = 1  # snap passes


def matting_snap(image: np.ndarray, bbox, mask: np.ndarray, params: MattingParams) -> np.ndarray:
    """Move a mask's outline to where the local coverage estimate crosses one half.

    Args:
        image: (H, W, 3) uint8 BGR exemplar photo.
        bbox: the box ``[x, y, w, h]``.
        mask: (h, w) bool mask over the box's integer extent.
        params: band width, colour-mean radius, contrast floor, passes.

    Returns:
        (h, w) bool refined mask (never outside the box).
    """
    H, W = image.shape[:2]
    x0, y0, x1, y1 = box_extent(bbox, H, W)
    if not mask.any():
        return mask
    pad = params.band + int(np.ceil(3 * params.radius)) + 1
    cx0, cy0, cx1, cy1 = max(0, x0 - pad), max(0, y0 - pad), min(W, x1 + pad), min(H, y1 + pad)
    img = image[cy0:cy1, cx0:cx1].astype(np.float32)
    full = np.zeros(img.shape[:2], np.uint8)
    bx0, by0, bx1, by1 = x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0
    full[by0:by1, bx0:bx1] = mask
    inside_box = np.zeros_like(full, dtype=bool)
    inside_box[by0:by1, bx0:bx1] = True
    size = 2 * params.band + 1
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    for _ in range(max(1, params.iterations)):
        grown = cv2.dilate(full, k)
        inner = cv2.erode(full, k).astype(np.float32)
        outer = 1.0 - grown.astype(np.float32)
        fg, w_fg = _local_mean(img, inner, params.radius)
        bg, w_bg = _local_mean(img, outer, params.radius)
        band = (grown > 0) & (inner == 0) & inside_box
        diff = fg - bg
        n2 = np.einsum("ijc,ijc->ij", diff, diff)
        alpha = np.einsum("ijc,ijc->ij", img - bg, diff) / np.maximum(n2, 1e-6)
        ok = band & (n2 >= params.min_contrast**2) & (w_fg > 1e-3) & (w_bg > 1e-3)
        full = full.copy()
        full[ok] = alpha[ok] >= 0.5
    return full[by0:by1, bx0:bx1] > 0


def _local_mean(img: np.ndarray, weight: np.ndarray, sigma: float):
    num = cv2.GaussianBlur(img * weight[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(weight, (0, 0), sigma)
    return num / np.maximum(den, 1e-6)[..., None], den


# ---------------------------------------------------------------------------------------------
# The method's refinement network.


@dataclass(frozen=True)
class NetParams:
    """Settings of the refinement network (``cfg.SYNTHESIS.MASKS.REFINE``)."""

    input_size: int = 64  # side of the square network input (the context window, resized)
    width: int = 16  # channels of the first level (doubled at each of the two lower levels)
    iterations: int = 300  # training iterations
    batch_size: int = 16  # training batch
    lr: float = 3e-3  # Adam learning rate
    max_train: int = 2000  # most clean exemplars used for training (chosen with the seed)
    context: float = 0.25  # context ring around the box, fraction of the box's longer side
    seed: int = 0  # initialisation, sample choice and augmentation


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class MaskRefinerNet(nn.Module):
    """A three-level U-Net: (N, 4, S, S) -> (N, 1, S, S) foreground logits.

    Input channels: BGR scaled to [-1, 1] and a box channel (1 inside the exemplar's box).
    """

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _block(4, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.dec2, self.dec1 = _block(6 * w, 2 * w), _block(3 * w, w)
        self.out = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:]), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:]), e1], 1))
        return self.out(d1)


def net_input(image: np.ndarray, bbox, params: NetParams) -> tuple[np.ndarray, tuple]:
    """The network's view of one exemplar.

    Returns:
        (x (4, S, S) float32, window ``(x0, y0, x1, y1)`` of the image it covers).
    """
    H, W = image.shape[:2]
    extent = box_extent(bbox, H, W)
    window = context_window(extent, H, W, params.context)
    wx0, wy0, wx1, wy1 = window
    s = params.input_size
    crop = cv2.resize(image[wy0:wy1, wx0:wx1], (s, s), interpolation=cv2.INTER_AREA)
    box = np.zeros((s, s), np.float32)
    sx, sy = s / (wx1 - wx0), s / (wy1 - wy0)
    x0, y0, x1, y1 = extent
    box[
        int(np.floor((y0 - wy0) * sy)) : int(np.ceil((y1 - wy0) * sy)),
        int(np.floor((x0 - wx0) * sx)) : int(np.ceil((x1 - wx0) * sx)),
    ] = 1.0
    x = np.concatenate([crop.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0, box[None]], 0)
    return x, window


def net_target(mask: np.ndarray, extent, window, size: int) -> np.ndarray:
    """A box-sized mask -> (S, S) float32 target over the network's window."""
    x0, y0, x1, y1 = extent
    wx0, wy0, wx1, wy1 = window
    full = np.zeros((wy1 - wy0, wx1 - wx0), np.float32)
    full[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = mask
    return cv2.resize(full, (size, size), interpolation=cv2.INTER_AREA)


def net_output_to_box(prob: np.ndarray, extent, window) -> np.ndarray:
    """(S, S) probability over the window -> (h, w) float32 probability over the box."""
    x0, y0, x1, y1 = extent
    wx0, wy0, wx1, wy1 = window
    up = cv2.resize(prob.astype(np.float32), (wx1 - wx0, wy1 - wy0), interpolation=cv2.INTER_LINEAR)
    return up[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]


def _augment(x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
    """Random flips, 90-degree turns and brightness/contrast (the box channel moves along)."""
    if torch.rand(1, generator=g).item() < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if torch.rand(1, generator=g).item() < 0.5:
        x, y = x.flip(-2), y.flip(-2)
    k = int(torch.randint(0, 4, (1,), generator=g).item())
    x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    n = x.shape[0]
    gain = 1.0 + 0.2 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    bias = 0.2 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    x = torch.cat([(x[:, :3] * gain + bias).clamp(-1, 1), x[:, 3:]], 1)
    return x, y


def train_refiner(inputs: np.ndarray, targets: np.ndarray, params: NetParams) -> MaskRefinerNet:
    """Train the refinement network on clean coarse masks.

    Args:
        inputs: (N, 4, S, S) float32 network inputs (``net_input``).
        targets: (N, S, S) float32 soft targets in [0, 1] (``net_target``).
        params: schedule and seed.

    Returns:
        The trained network, in eval mode.
    """
    if len(inputs) == 0:
        raise ValueError("no clean coarse masks to train the refinement network on")
    g = torch.Generator().manual_seed(params.seed)
    torch.manual_seed(params.seed)
    net = MaskRefinerNet(params.width)
    opt = torch.optim.Adam(net.parameters(), lr=params.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, params.iterations))
    xs, ys = torch.from_numpy(inputs), torch.from_numpy(targets)[:, None]
    n = len(xs)
    net.train()
    for it in range(params.iterations):
        idx = torch.randint(0, n, (min(params.batch_size, n),), generator=g)
        x, y = _augment(xs[idx], ys[idx], g)
        logits = net(x)
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * y).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, y) + dice.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % 100 == 0 or it == params.iterations - 1:
            logger.info("refiner iter %d/%d loss %.4f", it + 1, params.iterations, loss.item())
    return net.eval()


@torch.no_grad()
def predict_refiner(net: MaskRefinerNet, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, 4, S, S) inputs -> (N, S, S) float32 foreground probabilities."""
    out = []
    for i in range(0, len(inputs), batch_size):
        out.append(torch.sigmoid(net(torch.from_numpy(inputs[i : i + batch_size])))[:, 0])
    return torch.cat(out).numpy() if out else np.zeros((0,) + inputs.shape[2:], np.float32)
