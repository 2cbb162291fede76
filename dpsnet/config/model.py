"""MODEL.* and INPUT.*: DPSNet's counting view, weights loading, its input and CPU speed."""

from detectron2.config import CfgNode as CN

__all__ = ["add_model_config", "add_input_config", "add_cpu_config"]


def add_model_config(cfg: CN) -> None:
    """MODEL.DPSNET and MODEL.COUNTING_HEAD: the dual-pyramid counting view."""
    # Allow MODEL.WEIGHTS (and other weights files) in pickle format (.pkl): unpickling runs
    # any code the file carries, so only for files from a source you trust (README: safety).
    cfg.MODEL.TRUST_PICKLE = False
    # MODEL.WEIGHTS is a trunk to start from: load the backbone (and FPN) only and leave every
    # head randomly initialised, e.g. a detector trained on another class count. Otherwise a
    # head whose shape differs from the weights' (another NUM_CLASSES) is an error.
    cfg.MODEL.WEIGHTS_TRUNK_ONLY = False
    cfg.MODEL.DPSNET = CN()
    # Weight of the density (counting-view) loss added to the detection losses.
    cfg.MODEL.DPSNET.DENSITY_LOSS_WEIGHT = 1.0
    # Test-time flip (beyond the paper): every inference also runs the mirror image and merges
    # the two views (dpsnet/modeling/flip.py; a detection of one view only keeps half its score).
    # Twice the inference time; the distillation teacher has its own switch, DISTILL.TEACHER_FLIP.
    cfg.MODEL.DPSNET.TEST_FLIP = False
    # Cross-class merging (beyond the paper): at inference, detections of different products
    # overlapping above this IoU are one object, named by the best and scored by their summed
    # scores, capped at 1 (dpsnet/modeling/postprocess.py). Faster R-CNN's per-class NMS keeps a
    # box per product the classifier hesitates between, which splits an object's score between
    # look-alikes: counted twice at a low threshold, missed at a high one. 0: off (detectron2).
    cfg.MODEL.DPSNET.CROSS_CLASS_IOU = 0.0

    # The counting pyramid (the paper's second, top-down pyramid), built on the detection FPN's
    # outputs by the "build_dpsnet_resnet_fpn_backbone" backbone and fused at
    # MODEL.COUNTING_HEAD.STRIDE (P6 -> P5 -> P4 top-down, finer levels pooled down).
    cfg.MODEL.DPSNET.COUNT_PYRAMID = CN()
    # Detection-pyramid levels fused into the counting feature (the paper: P2-P6).
    cfg.MODEL.DPSNET.COUNT_PYRAMID.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    # Channels of the counting pyramid; 0: MODEL.FPN.OUT_CHANNELS.
    cfg.MODEL.DPSNET.COUNT_PYRAMID.OUT_CHANNELS = 0
    # Normalisation of its 1x1 lateral convs ("", "GN", "BN", ...); "same": MODEL.FPN.NORM.
    cfg.MODEL.DPSNET.COUNT_PYRAMID.NORM = "same"
    # Stop the counting losses' gradient at the detection levels (the paper: False, shared).
    # From scratch on a short schedule the shared gradient cost the detector most of its mAP.
    cfg.MODEL.DPSNET.COUNT_PYRAMID.DETACH_INPUT = False

    # Count-guided inference (beyond the paper): the counting view settles how many detections an
    # image keeps, instead of one global score threshold.
    cfg.MODEL.DPSNET.COUNT_GUIDED = CN()
    # Off by default: not measured yet.
    cfg.MODEL.DPSNET.COUNT_GUIDED.ENABLED = False
    # Count level that guides ("total", "supercategory" or "category"); one of COUNTING_HEAD.LEVELS.
    cfg.MODEL.DPSNET.COUNT_GUIDED.LEVEL = "total"
    # Detections scoring at least this are always kept, whatever the count says.
    cfg.MODEL.DPSNET.COUNT_GUIDED.KEEP_SCORE = 0.9
    # Detections scoring below this are always dropped; in between, the top-N by score are kept
    # (N: the rounded count of the detection's group).
    cfg.MODEL.DPSNET.COUNT_GUIDED.MIN_SCORE = 0.2

    cfg.MODEL.COUNTING_HEAD = CN()
    # Registered name in COUNTING_HEAD_REGISTRY; the paper's density head by default.
    cfg.MODEL.COUNTING_HEAD.NAME = "DensityCountingHead"
    # Backbone output the head reads (the counting pyramid's feature).
    cfg.MODEL.COUNTING_HEAD.IN_FEATURE = "count"
    # Density channels, level after level: "total" (1), "supercategory" (one per supercategory,
    # from the train dataset's metadata), "category" (one per class, MODEL.ROI_HEADS.NUM_CLASSES).
    cfg.MODEL.COUNTING_HEAD.LEVELS = ["total"]
    # Number of density channels; 0: derived from LEVELS and dataset metadata (DATASETS.TRAIN[0]).
    cfg.MODEL.COUNTING_HEAD.NUM_CHANNELS = 0
    # Channels of the head's 3x3 conv; 0: those of its input feature.
    cfg.MODEL.COUNTING_HEAD.CONV_DIM = 0
    # Normalisation after the 3x3 conv: "IN" (instance norm, the paper) or a detectron2 norm name.
    cfg.MODEL.COUNTING_HEAD.NORM = "IN"
    # Normalisation after the final 1x1 conv, before ReLU: "IN" (the paper) or "" (none).
    cfg.MODEL.COUNTING_HEAD.OUTPUT_NORM = "IN"
    # Final activation of the map: "relu" (the paper) or "softplus" (never stops passing gradient:
    # a ReLU whose inputs all turn negative leaves the map at zero for good).
    cfg.MODEL.COUNTING_HEAD.OUTPUT_ACTIVATION = "relu"
    # Stride of the density map in input pixels (the paper: 8, the P3 level).
    cfg.MODEL.COUNTING_HEAD.STRIDE = 8
    # Density mass of one object (the paper: 100); count = map sum / MASS.
    cfg.MODEL.COUNTING_HEAD.MASS = 100.0
    # Smallest Gaussian sigma, in density-map pixels (the paper: 1.0).
    cfg.MODEL.COUNTING_HEAD.MIN_SIGMA = 1.0
    # sigma = max(MIN_SIGMA, min(w, h) / 2 * SIGMA_SCALE), box size in density-map pixels
    # (the paper: 5 / 12).
    cfg.MODEL.COUNTING_HEAD.SIGMA_SCALE = 5.0 / 12.0
    # Beta of the smooth L1 density loss (mean over density pixels).
    cfg.MODEL.COUNTING_HEAD.SMOOTH_L1_BETA = 1.0
    # Weight of an extra L1 loss on each channel's count (map sum / MASS); 0: the paper's loss only.
    cfg.MODEL.COUNTING_HEAD.COUNT_LOSS_WEIGHT = 0.0


def add_input_config(cfg: CN) -> None:
    """INPUT.*: photometric augmentation through albumentations."""
    cfg.INPUT.ALBUMENTATIONS = CN()
    # Photometric albumentations transforms applied (in order) to training images after the
    # geometric ones, each "Name(arg=value, ...)" with literal arguments, e.g.
    # "RandomBrightnessContrast(brightness_limit=0.2, p=0.5)". Only image-only (pixel-level)
    # transforms are accepted: geometric ones would desynchronise boxes and density maps.
    cfg.INPUT.ALBUMENTATIONS.TRANSFORMS = []
    # Also apply them at test time (test-time photometric perturbation; normally off).
    cfg.INPUT.ALBUMENTATIONS.TEST = False
    # Largest image (width x height, read from the file's header before decoding) any tool
    # reads; a bigger one is skipped with its reason (a hostile header can claim gigapixels).
    cfg.INPUT.MAX_IMAGE_PIXELS = 50_000_000


def add_cpu_config(cfg: CN) -> None:
    """MODEL.PRECISION / MODEL.CHANNELS_LAST / DATALOADER.*: CPU speed (dpsnet.utils.precision)."""
    # CPU precision: "auto" (bfloat16 autocast only where a timing probe on this CPU says it is
    # faster; float32 where the CPU has no bf16 flags), "float32" or "bfloat16". CUDA uses
    # SOLVER.AMP.ENABLED instead.
    cfg.MODEL.PRECISION = "auto"
    # Channels-last layout for the trunk and FPN on CPU: "auto" (where the probe measures it
    # faster), "on" or "off".
    cfg.MODEL.CHANNELS_LAST = "auto"
    # Decode every training image once and keep it in memory (small sets such as the mini
    # world), so that the loader can run in-process and compute gets every core.
    cfg.DATALOADER.CACHE_IMAGES = False
