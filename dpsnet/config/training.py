"""SOLVER.*, PRETRAIN.*, DATASETS.REGISTER and TEST.RPC.*: training and evaluation."""

from detectron2.config import CfgNode as CN

__all__ = ["add_solver_config", "add_pretrain_config", "add_datasets_config", "add_test_config"]


def add_solver_config(cfg: CN) -> None:
    """SOLVER.OPTIMIZER: detectron2's SGD or AdamW (dpsnet.engine.trainer.build_optimizer)."""
    # "SGD" (detectron2's, with SOLVER.MOMENTUM/NESTEROV) or "ADAMW" (SOLVER.ADAM_BETAS).
    cfg.SOLVER.OPTIMIZER = "SGD"
    # AdamW's (beta1, beta2).
    cfg.SOLVER.ADAM_BETAS = (0.9, 0.999)


def add_pretrain_config(cfg: CN) -> None:
    """PRETRAIN.*: the trunk as a crop classifier before detection (tools/pretrain_backbone.py)."""
    cfg.PRETRAIN = CN()
    # Datasets whose boxes give the labelled crops; empty: DATASETS.TRAIN. Training data only.
    cfg.PRETRAIN.DATASETS = []
    # Side of a crop in pixels (near the products' size at the detector's input scale).
    cfg.PRETRAIN.CROP_SIZE = 64
    # Context around a box on each side, as a fraction of its longer side.
    cfg.PRETRAIN.PADDING = 0.1
    # Training iterations of the crop classifier.
    cfg.PRETRAIN.MAX_ITER = 300
    # Crops per iteration.
    cfg.PRETRAIN.IMS_PER_BATCH = 64
    # AdamW learning rate after the warm-up (then cosine decay to 0 at MAX_ITER).
    cfg.PRETRAIN.BASE_LR = 0.002
    # Iterations of linear learning-rate warm-up.
    cfg.PRETRAIN.WARMUP_ITERS = 20
    # AdamW weight decay.
    cfg.PRETRAIN.WEIGHT_DECAY = 0.05
    # Lighting jitter strength (0-1) of the training crops.
    cfg.PRETRAIN.COLOR_JITTER = 0.5
    # Probability that a training crop is blurred.
    cfg.PRETRAIN.BLUR_PROB = 0.2
    # Share of the crops held out (seeded) to report the classifier's accuracy; never selects.
    cfg.PRETRAIN.HOLDOUT_FRACTION = 0.1


def add_datasets_config(cfg: CN) -> None:
    """DATASETS.REGISTER: datasets on disk that a config names without Python code."""
    # COCO/RPC-format datasets registered when the config is loaded (load_config), each a list
    # [name, json_file, image_root] or [name, json_file, image_root, categories_json]; e.g. the
    # synthesized scenes of tools/synthesize.py, so that DATASETS.TRAIN can name them.
    # categories_json fixes the class order (give the exemplars' JSON to share their classes).
    cfg.DATASETS.REGISTER = []


def add_test_config(cfg: CN) -> None:
    """TEST.RPC.*: RPC checkout evaluation."""
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
