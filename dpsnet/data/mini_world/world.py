"""What a mini world is: its sizes (and named presets), image ids, and its files on disk."""

from dataclasses import dataclass, field
from pathlib import Path

#: Bumped whenever the generator's output changes, so a stale world on disk gets rebuilt.
GENERATOR_VERSION = 3  # 3: checkout images without ghost items (render._vary copies)

#: Default sizes (a CPU demo): keyword arguments of ``build_mini_world``.
DEFAULT_SIZES = dict(
    num_products=20,
    views_per_product=12,
    bad_views_per_product=2,
    val_images=60,
    test_images=150,
    pool_images=300,
    d2s_views_per_product=3,
    d2s_val_images=30,
    exemplar_size=256,
    image_size=384,
    lookalike_pairs=3,
)

#: Smaller worlds, by name: "small" checks the whole demo chain (``tools/run_demo.py --quick``
#: and the test suite's fixture), "tiny" the generator itself. Each is a complete set of sizes.
SIZE_PRESETS = {
    "default": DEFAULT_SIZES,
    "small": dict(
        num_products=6,
        views_per_product=4,
        bad_views_per_product=1,
        val_images=6,
        test_images=12,
        pool_images=12,
        d2s_views_per_product=1,
        d2s_val_images=3,
        exemplar_size=128,
        image_size=192,
        lookalike_pairs=1,
    ),
    "tiny": dict(
        num_products=3,
        views_per_product=3,
        bad_views_per_product=1,
        val_images=3,
        test_images=3,
        pool_images=2,
        d2s_views_per_product=1,
        d2s_val_images=1,
        exemplar_size=96,
        image_size=128,
        lookalike_pairs=1,
    ),
}

#: First image id of each split: ids never collide across splits (pool vs test in particular).
ID_OFFSETS = {"train": 1, "val": 100_001, "test": 200_001, "pool": 300_001}


@dataclass
class MiniWorld:
    """What ``build_mini_world`` made.

    Attributes:
        root: the world's folder.
        seed: its seed.
        sizes: the sizes it was built with (``DEFAULT_SIZES`` keys).
        counts: the generator's own counts, per split (``train``, ``val``, ``test``, ``pool``,
            ``d2s_training``, ``d2s_validation``): ``{"images", "instances", "per_level":
            {level: {"images", "instances"}}, "per_category": {name: instances}}``.
        names: registered dataset names by split key (filled by ``register_mini_world``).
    """

    root: Path
    seed: int
    sizes: dict
    counts: dict
    names: dict = field(default_factory=dict)

    @property
    def paths(self) -> dict:
        """Files and folders of the world, by role."""
        r = self.root
        return {
            "train_images": r / "train2019",
            "val_images": r / "val2019",
            "test_images": r / "test2019",
            "pool_images": r / "pool",
            "train_json": r / "instances_train2019.json",
            "val_json": r / "instances_val2019.json",
            "test_json": r / "instances_test2019.json",
            "pool_json": r / "instances_pool.json",
            "pool_groundtruth": r / "pool_groundtruth.json",
            "true_masks": r / "train2019_true_masks",
            "planted_bad_poses": r / "train2019_planted_bad_poses.json",
            "d2s_images": r / "d2s" / "images",
            "d2s_training_json": r / "d2s" / "annotations" / "D2S_training.json",
            "d2s_validation_json": r / "d2s" / "annotations" / "D2S_validation.json",
            "d2s_validation_wo_occlusion_json": r
            / "d2s"
            / "annotations"
            / "D2S_validation_wo_occlusion.json",
            "manifest": r / "manifest.json",
        }
