"""Dataset checker: every problem of a COCO/RPC JSON and its images, plus a summary.

``check_dataset_json`` never stops at the first problem: it lists them all (kind, where,
message) and summarises what is there (images, instances, per level, per category), so that a
broken download or a hand-edited file is diagnosed in one run. ``tools/check_dataset.py`` is
its command line.
"""

import json
import logging
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from dpsnet.data.datasets.checkout import CLUTTER_LEVELS
from dpsnet.utils.io import BadInputError, image_size, read_image

logger = logging.getLogger(__name__)

#: Every kind of problem the checker reports.
PROBLEM_KINDS = (
    "malformed_json",
    "schema",
    "duplicate_category_id",
    "duplicate_image_id",
    "duplicate_file_name",
    "bad_level",
    "missing_image",
    "unreadable_image",
    "image_size_mismatch",
    "duplicate_annotation_id",
    "unknown_image",
    "unknown_category",
    "bad_box",
    "box_zero_size",
    "box_out_of_bounds",
)


@dataclass
class Problem:
    """One thing wrong: ``kind`` (one of ``PROBLEM_KINDS``), ``where`` it is, a ``message``."""

    kind: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.where}: {self.message}"


@dataclass
class CheckReport:
    """What ``check_dataset_json`` found.

    Attributes:
        json_file, image_root: what was checked.
        problems: every problem found.
        summary: ``{"images", "instances", "images_without_annotations", "categories",
            "per_level": {level: {"images", "instances"}}, "per_category": {name: instances}}``
            (the keys the mini world generator's counts use).
    """

    json_file: str
    image_root: str | None
    problems: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts_by_kind(self) -> dict:
        return dict(Counter(p.kind for p in self.problems))

    def add(self, kind: str, where: str, message: str) -> None:
        self.problems.append(Problem(kind, where, message))

    def to_dict(self) -> dict:
        return {
            "json_file": self.json_file,
            "image_root": self.image_root,
            "ok": self.ok,
            "problem_counts": self.counts_by_kind(),
            "problems": [vars(p) for p in self.problems],
            "summary": self.summary,
        }

    def format(self, max_per_kind: int = 10) -> str:
        """Human-readable report: problems (``max_per_kind`` of each kind shown), then summary."""
        lines = [f"Checked {self.json_file} (images in {self.image_root})"]
        shown = Counter()
        for p in self.problems:
            shown[p.kind] += 1
            if shown[p.kind] <= max_per_kind:
                lines.append(f"  {p}")
        for kind, n in self.counts_by_kind().items():
            if n > max_per_kind:
                lines.append(f"  ... and {n - max_per_kind} more [{kind}]")
        s = self.summary
        if s:
            lines.append(
                f"Summary: {s['images']} images, {s['instances']} instances, "
                f"{s['categories']} categories, {s['images_without_annotations']} images "
                "without annotations"
            )
            for level, c in s["per_level"].items():
                per = c["instances"] / max(c["images"], 1)
                lines.append(
                    f"  level {level:<7} {c['images']:>7} images {c['instances']:>8} instances "
                    f"({per:.2f}/image)"
                )
            width = max((len(n) for n in s["per_category"]), default=0)
            lines.append("  per category:")
            for name, n in s["per_category"].items():
                lines.append(f"    {name:<{width}} {n:>8}")
        verdict = "OK: no problems" if self.ok else f"FAILED: {len(self.problems)} problems"
        lines.append(f"{verdict} {self.counts_by_kind() if not self.ok else ''}".rstrip())
        return "\n".join(lines)


def default_image_root(json_file: str | os.PathLike) -> str:
    """Where the images of a JSON usually are: RPC's ``instances_val2019.json`` -> ``val2019/``,
    D2S's ``annotations/X.json`` -> ``images/``, the mini world's pool -> ``pool/``, else the
    JSON's own folder."""
    json_file = os.path.abspath(os.fspath(json_file))
    folder, base = os.path.split(json_file)
    stem = os.path.splitext(base)[0]
    candidates = []
    if stem.startswith("instances_"):
        candidates.append(os.path.join(folder, stem[len("instances_") :]))
    if os.path.basename(folder) == "annotations":
        candidates.append(os.path.join(os.path.dirname(folder), "images"))
    for c in candidates:
        if os.path.isdir(c):
            return c
    return folder


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def check_dataset_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    *,
    check_images: bool = True,
    decode_images: bool = False,
    box_tolerance: float = 1.0,
    progress: bool = False,
) -> CheckReport:
    """Check a COCO/RPC JSON and (optionally) its images.

    Args:
        json_file: the annotation file.
        image_root: folder of the images; default ``default_image_root(json_file)``.
        check_images: look at every image file (exists, readable header, size as in the JSON).
        decode_images: decode every image fully (catches truncated files; slow on RPC).
        box_tolerance: pixels a box may stick out of its image before it is reported.
        progress: show a progress bar over images.

    Returns:
        CheckReport (``report.ok`` is False when anything is wrong).
    """
    json_file = os.fspath(json_file)
    image_root = os.fspath(image_root) if image_root is not None else default_image_root(json_file)
    report = CheckReport(json_file=json_file, image_root=image_root)
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        report.add("malformed_json", json_file, "file not found")
        return report
    except json.JSONDecodeError as e:
        report.add(
            "malformed_json",
            f"{json_file}:{e.lineno}:{e.colno}",
            f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}",
        )
        return report
    except UnicodeDecodeError as e:
        report.add("malformed_json", json_file, f"not UTF-8 text ({e.reason} at byte {e.start})")
        return report
    if not isinstance(data, dict):
        report.add("schema", json_file, "top level must be an object with images/categories")
        return report
    for key, required in (("images", True), ("categories", True), ("annotations", False)):
        if key not in data:
            if required:
                report.add("schema", json_file, f"no top-level '{key}' list")
        elif not isinstance(data[key], list):
            report.add("schema", json_file, f"'{key}' must be a list")
    images = data.get("images") if isinstance(data.get("images"), list) else []
    cats = data.get("categories") if isinstance(data.get("categories"), list) else []
    anns = data.get("annotations") if isinstance(data.get("annotations"), list) else []

    cat_name = {}
    for i, c in enumerate(cats):
        if (
            not isinstance(c, dict)
            or not _is_int(c.get("id"))
            or not isinstance(c.get("name"), str)
        ):
            report.add("schema", f"categories[{i}]", f"needs an integer 'id' and a 'name': {c!r}")
            continue
        if c["id"] in cat_name:
            report.add("duplicate_category_id", f"categories[{i}]", f"id {c['id']} repeated")
            continue
        cat_name[c["id"]] = c["name"]

    image_by_id, names_seen = {}, {}
    for i, im in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(im, dict):
            report.add("schema", where, "image entry must be an object")
            continue
        bad = [k for k in ("id", "width", "height") if not _is_int(im.get(k))]
        if bad or not isinstance(im.get("file_name"), str):
            report.add("schema", where, f"needs integer id/width/height and a file_name: {im!r}")
            continue
        where = f"image {im['id']} ({im['file_name']})"
        if im["width"] <= 0 or im["height"] <= 0:
            report.add("schema", where, f"size {im['width']}x{im['height']} is not positive")
        if im["id"] in image_by_id:
            report.add("duplicate_image_id", where, f"id {im['id']} repeated")
            continue
        if im["file_name"] in names_seen:
            report.add(
                "duplicate_file_name", where, f"same file as image {names_seen[im['file_name']]}"
            )
        names_seen[im["file_name"]] = im["id"]
        if "level" in im and im["level"] not in CLUTTER_LEVELS:
            report.add("bad_level", where, f"level {im['level']!r} is not one of {CLUTTER_LEVELS}")
        image_by_id[im["id"]] = im

    ann_ids = set()
    per_image = Counter()
    per_cat = Counter()
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            report.add("schema", f"annotations[{i}]", "annotation must be an object")
            continue
        where = f"annotation {a.get('id', f'[{i}]')}"
        if not _is_int(a.get("id")):
            report.add("schema", where, "needs an integer 'id'")
        elif a["id"] in ann_ids:
            report.add("duplicate_annotation_id", where, f"id {a['id']} repeated")
        else:
            ann_ids.add(a["id"])
        im = image_by_id.get(a.get("image_id"))
        if im is None:
            report.add("unknown_image", where, f"image_id {a.get('image_id')!r} is not an image")
        if a.get("category_id") not in cat_name:
            report.add(
                "unknown_category", where, f"category_id {a.get('category_id')!r} is not a category"
            )
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_num(v) for v in box)):
            report.add("bad_box", where, f"bbox must be 4 finite numbers [x, y, w, h]: {box!r}")
            continue
        x, y, w, h = box
        if w <= 0 or h <= 0:
            report.add("box_zero_size", where, f"bbox {box} has no area")
        if im is not None:
            W, H, t = im["width"], im["height"], box_tolerance
            if x < -t or y < -t or x + w > W + t or y + h > H + t:
                report.add(
                    "box_out_of_bounds",
                    where,
                    f"bbox {box} is outside image {im['id']} of size {W}x{H}",
                )
            per_image[im["id"]] += 1
        if a.get("category_id") in cat_name:
            per_cat[a["category_id"]] += 1

    if check_images:
        _check_images(report, list(image_by_id.values()), image_root, decode_images, progress)

    per_level = defaultdict(lambda: {"images": 0, "instances": 0})
    for im in image_by_id.values():
        if im.get("level") in CLUTTER_LEVELS:
            per_level[im["level"]]["images"] += 1
            per_level[im["level"]]["instances"] += per_image[im["id"]]
    report.summary = {
        "images": len(image_by_id),
        "instances": sum(per_image.values()),
        "images_without_annotations": sum(1 for i in image_by_id if per_image[i] == 0),
        "categories": len(cat_name),
        "per_level": {lv: per_level[lv] for lv in CLUTTER_LEVELS if lv in per_level},
        "per_category": {cat_name[c]: per_cat[c] for c in sorted(cat_name)},
    }
    return report


def _check_images(report, images, image_root, decode, progress) -> None:
    from tqdm import tqdm

    for im in tqdm(images, desc="images", disable=not progress, unit="img"):
        path = os.path.join(image_root, im["file_name"])
        where = f"image {im['id']} ({path})"
        if not os.path.isfile(path):
            report.add("missing_image", where, "file not found")
            continue
        try:
            if decode:
                h, w = read_image(path).shape[:2]
            else:  # the header only, size-checked (INPUT.MAX_IMAGE_PIXELS)
                w, h = image_size(path)
        except (BadInputError, OSError, SyntaxError, ValueError) as e:
            report.add("unreadable_image", where, f"cannot read the image: {e}")
            continue
        if (w, h) != (im["width"], im["height"]):
            report.add(
                "image_size_mismatch",
                where,
                f"file is {w}x{h}, the JSON says {im['width']}x{im['height']}",
            )


def check_registered(name: str, **kwargs) -> CheckReport:
    """Check a registered dataset through its metadata's ``json_file`` and ``image_root``."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name not in DatasetCatalog.list():
        raise KeyError(f"dataset {name!r} is not registered")
    meta = MetadataCatalog.get(name)
    json_file, image_root = meta.get("json_file"), meta.get("image_root")
    if json_file is None:
        raise KeyError(f"dataset {name!r} has no json_file in its metadata: cannot check it")
    return check_dataset_json(json_file, image_root, **kwargs)
