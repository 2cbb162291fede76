"""SOLVER.OPTIMIZER: detectron2's SGD by default, AdamW on request, a clear error otherwise."""

import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from dpsnet import add_dpsnet_config
from dpsnet.engine.trainer import build_optimizer


def _cfg(**solver):
    cfg = get_cfg()
    add_dpsnet_config(cfg)
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def test_sgd_is_the_default():
    opt = build_optimizer(_cfg(), nn.Linear(3, 2))
    assert type(opt) is torch.optim.SGD
    assert opt.param_groups[0]["momentum"] == 0.9


def test_adamw_takes_lr_betas_and_weight_decay():
    cfg = _cfg(OPTIMIZER="adamw", BASE_LR=3e-4, WEIGHT_DECAY=0.01, ADAM_BETAS=(0.8, 0.99))
    model = nn.Sequential(nn.Linear(3, 2), nn.GroupNorm(1, 2))
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["lr"] for g in opt.param_groups} == {3e-4}
    assert all(g["betas"] == (0.8, 0.99) for g in opt.param_groups)
    # detectron2's groups: norm weights get SOLVER.WEIGHT_DECAY_NORM (0), the rest 0.01.
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.01}


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="'LION'"):
        build_optimizer(_cfg(OPTIMIZER="LION"), nn.Linear(3, 2))
