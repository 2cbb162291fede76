"""What tools/run_pipeline.py reads: a registered dataset, a COCO/RPC JSON, or a plain folder.

Each becomes a :class:`~dpsnet.engine.pipeline.Source` that every stage's process can register
from its config (``DATASETS.REGISTER``). The product catalogue comes from the exemplars alone and
is written to ``OUT/categories.json``, which fixes the class order of every dataset of the run.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from dpsnet.data.catalogue import Catalogue
from dpsnet.engine.pipeline import Source, digest, file_key
from dpsnet.engine.setup import ConfigError
from dpsnet.utils.io import (
    IMAGE_EXTENSIONS,
    BadInputError,
    atomic_write_json,
    image_size,
    load_json,
)

__all__ = [
    "exemplar_catalogue",
    "folder_source",
    "move_stale_outputs",
    "resolve_source",
    "stage_keys",
    "write_catalogue",
]

#: Outputs that depend on the catalogue (a model with another class count is never reused).
CATALOGUE_OUTPUTS = ("synth", "pretrain", "distill", "report", "model_final.pth")


def default_image_root(json_file: Path) -> Path:
    """The image folder of a JSON in the RPC layout (``instances_train2019.json`` ->
    ``train2019/`` beside it), else ``images/`` beside it, else the JSON's own folder."""
    stem = json_file.stem
    for name in (stem.removeprefix("instances_"), "images"):
        if (json_file.parent / name).is_dir():
            return json_file.parent / name
    return json_file.parent


def resolve_source(
    value: str,
    role: str,
    images: str | None = None,
    categories_json: str | None = None,
) -> Source:
    """A registered dataset name or a COCO/RPC JSON (``images``: its image folder).

    Raises:
        ConfigError: neither a registered dataset nor an existing JSON file.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if value in DatasetCatalog.list():
        meta = MetadataCatalog.get(value)
        return Source(value, None, meta.get("image_root", None), meta.get("json_file", None))
    path = Path(value)
    if path.suffix.lower() != ".json" or not path.is_file():
        raise ConfigError(
            f"--{role}: {value} is neither a registered dataset nor an existing .json file"
        )
    root = Path(images) if images else default_image_root(path.resolve())
    if not root.is_dir():
        raise ConfigError(f"--{role}: image folder not found: {root}")
    name = f"pipeline_{role.replace('-', '_')}"
    entry = [name, str(path.resolve()), str(root.resolve())]
    if categories_json:
        entry.append(str(categories_json))
    return Source(name, entry, str(root.resolve()), str(path.resolve()))


def folder_source(folder: str, out: Path, categories_json: Path) -> Source:
    """A folder of unlabelled photos (recursively) as a COCO JSON of images only.

    Writes ``out/pool.json`` (file names relative to ``folder``, sizes read from the headers)
    unless an identical listing is there already.

    Raises:
        ConfigError: the folder holds no image.
    """
    root = Path(folder).resolve()
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    images = []
    for i, path in enumerate(files):
        try:  # the header only, size-checked (INPUT.MAX_IMAGE_PIXELS): a hostile file is left out
            width, height = image_size(path)
        except BadInputError as e:
            logging.getLogger(__name__).warning("pool image skipped: %s", e)
            continue  # unreadable: left out of the pool (the labeller could not read it either)
        rel = path.relative_to(root).as_posix()
        images.append({"id": i + 1, "file_name": rel, "width": width, "height": height})
    if not images:
        raise ConfigError(f"--pool: no readable image under {folder}")
    data = {
        "info": {"description": f"unlabelled checkout images of {root}"},
        "images": images,
        "annotations": [],
        "categories": load_json(categories_json)["categories"],
    }
    json_file = out / "pool.json"
    if not json_file.is_file() or load_json(json_file) != data:  # keep its mtime when unchanged
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(json_file, data)
    entry = ["pipeline_pool", str(json_file), str(root), str(categories_json)]
    return Source("pipeline_pool", entry, str(root), str(json_file))


def exemplar_catalogue(exemplars: Source) -> Catalogue:
    """The product catalogue of the exemplars (their JSON's categories, else their metadata)."""
    from detectron2.data import MetadataCatalog

    if exemplars.json_file and os.path.isfile(exemplars.json_file):
        return Catalogue.from_json(exemplars.json_file)
    meta = MetadataCatalog.get(exemplars.name)
    if not meta.get("thing_classes", None):
        raise ConfigError(f"--exemplars: {exemplars.name} has no categories")
    return Catalogue.from_metadata(meta)


def write_catalogue(catalogue: Catalogue, out: Path) -> Path:
    """``out/categories.json`` (COCO ``categories`` of the catalogue) and ``out/catalogue.json``;
    rewritten only when they change, so that unchanged stages stay skipped."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "categories.json"
    data = {"images": [], "annotations": [], "categories": catalogue.to_categories()}
    if not path.is_file() or load_json(path) != data:
        atomic_write_json(path, data, indent=1)
    record = out / "catalogue.json"
    if not record.is_file() or load_json(record) != catalogue.to_dict():
        atomic_write_json(record, catalogue.to_dict(), indent=1)
    return path


def move_stale_outputs(out: Path, catalogue: Catalogue) -> str | None:
    """Move outputs made for another catalogue to ``out/stale/<its digest>/``.

    Returns:
        The old catalogue's digest when something was moved, else None.
    """
    record = out / "catalogue.json"
    old = load_json(record) if record.is_file() else None
    if old is None or old == catalogue.to_dict():
        return None
    dest = out / "stale" / digest(old)
    moved = False
    for name in CATALOGUE_OUTPUTS:
        if (out / name).exists():
            dest.mkdir(parents=True, exist_ok=True)
            target = dest / name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            shutil.move(str(out / name), str(target))
            moved = True
    record.unlink()
    return digest(old) if moved else None


def stage_keys(catalogue: Catalogue, exemplars: Source, pool: Source, eval: Source | None):
    """stage -> what it depends on besides its command: the catalogue and its input files."""
    cat = digest(catalogue.to_dict())
    ex = {"catalogue": cat, "exemplars": file_key(exemplars.json_file)}
    distill = {**ex, "pool": file_key(pool.json_file)}
    if eval is not None:
        distill["eval"] = file_key(eval.json_file)
    return {"masks": ex, "synthesize": ex, "pretrain": ex, "distill": distill, "report": distill}
