"""The mini world's D2S-style variant: COCO JSON with RLE masks, D2S's image-id scheme
(scene * 100 + lighting * 10 + rotation) and a validation set without occlusion."""

from pathlib import Path

from dpsnet.data.mini_world.jobs import (
    Scenery,
    annotation,
    categories_json,
    d2s_training_job,
    d2s_validation_job,
    run_jobs,
    split_counts,
)
from dpsnet.utils.io import atomic_write_json


def build_d2s(world: Scenery, root: Path, pool) -> dict:
    sizes, specs = world.sizes, world.specs
    out = root / "d2s" / "images"
    size = sizes["image_size"]
    counts = {}
    # Training: one product per scene (scene = category id), views as lighting/rotation digits.
    jobs, ids = [], []
    for s in specs:
        for v in range(sizes["d2s_views_per_product"]):
            image_id = s.category_id * 100 + (v // 10 % 10) * 10 + v % 10
            jobs.append((len(jobs), s.category_id, out, f"D2S_{image_id:06d}.jpg"))
            ids.append(image_id)
    tr = run_jobs(pool, d2s_training_job, jobs)
    # Validation: cluttered scenes numbered after the training scenes, lighting 0, rotation 0.
    first_scene = 100 * (len(specs) // 100 + 1) + 1
    vjobs, vids = [], []
    for i in range(sizes["d2s_val_images"]):
        image_id = (first_scene + i) * 100
        vjobs.append((i, out, f"D2S_{image_id:06d}.jpg"))
        vids.append(image_id)
    va = run_jobs(pool, d2s_validation_job, vjobs)
    ann_dir = root / "d2s" / "annotations"
    for key, job_list, id_list, results in (
        ("training", jobs, ids, tr),
        ("validation", vjobs, vids, va),
    ):
        images, anns = [], []
        clear_images, clear_anns = [], []
        for job, image_id, items in zip(job_list, id_list, results, strict=True):
            im = {"file_name": job[-1], "width": size, "height": size, "id": image_id}
            images.append(im)
            these = [
                annotation(len(anns) + k + 1, image_id, it, it["segmentation"])
                for k, it in enumerate(items)
            ]
            for a in these:
                a.pop("point_xy")
            anns.extend(these)
            if all(it["visible"] > 0.98 for it in items):
                clear_images.append(im)
                clear_anns.extend(these)
        data = {
            "info": {"description": f"dpsnet mini world D2S {key}"},
            "licenses": [],
            "categories": categories_json(specs),
            "images": images,
            "annotations": anns,
        }
        atomic_write_json(ann_dir / f"D2S_{key}.json", data)
        counts[f"d2s_{key}"] = split_counts(images, anns, specs)
        if key == "validation":
            atomic_write_json(
                ann_dir / "D2S_validation_wo_occlusion.json",
                {**data, "images": clear_images, "annotations": clear_anns},
            )
            counts["d2s_validation_wo_occlusion"] = split_counts(clear_images, clear_anns, specs)
    return counts
