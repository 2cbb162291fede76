"""dpsnet's config keys, added to a detectron2 config by ``add_dpsnet_config``.

Every script and test calls ``add_dpsnet_config(cfg)`` right after ``get_cfg()``. The keys live
by subtree: ``model.py`` (MODEL.*, INPUT.*), ``training.py`` (SOLVER.*, PRETRAIN.*,
DATASETS.REGISTER, TEST.RPC.*), ``synthesis.py`` (SYNTHESIS.*, RENDER.*), ``distill.py``
(DISTILL.*) and ``recognition.py`` (RECOGNITION.*); every key carries a one-line comment saying
what it does (and, where relevant, the paper's name for it).
"""

from detectron2.config import CfgNode as CN

from dpsnet.config.distill import add_distill_config
from dpsnet.config.model import add_cpu_config, add_input_config, add_model_config
from dpsnet.config.recognition import add_recognition_config
from dpsnet.config.synthesis import add_render_config, add_synthesis_config
from dpsnet.config.training import (
    add_datasets_config,
    add_pretrain_config,
    add_solver_config,
    add_test_config,
)

__all__ = ["add_dpsnet_config"]


def add_dpsnet_config(cfg: CN) -> None:
    """Add every dpsnet key to ``cfg`` (in place). Safe to call once per config."""
    add_model_config(cfg)
    add_input_config(cfg)
    add_synthesis_config(cfg)
    add_render_config(cfg)
    add_distill_config(cfg)
    add_recognition_config(cfg)
    add_pretrain_config(cfg)
    add_test_config(cfg)
    add_datasets_config(cfg)
    add_solver_config(cfg)
    add_cpu_config(cfg)
