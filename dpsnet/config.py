"""dpsnet's config keys, added to a detectron2 config by ``add_dpsnet_config``.

Every script and test calls ``add_dpsnet_config(cfg)`` right after ``get_cfg()``. Each subsystem
owns one ``_add_*`` function below; every key carries a one-line comment saying what it does
(and, where relevant, the paper's name for it).
"""

from detectron2.config import CfgNode as CN


def add_dpsnet_config(cfg: CN) -> None:
    """Add every dpsnet key to ``cfg`` (in place). Safe to call once per config."""
    _add_model_config(cfg)
    _add_input_config(cfg)
    _add_synthesis_config(cfg)
    _add_render_config(cfg)
    _add_distill_config(cfg)
    _add_recognition_config(cfg)
    _add_test_config(cfg)


def _add_model_config(cfg: CN) -> None:
    """MODEL.DPSNET and MODEL.COUNTING_HEAD: the dual-pyramid counting view (issue: model)."""
    cfg.MODEL.DPSNET = CN()
    # Weight of the density (counting-view) loss added to the detection losses.
    cfg.MODEL.DPSNET.DENSITY_LOSS_WEIGHT = 1.0


def _add_input_config(cfg: CN) -> None:
    """INPUT.*: photometric augmentation through albumentations (issue: model)."""


def _add_synthesis_config(cfg: CN) -> None:
    """SYNTHESIS.*: masks, pose pruning and scene composition (issue: synthesis)."""
    cfg.SYNTHESIS = CN()
    # Seed of every random choice in synthesis; image i uses (SEED, i).
    cfg.SYNTHESIS.SEED = 0


def _add_render_config(cfg: CN) -> None:
    """RENDER.*: translation of synthesized scenes toward the real look (issue: rendering)."""
    cfg.RENDER = CN()


def _add_distill_config(cfg: CN) -> None:
    """DISTILL.*: iterative knowledge distillation rounds (issue: distillation)."""
    cfg.DISTILL = CN()


def _add_recognition_config(cfg: CN) -> None:
    """RECOGNITION.*: open-set recogniser and gallery (issue: open-set recognition)."""
    cfg.RECOGNITION = CN()


def _add_test_config(cfg: CN) -> None:
    """TEST.RPC.*: RPC checkout evaluation (issue: evaluation)."""
    cfg.TEST.RPC = CN()
    # Fixed score threshold for counting a detection in the headline checkout metrics.
    cfg.TEST.RPC.SCORE_THRESHOLD = 0.5
