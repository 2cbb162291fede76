"""DISTILL.*: the iterative knowledge distillation rounds."""

from detectron2.config import CfgNode as CN

__all__ = ["add_distill_config"]


def add_distill_config(cfg: CN) -> None:
    """DISTILL.*: iterative knowledge distillation rounds."""
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
    # Train a same-budget control arm each round (round r-1's control + ITERS_PER_ROUND
    # iterations on DATASETS.TRAIN only, same schedule and seed): the report's gain is against it.
    cfg.DISTILL.CONTROL = True
    # Uncertain detections of instance-level samples: "paint" (flat colour), "ignore" (image left
    # as is; the boxes become ignore regions of the RPN/ROI sampling) or "drop" (image not used).
    cfg.DISTILL.UNCERTAIN_MODE = "paint"
    # Counting-view channels that must agree for image-level acceptance: "all" (every channel the
    # view predicts), "total" or "per_category" (needs "category" in MODEL.COUNTING_HEAD.LEVELS).
    cfg.DISTILL.ACCEPT_RULE = "all"
    # The student's SOLVER.BASE_LR each round = SOLVER.BASE_LR * this.
    cfg.DISTILL.STUDENT_LR_FACTOR = 1.0
    # The student's warm-up iterations each round; -1: min(SOLVER.WARMUP_ITERS, iters // 10).
    cfg.DISTILL.STUDENT_WARMUP_ITERS = -1
    # Mean teacher: the next round's teacher is an EMA of the student's weights; 0: off.
    cfg.DISTILL.EMA_DECAY = 0.0
    # Weight averaging of every round after round 0, in both arms alike: the round's model
    # (thresholded, evaluated, the next round's start and teacher) is an exponential moving
    # average of its weights over the round's iterations with this decay, not its last weights;
    # 0: off. Excludes EMA_DECAY (the mean teacher), which averages the distilled arm only.
    cfg.DISTILL.AVERAGE_DECAY = 0.0
    # Label the pool with the teacher on the image and its horizontal flip, predictions merged.
    cfg.DISTILL.TEACHER_FLIP = False
    # Shorter side the teacher sees the pool images at (capped by INPUT.MAX_SIZE_TEST); 0:
    # INPUT.MIN_SIZE_TEST, as evaluation. Evaluation and the student are unchanged.
    cfg.DISTILL.TEACHER_MIN_SIZE = 0
    # A kept pseudo-label whose object a detection of another product (IoU >= 0.7) also claims
    # with at least this score becomes an ignore region instead (the teacher hesitates, typically
    # within a look-alike pair, and either label would teach its guess); 0: off.
    cfg.DISTILL.AMBIGUOUS_SCORE = 0.0
    # Set-valued pseudo-labels: a kept box names every product whose teacher probability is at
    # least this times that of the product it chose, and the student's box classifier is trained
    # on "one of these" (-log of their summed probability); 0: hard labels (the chosen product).
    cfg.DISTILL.CLASS_SET_RATIO = 0.0
    # With CLASS_SET_RATIO: two products are confusable on this pool when at least this share of
    # the confident boxes (>= INSTANCE_THRESHOLD) the teacher names one of them leave the other
    # within the ratio; every box named either then carries both (look-alikes found without
    # labels, so a twin named wrongly with confidence is still covered); 0: per box only.
    cfg.DISTILL.CLASS_SET_PAIR_SHARE = 0.0
    # Regress the student's boxes onto the pseudo boxes too; False: pseudo-labelled images train
    # the RPN and the box classifier only, box regression learns from the synthesized scenes
    # (a teacher's score tells how sure it is of the product, not how well its box fits).
    cfg.DISTILL.PSEUDO_BOX_REGRESSION = True
    # Labelled split on which each round's score threshold is chosen (max cAcc) and count-guided
    # inference is judged; never the pool or EVAL_DATASET; empty: TEST.RPC.SCORE_THRESHOLD.
    cfg.DISTILL.THRESHOLD_DATASET = ""
    # With no THRESHOLD_DATASET: this fraction of DATASETS.TRAIN[0]'s scenes is kept out of
    # training (seeded by SEED) and chooses the thresholds instead; 0: off.
    cfg.DISTILL.THRESHOLD_HOLDOUT = 0.0
    # Strong view for the student (Unbiased Teacher): photometric albumentations transforms, as
    # in INPUT.ALBUMENTATIONS.TRANSFORMS, applied to the pseudo-labelled images only (after the
    # INPUT ones), while the teacher labelled the plain image; empty: off.
    cfg.DISTILL.PSEUDO_AUGMENT = []
    # Learning curve: also evaluate both arms every this many training iterations; 0: off.
    cfg.DISTILL.CURVE_EVAL_PERIOD = 0
