"""Writing synthesized sets: byte-identical reruns, shards that merge, resume, registration."""

import json
import shutil
from pathlib import Path

import pytest
from compose_helpers import SMALL
from detectron2.data import DatasetCatalog, MetadataCatalog

from dpsnet.data.datasets import unregister_dataset
from dpsnet.engine import load_config
from dpsnet.synthesis.dataset import merge_shards
from dpsnet.synthesis.items import mini_world_index
from dpsnet.synthesis.writer import synthesize
from dpsnet.utils.io import BadInputError

N = 7  # scenes per run


@pytest.fixture(scope="module")
def index(mini_world, tmp_path_factory):
    return mini_world_index(mini_world, tmp_path_factory.mktemp("index"))


def _cfg(index, out, *opts):
    return load_config(
        None,
        [
            "SYNTHESIS.COMPOSE.MASKS_INDEX",
            str(index),
            "SYNTHESIS.COMPOSE.OUTPUT_DIR",
            str(out),
            "SYNTHESIS.COMPOSE.NUM_IMAGES",
            str(N),
            *SMALL,
            *opts,
        ],
    )


def _run(index, out, *opts, **kw):
    return synthesize(_cfg(index, out, *opts), progress=False, register=False, **kw)


@pytest.fixture(scope="module")
def reference(index, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    report = _run(index, out)
    return out, report


def test_same_seed_gives_byte_identical_json(index, reference, tmp_path):
    ref, report = reference
    assert report["written"] == N and report["images"] == N
    _run(index, tmp_path / "again")
    assert (tmp_path / "again" / "instances_synth.json").read_bytes() == (
        ref / "instances_synth.json"
    ).read_bytes()
    for f in sorted((ref / "images").iterdir()):
        assert (tmp_path / "again" / "images" / f.name).read_bytes() == f.read_bytes()
    _run(index, tmp_path / "other", "SYNTHESIS.SEED", "1")
    assert (tmp_path / "other" / "instances_synth.json").read_bytes() != (
        ref / "instances_synth.json"
    ).read_bytes()


def test_json_is_rpc_format_with_the_exemplar_classes(mini_world, reference):
    ref, _ = reference
    data = json.loads((ref / "instances_synth.json").read_text())
    train = json.loads(mini_world.paths["train_json"].read_text())
    assert data["categories"] == train["categories"]
    assert [im["id"] for im in data["images"]] == list(range(1, N + 1))
    assert {im["level"] for im in data["images"]} <= {"easy", "medium", "hard"}
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    a = data["annotations"][0]
    assert set(a) >= {"area", "bbox", "category_id", "image_id", "iscrowd", "segmentation"}
    assert set(a["segmentation"]) == {"size", "counts"} and len(a["point_xy"]) == 2
    for im in data["images"]:
        assert (ref / "images" / im["file_name"]).is_file()


def test_shards_merge_into_the_unsharded_json(index, reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "sharded"
    reports = [_run(index, out, shard=k, num_shards=3) for k in (2, 0, 1)]
    assert "json_file" not in reports[0] and "json_file" in reports[-1]  # merged by the last
    assert sum(r["images"] for r in reports) == N
    assert (out / "instances_synth.json").read_bytes() == (
        ref / "instances_synth.json"
    ).read_bytes()
    (out / "instances_synth.json").unlink()
    merge_shards(out)  # the explicit merge step gives the same file
    assert (out / "instances_synth.json").read_bytes() == (
        ref / "instances_synth.json"
    ).read_bytes()


def test_merge_refuses_incomplete_or_mixed_shards(index, tmp_path):
    out = tmp_path / "partial"
    _run(index, out, shard=0, num_shards=2)
    with pytest.raises(BadInputError, match=r"missing shard\(s\) \[1\]"):
        merge_shards(out)
    _run(index, out, "SYNTHESIS.SEED", "9", shard=1, num_shards=2)
    with pytest.raises(BadInputError, match="different runs"):
        merge_shards(out)
    with pytest.raises(BadInputError, match="no shard files"):
        merge_shards(tmp_path / "nothing")


def test_resume_reuses_scenes_on_disk(index, reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "resumed"
    shutil.copytree(ref, out)
    (out / "instances_synth.json").unlink()
    (out / "labels" / "synth_0000003.json").unlink()  # as if killed after scene 3's image
    report = _run(index, out)
    assert report["reused"] == N - 1 and report["written"] == 1
    assert (out / "instances_synth.json").read_bytes() == (
        ref / "instances_synth.json"
    ).read_bytes()
    # more scenes: the first N are reused
    report = _run(index, out, "SYNTHESIS.COMPOSE.NUM_IMAGES", str(N + 2))
    assert report["reused"] == N and report["written"] == 2
    # other parameters: nothing on disk fits, every scene is made again
    report = _run(index, out, "SYNTHESIS.COMPOSE.MAX_IOU", "0.3")
    assert report["reused"] == 0 and report["written"] == N
    assert (out / "instances_synth.json").read_bytes() != (
        ref / "instances_synth.json"
    ).read_bytes()


def test_level_mix_and_report(index, tmp_path):
    report = _run(index, tmp_path / "hard", "SYNTHESIS.COMPOSE.LEVEL_MIX", "[0, 0, 1]")
    assert list(report["per_level"]) == ["hard"]
    hard = report["per_level"]["hard"]
    assert hard["images"] == N and 6 * N <= hard["planned"] <= 8 * N
    assert set(report["mean_cpu_ms_per_written_image"]) >= {"compose", "encode", "place", "labels"}


def test_registered_and_named_by_a_config(mini_world, reference):
    ref, _ = reference
    name = "synth_test_registered"
    entry = [name, str(ref / "instances_synth.json"), str(ref / "images")]
    cfg = load_config(None, ["DATASETS.REGISTER", repr([entry])])
    try:
        assert cfg.DATASETS.REGISTER[0][0] == name
        records = DatasetCatalog.get(name)
        assert len(records) == N and records[0]["annotations"]
        assert records[0]["annotations"][0]["segmentation"]["size"] == [160, 160]
        train = MetadataCatalog.get(mini_world.names["train"])
        assert MetadataCatalog.get(name).thing_classes == train.thing_classes
    finally:
        unregister_dataset(name)


@pytest.mark.slow
def test_workers_and_the_tool(index, reference, tmp_path, capsys):
    """Two processes through tools/synthesize.py give the same set; the merge subcommand too."""
    import runpy

    ref, _ = reference
    tool = runpy.run_path("tools/synthesize.py")
    args = ["--index", str(index), "--num-images", str(N), "--workers", "2", "--no-progress"]
    out = tmp_path / "tool"
    assert tool["main"]([*args, "--output", str(out), *SMALL]) == 0
    assert (out / "instances_synth.json").read_bytes() == (
        ref / "instances_synth.json"
    ).read_bytes()
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["dataset"] == "synth_tool"
    unregister_dataset("synth_tool")
    for k in range(2):
        argv = [*args, "--output", str(tmp_path / "pieces"), "--shard", str(k)]
        assert tool["main"]([*argv, "--num-shards", "2", *SMALL]) == 0
    (tmp_path / "pieces" / "instances_synth.json").unlink()
    assert tool["main"](["merge", "--output", str(tmp_path / "pieces"), "--name", "pcs"]) == 0
    assert (tmp_path / "pieces" / "instances_synth.json").read_bytes() == (
        ref / "instances_synth.json"
    ).read_bytes()
    unregister_dataset("pcs")
    unregister_dataset("synth_pieces")
    assert tool["main"]([*args, "--output", str(out), "--level", "medium", *SMALL]) == 0
    data = json.loads((out / "instances_synth.json").read_text())
    assert {im["level"] for im in data["images"]} == {"medium"}
    unregister_dataset("synth_tool")
    assert tool["main"](["--output", str(out), "--level", "hard"]) == 2  # no index given


def test_bad_exemplars_are_reported_and_the_run_goes_on(index, tmp_path, caplog):
    import logging

    import cv2
    import numpy as np

    data = json.loads(index.read_text())
    kept = [it for it in data["items"] if it["kept"]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    kept[0]["file_name"] = str(broken)
    x0, y0, x1, y1 = kept[1]["extent"]
    cv2.imwrite(str(tmp_path / "blank.png"), np.zeros((y1 - y0, x1 - x0), np.uint8))
    kept[1]["mask"] = str(tmp_path / "blank.png")
    for it in data["items"]:
        if not Path(it["mask"]).is_absolute():
            it["mask"] = str(index.parent / it["mask"])
    bad_index = tmp_path / "index.json"
    bad_index.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="dpsnet.synthesis"):
        report = _run(bad_index, tmp_path / "out")
    assert report["images"] == N
    skipped = {s["image_id"]: s["reason"] for s in report["skipped_items"]}
    assert set(skipped) == {kept[0]["image_id"], kept[1]["image_id"]}
    assert "broken.jpg" in caplog.text and "blank.png" in caplog.text
    anns = json.loads((tmp_path / "out" / "instances_synth.json").read_text())["annotations"]
    assert not {a["exemplar_id"] for a in anns} & set(skipped)


def test_excluded_categories_are_never_pasted(index, reference, tmp_path):
    ref, _ = reference
    pasted = {
        a["category_id"]
        for a in json.loads((ref / "instances_synth.json").read_text())["annotations"]
    }
    drop = sorted(pasted)[:2]
    _run(index, tmp_path / "ex", "SYNTHESIS.COMPOSE.EXCLUDE_CATEGORIES", str(drop))
    data = json.loads((tmp_path / "ex" / "instances_synth.json").read_text())
    kept = {a["category_id"] for a in data["annotations"]}
    assert kept and not kept & set(drop)
    assert {c["id"] for c in data["categories"]} >= set(drop)  # the class ids stay the same
    with pytest.raises(BadInputError, match=r"EXCLUDE_CATEGORIES.*\[999\]"):
        _run(index, tmp_path / "bad", "SYNTHESIS.COMPOSE.EXCLUDE_CATEGORIES", "[999]")
