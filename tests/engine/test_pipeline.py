"""tools/run_pipeline.py end to end on a shop the project has never seen, then demo --weights.

The shop is the test mini world rewritten: other product names, non-contiguous category ids,
dashed file names, and a pool given as a plain folder of photos (no JSON).
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpsnet.data.catalogue import Catalogue

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["Hafer-Drink 1 l", "Rooibos Tee", "Seife (Lavendel)", "Knäckebrot", "Oliven-Öl", "Senf"]
SUPERS = ["drinks", "drinks", "home", "bakery", "pantry", "pantry"]


def _rewrite(src_json: Path, src_dir: Path, dst_json: Path, dst_dir: Path, prefix: str) -> dict:
    """Copy an RPC-format split with new product names, ids 100 apart and dashed file names."""
    data = json.loads(src_json.read_text())
    new_id = {c["id"]: 100 * c["id"] + 7 for c in data["categories"]}
    for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"])):
        c.update(id=new_id[c["id"]], name=NAMES[i], supercategory=SUPERS[i])
    dst_dir.mkdir(parents=True)
    for im in data["images"]:
        name = f"{prefix}-{im['id']:04d}-shot.jpg"
        shutil.copy(src_dir / im["file_name"], dst_dir / name)
        im["file_name"] = name
    for a in data["annotations"]:
        a["category_id"] = new_id[a["category_id"]]
    dst_json.write_text(json.dumps(data))
    return data


@pytest.fixture(scope="module")
def shop(mini_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("shop")
    w = mini_world.root
    _rewrite(
        w / "instances_train2019.json",
        w / "train2019",
        root / "instances_train2019.json",
        root / "train2019",
        "exemplar",
    )
    _rewrite(
        w / "instances_test2019.json",
        w / "test2019",
        root / "instances_test2019.json",
        root / "test2019",
        "tray-test",
    )
    pool = root / "tray photos"  # a plain folder: no JSON, a space in its name
    pool.mkdir()
    for i, path in enumerate(sorted((w / "pool").glob("*.jpg"))):
        shutil.copy(path, pool / f"tray-{i:03d}-2026-12-04.jpg")
    return root


def _run(cmd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("DPSNET_DATASETS", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    return proc


@pytest.mark.slow
def test_pipeline_on_a_new_shop_then_demo_from_the_checkpoint_alone(shop, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, str(ROOT / "tools" / "run_pipeline.py"),
        "--exemplars", str(shop / "instances_train2019.json"),
        "--pool", str(shop / "tray photos"),
        "--eval", str(shop / "instances_test2019.json"),
        "--output", str(out), "--profile", "smoke", "--workers", "1",
        "MODEL.DEVICE", "cpu",
    ]  # fmt: skip
    proc = _run(cmd)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((out / "pipeline_summary.json").read_text())
    assert summary["products"] == len(NAMES) and summary["metrics_json"]
    assert "headline" in summary  # copied from the distillation report (None until it has one)
    assert "averaged_cAcc_gain" not in summary  # a figure against another baseline: dropped

    weights = out / "model_final.pth"
    ckpt = torch.load(str(weights), map_location="cpu", weights_only=True)
    cat = Catalogue.from_dict(ckpt["dpsnet"]["catalogue"])
    assert list(cat.names) == NAMES and cat.ids == tuple(100 * i + 7 for i in range(1, 7))
    assert cat.supercategories == SUPERS

    # A second run skips every stage (same command, same inputs).
    again = _run(cmd)
    assert again.returncode == 0 and again.stdout.count("skipped") == 5, again.stdout[-3000:]

    # The checkpoint alone checks out a folder and names the shop's products.
    report = tmp_path / "report"
    demo = [sys.executable, str(ROOT / "demo" / "demo.py"), "--weights", str(weights),
            "--input", str(shop / "tray photos"), "--output", str(report),
            "--confidence-threshold", "0.0", "--opts", "MODEL.DEVICE", "cpu",
            "MODEL.DPSNET.COUNT_GUIDED.ENABLED", "False"]  # fmt: skip
    proc = _run(demo)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader((report / "receipts.csv").open(encoding="utf-8")))
    named = {r["name"] for r in rows if r["product_id"]}
    assert named and named <= set(NAMES)
    assert {int(r["product_id"]) for r in rows if r["product_id"]} <= set(cat.ids)


def test_bad_sources_are_one_line_errors(tmp_path):
    proc = _run(
        [
            sys.executable,
            str(ROOT / "tools" / "run_pipeline.py"),
            "--exemplars",
            str(tmp_path / "nope.json"),
            "--pool",
            str(tmp_path),
            "--output",
            str(tmp_path / "out"),
        ]  # fmt: skip
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--exemplars" in proc.stderr


def test_a_catalogue_change_reruns_and_never_reuses_the_old_model(tmp_path, capsys):
    from dpsnet.engine.pipeline import Source, StageRunner
    from dpsnet.engine.sources import move_stale_outputs, stage_keys, write_catalogue

    old = Catalogue([7, 12], ["tea", "soap"])
    new = Catalogue([7, 12, 40], ["tea", "soap", "Hafer-Drink"])  # a product added
    out = tmp_path / "out"
    write_catalogue(old, out)
    (out / "distill").mkdir()
    (out / "model_final.pth").write_bytes(b"old")
    assert move_stale_outputs(out, old) is None and (out / "model_final.pth").is_file()
    moved = move_stale_outputs(out, new)
    assert moved and not (out / "model_final.pth").exists() and not (out / "distill").exists()
    assert (out / "stale" / moved / "model_final.pth").read_bytes() == b"old"

    src = Source("pipeline_pool")
    a = tmp_path / "a.txt"
    cmd = [sys.executable, "-c", f"open({str(a)!r}, 'a').write('x')"]
    for cat in (old, old, new):  # the same command: skipped until the catalogue changes
        runner = StageRunner(out, None, None, ("masks",), "stages.json")
        runner.run(0, "masks", cmd, [a], stage_keys(cat, src, src, None)["masks"])
    assert a.read_text() == "xx"
