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
    # Distillation rounds after round 0 (round 0 trains on synthesized data only).
    cfg.DISTILL.NUM_ROUNDS = 3
    # Image-level score threshold of rounds 1, 2, ... (the paper's rising schedule); last repeats.
    cfg.DISTILL.THRESHOLD_SCHEDULE = [0.80, 0.85, 0.90, 0.95]
    # Score a detection needs to be kept from an image that fails the image-level test.
    cfg.DISTILL.INSTANCE_THRESHOLD = 0.95
    # In instance-level samples, detections scoring in [this, INSTANCE_THRESHOLD) are painted over.
    cfg.DISTILL.UNCERTAIN_THRESHOLD = 0.3
    # Colour of painted regions, in INPUT.FORMAT order; empty: MODEL.PIXEL_MEAN (zero input).
    cfg.DISTILL.PAINT_COLOR = []
    # Counting-view channels compared with detections: subset of total/supercategory/category in
    # channel order; empty: the levels the counting head predicts.
    cfg.DISTILL.COUNT_LEVELS = []
    # Student initialisation each round: "teacher" (the teacher's weights) or "scratch"
    # (MODEL.WEIGHTS, i.e. the same initialisation as round 0).
    cfg.DISTILL.STUDENT_INIT = "teacher"
    # Sampling ratio synthesized:pseudo-labelled images in the student's training batches.
    cfg.DISTILL.MIX_RATIO = [1.0, 1.0]
    # Training iterations of each student round (round 0 uses SOLVER.MAX_ITER).
    cfg.DISTILL.ITERS_PER_ROUND = 300
    # Weights of a synthesis-only model to use as round 0 instead of training it; empty: train.
    cfg.DISTILL.ROUND0_WEIGHTS = ""
    # Registered dataset of unlabelled checkout images to pseudo-label (its labels are never read).
    cfg.DISTILL.POOL_DATASET = "mini_rpc_pool"
    # Hidden ground truth of the pool, read only by the audit after selection; empty: the pool
    # metadata's "groundtruth_json" if any, else no audit.
    cfg.DISTILL.POOL_GROUNDTRUTH = ""
    # Held-out split every round is evaluated on (fixed-threshold cAcc per level).
    cfg.DISTILL.EVAL_DATASET = "mini_rpc_test"
    # Evaluate every round with count-guided inference both off and on (else as configured).
    cfg.DISTILL.COMPARE_COUNT_GUIDED = True
    # Allow a pool sharing images with the evaluation split (transductive protocol, reported).
    cfg.DISTILL.TRANSDUCTIVE = False


def _add_recognition_config(cfg: CN) -> None:
    """RECOGNITION.*: open-set recogniser and gallery (issue: open-set recognition)."""
    cfg.RECOGNITION = CN()


def _add_test_config(cfg: CN) -> None:
    """TEST.RPC.*: RPC checkout evaluation (issue: evaluation)."""
    cfg.TEST.RPC = CN()
    # Fixed score threshold for counting a detection in the headline checkout metrics.
    cfg.TEST.RPC.SCORE_THRESHOLD = 0.5
    # Also report rpctool's protocol: threshold searched on the evaluated set (optimistic).
    cfg.TEST.RPC.SEARCH_THRESHOLD = True
    # Compute box mAP50 / mmAP with pycocotools (the slowest part on large sets).
    cfg.TEST.RPC.COMPUTE_MAP = True
    # Levels to report besides "averaged" ([] = every level present in the ground truth).
    cfg.TEST.RPC.LEVELS = []
    # Rows in the "most miscounted" and "most confused categories" tables.
    cfg.TEST.RPC.TOP_K = 10
    # IoU for matching boxes (ignoring category) when finding confused categories.
    cfg.TEST.RPC.MATCH_IOU = 0.5
