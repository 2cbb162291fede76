"""Scene backgrounds: photos of empty trays from a folder, or generated trays.

A folder's photos are cropped at random to the scene's aspect ratio, resized and mirrored per
scene. Without a folder, a bank of plain trays (a base colour, a soft light gradient, mottling
and grain; some with a darker rim) is drawn from the seed (each tray the first time a scene
picks it) and mirrored per scene; the photometric step varies colours. Either way a background
depends only on the seed and the scene's generator.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from dpsnet.utils.io import IMAGE_EXTENSIONS, BadInputError, read_image

logger = logging.getLogger(__name__)

#: Base colours (BGR) of generated trays: greys, a beige, a blue-grey, a green-grey.
_TRAY_COLOURS = ((182, 184, 186), (120, 122, 125), (70, 72, 74), (150, 170, 185), (160, 150, 135))
_TRAY_COLOURS += ((140, 150, 140),)


def list_backgrounds(folder: str | os.PathLike) -> list[Path]:
    """Image files of ``folder`` (sorted by name; unreadable ones skipped with a warning).

    Raises:
        BadInputError: the folder does not exist or holds no readable image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(f"{folder}: background folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    good = []
    for f in files:
        try:
            read_image(f, cv2.IMREAD_REDUCED_COLOR_8)
        except BadInputError as e:
            logger.warning("Skipping background %s", e)
        else:
            good.append(f)
    if not good:
        raise BadInputError(f"{folder}: no readable background image")
    return good


def generate_tray(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A plain checkout tray seen from above (uint8 (H, W, 3), BGR)."""
    col = np.array(_TRAY_COLOURS[int(rng.integers(len(_TRAY_COLOURS)))], np.float32)
    col *= rng.uniform(0.9, 1.1)
    sh, sw = max(8, height // 4), max(8, width // 4)  # drawn small: everything here is smooth
    cells = int(rng.integers(3, 7))
    mottle = cv2.resize(
        rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32),
        (sw, sh),
        interpolation=cv2.INTER_CUBIC,
    )
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi)
    ramp = (xx / sw - 0.5) * np.cos(phi) + (yy / sh - 0.5) * np.sin(phi)
    gain = 1.0 + rng.uniform(0.0, 0.25) * ramp + rng.uniform(0.02, 0.07) * mottle
    if rng.random() < 0.5:  # a raised, darker rim
        e = max(1, int(min(sh, sw) * rng.uniform(0.015, 0.04)))
        gain[:e], gain[-e:], gain[:, :e], gain[:, -e:] = 0.7, 0.7, 0.7, 0.7
    gain = cv2.resize(gain, (width, height), interpolation=cv2.INTER_LINEAR)
    # fine texture, drawn at half size (scenes get their own sensor noise on top)
    grain = rng.standard_normal((max(1, height // 2), max(1, width // 2)), dtype=np.float32)
    gain += cv2.resize(grain * 0.012, (width, height), interpolation=cv2.INTER_LINEAR)
    tray = gain[..., None] * col[None, None, :]
    return cv2.convertScaleAbs(tray)


class Backgrounds:
    """Draws a background per scene.

    Args:
        size: scene ``(height, width)``.
        seed: seed of the generated bank.
        folder: folder of tray photos; "" = generated trays.
        num_generated: size of the generated bank.
        cache: photos kept decoded in memory.
    """

    def __init__(self, size, seed: int, folder: str = "", num_generated: int = 16, cache: int = 16):
        self.size = (int(size[0]), int(size[1]))
        self.files = list_backgrounds(folder) if folder else []
        self.seed = int(seed)
        # generated trays, each drawn from its own seed the first time a scene picks it
        self.bank: list[np.ndarray | None] = [] if self.files else [None] * max(1, num_generated)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._capacity = max(1, cache)

    @staticmethod
    def describe(folder: str, num_generated: int) -> list[str]:
        """What the backgrounds will be: the folder's usable file names, or the bank's size."""
        if folder:
            return [p.name for p in list_backgrounds(folder)]
        return [f"generated:{max(1, num_generated)}"]

    def _photo(self, k: int) -> np.ndarray:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        image = read_image(self.files[k])
        self._cache[k] = image
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return image

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """A fresh, writable uint8 (H, W, 3) BGR background."""
        H, W = self.size
        if self.files:
            k = int(rng.integers(len(self.files)))
            try:
                photo = self._photo(k)
            except BadInputError as e:
                raise BadInputError(f"background {self.files[k]}: {e}") from None
            ph, pw = photo.shape[:2]
            f = rng.uniform(0.75, 1.0) * min(ph / H, pw / W)  # crop of the scene's aspect
            ch, cw = max(1, int(H * f)), max(1, int(W * f))
            y0 = int(rng.integers(0, ph - ch + 1))
            x0 = int(rng.integers(0, pw - cw + 1))
            crop = photo[y0 : y0 + ch, x0 : x0 + cw]
            bg = cv2.resize(
                crop, (W, H), interpolation=cv2.INTER_AREA if f > 1 else cv2.INTER_LINEAR
            )
            flips = rng.random(2) < 0.5
        else:
            k = int(rng.integers(len(self.bank)))
            if self.bank[k] is None:
                self.bank[k] = generate_tray(
                    *self.size, np.random.default_rng([self.seed, 0xBA6, k])
                )
            bg = self.bank[k]
            flips = rng.random(2) < 0.5
        # mirrored copies vary a background at no cost (the photometric step varies its colour)
        if flips[0] and flips[1]:
            return cv2.flip(bg, -1)
        if flips[0] or flips[1]:
            return cv2.flip(bg, 0 if flips[0] else 1)
        return bg.copy()
