"""CycleGAN networks (Zhu et al. 2017): a ResNet generator and a PatchGAN discriminator.

Images go in and out as (N, 3, H, W) tensors in [-1, 1]. The generator is fully convolutional
and keeps the input size when H and W are multiples of 4 (two stride-2 stages);
``pad_to_multiple`` takes care of other sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected 'instance', 'batch' or 'none'")


class ResnetBlock(nn.Module):
    """Two reflection-padded 3x3 convolutions with a residual connection."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(norm, channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _norm(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Encoder (7x7 conv, two stride-2 convs), residual blocks, decoder, tanh.

    The decoder upsamples with nearest-neighbour resizing followed by a 3x3 convolution rather
    than transposed convolutions, which avoids checkerboard artefacts that the label check would
    read as structure changes.
    """

    @configurable
    def __init__(self, *, channels: int = 3, ngf: int = 64, n_blocks: int = 9, norm="instance"):
        """
        Args:
            channels: image channels in and out.
            ngf: filters of the first layer (doubled at each of the two downsamplings).
            n_blocks: residual blocks at the bottleneck (9 for 256 px crops in the paper).
            norm: "instance", "batch" or "none".
        """
        super().__init__()
        layers = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(channels, ngf, 7),
            _norm(norm, ngf),
            nn.ReLU(inplace=True),
        ]
        c = ngf
        for _ in range(2):
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(norm, 2 * c)]
            layers += [nn.ReLU(inplace=True)]
            c *= 2
        layers += [ResnetBlock(c, norm) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c, c // 2, 3, padding=1),
                _norm(norm, c // 2),
                nn.ReLU(inplace=True),
            ]
            c //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.RENDER.CYCLEGAN
        return {"ngf": c.NGF, "n_blocks": c.N_BLOCKS, "norm": c.NORM}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, 3, H, W) in [-1, 1]; H, W multiples of 4."""
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: a grid of real/fake logits, each seeing one receptive-field patch (70 px for
    three layers)."""

    @configurable
    def __init__(self, *, channels: int = 3, ndf: int = 64, n_layers: int = 3, norm="instance"):
        """
        Args:
            channels: image channels.
            ndf: filters of the first layer.
            n_layers: stride-2 layers after the first (3 gives the paper's 70x70 patches).
            norm: "instance", "batch" or "none".
        """
        super().__init__()
        layers = [nn.Conv2d(channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        c = ndf
        for i in range(1, n_layers + 1):
            nxt = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(c, nxt, 4, stride=stride, padding=1),
                _norm(norm, nxt),
                nn.LeakyReLU(0.2, True),
            ]
            c = nxt
        layers += [nn.Conv2d(c, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.RENDER.CYCLEGAN
        return {"ndf": c.NDF, "n_layers": c.N_LAYERS_D, "norm": c.NORM}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 1, h, w) logits (least-squares GAN targets 1 = real, 0 = fake)."""
        return self.net(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """The paper's initialisation: conv weights N(0, 0.02), biases 0, norm scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


def pad_to_multiple(x: torch.Tensor, multiple: int = 4) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (N, C, H, W) on the bottom/right to multiples of ``multiple``.

    Returns the padded tensor and the original (H, W) to crop back to.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)
