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
        self.thresholds = []
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

    @staticmethod
    def _where(path):
        """(round, arm) of a round's folder: round_<r> or round_<r>/control."""
        path = Path(path)
        control = path.name == "control"
        rdir = path.parent if control else path
        return int(rdir.name.split("_")[1]), "control" if control else "distilled"

    def train(self, cfg):
        r, arm = self._where(cfg.OUTPUT_DIR)
        self._maybe_kill(("train", r) if arm == "distilled" else ("train_control", r))
        if r > 0:
            assert cfg.SOLVER.MAX_ITER == cfg.DISTILL.ITERS_PER_ROUND
            if arm == "distilled":
                assert cfg.DATASETS.TRAIN[-1].endswith(f"_pseudo_r{r}")
                assert cfg.MODEL.WEIGHTS.endswith(f"round_{r - 1}/model_final.pth")
            else:  # synthesized only, from the previous control (round 0 for round 1)
                assert cfg.DATASETS.TRAIN == ("synth",)
                prev = "round_0" if r == 1 else f"round_{r - 1}/control"
                assert cfg.MODEL.WEIGHTS.endswith(f"{prev}/model_final.pth")
        return str(Path(cfg.OUTPUT_DIR) / "model_final.pth")

    def evaluate(self, cfg, weights, rdir):
        rdir = Path(rdir)
        if rdir.name == "threshold":  # held-out data: searched threshold 0.3 + 0.1 r
            r, arm = self._where(rdir.parent)
            self.calls.append(("threshold", r, arm))
            assert cfg.DISTILL.EVAL_DATASET == cfg.DISTILL.THRESHOLD_DATASET
            off = {"search/threshold": 0.3 + 0.1 * r, "search/cAcc": 40.0}
            return {"count_guided_off": {"rpc": off}, "count_guided_on": {"rpc": {"cAcc": 45.0}}}
        r, arm = self._where(rdir)
        self._maybe_kill(("evaluate", r) if arm == "distilled" else ("evaluate_control", r))
        self.thresholds.append(cfg.TEST.RPC.SCORE_THRESHOLD)
        base = 10.0 * r if arm == "distilled" else 4.0 * r
        out = {}
        for mode, bonus in (("count_guided_off", 0.0), ("count_guided_on", 1.0)):
            out[mode] = {
                "rpc": {
                    "cAcc": base + bonus,
                    "easy/cAcc": 2 * base,
                    "search/cAcc": 50.0,
                    "mAP50": 60.0 + r,
                    "ACD": 1.0,
                }
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
    # Every round >= 1 has a control, trained after the round from the previous control.
    assert [c for c in steps.calls if c[0] == "train_control"] == [
        ("train_control", r) for r in (1, 2, 3)
    ]
    assert all(state["rounds"][str(r)]["control"]["stage"] == "done" for r in (1, 2, 3))
    assert [state["rounds"][str(r)]["threshold"] for r in (1, 2, 3)] == [0.80, 0.85, 0.90]
    audit = state["rounds"]["1"]["audit"]
    assert audit["all"]["precision"] == 1.0 and audit["pool_recall"] == 1.0
    out = Path(cfg.OUTPUT_DIR)
    report = load_json(out / "distill_report.json")
    assert "averaged_cAcc_gain" not in report  # the old cross-baseline figure is gone
    assert report["change_over_round0"]["count_guided_off"]["points"] == pytest.approx(30.0)
    r2 = report["rounds"][2]
    assert r2["cAcc"]["count_guided_on"] == {
        "averaged": 21.0,
        "easy": 40.0,
        "search/averaged": 50.0,
    }
    # gain = distilled - control of the same round: 10 r - 4 r.
    assert r2["gain"]["count_guided_off"]["cAcc"] == pytest.approx(12.0)
    assert r2["gain"]["count_guided_off"]["mAP50"] == pytest.approx(0.0)
    assert r2["control"]["figures"]["count_guided_off"]["easy/cAcc"] == pytest.approx(16.0)
    assert report["rounds"][0]["gain"] == {} and report["rounds"][0]["control"] is None
    head = report["headline"]
    assert head["final_round"] == 3 and head["mode"] == "count_guided_off"
    assert (head["round0_cacc"], head["final_cacc"], head["control_cacc"]) == (0.0, 30.0, 12.0)
    assert head["final_map50"] == 63.0 and head["threshold"] is None
    assert head["final_gain_interval"] is None  # no per-image files from these steps
    md = (out / "distill_report.md").read_text()
    assert "| 3 | count_guided_off | **gain** |  | +18.00 |" in md
    assert "| 3 | count_guided_on | control | - | 13.00 | 24.00 |" in md
    assert "not a gain of the method" in md
    assert (out / "distill_report.png").read_bytes()[:4] == b"\x89PNG"


def test_control_off(cfg):
    c = cfg.clone()
    c.defrost()
    c.DISTILL.CONTROL = False
    c.DISTILL.NUM_ROUNDS = 1
    c.freeze()
    steps = FakeSteps()
    state = run_distillation(c, steps, guard=False)
    assert "control" not in state["rounds"]["1"]
    assert not [x for x in steps.calls if x[0] == "train_control"]
    assert load_json(Path(c.OUTPUT_DIR) / "distill_report.json")["headline"]["control_cacc"] is None


class AveragingSteps(FakeSteps):
    """Training also saves the average (as the EMA hook does); records what each stage got."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def label(self, cfg, teacher, r, out_json):
        self.seen.append(("teacher", r, Path(teacher).parent.name, Path(teacher).name))
        return super().label(cfg, str(Path(teacher).with_name("model_final.pth")), r, out_json)

    def train(self, cfg):
        r, arm = self._where(cfg.OUTPUT_DIR)
        self.calls.append(("train", r) if arm == "distilled" else ("train_control", r))
        self.seen.append(("init", r, arm, cfg.DISTILL.EMA_DECAY, Path(cfg.MODEL.WEIGHTS).name))
        out = Path(cfg.OUTPUT_DIR)
        if cfg.DISTILL.EMA_DECAY > 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "model_ema.pth").write_bytes(b"")
        return str(out / "model_final.pth")


def test_average_decay_makes_the_average_each_arms_round_model(cfg):
    c = cfg.clone()
    c.defrost()
    c.DISTILL.NUM_ROUNDS = 2
    c.DISTILL.AVERAGE_DECAY = 0.99
    c.MODEL.WEIGHTS = "init.pth"
    c.freeze()
    steps = AveragingSteps()
    state = run_distillation(c, steps, guard=False)
    rounds = state["rounds"]
    assert rounds["0"]["weights"].endswith("round_0/model_final.pth")  # round 0 not averaged
    for r in ("1", "2"):
        assert rounds[r]["weights"].endswith(f"round_{r}/model_ema.pth")
        assert rounds[r]["control"]["weights"].endswith(f"round_{r}/control/model_ema.pth")
    # Both arms average; each next round starts from (and is labelled by) the average.
    inits = [x for x in steps.seen if x[0] == "init"]
    assert inits == [
        ("init", 0, "distilled", 0.0, "init.pth"),
        ("init", 1, "distilled", 0.99, "model_final.pth"),
        ("init", 1, "control", 0.99, "model_final.pth"),
        ("init", 2, "distilled", 0.99, "model_ema.pth"),
        ("init", 2, "control", 0.99, "model_ema.pth"),
    ]
    assert ("teacher", 2, "round_1", "model_ema.pth") in steps.seen


def test_average_decay_without_a_saved_average_fails(cfg):
    c = cfg.clone()
    c.defrost()
    c.DISTILL.NUM_ROUNDS = 1
    c.DISTILL.AVERAGE_DECAY = 0.99
    c.freeze()
    with pytest.raises(FileNotFoundError, match="model_ema.pth"):
        run_distillation(c, FakeSteps(), guard=False)


class PerImageSteps(FakeSteps):
    """Evaluation also writes the evaluator's per-image exactness, as the RPC evaluator does:
    of 100 images the distilled arm gets the first 30 + 10 r right, the control the first 30."""

    def evaluate(self, cfg, weights, rdir):
        out = super().evaluate(cfg, weights, rdir)
        if Path(rdir).name != "threshold":
            r, arm = self._where(rdir)
            right = 30 + (10 * r if arm == "distilled" else 0)
            per_image = {"image_ids": list(range(100)), "exact": [i < right for i in range(100)]}
            for mode in out:
                (Path(rdir) / f"eval_{mode}").mkdir(parents=True, exist_ok=True)
                (Path(rdir) / f"eval_{mode}" / "rpc_per_image.json").write_text(
                    json.dumps(per_image)
                )
        return out


def test_gain_interval_paired_over_the_evaluated_images(cfg):
    state = run_distillation(cfg, PerImageSteps(), guard=False)
    for r in (1, 2, 3):
        found = state["rounds"][str(r)]["gain_interval"]["count_guided_off"]
        assert found["difference"] == pytest.approx(10.0 * r)
        assert (found["first_only"], found["second_only"], found["images"]) == (10 * r, 0, 100)
        assert 0 < found["low"] < 10.0 * r < found["high"]  # all wins: the interval avoids 0
    report = load_json(Path(cfg.OUTPUT_DIR) / "distill_report.json")
    assert report["rounds"][1]["gain_interval"]["count_guided_on"]["difference"] == 10.0
    assert report["rounds"][0]["gain_interval"] == {}
    md = (Path(cfg.OUTPUT_DIR) / "distill_report.md").read_text()
    low, high = (found[k] for k in ("low", "high"))
    assert f"| 3 | count_guided_off | **gain** |  | +18.00 [{low:+.2f}, {high:+.2f}] |" in md
    assert "paired bootstrap" in md
    assert report["headline"]["final_gain_interval"] == [low, high]
    assert f"gain 95 % interval [{low:+.2f}, {high:+.2f}]), mAP50" in md


class TruncatedPerImageSteps(PerImageSteps):
    """The control's per-image file of one mode is cut short (a disk filled up, say)."""

    def evaluate(self, cfg, weights, rdir):
        out = super().evaluate(cfg, weights, rdir)
        if Path(rdir).name == "control":
            (Path(rdir) / "eval_count_guided_on" / "rpc_per_image.json").write_text('{"image_')
        return out


def test_gain_interval_skips_an_unreadable_file(cfg, caplog):
    state = run_distillation(cfg, TruncatedPerImageSteps(), guard=False)
    found = state["rounds"]["1"]["gain_interval"]
    assert list(found) == ["count_guided_off"]  # the other mode is left out, the run goes on
    assert _done(state) == {0: "done", 1: "done", 2: "done", 3: "done"}
    assert "rpc_per_image.json: malformed JSON" in caplog.text


def test_gain_interval_empty_without_per_image_files(cfg):
    state = run_distillation(cfg, FakeSteps(), guard=False)
    assert state["rounds"]["1"]["gain_interval"] == {}


def test_threshold_chosen_on_held_out_and_used(cfg):
    c = cfg.clone()
    c.defrost()
    c.DISTILL.NUM_ROUNDS = 1
    c.DISTILL.THRESHOLD_DATASET = "some_val"
    c.TEST.RPC.SEARCH_THRESHOLD = False
    c.freeze()
    steps = FakeSteps()
    state = run_distillation(c, steps, guard=False)
    assert [x for x in steps.calls if x[0] == "threshold"] == [
        ("threshold", 0, "distilled"),
        ("threshold", 1, "distilled"),
        ("threshold", 1, "control"),
    ]
    # Each arm is evaluated at the threshold chosen for its own model.
    assert steps.thresholds == pytest.approx([0.3, 0.4, 0.4])
    choice = state["rounds"]["1"]["threshold_choice"]
    assert choice["source"] == "some_val" and choice["count_guided_default"] is True
    head = load_json(Path(c.OUTPUT_DIR) / "distill_report.json")["headline"]
    assert head["threshold"] == pytest.approx(0.4) and head["mode"] == "count_guided_on"
    assert head["final_cacc"] == 11.0 and head["threshold_source"] == "some_val"


@pytest.mark.parametrize("name", ["mini_test", "pool"])
def test_threshold_dataset_never_eval_or_pool(cfg, name):
    c = cfg.clone()
    c.defrost()
    c.DISTILL.EVAL_DATASET = "mini_test"
    c.DISTILL.POOL_DATASET = "pool"
    c.DISTILL.THRESHOLD_DATASET = name
    c.freeze()
    with pytest.raises(ValueError, match="THRESHOLD_DATASET"):
        run_distillation(c, FakeSteps(), guard=False)


def test_curve_points_evaluated_and_reported(cfg):
    c = cfg.clone()
    c.defrost()
    c.DISTILL.NUM_ROUNDS = 1
    c.freeze()
    for sub in ("round_0", "round_1", "round_1/control"):
        d = Path(c.OUTPUT_DIR) / sub
        d.mkdir(parents=True)
        (d / "curve_0000005.pth").write_bytes(b"")
    state = run_distillation(c, FakeSteps(), guard=False)
    assert state["rounds"]["1"]["curve"]["5"]["iteration"] == 20 + 5
    curve = load_json(Path(c.OUTPUT_DIR) / "distill_report.json")["curve"]
    # round 0 (5, 20), then the round's own curve point and its final model (25, 27).
    assert [p["iteration"] for p in curve["distilled"]] == [5, 20, 25, 27]
    assert [p["iteration"] for p in curve["control"]] == [5, 20, 25, 27]
    assert (Path(c.OUTPUT_DIR) / "distill_curve.png").is_file()
    assert "## Learning curve" in (Path(c.OUTPUT_DIR) / "distill_report.md").read_text()


@pytest.mark.parametrize(
    "kill_at, redone",
    [
        # Killed between rounds (round 1 done, round 2 not labelled yet).
        (
            ("label", 2),
            [
                ("label", 2),
                ("register", 2),
                ("train", 2),
                ("evaluate", 2),
                ("train_control", 2),
                ("evaluate_control", 2),
            ],
        ),
        # Killed inside round 2's training: labels are kept, training resumes.
        (("train", 2), [("register", 2), ("train", 2), ("evaluate", 2)]),
        # Killed inside round 2's control: the distilled round 2 is not redone.
        (("train_control", 2), [("train_control", 2), ("evaluate_control", 2)]),
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
    r2 = state["rounds"].get("2", {})
    assert _done(state)[1] == "done"
    assert r2.get("stage") != "done" or r2.get("control", {}).get("stage") != "done"
    again = FakeSteps()
    state = run_distillation(c, again, guard=False)
    if kill_at[0] == "train":
        redone = [*redone, ("train_control", 2), ("evaluate_control", 2)]
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


def test_audit_reads_a_labelled_pool_split(tmp_path):
    from dpsnet.distill.loop import _groundtruth_path

    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({"images": [], "annotations": []}))
    name = "distill_test_labelled_pool"
    MetadataCatalog.get(name).set(json_file=str(ann), evaluator_type="rpc")
    try:
        c = get_cfg()
        add_dpsnet_config(c)
        c.DISTILL.POOL_DATASET = name
        assert _groundtruth_path(c) == str(ann)
        MetadataCatalog.remove(name)
        MetadataCatalog.get(name).set(json_file=str(ann), evaluator_type=None)  # unlabelled
        assert _groundtruth_path(c) is None
    finally:
        MetadataCatalog.remove(name)


@pytest.mark.parametrize("seed", [3, -1])
def test_each_stage_trains_from_its_own_seed(monkeypatch, seed):
    """Detectron2Steps.train re-seeds before building the trainer: what ran before it in the
    process (another arm's training) does not change a stage's random draws."""
    import numpy as np
    import torch

    from dpsnet.distill import steps as steps_module

    drawn = []

    class Recorder:
        def __init__(self, cfg):
            drawn.append((int(np.random.randint(1 << 30)), int(torch.randint(1 << 30, (1,)))))

        def resume_or_load(self, resume):
            pass

        def train(self):
            pass

    monkeypatch.setattr(steps_module, "DistillTrainer", Recorder)
    c = get_cfg()
    c.SEED = seed
    steps = steps_module.Detectron2Steps()
    steps.train(c)
    np.random.rand(17)  # another arm's training consumed the global RNGs meanwhile
    torch.rand(5)
    steps.train(c)
    assert (drawn[0] == drawn[1]) == (seed >= 0)
