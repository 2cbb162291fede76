"""demo/demo.py end to end: a folder with good, corrupt and non-image files; the report's links,
its metrics (verbatim from the evaluator's JSON) and, where Chromium exists, its rendering."""

import csv
import html.parser
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

from dpsnet.utils.io import load_json

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# A stock detectron2 Faster R-CNN, random init, small enough for CPU inference in a test.
TINY_FRCNN = """
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  DEVICE: "cuda"  # the demo falls back to cpu where CUDA is absent
  BACKBONE: {{NAME: "build_resnet_fpn_backbone"}}
  RESNETS: {{DEPTH: 18, RES2_OUT_CHANNELS: 64, NORM: "GN", STRIDE_IN_1X1: False,
             OUT_FEATURES: ["res2", "res3", "res4", "res5"]}}
  FPN: {{IN_FEATURES: ["res2", "res3", "res4", "res5"], OUT_CHANNELS: 32, NORM: "GN"}}
  ANCHOR_GENERATOR: {{SIZES: [[16], [32], [64], [128], [256]]}}
  RPN: {{IN_FEATURES: ["p2", "p3", "p4", "p5", "p6"], PRE_NMS_TOPK_TEST: 100,
         POST_NMS_TOPK_TEST: 50}}
  ROI_HEADS: {{NAME: "StandardROIHeads", IN_FEATURES: ["p2", "p3", "p4", "p5"],
               NUM_CLASSES: {num_classes}, SCORE_THRESH_TEST: 0.05}}
  ROI_BOX_HEAD: {{NAME: "FastRCNNConvFCHead", NUM_FC: 2, FC_DIM: 64, POOLER_RESOLUTION: 7}}
DATASETS: {{TRAIN: [], TEST: ["{dataset}"]}}
INPUT: {{MIN_SIZE_TEST: 96, MAX_SIZE_TEST: 128}}
TEST: {{DETECTIONS_PER_IMAGE: 8}}
VERSION: 2
"""


def _load_demo():
    spec = importlib.util.spec_from_file_location("dpsnet_demo_script", ROOT / "demo/demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_case(tmp_path_factory, mini_world):
    """Inputs (2 good images, one in a subfolder, a corrupt JPEG, a text file, an empty folder),
    a tiny config, random weights saved to a file, an RPC metrics JSON, and one demo run."""
    from detectron2.data import MetadataCatalog

    base = tmp_path_factory.mktemp("demo")
    test_dir = Path(mini_world.root) / "test2019"
    images = sorted(test_dir.iterdir())[:2]
    inp = base / "in"
    (inp / "sub dir").mkdir(parents=True)
    (inp / "empty").mkdir()
    shutil.copy(images[0], inp / images[0].name)
    shutil.copy(images[1], inp / "sub dir" / images[1].name)
    data = images[0].read_bytes()
    (inp / "corrupt.jpg").write_bytes(data[: len(data) // 2])
    (inp / "notes.txt").write_text("not an image\n")

    meta = MetadataCatalog.get(mini_world.names["test"])
    cfg_file = base / "tiny.yaml"
    cfg_file.write_text(
        TINY_FRCNN.format(num_classes=len(meta.thing_classes), dataset=mini_world.names["test"])
    )
    demo = _load_demo()

    # Random weights through --opts MODEL.WEIGHTS, as a user passes a trained checkpoint.
    from detectron2.modeling import build_model

    from dpsnet.engine import load_config

    cfg = load_config(str(cfg_file))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    weights = base / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)

    # A real evaluator report: the ground truth itself as results (perfect checkout).
    from dpsnet.evaluation.rpc_report import evaluate_files

    ann = Path(mini_world.root) / "instances_test2019.json"
    gt = load_json(ann)
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1}
        for a in gt["annotations"]
    ]
    (base / "results.json").write_text(json.dumps(results))
    evaluate_files(base / "results.json", ann, compute_map=False, output_dir=base / "eval")

    out = base / "out"
    argv = ["--config-file", str(cfg_file), "--input", str(inp), "--output", str(out),
            "--confidence-threshold", "0.1", "--metrics-json", str(base / "eval/rpc_metrics.json"),
            "--opts", "MODEL.WEIGHTS", str(weights)]  # fmt: skip
    code = demo.main(argv)
    return dict(base=base, inp=inp, out=out, code=code, images=images, cfg=cfg_file, demo=demo)


def test_outputs_for_good_files_and_bad_ones_listed(demo_case):
    out = demo_case["out"]
    assert demo_case["code"] == 0
    names = [demo_case["images"][0].name, f"sub dir/{demo_case['images'][1].name}"]
    for name in names:
        stem = Path(name).with_suffix("").as_posix()
        receipt = load_json(out / "receipts" / f"{stem}.json")
        assert receipt["image"] == name
        assert (out / receipt["annotated"]).is_file() and (out / receipt["thumbnail"]).is_file()
        assert receipt["total"] == sum(i["count"] for i in receipt["items"])
        assert receipt["total"] == len(receipt["detections"])
        assert all(d["score"] >= 0.1 for d in receipt["detections"])
        assert receipt["view_total"] is None  # a stock detectron2 model has no counting view
    summary = load_json(out / "summary.json")
    assert summary["images"] == 2 and summary["skipped"] == 2
    reasons = {s["file"]: s["reason"] for s in summary["skipped_files"]}
    assert set(reasons) == {"corrupt.jpg", "notes.txt"}
    assert all("not a readable image" in r for r in reasons.values())
    page = (out / "report.html").read_text()
    for bad in reasons:
        assert f"<td>{bad}</td>" in page
    assert "random initialisation" not in page  # weights came through --opts
    rows = list(csv.DictReader((out / "receipts.csv").open()))
    assert {r["image"] for r in rows if r["name"] != "SKIPPED"} == set(names)
    assert sum(r["name"] == "TOTAL" for r in rows) == 2
    assert {r["image"] for r in rows if r["name"] == "SKIPPED"} == set(reasons)


def test_every_link_in_report_resolves(demo_case):
    out = demo_case["out"]

    class Links(html.parser.HTMLParser):
        links: list = []

        def handle_starttag(self, tag, attrs):
            self.links += [v for k, v in attrs if k in ("href", "src")]

    parser = Links()
    parser.feed((out / "report.html").read_text())
    assert len(parser.links) >= 2 * 3 + 3  # per image: full, thumbnail, receipt; CSV, summary...
    for link in parser.links:
        url = urlparse(link)
        assert not url.scheme and not url.netloc and not url.path.startswith("/"), link
        assert (out / unquote(url.path)).is_file(), link


def test_report_metrics_are_the_evaluator_json_verbatim(demo_case):
    metrics = load_json(demo_case["base"] / "eval/rpc_metrics.json")
    page = (demo_case["out"] / "report.html").read_text()
    assert (demo_case["out"] / "metrics/rpc_metrics.json").read_bytes() == (
        demo_case["base"] / "eval/rpc_metrics.json"
    ).read_bytes()
    shown = dict(re.findall(r'data-key="([^"]+)">([^<]*)<', page))
    assert metrics["metrics"]["cAcc"] == 100.0  # perfect results: the section is not vacuous
    for key, value in metrics["metrics"].items():
        assert shown[key] == json.dumps(value), key


def test_exit_status_nonzero_only_when_nothing_processed(demo_case, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"\xff\xd8 not really")
    argv = ["--config-file", str(demo_case["cfg"]), "--input", str(bad), str(tmp_path / "none*"),
            "--output", str(tmp_path / "out")]  # fmt: skip
    assert demo_case["demo"].main(argv) == 1
    summary = load_json(tmp_path / "out/summary.json")
    assert [s["file"] for s in summary["skipped_files"]] == [str(tmp_path / "none*"), "a.jpg"]
    assert (tmp_path / "out/report.html").is_file()
    # A bad config is a one-line error, before any work.
    argv = ["--config-file", str(tmp_path / "missing.yaml"), "--input", str(bad),
            "--output", str(tmp_path / "out2")]  # fmt: skip
    assert demo_case["demo"].main(argv) == 2
    assert not (tmp_path / "out2").exists()


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: `make install` installs Debian's package only as root with "
    "apt-get (README: Bad inputs and safety)",
)
def test_report_renders_with_images_loaded_in_chromium(demo_case):
    out = demo_case["out"]
    # A copy beside the report (same relative links) with a script reporting loaded images.
    probe = out / "report_probe.html"
    script = (
        "<script>window.addEventListener('load', () => { const im = [...document.images];"
        " document.body.setAttribute('data-images', im.filter(i => i.complete &&"
        " i.naturalWidth > 0).length + '/' + im.length); });</script></body>"
    )
    probe.write_text((out / "report.html").read_text().replace("</body>", script))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    probe.unlink()
    match = re.search(r'data-images="(\d+)/(\d+)"', proc.stdout)
    assert match, proc.stderr[-2000:]
    assert match.group(1) == match.group(2) == "2"
