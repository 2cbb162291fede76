#!/usr/bin/env python
"""dpsnet against the detector a user would pick instead: Ultralytics YOLOv8n, same budget.

    python benchmarks/bench_peer.py --demo-output output/demo --world datasets/mini_world
    python benchmarks/bench_peer.py --train-json S.json --train-images S/ --world W \\
        --dpsnet-config C.yaml --dpsnet-weights M.pth --seconds 1100
    python benchmarks/bench_peer.py --smoke    # ~1 minute: the chain works; figures mean nothing

YOLOv8n is trained from scratch (``yolov8n.yaml``: no download) on the same synthesized scenes,
on the same cores (``--threads``), for the same wall time as dpsnet's whole chain (pretrain +
round 0 + rounds: the ``pretrain`` and ``distill`` stage times of ``demo_summary.json``, which
include the rounds' labelling and evaluation, or ``--seconds``). Both detectors are then run on
the val and test splits of the world and evaluated by dpsnet's RPC evaluator
(``dpsnet.evaluation.rpc_report.evaluate_rpc``): each one's score threshold is the one maximising
cAcc on val (never test), and its test figures are taken at that threshold. dpsnet runs with
plain detections (count-guided inference off), as the peer has no counting view.

Writes ``benchmarks/results/peer.json`` (``--output``): dpsnet_cacc, peer_cacc, dpsnet_acd,
peer_acd, dpsnet_map50, peer_map50, dpsnet_mmap, peer_mmap (cAcc, mAP in %), seconds, and the
thresholds and settings. ultralytics is an optional extra (``pip install -e .[peer]``); the
package never imports it. It is kept off the network: settings sync off, plots off (no font
download), offline mode.

Exit codes: 0 done; 1 a run failed; 2 bad input (one line naming the file or option).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "peer.json"


class BadInput(Exception):
    """A file or option the benchmark cannot use (exit code 2)."""


# --- the adapter between COCO/RPC files, YOLO's format and dpsnet's evaluator (no ultralytics) ---


def load_split(json_path, image_root, limit: int | None = None) -> dict:
    """A COCO/RPC split: its JSON and [(image_id, path, width, height)] (first ``limit``)."""
    json_path, image_root = Path(json_path), Path(image_root)
    if not json_path.is_file():
        raise BadInput(f"{json_path}: no such annotation file")
    data = json.loads(json_path.read_text())
    if not isinstance(data.get("images"), list):
        raise BadInput(f"{json_path}: no 'images' list (not a COCO/RPC JSON?)")
    images = sorted(data["images"], key=lambda im: str(im["id"]))[: limit or None]
    out = [(im["id"], image_root / im["file_name"], im["width"], im["height"]) for im in images]
    if limit:
        keep = {im[0] for im in out}
        data = {
            **data,
            "images": [im for im in data["images"] if im["id"] in keep],
            "annotations": [a for a in data.get("annotations", []) if a["image_id"] in keep],
        }
    return {"data": data, "images": out}


def category_ids(data: dict) -> list[int]:
    """Class index -> category id: the categories sorted by id (the YOLO class order)."""
    if not data.get("categories"):
        raise BadInput("the training JSON has no 'categories'")
    return sorted(int(c["id"]) for c in data["categories"])


def coco_to_yolo(split: dict, out_dir, name: str, cat_ids: list[int]) -> int:
    """Write a split in YOLO's layout: ``images/<name>/`` (links) and ``labels/<name>/*.txt``.

    Each label line is ``class cx cy w h`` normalised by the image size; crowd boxes and boxes of
    unknown categories are left out. Returns the number of images written.
    """
    out_dir = Path(out_dir)
    (out_dir / "images" / name).mkdir(parents=True, exist_ok=True)
    (out_dir / "labels" / name).mkdir(parents=True, exist_ok=True)
    index = {c: i for i, c in enumerate(cat_ids)}
    by_image: dict = {}
    for a in split["data"].get("annotations", []):
        if not a.get("iscrowd", 0) and a["category_id"] in index:
            by_image.setdefault(a["image_id"], []).append(a)
    for image_id, path, w, h in split["images"]:
        if not path.is_file():
            raise BadInput(f"{path}: image listed in the annotation file is missing")
        stem = f"{image_id}_{path.stem}"
        link = out_dir / "images" / name / f"{stem}{path.suffix}"
        if not link.exists():
            os.symlink(path.resolve(), link)
        lines = []
        for a in by_image.get(image_id, []):
            x, y, bw, bh = a["bbox"]
            cx, cy = (x + bw / 2) / w, (y + bh / 2) / h
            lines.append(f"{index[a['category_id']]} {cx:.6f} {cy:.6f} {bw / w:.6f} {bh / h:.6f}")
        (out_dir / "labels" / name / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return len(split["images"])


def write_data_yaml(out_dir, names: list[str], train: str = "train", val: str = "val") -> Path:
    """ultralytics' dataset file (JSON is valid YAML)."""
    path = Path(out_dir) / "data.yaml"
    spec = {
        "path": str(Path(out_dir).resolve()),
        "train": f"images/{train}",
        "val": f"images/{val}",
        "names": dict(enumerate(names)),
    }
    path.write_text(json.dumps(spec, indent=1))
    return path


def to_coco_results(image_id, boxes_xyxy, scores, classes, cat_ids: list[int]) -> list[dict]:
    """One image's detections (class indices) -> COCO result entries with category ids."""
    out = []
    for (x0, y0, x1, y1), s, c in zip(boxes_xyxy, scores, classes, strict=True):
        out.append(
            {
                "image_id": image_id,
                "category_id": cat_ids[int(c)],
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "score": float(s),
            }
        )
    return out


def evaluate_at_val_threshold(val: dict, val_results: list, test: dict, test_results: list):
    """The threshold maximising cAcc on val, and the test figures at that threshold.

    Returns:
        {"threshold", "val_cacc", "cacc", "acd", "map50", "mmap"} (cAcc and mAP in %).
    """
    from dpsnet.evaluation.results_io import RPCGroundTruth, parse_results
    from dpsnet.evaluation.rpc_report import evaluate_rpc

    gt = RPCGroundTruth.from_dict(val["data"], source="val")
    report = evaluate_rpc(
        gt,
        parse_results(val_results, gt, "val results"),
        levels=["averaged"],
        score_threshold=None,
        search_threshold=True,
        compute_map=False,
    )
    search = report["levels"]["averaged"]["search"]
    threshold = float(search["threshold"])
    gt = RPCGroundTruth.from_dict(test["data"], source="test")
    report = evaluate_rpc(
        gt,
        parse_results(test_results, gt, "test results"),
        levels=["averaged"],
        score_threshold=threshold,
        search_threshold=False,
    )
    m = report["metrics"]
    return {
        "threshold": threshold,
        "val_cacc": float(search["cAcc"]),
        "cacc": m.get("cAcc"),
        "acd": m.get("ACD"),
        "map50": m.get("mAP50"),
        "mmap": m.get("mmAP"),
    }


# --- the two detectors ---


def _offline_ultralytics(config_dir: Path):
    """Import ultralytics with nothing that reaches the network."""
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    os.environ["YOLO_OFFLINE"] = "1"
    try:
        import ultralytics
        from ultralytics import settings
    except ImportError as e:
        raise BadInput(f"ultralytics is not installed ({e}): pip install -e .[peer]") from e
    off = {"sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb"}
    off |= {"vscode_msg", "openvino_msg"}
    values = {k: False for k in off if k in settings}
    values.update(
        {
            k: str(config_dir / k)
            for k in ("datasets_dir", "weights_dir", "runs_dir")
            if k in settings
        }
    )
    settings.update(values)
    return ultralytics


def train_peer(data_yaml: Path, seconds: float, args, workdir: Path) -> Path:
    """YOLOv8n from scratch for ``seconds`` of wall time; returns its last weights."""
    ultralytics = _offline_ultralytics(workdir / "ultralytics_config")
    model = ultralytics.YOLO("yolov8n.yaml")
    model.train(
        data=str(data_yaml),
        time=seconds / 3600.0,  # hours; overrides epochs
        epochs=100000,
        imgsz=args.imgsz,
        batch=args.batch,
        device="cpu",
        workers=0,  # the loader shares the same cores
        seed=args.seed,
        deterministic=True,
        pretrained=False,
        amp=False,
        plots=False,
        val=False,
        project=str(workdir / "runs"),
        name="peer",
        exist_ok=True,
        verbose=False,
    )
    weights = workdir / "runs" / "peer" / "weights" / "last.pt"
    if not weights.is_file():
        raise RuntimeError(f"ultralytics wrote no {weights}")
    return weights


def predict_peer(weights: Path, split: dict, cat_ids: list[int], args) -> list[dict]:
    from ultralytics import YOLO

    model = YOLO(str(weights))
    results = []
    for image_id, path, _, _ in split["images"]:
        r = model.predict(
            str(path), conf=0.001, iou=0.7, max_det=100, imgsz=args.imgsz, device="cpu",
            verbose=False,
        )[0].boxes  # fmt: skip
        results += to_coco_results(
            image_id, r.xyxy.numpy(), r.conf.numpy(), r.cls.numpy().astype(int), cat_ids
        )
    return results


def predict_dpsnet(config: str, weights: str, opts: list, split: dict, cat_ids) -> list[dict]:
    """dpsnet's detections (count-guided inference off) on every image of ``split``."""
    from detectron2.engine import DefaultPredictor

    import dpsnet  # noqa: F401  (shims detectron2, registers dpsnet's parts)
    from dpsnet.distill.evaluation import set_count_guided
    from dpsnet.engine import load_config, load_external_parts
    from dpsnet.utils.io import read_image

    cfg = load_config(config or None, [*opts, "MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"])
    set_count_guided(cfg, False)
    cfg.TEST.DETECTIONS_PER_IMAGE = max(cfg.TEST.DETECTIONS_PER_IMAGE, 100)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.001  # the threshold is chosen afterwards on val
    cfg.freeze()
    predictor = DefaultPredictor(cfg)
    load_external_parts(predictor.model, cfg)  # parts in their own files (open-set pipeline)
    results = []
    for image_id, path, _, _ in split["images"]:
        inst = predictor(read_image(path))["instances"].to("cpu")
        results += to_coco_results(
            image_id,
            inst.pred_boxes.tensor.float().numpy(),
            inst.scores.float().numpy(),
            inst.pred_classes.numpy(),
            cat_ids,
        )
    return results


# --- command line ---


def _demo_inputs(args) -> None:
    """Fill the dpsnet run's files and time from ``--demo-output`` (a run_demo.py output)."""
    out = Path(args.demo_output)
    summary_path = out / "demo_summary.json"
    if not summary_path.is_file():
        raise BadInput(f"{summary_path}: missing (is --demo-output a finished run?)")
    summary = json.loads(summary_path.read_text())
    stages = summary.get("stage_seconds", {})
    if args.seconds is None:
        if not {"pretrain", "distill"} <= set(stages):
            raise BadInput(f"{summary_path}: stage_seconds lacks pretrain/distill; pass --seconds")
        args.seconds = float(stages["pretrain"]) + float(stages["distill"])
    report = json.loads((out / "distill" / "distill_report.json").read_text())
    done = [r for r in report["rounds"] if r.get("stage") == "done" and r.get("weights")]
    if not done:
        raise BadInput(f"{out}/distill/distill_report.json: no finished round")
    args.dpsnet_weights = args.dpsnet_weights or done[-1]["weights"]
    args.train_json = args.train_json or str(out / "synth" / "instances_synth.json")
    args.train_images = args.train_images or str(out / "synth" / "images")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--demo-output", help="a finished tools/run_demo.py output: scenes, weights, time"
    )
    p.add_argument("--train-json", help="synthesized scenes (COCO/RPC JSON)")
    p.add_argument("--train-images", help="their image folder")
    p.add_argument(
        "--world",
        default=str(ROOT / "datasets" / "mini_world"),
        help="RPC-layout world: instances_{val,test}2019.json and {val,test}2019/",
    )
    p.add_argument("--dpsnet-config", default=str(ROOT / "configs" / "MiniWorld" / "demo.yaml"))
    p.add_argument("--dpsnet-weights", help="dpsnet's final model; none: the peer alone")
    p.add_argument("--seconds", type=float, help="the peer's training wall time")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads of both")
    p.add_argument("--imgsz", type=int, default=384, help="the peer's input size (the trays')")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="first N images of each split (0: all)")
    p.add_argument("--smoke", action="store_true", help="60 s, 40 scenes, 20 val/test images")
    p.add_argument("--output", help=f"JSON to write (default {DEFAULT_OUTPUT}; --smoke: none)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="dpsnet config overrides KEY VALUE")
    return p


def run(args) -> dict:
    if args.demo_output:
        _demo_inputs(args)
    if args.smoke:
        args.seconds = args.seconds or 60.0
        args.limit = args.limit or 20
        if not args.train_json:
            args.train_json = str(Path(args.world) / "instances_train2019.json")
            args.train_images = str(Path(args.world) / "train2019")
    if not (args.train_json and args.train_images):
        raise BadInput("--train-json and --train-images (or --demo-output) are required")
    if args.seconds is None or args.seconds <= 0:
        raise BadInput("--seconds must be positive (or come from --demo-output)")
    import torch

    torch.set_num_threads(args.threads)
    world = Path(args.world)
    train = load_split(args.train_json, args.train_images, 40 if args.smoke else None)
    val = load_split(world / "instances_val2019.json", world / "val2019", args.limit)
    test = load_split(world / "instances_test2019.json", world / "test2019", args.limit)
    cat_ids = category_ids(train["data"])
    names = {int(c["id"]): c["name"] for c in train["data"]["categories"]}
    out = {"seconds": args.seconds, "threads": args.threads, "imgsz": args.imgsz}
    with tempfile.TemporaryDirectory(prefix="bench_peer_") as tmp:
        tmp = Path(tmp)
        coco_to_yolo(train, tmp / "yolo", "train", cat_ids)
        coco_to_yolo(val, tmp / "yolo", "val", cat_ids)
        data_yaml = write_data_yaml(tmp / "yolo", [names[c] for c in cat_ids])
        start = time.perf_counter()
        weights = train_peer(data_yaml, args.seconds, args, tmp)
        out["peer_train_seconds"] = round(time.perf_counter() - start, 1)
        peer = evaluate_at_val_threshold(
            val, predict_peer(weights, val, cat_ids, args),
            test, predict_peer(weights, test, cat_ids, args),
        )  # fmt: skip
    dps = dict.fromkeys(peer)
    if args.dpsnet_weights:
        from dpsnet.data.catalogue import Catalogue

        # dpsnet's class order is its training catalogue's (that of the scenes' JSON).
        cat_ids = list(Catalogue.from_json(args.train_json).ids)
        if not Path(args.dpsnet_weights).is_file():
            raise BadInput(f"{args.dpsnet_weights}: no such dpsnet weights file")
        dps = evaluate_at_val_threshold(
            val, predict_dpsnet(args.dpsnet_config, args.dpsnet_weights, args.opts, val, cat_ids),
            test, predict_dpsnet(args.dpsnet_config, args.dpsnet_weights, args.opts, test, cat_ids),
        )  # fmt: skip
    for key in ("cacc", "acd", "map50", "mmap", "threshold", "val_cacc"):
        out[f"dpsnet_{key}"] = dps[key]
        out[f"peer_{key}"] = peer[key]
    out["smoke"] = bool(args.smoke)
    out["test_images"] = len(test["images"])
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = run(args)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from dpsnet.utils.io import atomic_write_json

    output = args.output or (None if args.smoke else DEFAULT_OUTPUT)
    if output:  # a smoke run's figures mean nothing: they never replace the real ones
        atomic_write_json(output, out, indent=1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
