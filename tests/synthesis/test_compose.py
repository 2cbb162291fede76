"""The scene composer: labels against pixels, occlusion, per-level counts, bad exemplars."""

import logging

import cv2
import numpy as np
import pytest
from compose_helpers import flat_colour_index
from pycocotools import mask as mask_utils

from dpsnet.data.datasets.checkout import CLUTTER_LEVELS
from dpsnet.synthesis.compose import ComposeParams, SceneComposer
from dpsnet.synthesis.items import check_items, load_index, mini_world_index
from dpsnet.synthesis.rle import crop_to_rle

PLAIN = dict(shadow=False, photometric=(), noise_std=0.0, num_generated_backgrounds=2)


@pytest.fixture(scope="module")
def mini_items(mini_world, tmp_path_factory):
    items, categories, _ = load_index(mini_world_index(mini_world, tmp_path_factory.mktemp("idx")))
    good, skipped = check_items(items)
    assert not skipped
    return good


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    index, colours = flat_colour_index(tmp_path_factory.mktemp("flat"))
    items, _, _ = load_index(index)
    return check_items(items)[0], colours


def test_crop_to_rle_is_pycocotools_encoding():
    rng = np.random.default_rng(0)
    H, W = 37, 53
    for trial in range(40):
        h, w = (int(v) for v in rng.integers(1, 20, size=2))
        x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
        if trial % 4 == 0:  # touch the borders
            x, y = (0 if trial % 8 else W - w), (0 if trial % 8 else H - h)
        crop = rng.random((h, w)) < (0.0 if trial == 1 else 0.6)
        if trial == 2:
            crop[:] = True
        full = np.zeros((H, W), np.uint8, order="F")
        full[y : y + h, x : x + w] = crop
        want = mask_utils.encode(full)
        got = crop_to_rle(crop, x, y, H, W)
        assert got["counts"] == want["counts"].decode() and got["size"] == [H, W]
    with pytest.raises(ValueError):
        crop_to_rle(np.ones((5, 5), bool), 50, 0, H, W)


def _overlaps(box, boxes):
    x, y, w, h = box
    return any(
        x < bx + bw and bx < x + w and y < by + bh and by < y + h
        for bx, by, bw, bh in boxes
        if [bx, by, bw, bh] != box
    )


def test_each_labelled_box_matches_the_visible_pixels_of_its_item(flat):
    """Flat-coloured items, one per category: the pixels of an item's exact colour are what is
    visible of it (blended rims aside). Its RLE mask must hold them all, its box must be the
    mask's, and, for an item that nothing overlaps, the box must be theirs up to the rim."""
    items, colours = flat
    params = ComposeParams(
        image_size=(150, 170),
        categories=((4, 4), (5, 5), (6, 6)),
        instances=((4, 4), (5, 5), (6, 6)),  # one instance per category: colours are unique
        scale_range=(0.35, 0.6),
        flip_prob=0.5,
        max_iou=0.2,
        max_occluded=0.6,
        **PLAIN,
    )
    composer = SceneComposer(items, params, seed=3)
    checked = alone = 0
    for index in range(10):
        scene = composer.compose(index)
        assert len({a["category_id"] for a in scene.annotations}) == len(scene.annotations)
        sprites = {i["category_id"]: i["sprite_box"] for i in scene.instances}
        for a in scene.annotations:
            exact = np.all(scene.image == colours[a["category_id"]], axis=2)
            x, y, w, h = a["bbox"]
            mask = mask_utils.decode(a["segmentation"]).astype(bool)
            assert mask.sum() == a["area"]
            my, mx = np.nonzero(mask)
            mask_box = [mx.min(), my.min(), mx.max() - mx.min() + 1, my.max() - my.min() + 1]
            assert mask_box == [x, y, w, h]
            assert (mask | ~exact).all()  # every pixel of the item's colour is in its mask
            assert exact.sum() >= 0.6 * a["area"]  # ... and they are most of it
            assert a["point_xy"] == [x + w / 2, y + h / 2]
            checked += 1
            if not _overlaps(sprites[a["category_id"]], list(sprites.values())):
                ys, xs = np.nonzero(exact)
                rim = 2  # anti-aliased edge: opaque enough to own the pixel, not exact colour
                assert x <= xs.min() <= x + rim and y <= ys.min() <= y + rim
                assert x + w - rim <= xs.max() + 1 <= x + w
                assert y + h - rim <= ys.max() + 1 <= y + h
                alone += 1
    assert checked >= 30 and alone >= 8


def test_instances_hidden_beyond_the_limit_lose_their_label(flat):
    items, colours = flat
    params = ComposeParams(
        image_size=(120, 120),
        categories=((8, 8),) * 3,
        instances=((8, 8),) * 3,
        scale_range=(0.7, 0.9),
        max_iou=0.9,
        guard_occlusion=False,  # crowd the tray on purpose
        max_occluded=0.4,
        **PLAIN,
    )
    composer = SceneComposer(items, params, seed=0)
    dropped = kept = 0
    for index in range(6):
        scene = composer.compose(index)
        labelled = {a["category_id"] for a in scene.annotations}
        for inst in scene.instances:
            visible = np.all(scene.image == colours[inst["category_id"]], axis=2).sum()
            x, y, w, h = inst["sprite_box"]
            if inst["labelled"]:
                kept += 1
                assert inst["visible"] >= 0.6 and inst["category_id"] in labelled
            else:
                dropped += 1
                assert inst["visible"] < 0.6 and inst["category_id"] not in labelled
                # what is left of it is still drawn, only its label went
                assert visible <= inst["visible"] * w * h
        assert scene.dropped == sum(not i["labelled"] for i in scene.instances)
    assert dropped > 0 and kept > 0


def test_occlusion_guard_keeps_labels(flat):
    items, _ = flat
    kw = dict(
        image_size=(140, 140),
        categories=((6, 6),) * 3,
        instances=((6, 6),) * 3,
        scale_range=(0.5, 0.6),
        max_occluded=0.5,
        **PLAIN,
    )
    guarded = SceneComposer(items, ComposeParams(**kw), seed=1)
    drops = [guarded.compose(i).dropped for i in range(6)]
    unguarded = SceneComposer(items, ComposeParams(**kw, guard_occlusion=False, max_iou=1.0), 1)
    assert sum(drops) < sum(unguarded.compose(i).dropped for i in range(6))


def test_counts_per_level_fall_in_their_ranges(mini_items):
    params = ComposeParams(
        image_size=(256, 256),
        level_mix=(1, 1, 1),
        categories=((2, 3), (3, 4), (4, 6)),
        instances=((2, 4), (5, 7), (8, 10)),
        scale_range=(0.2, 0.3),
        **PLAIN,
    )
    composer = SceneComposer(mini_items, params, seed=0)
    seen = set()
    for index in range(12):
        scene = composer.compose(index)
        li = CLUTTER_LEVELS.index(scene.level)
        n0, n1 = params.instances[li]
        c0, c1 = params.categories[li]
        cats = {a["category_id"] for a in scene.annotations}
        assert scene.dropped == 0 and scene.placed == scene.planned
        assert n0 <= len(scene.annotations) <= n1
        assert c0 <= len(cats) <= c1
        seen.add(scene.level)
    assert seen == set(CLUTTER_LEVELS)


def test_scene_depends_on_seed_and_index_only(mini_items):
    params = ComposeParams(image_size=(128, 128), scale_range=(0.2, 0.3))
    a = SceneComposer(mini_items, params, seed=5)
    b = SceneComposer(list(reversed(mini_items)), params, seed=5)
    s1, s2 = a.compose(4), b.compose(4)
    b.compose(1)  # history of the composer does not matter
    assert np.array_equal(s1.image, s2.image) and s1.annotations == s2.annotations
    assert np.array_equal(b.compose(4).image, s1.image)
    assert not np.array_equal(SceneComposer(mini_items, params, seed=6).compose(4).image, s1.image)


def test_shadows_and_look_do_not_move_the_labels(mini_items):
    base = dict(image_size=(128, 128), scale_range=(0.2, 0.3))
    plain = SceneComposer(mini_items, ComposeParams(**base, **PLAIN), seed=2).compose(7)
    rich = SceneComposer(mini_items, ComposeParams(**base), seed=2).compose(7)
    assert plain.annotations == rich.annotations
    assert not np.array_equal(plain.image, rich.image)


def test_bad_exemplars_are_skipped_with_a_warning_naming_them(flat, caplog, tmp_path):
    items, _ = flat
    empty, corrupt = items[0], items[1]
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((8, 8), np.uint8))
    x0, y0, x1, y1 = empty.extent
    cv2.imwrite(str(tmp_path / "empty_box.png"), np.zeros((y1 - y0, x1 - x0), np.uint8))
    bad_photo = tmp_path / "corrupt.png"
    bad_photo.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    from dataclasses import replace

    raw = [replace(empty, mask_path=str(tmp_path / "empty_box.png"), image_size=(0, 0))]
    raw += [replace(corrupt, file_name=str(bad_photo), image_size=(0, 0))]
    raw += [replace(i, image_size=(0, 0)) for i in items[2:]]
    with caplog.at_level(logging.WARNING, logger="dpsnet.synthesis"):
        good, skipped = check_items(raw)
    assert [s["image_id"] for s in skipped] == [empty.image_id, corrupt.image_id]
    text = caplog.text
    assert "empty_box.png" in text and "mask is empty" in text
    assert "corrupt.png" in text
    composer = SceneComposer(good, ComposeParams(image_size=(128, 128), **PLAIN), seed=0)
    used = {a["exemplar_id"] for i in range(5) for a in composer.compose(i).annotations}
    assert used and not used & {empty.image_id, corrupt.image_id}


def test_exemplar_broken_after_the_check_is_replaced_with_a_warning(flat, caplog, tmp_path):
    """A file that breaks between the check and its first use: the scene takes another item of
    the category (deterministically) and the warning names the file."""
    items, _ = flat
    from dataclasses import replace

    photo = tmp_path / "later.png"
    photo.write_bytes(b"garbage")
    broken = replace(items[0], file_name=str(photo))
    twin = replace(items[1], category_id=items[0].category_id)
    params = ComposeParams(
        image_size=(128, 128), categories=((1, 1),) * 3, instances=((3, 3),) * 3, **PLAIN
    )
    with caplog.at_level(logging.WARNING, logger="dpsnet.synthesis"):
        scene = SceneComposer([broken, twin], params, seed=0).compose(0)
    assert "later.png" in caplog.text
    assert broken.image_id in scene.bad_items
    assert {a["exemplar_id"] for a in scene.annotations} == {twin.image_id}


def test_backgrounds_from_a_folder(flat, tmp_path, caplog):
    items, _ = flat
    folder = tmp_path / "trays"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((90, 120, 3), (10, 200, 30), np.uint8))
    (folder / "b.jpg").write_bytes(b"broken")
    params = ComposeParams(
        image_size=(100, 100), margin=0.2, scale_range=(0.2, 0.3), background_dir=str(folder)
    )
    params = ComposeParams(**{**params.__dict__, **PLAIN, "num_generated_backgrounds": 1})
    with caplog.at_level(logging.WARNING, logger="dpsnet.synthesis"):
        scene = SceneComposer(items, params, seed=0).compose(0)
    assert "b.jpg" in caplog.text
    assert tuple(scene.image[2, 2]) == (10, 200, 30)


@pytest.mark.parametrize(
    "kw,match",
    [
        (
            dict(categories=((5, 6), (5, 7), (8, 10)), instances=((3, 4), (10, 15), (15, 20))),
            "at most",
        ),
        (dict(scale_range=(0.7, 0.4)), "SCALE_RANGE"),
        (dict(scale_unit="cm"), "SCALE_UNIT"),
        (dict(level_mix=(1, 1)), "LEVEL_MIX"),
    ],
)
def test_bad_parameters_name_their_key(kw, match):
    with pytest.raises(ValueError, match=match):
        ComposeParams(**kw)


def test_cutouts_decoded_at_reduced_size_match_full_ones(mini_items):
    """Small scales decode the photo at 1/2 .. 1/8 size; the sprite must be the same picture."""
    from dpsnet.synthesis.items import make_cutout

    item = mini_items[0]
    full = make_cutout(item, 1.0)
    for scale in (0.5, 0.25):  # (1/8 of the tests' 128 px exemplars is too few pixels to compare)
        small = make_cutout(item, scale)
        assert small.full_size == full.full_size
        h, w = small.bgra.shape[:2]
        assert h < full.bgra.shape[0] and abs(h / full.bgra.shape[0] - w / full.bgra.shape[1]) < 0.1
        ref = cv2.resize(full.bgra, (w, h), interpolation=cv2.INTER_AREA).astype(int)
        assert np.abs(ref[..., 3] - small.bgra[..., 3]).mean() < 8
        assert np.abs(ref[..., :3] - small.bgra[..., :3]).mean() < 12
