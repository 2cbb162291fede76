"""Photometric augmentation through albumentations, as a detectron2 ``Augmentation``.

Configured by ``INPUT.ALBUMENTATIONS.TRANSFORMS``: a list of strings ``"Name(arg=value, ...)"``
naming albumentations transforms with literal arguments. Only image-only (pixel-level) transforms
are accepted, so boxes, masks and density maps stay where they are; geometric augmentation is
detectron2's (``INPUT.RANDOM_FLIP``, ``INPUT.CROP``, resizing), which moves every target.

Randomness comes from numpy's global generator (as in detectron2's own augmentations), so
detectron2's per-worker seeding makes a run reproducible.
"""

import ast
import logging

import numpy as np
from detectron2.data import transforms as T

__all__ = ["AlbumentationsPhotometric", "PhotometricTransform", "parse_albumentations"]

logger = logging.getLogger(__name__)


def parse_albumentations(specs: list[str], key: str = "INPUT.ALBUMENTATIONS.TRANSFORMS"):
    """Build an albumentations ``Compose`` of photometric transforms from config strings.

    Args:
        specs: strings like ``"GaussNoise(p=0.2)"`` or ``"ToGray"``.
        key: the config key the strings come from, named in errors.

    Returns:
        ``albumentations.Compose``, or None for an empty list.

    Raises:
        ValueError: a string that does not parse, an unknown name, a geometric transform, or
            arguments the transform rejects; the message names the key and the string.
    """
    if not specs:
        return None
    import albumentations as A

    transforms = []
    for spec in specs:
        name, kwargs = _parse_call(spec, key)
        cls = getattr(A, name, None)
        if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform):
            raise ValueError(f"{key}: {spec!r}: albumentations has no transform named {name!r}")
        if not issubclass(cls, A.ImageOnlyTransform):
            raise ValueError(
                f"{key}: {spec!r} is not photometric (it moves pixels); use detectron2's "
                "geometric augmentations (INPUT.RANDOM_FLIP, INPUT.CROP) so targets follow"
            )
        try:
            transforms.append(cls(**kwargs))
        except Exception as e:  # albumentations validates arguments with pydantic
            msg = " ".join(str(e).split())
            raise ValueError(f"{key}: {spec!r}: {type(e).__name__}: {msg}") from None
    return A.Compose(transforms)


def _parse_call(spec: str, key: str) -> tuple[str, dict]:
    try:
        node = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"{key}: cannot parse {spec!r}; expected 'Name(arg=value, ...)'") from None
    if isinstance(node, ast.Name):
        return node.id, {}
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
        raise ValueError(f"{key}: {spec!r}: expected 'Name(arg=value, ...)' with keyword arguments")
    kwargs = {}
    for kw in node.keywords:
        try:
            kwargs[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise ValueError(f"{key}: {spec!r}: argument {kw.arg!r} is not a literal") from None
    return node.func.id, kwargs


class PhotometricTransform(T.Transform):
    """A sampled albumentations pipeline: deterministic (fixed seed), moves no pixel.

    Args:
        compose: the albumentations pipeline.
        seed: the seed its random choices are replayed with.
        image_format: channel order of the images ("BGR" or "RGB"); albumentations expects RGB.
    """

    def __init__(self, compose, seed: int, image_format: str = "BGR"):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            # grayscale or float inputs: photometric colour transforms do not apply
            return img
        bgr = self.image_format == "BGR"
        rgb = np.ascontiguousarray(img[..., ::-1]) if bgr else img
        self.compose.set_random_seed(self.seed)
        out = self.compose(image=rgb)["image"]
        return np.ascontiguousarray(out[..., ::-1]) if bgr else out

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> T.Transform:
        return T.NoOpTransform()


class AlbumentationsPhotometric(T.Augmentation):
    """detectron2 augmentation sampling an albumentations photometric pipeline per image.

    Args:
        compose: an albumentations ``Compose`` of image-only transforms (see
            :func:`parse_albumentations`).
        image_format: channel order of the images given to it ("BGR" or "RGB").
    """

    def __init__(self, compose, image_format: str = "BGR"):
        super().__init__()
        if image_format not in ("BGR", "RGB"):
            raise ValueError(
                f"photometric augmentation needs BGR or RGB images, not {image_format}"
            )
        self.compose = compose
        self.image_format = image_format

    def get_transform(self, image) -> T.Transform:
        return PhotometricTransform(self.compose, int(np.random.randint(2**31)), self.image_format)

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.compose.transforms)
        return f"AlbumentationsPhotometric([{names}])"
