"""Photometric augmentation from config strings: parsing, clear errors, deterministic replay."""

import numpy as np
import pytest

from dpsnet.data.augment import AlbumentationsPhotometric, parse_albumentations


def test_parse_names_and_arguments():
    compose = parse_albumentations(
        ["ToGray", "RandomBrightnessContrast(brightness_limit=0.3, p=1)"]
    )
    assert [type(t).__name__ for t in compose.transforms] == ["ToGray", "RandomBrightnessContrast"]
    assert parse_albumentations([]) is None


@pytest.mark.parametrize(
    "spec,message",
    [
        ("NoSuchTransform(p=1)", "no transform named 'NoSuchTransform'"),
        ("HorizontalFlip(p=0.5)", "not photometric"),
        ("GaussNoise(0.5)", "keyword arguments"),
        ("GaussNoise(p=x)", "not a literal"),
        ("GaussNoise(p=", "cannot parse"),
        ("RandomBrightnessContrast(brightness_limit='a lot')", "ValidationError|ValueError"),
    ],
)
def test_bad_specs_name_the_key_and_the_string(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_albumentations([spec])
    assert "INPUT.ALBUMENTATIONS.TRANSFORMS" in str(info.value)


def test_transform_replays_and_respects_channel_order():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    image[..., 0] = 0  # blue (BGR) empty: a channel swap would show
    aug = AlbumentationsPhotometric(parse_albumentations(["ToGray(p=1)"]), "BGR")
    np.random.seed(3)
    t = aug.get_transform(image)
    out = t.apply_image(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, t.apply_image(image))  # the sampled transform is deterministic
    assert np.array_equal(out[..., 0], out[..., 2])  # grey
    coords = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert np.array_equal(t.apply_coords(coords), coords)
    with pytest.raises(ValueError, match="BGR or RGB"):
        AlbumentationsPhotometric(parse_albumentations(["ToGray"]), "YUV")
