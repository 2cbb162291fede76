"""tools/train_net.py: multi-process CPU training (spawn and torchrun), resume, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONFIG = HERE / "tiny_frcnn.yaml"
PROBE = HERE / "ddp_probe.py"
TRAIN_NET = ROOT / "tools" / "train_net.py"


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    """Six 96x96 images with coloured rectangles of three categories, in COCO format."""
    root = tmp_path_factory.mktemp("tiny_coco")
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(6):
        img = np.full((96, 96, 3), 90, np.uint8)
        for _ in range(2):
            x, y = (int(v) for v in rng.integers(5, 50, size=2))
            w, h = (int(v) for v in rng.integers(15, 40, size=2))
            cat = int(rng.integers(1, 4))
            cv2.rectangle(img, (x, y), (x + w, y + h), (60 * cat, 255 - 60 * cat, 40), -1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        cv2.imwrite(str(root / f"{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 96, "height": 96})
    categories = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]
    (root / "train.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return root


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _run(cmd, timeout=240):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _check_ranks(report: Path, out: Path):
    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["local_rank"] for r in ranks] == [0, 1]
    assert [r["iter"] for r in ranks] == [3, 3]  # MAX_ITER 3: iterations 0, 1, 2 ran
    # Only the main process writes checkpoints.
    assert [r["saves_checkpoints"] for r in ranks] == [True, False]
    assert (out / "model_final.pth").is_file()
    w0 = torch.load(report / "weights_rank0.pth")
    w1 = torch.load(report / "weights_rank1.pth")
    assert w0.keys() == w1.keys()
    # Each rank saw different images; identical weights mean gradients were averaged.
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    final = torch.load(out / "model_final.pth", weights_only=False)["model"]
    assert all(torch.equal(final[k], w0[k]) for k in w0)


@pytest.mark.slow
def test_num_gpus_2_runs_two_cpu_processes_over_gloo(tiny_coco, tmp_path):
    out, report = tmp_path / "out", tmp_path / "report"
    report.mkdir()
    args = ["--config-file", str(CONFIG), "--num-gpus", "2", "OUTPUT_DIR", str(out)]
    proc = _run([sys.executable, str(PROBE), str(tiny_coco), str(report), *args])
    _check_ranks(report, out)
    assert "CUDA is not available" in proc.stdout + proc.stderr or torch.cuda.is_available()


@pytest.mark.slow
def test_torchrun_env_initialisation(tiny_coco, tmp_path):
    out, report = tmp_path / "out", tmp_path / "report"
    report.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = ["--config-file", str(CONFIG), "OUTPUT_DIR", str(out)]
    _run([*cmd, str(PROBE), str(tiny_coco), str(report), *args])
    _check_ranks(report, out)


@pytest.mark.slow
def test_resume_after_kill_continues_from_last_checkpoint(tiny_coco, tmp_path):
    out, report = tmp_path / "out", tmp_path / "report"
    report.mkdir()
    base = [sys.executable, str(PROBE), str(tiny_coco), str(report), "--config-file", str(CONFIG)]
    opts = ["OUTPUT_DIR", str(out), "SOLVER.CHECKPOINT_PERIOD", "2"]
    proc = subprocess.Popen(
        [*base, *opts, "SOLVER.MAX_ITER", "100000"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = out / "model_0000003.pth"
    deadline = time.time() + 180
    while not (ckpt.is_file() and (out / "last_checkpoint").read_text() == ckpt.name):
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint written in time"
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model_final.pth").exists()
    last = (out / "last_checkpoint").read_text().strip()
    done = torch.load(out / last, weights_only=False)["iteration"]
    assert done >= 3

    resumed = _run([*base, "--resume", *opts, "SOLVER.MAX_ITER", str(done + 3)])
    log = resumed.stdout + resumed.stderr
    assert f"Starting training from iteration {done + 1}" in log
    assert json.loads((report / "rank0.json").read_text())["iter"] == done + 3
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == done + 2


def _train_net(*args):
    return subprocess.run(
        [sys.executable, str(TRAIN_NET), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config-file", "no/such.yaml"], "error: config file not found: no/such.yaml"),
        (
            ["--config-file", str(CONFIG), "MODEL.NO_SUCH_KEY", "1"],
            "error: unknown config key 'MODEL.NO_SUCH_KEY' in command-line overrides",
        ),
        (
            ["--config-file", str(CONFIG), "MODEL.WEIGHTS", "missing/model.pth"],
            "error: MODEL.WEIGHTS file not found: missing/model.pth",
        ),
    ],
)
def test_bad_input_is_a_one_line_error(args, message):
    proc = _train_net(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip() == message


def test_unknown_key_in_yaml_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  NOT_A_KEY: 3\n")
    proc = _train_net("--config-file", str(bad))
    assert proc.returncode == 2
    # detectron2 may log a notice first (no VERSION in the file); the error is the last line.
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: {bad}: unknown config key 'MODEL.NOT_A_KEY'"
    )
    assert "Traceback" not in proc.stderr
