"""The distillation loop's bookkeeping: rounds, resume after a kill, report, guard in the tool."""

import importlib.util
import json
from pathlib import Path

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from dpsnet.config import add_dpsnet_config
from dpsnet.distill.loop import STATE_FILE, RunMismatchError, run_distillation
from dpsnet.utils.io import load_json

ROOT = Path(__file__).resolve().parents[2]


class Killed(Exception):
    """Stands for the process being killed."""


class FakeSteps:
    """Fast stand-ins for training, evaluation and labelling; records what was called."""

    def __init__(self, kill_at=None):
        self.calls = []
        self.kill_at = kill_at

    def _maybe_kill(self, what):
        self.calls.append(what)
        if what == self.kill_at:
            raise Killed(what)

    def label(self, cfg, teacher, r, out_json):
        self._maybe_kill(("label", r))
        assert teacher.endswith(f"round_{r - 1}/model_final.pth")
        data = {
            "images": [{"id": 1, "pool_image_id": 1, "pseudo_kind": "image"}],
            "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}],
        }
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(data))
        return {
            "image_level_images": 1,
            "instance_level_images": 0,
            "rejected_images": 0,
            "boxes": 1,
            "painted_boxes": 0,
        }

    def register(self, cfg, r, json_file):
        self.calls.append(("register", r))

    def train(self, cfg):
        r = int(Path(cfg.OUTPUT_DIR).name.split("_")[1])
        self._maybe_kill(("train", r))
        if r > 0:
            assert cfg.SOLVER.MAX_ITER == cfg.DISTILL.ITERS_PER_ROUND
            assert cfg.DATASETS.TRAIN[-1].endswith(f"_pseudo_r{r}")
            assert cfg.MODEL.WEIGHTS.endswith(f"round_{r - 1}/model_final.pth")
        return str(Path(cfg.OUTPUT_DIR) / "model_final.pth")

    def evaluate(self, cfg, weights, rdir):
        r = int(Path(rdir).name.split("_")[1])
        self._maybe_kill(("evaluate", r))
        out = {}
        for mode, bonus in (("count_guided_off", 0.0), ("count_guided_on", 1.0)):
            out[mode] = {
                "rpc": {"cAcc": 10.0 * r + bonus, "easy/cAcc": 20.0 * r, "search/cAcc": 50.0}
            }
        return out


@pytest.fixture
def cfg(tmp_path):
    c = get_cfg()
    add_dpsnet_config(c)
    c.OUTPUT_DIR = str(tmp_path / "run")
    c.DATASETS.TRAIN = ("synth",)
    c.DISTILL.NUM_ROUNDS = 3
    c.DISTILL.ITERS_PER_ROUND = 7
    c.SOLVER.MAX_ITER = 20
    c.SOLVER.STEPS = (10, 15)
    gt = tmp_path / "pool_gt.json"
    gt.write_text(
        json.dumps(
            {
                "images": [{"id": 1}],
                "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}],
            }
        )
    )
    c.DISTILL.POOL_GROUNDTRUTH = str(gt)
    c.freeze()
    return c


def _done(state):
    return {int(k): v["stage"] for k, v in state["rounds"].items()}


def test_full_run_and_report(cfg):
    steps = FakeSteps()
    state = run_distillation(cfg, steps, guard=False)
    assert _done(state) == {0: "done", 1: "done", 2: "done", 3: "done"}
    assert [c for c in steps.calls if c[0] == "train"] == [("train", r) for r in range(4)]
    assert [state["rounds"][str(r)]["threshold"] for r in (1, 2, 3)] == [0.80, 0.85, 0.90]
    audit = state["rounds"]["1"]["audit"]
    assert audit["all"]["precision"] == 1.0 and audit["pool_recall"] == 1.0
    out = Path(cfg.OUTPUT_DIR)
    report = load_json(out / "distill_report.json")
    assert report["averaged_cAcc_gain"]["count_guided_off"]["points"] == pytest.approx(30.0)
    assert report["rounds"][2]["cAcc"]["count_guided_on"] == {
        "averaged": 21.0,
        "easy": 40.0,
        "search/averaged": 50.0,
    }
    md = (out / "distill_report.md").read_text()
    assert "+30.00 points" in md and "| 3 | 0.90 | count_guided_on | 31.00 | 60.00 |" in md
    assert (out / "distill_report.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "kill_at, redone",
    [
        # Killed between rounds (round 1 done, round 2 not labelled yet).
        (("label", 2), [("label", 2), ("register", 2), ("train", 2), ("evaluate", 2)]),
        # Killed inside round 2's training: labels are kept, training resumes.
        (("train", 2), [("register", 2), ("train", 2), ("evaluate", 2)]),
    ],
)
def test_resume_after_kill(cfg, kill_at, redone):
    c = cfg.clone()
    c.defrost()
    c.DISTILL.NUM_ROUNDS = 2
    c.freeze()
    with pytest.raises(Killed):
        run_distillation(c, FakeSteps(kill_at=kill_at), guard=False)
    state = load_json(Path(c.OUTPUT_DIR) / STATE_FILE)
    assert _done(state)[1] == "done" and _done(state).get(2) != "done"
    again = FakeSteps()
    state = run_distillation(c, again, guard=False)
    assert again.calls == redone  # nothing of rounds 0 and 1 is redone
    assert _done(state) == {0: "done", 1: "done", 2: "done"}


def test_resume_refuses_other_settings(cfg):
    with pytest.raises(Killed):
        run_distillation(cfg, FakeSteps(kill_at=("train", 1)), guard=False)
    c = cfg.clone()
    c.defrost()
    c.DISTILL.THRESHOLD_SCHEDULE = [0.5, 0.6]
    c.freeze()
    with pytest.raises(RunMismatchError, match="THRESHOLD_SCHEDULE"):
        run_distillation(c, FakeSteps(), guard=False)


def _load_tool():
    spec = importlib.util.spec_from_file_location("distill_tool", ROOT / "tools" / "distill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_refuses_leaking_pool(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / f"{name}.png").write_bytes(name.encode())
    (tmp_path / "copy_of_a.png").write_bytes(b"a")
    names = {"pool": "distill_test_leak_pool", "test": "distill_test_leak_test"}
    DatasetCatalog.register(names["pool"], lambda: [{"file_name": str(tmp_path / "a.png")}])
    DatasetCatalog.register(
        names["test"],
        lambda: [
            {"file_name": str(tmp_path / "copy_of_a.png")},
            {"file_name": str(tmp_path / "b.png")},
        ],
    )
    try:
        tool = _load_tool()
        opts = [
            "DISTILL.POOL_DATASET",
            names["pool"],
            "DISTILL.EVAL_DATASET",
            names["test"],
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ]
        assert tool.cli(opts) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "--transductive" in err and names["test"] in err
        # With --transductive the guard lets it through (the run itself is not started here).
        cfg = tool.build_config(tool.build_parser().parse_args(["--transductive", *opts]))
        from dpsnet.distill.loop import check_guard

        assert check_guard(cfg) == {names["test"]: 1}
    finally:
        for n in names.values():
            DatasetCatalog.remove(n)
            if n in MetadataCatalog.list():
                MetadataCatalog.remove(n)
