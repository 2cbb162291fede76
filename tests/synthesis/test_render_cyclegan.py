"""The learned renderer: networks, a CPU smoke training run, exact resume, and rendering."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dpsnet.engine import load_config
from dpsnet.synthesis.render import CheckParams, render_dataset
from dpsnet.synthesis.render.cyclegan import PatchDiscriminator, ResnetGenerator, pad_to_multiple
from dpsnet.synthesis.render.cyclegan_renderer import (
    FINAL_MODEL,
    LAST_CHECKPOINT,
    CycleGANRenderer,
    load_generator,
)
from dpsnet.synthesis.render.cyclegan_train import CycleGANTrainer
from dpsnet.utils.io import BadInputError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "Render"


def _images(folder: Path, n: int, seed: int, tint) -> list[str]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        img = np.full((40, 52, 3), tint, np.uint8)
        for _ in range(3):
            x, y = (int(v) for v in rng.integers(0, 36, 2))
            cv2.rectangle(
                img, (x, y), (x + 12, y + 9), tuple(int(c) for c in rng.integers(0, 255, 3)), -1
            )
        files.append(str(folder / f"{i}.png"))
        cv2.imwrite(files[-1], img)
    return files


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("cyclegan")
    return _images(root / "a", 3, 0, (200, 200, 200)), _images(root / "b", 3, 1, (60, 90, 110))


def _smoke_cfg(out: Path, *opts):
    return load_config(
        str(CONFIGS / "cyclegan_smoke_cpu.yaml"), ["RENDER.CYCLEGAN.OUTPUT_DIR", str(out), *opts]
    )


def test_every_render_config_loads():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert len(files) >= 3
    for f in files:
        cfg = load_config(str(f))
        assert cfg.RENDER.METHOD in ("fast", "cyclegan", "folder", "none")


def test_networks_keep_the_image_size():
    g = ResnetGenerator(ngf=4, n_blocks=1)
    d = PatchDiscriminator(ndf=4, n_layers=3)
    x = torch.rand(2, 3, 37, 50) * 2 - 1
    padded, (h, w) = pad_to_multiple(x, 4)
    assert padded.shape[-2:] == (40, 52) and (h, w) == (37, 50)
    y = g(padded)[..., :h, :w]
    assert y.shape == x.shape and float(y.detach().abs().max()) <= 1.0
    assert d(torch.rand(2, 3, 64, 64)).shape == (2, 1, 6, 6)  # 70x70 PatchGAN on 64 px: 6x6


def test_smoke_training_writes_checkpoints_and_resumes_exactly(domains, tmp_path):
    a, b = domains
    straight = CycleGANTrainer(_smoke_cfg(tmp_path / "straight"), a, b)
    final = straight.train(resume=False)
    assert final.name == FINAL_MODEL and (tmp_path / "straight" / LAST_CHECKPOINT).is_file()
    history = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert [h["iteration"] for h in history] == [1, 2, 3, 4]
    assert all(np.isfinite(h[k]) for h in history for k in ("gan", "cycle", "identity", "d"))

    # A run that stopped at iteration 2 (its checkpoint), resumed by a new trainer up to 4.
    half = CycleGANTrainer(_smoke_cfg(tmp_path / "resumed", "RENDER.CYCLEGAN.MAX_ITER", "2"), a, b)
    half.train(resume=False)
    resumed = CycleGANTrainer(_smoke_cfg(tmp_path / "resumed"), a, b)
    resumed.train(resume=True)
    assert resumed.iteration == 4
    for name, p in straight.g_ab.state_dict().items():
        assert torch.equal(p, resumed.g_ab.state_dict()[name]), name
    for name, p in straight.d_b.state_dict().items():
        assert torch.equal(p, resumed.d_b.state_dict()[name]), name


def test_renderer_keeps_size_and_the_check_drops_a_broken_translation(domains, tmp_path):
    a, b = domains
    cfg = _smoke_cfg(tmp_path / "run")
    CycleGANTrainer(cfg, a, b).train(resume=False)
    renderer = CycleGANRenderer.from_config(cfg)
    img = cv2.imread(a[0])
    big = cv2.resize(img, (103, 79))  # larger than LOAD_SIZE, odd size: residual-detail path
    for x in (img, big):
        out = renderer.render(x)
        assert out.shape == x.shape and out.dtype == np.uint8
        assert np.array_equal(out, renderer.render(x))

    # A 4-iteration CycleGAN washes items out: the check must refuse its images.
    data = {
        "images": [{"id": 1, "file_name": "0.png", "width": 52, "height": 40}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [0, 0, 52, 40], "category_id": 1, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "x"}],
    }
    src = tmp_path / "src.json"
    src.write_text(json.dumps(data))
    renderer.residual_detail, renderer.infer_size = False, 0
    report = render_dataset(
        renderer, str(src), str(Path(a[0]).parent), tmp_path / "out", check=CheckParams(min_area=1)
    )
    assert report["dropped_by_check"] == 1 and report["kept"] == 0


def test_missing_or_foreign_weights_name_the_file(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        load_generator(tmp_path / "nope.pth", torch.device("cpu"))
    bad = tmp_path / "bad.pth"
    torch.save({"something": 1}, bad)
    with pytest.raises(BadInputError, match="bad.pth"):
        load_generator(bad, torch.device("cpu"))
