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
    _add_pretrain_config(cfg)
    _add_test_config(cfg)
    _add_datasets_config(cfg)
    _add_solver_config(cfg)
    _add_cpu_config(cfg)


def _add_cpu_config(cfg: CN) -> None:
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


def _add_solver_config(cfg: CN) -> None:
    """SOLVER.OPTIMIZER: detectron2's SGD or AdamW (dpsnet.engine.trainer.build_optimizer)."""
    # "SGD" (detectron2's, with SOLVER.MOMENTUM/NESTEROV) or "ADAMW" (SOLVER.ADAM_BETAS).
    cfg.SOLVER.OPTIMIZER = "SGD"
    # AdamW's (beta1, beta2).
    cfg.SOLVER.ADAM_BETAS = (0.9, 0.999)


def _add_pretrain_config(cfg: CN) -> None:
    """PRETRAIN.*: the trunk as a crop classifier before detection (tools/pretrain_backbone.py)."""
    cfg.PRETRAIN = CN()
    # Datasets whose boxes give the labelled crops; empty: DATASETS.TRAIN. Training data only.
    cfg.PRETRAIN.DATASETS = []
    # Side of a crop in pixels (near the products' size at the detector's input scale).
    cfg.PRETRAIN.CROP_SIZE = 64
    # Context around a box on each side, as a fraction of its longer side.
    cfg.PRETRAIN.PADDING = 0.1
    # Iterations, crops per iteration, AdamW learning rate (linear warm-up, then cosine).
    cfg.PRETRAIN.MAX_ITER = 300
    cfg.PRETRAIN.IMS_PER_BATCH = 64
    cfg.PRETRAIN.BASE_LR = 0.002
    cfg.PRETRAIN.WARMUP_ITERS = 20
    cfg.PRETRAIN.WEIGHT_DECAY = 0.05
    # Lighting jitter strength (0-1) and blur probability of the training crops.
    cfg.PRETRAIN.COLOR_JITTER = 0.5
    cfg.PRETRAIN.BLUR_PROB = 0.2
    # Share of the crops held out (seeded) to report the classifier's accuracy; never selects.
    cfg.PRETRAIN.HOLDOUT_FRACTION = 0.1


def _add_datasets_config(cfg: CN) -> None:
    """DATASETS.REGISTER: datasets on disk that a config names without Python code."""
    # COCO/RPC-format datasets registered when the config is loaded (load_config), each a list
    # [name, json_file, image_root] or [name, json_file, image_root, categories_json]; e.g. the
    # synthesized scenes of tools/synthesize.py, so that DATASETS.TRAIN can name them.
    # categories_json fixes the class order (give the exemplars' JSON to share their classes).
    cfg.DATASETS.REGISTER = []


def _add_model_config(cfg: CN) -> None:
    """MODEL.DPSNET and MODEL.COUNTING_HEAD: the dual-pyramid counting view (issue: model)."""
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
    # Off by default until the distillation issue has measured it.
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


def _add_input_config(cfg: CN) -> None:
    """INPUT.*: photometric augmentation through albumentations (issue: model)."""
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


def _add_synthesis_config(cfg: CN) -> None:
    """SYNTHESIS.*: masks, pose pruning and scene composition (issue: synthesis)."""
    cfg.SYNTHESIS = CN()
    # Seed of every random choice in synthesis; image i uses (SEED, i).
    cfg.SYNTHESIS.SEED = 0
    _add_synthesis_masks_config(cfg)
    _add_synthesis_compose_config(cfg)


def _add_synthesis_masks_config(cfg: CN) -> None:
    """SYNTHESIS.MASKS.* and SYNTHESIS.POSE.*: exemplar masks and pose pruning."""
    cfg.SYNTHESIS.MASKS = CN()
    # Coarse mask: "grabcut" (GrabCut seeded by the box) or "edges" (the authors' recipe:
    # bilateral smoothing, edges, hole filling, erosion and median blur).
    cfg.SYNTHESIS.MASKS.METHOD = "grabcut"
    # Context ring around the box (sure background for GrabCut), fraction of its longer side.
    cfg.SYNTHESIS.MASKS.CONTEXT = 0.25
    # GrabCut iterations.
    cfg.SYNTHESIS.MASKS.GRABCUT_ITERATIONS = 3
    # Longer side (pixels) of the working copy of box + context; bounds the cost per exemplar.
    cfg.SYNTHESIS.MASKS.MAX_SIDE = 160
    # Gradient magnitude (grey levels per pixel) that counts as an image edge (quality score).
    cfg.SYNTHESIS.MASKS.EDGE_THRESHOLD = 16.0
    # Exemplars whose final mask scores below this quality (in [0, 1]) are dropped ("quality").
    cfg.SYNTHESIS.MASKS.MIN_QUALITY = 0.5
    cfg.SYNTHESIS.MASKS.REFINE = CN()
    # Refinement: "matting" (snap the outline where the local coverage estimate crosses 1/2),
    # "net" (the method's small network trained on the clean coarse masks, then "matting"),
    # "none". "matting" measured best on the mini world (dpsnet/synthesis/masks.py).
    cfg.SYNTHESIS.MASKS.REFINE.METHOD = "matting"
    # Half-width (pixels) of the outline band that the matting snap re-decides.
    cfg.SYNTHESIS.MASKS.REFINE.BAND = 1
    # Gaussian sigma (pixels) of the local product/background colour means of the snap.
    cfg.SYNTHESIS.MASKS.REFINE.RADIUS = 3.0
    # Least product/background colour difference (grey levels) for the snap to re-decide a pixel.
    cfg.SYNTHESIS.MASKS.REFINE.MIN_CONTRAST = 12.0
    # Snap passes.
    cfg.SYNTHESIS.MASKS.REFINE.ITERATIONS = 1
    cfg.SYNTHESIS.MASKS.REFINE.NET = CN()
    # Coarse masks scoring at least this quality train the network (the method's "clean" masks).
    cfg.SYNTHESIS.MASKS.REFINE.NET.MIN_QUALITY = 0.9
    # Side of the network's square input (the box plus context, resized).
    cfg.SYNTHESIS.MASKS.REFINE.NET.INPUT_SIZE = 64
    # Channels of the network's first level (doubled at each of its two lower levels).
    cfg.SYNTHESIS.MASKS.REFINE.NET.WIDTH = 16
    # Training iterations.
    cfg.SYNTHESIS.MASKS.REFINE.NET.ITERATIONS = 300
    # Training batch size.
    cfg.SYNTHESIS.MASKS.REFINE.NET.BATCH_SIZE = 16
    # Adam learning rate (cosine schedule).
    cfg.SYNTHESIS.MASKS.REFINE.NET.LR = 3e-3
    # Most clean exemplars used for training (a seeded choice when there are more).
    cfg.SYNTHESIS.MASKS.REFINE.NET.MAX_TRAIN = 2000

    cfg.SYNTHESIS.POSE = CN()
    # Pose pruning on/off (off: only empty, unreadable and low-quality exemplars are dropped).
    cfg.SYNTHESIS.POSE.ENABLED = True
    # Keep an exemplar when its mask area / the largest mask area of its product is above this
    # (the paper: 0.45); thin side views fall below it.
    cfg.SYNTHESIS.POSE.MIN_AREA_RATIO = 0.45


def _add_synthesis_compose_config(cfg: CN) -> None:
    """SYNTHESIS.COMPOSE.*: checkout-scene composition (tools/synthesize.py)."""
    cfg.SYNTHESIS.COMPOSE = CN()
    # index.json of tools/extract_masks.py: its items with kept=true are pasted.
    cfg.SYNTHESIS.COMPOSE.MASKS_INDEX = ""
    # Category ids whose exemplars are never pasted (e.g. the products an open-set recogniser
    # holds out, so that they reach it through the gallery alone); the categories stay listed.
    cfg.SYNTHESIS.COMPOSE.EXCLUDE_CATEGORIES = []
    # Go on (with a loud warning per product) when a category of the index has no usable
    # exemplar left (all missing, pruned or unreadable); otherwise that is an error, since the
    # product would silently vanish from every scene.
    cfg.SYNTHESIS.COMPOSE.ALLOW_MISSING_PRODUCTS = False
    # Output folder: instances.json, images/, labels/ (per-image labels, for resuming), report.
    cfg.SYNTHESIS.COMPOSE.OUTPUT_DIR = "output/synth"
    # Number of scenes; scene i depends only on (SYNTHESIS.SEED, i), the config and the index.
    cfg.SYNTHESIS.COMPOSE.NUM_IMAGES = 1000
    # Scene size [height, width] in pixels.
    cfg.SYNTHESIS.COMPOSE.IMAGE_SIZE = [800, 800]
    # Relative shares of easy, medium and hard scenes (spread evenly over the image indices).
    cfg.SYNTHESIS.COMPOSE.LEVEL_MIX = [1.0, 1.0, 1.0]
    # [min, max] categories per scene for easy, medium, hard (RPC's scheme: 3-4, 5-7, 8-10).
    cfg.SYNTHESIS.COMPOSE.CATEGORIES = [[3, 4], [5, 7], [8, 10]]
    # [min, max] instances per scene for easy, medium, hard (RPC: <=10, 10-15, 15-20).
    cfg.SYNTHESIS.COMPOSE.INSTANCES = [[3, 10], [10, 15], [15, 20]]
    # Item scale drawn uniformly in [min, max] (the paper: 0.4-0.7), in SCALE_UNIT.
    cfg.SYNTHESIS.COMPOSE.SCALE_RANGE = [0.4, 0.7]
    # "image": scale x (scene side / exemplar photo side), so items keep their share of the
    # picture at any IMAGE_SIZE; "pixel": scale of the exemplar's pixels (the authors' code).
    cfg.SYNTHESIS.COMPOSE.SCALE_UNIT = "image"
    # Rotation in degrees drawn uniformly in [min, max] (the paper: 0-360).
    cfg.SYNTHESIS.COMPOSE.ROTATION_RANGE = [0.0, 360.0]
    # Probability of mirroring an item (mirrors its print too, so 0 by default).
    cfg.SYNTHESIS.COMPOSE.FLIP_PROB = 0.0
    # Largest box IoU of a new item with any placed one (the paper: 0.5).
    cfg.SYNTHESIS.COMPOSE.MAX_IOU = 0.5
    # When no tried position meets the limit it grows by this step up to 1.0, where any
    # position fits: placement always ends.
    cfg.SYNTHESIS.COMPOSE.IOU_RELAX_STEP = 0.1
    # Random positions tried at each IoU limit.
    cfg.SYNTHESIS.COMPOSE.PLACEMENT_ATTEMPTS = 30
    # Border kept free of items, as a fraction of the scene's shorter side.
    cfg.SYNTHESIS.COMPOSE.MARGIN = 0.02
    # An instance hidden by later items beyond this share of its pixels is dropped from the
    # labels (what is left of it stays in the image).
    cfg.SYNTHESIS.COMPOSE.MAX_OCCLUDED = 0.5
    # While the IoU limit is below 1.0, placement also refuses positions that would hide an
    # earlier item beyond MAX_OCCLUDED (fewer dropped labels).
    cfg.SYNTHESIS.COMPOSE.GUARD_OCCLUSION = True
    # A label whose visible part has fewer pixels than this is dropped too.
    cfg.SYNTHESIS.COMPOSE.MIN_VISIBLE_PIXELS = 16
    # Soft cast shadows under each item (the paper's composer has none).
    cfg.SYNTHESIS.COMPOSE.SHADOW = CN()
    # Draw them.
    cfg.SYNTHESIS.COMPOSE.SHADOW.ENABLED = True
    # Darkening at the shadow's core, drawn uniformly in [min, max] once per scene.
    cfg.SYNTHESIS.COMPOSE.SHADOW.STRENGTH = [0.3, 0.55]
    # Blur (Gaussian sigma) as a fraction of the item's longer side.
    cfg.SYNTHESIS.COMPOSE.SHADOW.BLUR = 0.06
    # Shift away from the scene's light, as a fraction of the item's longer side.
    cfg.SYNTHESIS.COMPOSE.SHADOW.OFFSET = 0.08
    # Folder of empty-tray photos used as backgrounds (cropped to IMAGE_SIZE's aspect, resized,
    # flipped); "" = generated trays.
    cfg.SYNTHESIS.COMPOSE.BACKGROUND_DIR = ""
    # Number of generated trays (drawn once from SYNTHESIS.SEED, varied per scene).
    cfg.SYNTHESIS.COMPOSE.NUM_GENERATED_BACKGROUNDS = 16
    # Photometric albumentations transforms applied to each finished scene, "Name(arg=value)"
    # strings as in INPUT.ALBUMENTATIONS.TRANSFORMS (image-only transforms); seeded per scene.
    cfg.SYNTHESIS.COMPOSE.PHOTOMETRIC = [
        "RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.8)",
        "HueSaturationValue(hue_shift_limit=4, sat_shift_limit=12, val_shift_limit=0, p=0.5)",
    ]
    # Standard deviation (grey levels) of Gaussian sensor noise added to each scene; 0 = none.
    cfg.SYNTHESIS.COMPOSE.NOISE_STD = 2.0
    # Image file format: "jpg" or "png".
    cfg.SYNTHESIS.COMPOSE.IMAGE_FORMAT = "jpg"
    # JPEG quality (0-100) when IMAGE_FORMAT is "jpg".
    cfg.SYNTHESIS.COMPOSE.JPEG_QUALITY = 92
    # Image id of scene 0 (scene i gets IMAGE_ID_START + i).
    cfg.SYNTHESIS.COMPOSE.IMAGE_ID_START = 1
    # Name the written set is registered under ("" = "synth_" + the output folder's name).
    cfg.SYNTHESIS.COMPOSE.DATASET_NAME = ""
    # Exemplar cut-outs kept in memory per worker process.
    cfg.SYNTHESIS.COMPOSE.CACHE_ITEMS = 1000


def _add_render_config(cfg: CN) -> None:
    """RENDER.*: translation of synthesized scenes toward the real look (issue: rendering)."""
    cfg.RENDER = CN()
    # Renderer: "fast" (statistics matching, CPU), "cyclegan" (learned), "folder" (images
    # rendered elsewhere, under RENDER.FOLDER: only checked and registered), "none" (copy).
    cfg.RENDER.METHOD = "fast"
    # Seed of every random choice; image i of a set uses (SEED, image id).
    cfg.RENDER.SEED = 0
    # Worker processes for the fast renderer and the statistics (0 = in the main process).
    cfg.RENDER.NUM_WORKERS = 2
    # Labelled set to render: a registered dataset name or a COCO/RPC JSON path.
    cfg.RENDER.SOURCE = ""
    # Image folder of SOURCE when it is a JSON path ("" = the JSON's folder, or its images/).
    cfg.RENDER.SOURCE_IMAGE_ROOT = ""
    # Unlabelled real images to imitate: a registered dataset name, a JSON path or a folder.
    cfg.RENDER.TARGET = "mini_rpc_pool"
    # Output folder: images/, dropped/, instances.json, render_report.json, statistics caches.
    cfg.RENDER.OUTPUT_DIR = "output/render"
    # Name to register the rendered set under ("" = "<SOURCE name>_render_<METHOD>").
    cfg.RENDER.DATASET_NAME = ""
    # Pre-rendered images with the source's file names (METHOD "folder").
    cfg.RENDER.FOLDER = ""

    cfg.RENDER.STATS = CN()
    # Longer side (pixels) of the common working scale at which a set's look is measured.
    cfg.RENDER.STATS.WORK_SIZE = 512
    # Images sampled from a set to estimate its statistics (0 = all).
    cfg.RENDER.STATS.MAX_IMAGES = 200

    cfg.RENDER.FAST = CN()
    # Blend (0..1) of the Lab mean/std colour transfer (Reinhard et al.) toward a target image.
    cfg.RENDER.FAST.COLOR_STRENGTH = 1.0
    # Blend (0..1) of per-channel Lab histogram matching toward the same target image.
    cfg.RENDER.FAST.HIST_STRENGTH = 0.5
    # Blur toward the target image's edge blur (never sharpens).
    cfg.RENDER.FAST.MATCH_BLUR = True
    # Add grey-level noise up to the target image's noise level.
    cfg.RENDER.FAST.MATCH_NOISE = True
    # Darken corners by the target's vignetting minus the source set's.
    cfg.RENDER.FAST.MATCH_VIGNETTING = True
    # Cap on the added corner darkening (fraction of brightness at the corners).
    cfg.RENDER.FAST.MAX_VIGNETTING = 0.5
    # Cap on the matching blur sigma, in working-scale pixels.
    cfg.RENDER.FAST.MAX_BLUR = 3.0

    cfg.RENDER.CHECK = CN()
    # Run the label-preservation check on every rendered image and drop failures.
    cfg.RENDER.CHECK.ENABLED = True
    # An item fails when the correlation of its structure (gradient magnitude over its visible
    # mask) before and after rendering falls below this.
    cfg.RENDER.CHECK.MIN_SCORE = 0.5
    # Items with fewer visible pixels (at the check's working scale) are not checked.
    cfg.RENDER.CHECK.MIN_AREA = 64
    # Gaussian blur sigma before taking gradients (working-scale pixels): tolerance to noise.
    cfg.RENDER.CHECK.SIGMA = 1.0
    # Dilation (pixels) of each visible mask so that the item's outline is compared too.
    cfg.RENDER.CHECK.DILATE = 2
    # Longer side of the check's working scale (0 = native resolution).
    cfg.RENDER.CHECK.WORK_SIZE = 640

    cfg.RENDER.CYCLEGAN = CN()
    # Where checkpoints (last_checkpoint.pth), model_final.pth and metrics.json go.
    cfg.RENDER.CYCLEGAN.OUTPUT_DIR = "output/render/cyclegan"
    # Generator weights used to render ("" = OUTPUT_DIR/model_final.pth).
    cfg.RENDER.CYCLEGAN.WEIGHTS = ""
    # "cuda", "cpu", or "" for CUDA when available.
    cfg.RENDER.CYCLEGAN.DEVICE = ""
    # Filters of the generator's first layer (the paper: 64).
    cfg.RENDER.CYCLEGAN.NGF = 64
    # Filters of the discriminator's first layer (the paper: 64).
    cfg.RENDER.CYCLEGAN.NDF = 64
    # Residual blocks of the ResNet generator (the paper: 9 at 256 px).
    cfg.RENDER.CYCLEGAN.N_BLOCKS = 9
    # Stride-2 layers of the PatchGAN discriminator (3 = 70x70 patches).
    cfg.RENDER.CYCLEGAN.N_LAYERS_D = 3
    # Normalisation in both networks: "instance" (the paper), "batch" or "none".
    cfg.RENDER.CYCLEGAN.NORM = "instance"
    # Training images are resized so their longer side is this many pixels ...
    cfg.RENDER.CYCLEGAN.LOAD_SIZE = 512
    # ... then random square crops of this size are cut (the paper: 256).
    cfg.RENDER.CYCLEGAN.CROP_SIZE = 256
    # Longer side at which images are translated (0 = LOAD_SIZE, the training scale).
    cfg.RENDER.CYCLEGAN.INFER_SIZE = 0
    # Add the generator's upsampled change to the full-resolution source (keeps fine print).
    cfg.RENDER.CYCLEGAN.RESIDUAL_DETAIL = True
    # Crops per domain per iteration (the paper: 1).
    cfg.RENDER.CYCLEGAN.BATCH_SIZE = 1
    # Adam learning rate (the paper: 2e-4) and beta1 (0.5).
    cfg.RENDER.CYCLEGAN.LR = 2e-4
    # Adam beta1.
    cfg.RENDER.CYCLEGAN.BETA1 = 0.5
    # Training iterations in all.
    cfg.RENDER.CYCLEGAN.MAX_ITER = 20000
    # Iteration from which the learning rate decays linearly to 0 at MAX_ITER.
    cfg.RENDER.CYCLEGAN.DECAY_START = 10000
    # Weight of the cycle-consistency L1 loss (the paper's lambda: 10).
    cfg.RENDER.CYCLEGAN.LAMBDA_CYCLE = 10.0
    # Weight of the identity loss, as a fraction of LAMBDA_CYCLE (the paper: 0.5).
    cfg.RENDER.CYCLEGAN.LAMBDA_IDENTITY = 0.5
    # Generated images kept in the discriminators' history pool (the paper: 50).
    cfg.RENDER.CYCLEGAN.POOL_SIZE = 50
    # Data-loading worker processes.
    cfg.RENDER.CYCLEGAN.NUM_WORKERS = 2
    # Iterations between writes of last_checkpoint.pth.
    cfg.RENDER.CYCLEGAN.CHECKPOINT_PERIOD = 1000
    # Iterations between loss records in metrics.json.
    cfg.RENDER.CYCLEGAN.LOG_PERIOD = 50


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
    # Label the pool with the teacher on the image and its horizontal flip, predictions merged.
    cfg.DISTILL.TEACHER_FLIP = False
    # Labelled split on which each round's score threshold is chosen (max cAcc) and count-guided
    # inference is judged; never the pool or EVAL_DATASET; empty: TEST.RPC.SCORE_THRESHOLD.
    cfg.DISTILL.THRESHOLD_DATASET = ""
    # With no THRESHOLD_DATASET: this fraction of DATASETS.TRAIN[0]'s scenes is kept out of
    # training (seeded by SEED) and chooses the thresholds instead; 0: off.
    cfg.DISTILL.THRESHOLD_HOLDOUT = 0.0
    # Learning curve: also evaluate both arms every this many training iterations; 0: off.
    cfg.DISTILL.CURVE_EVAL_PERIOD = 0


def _add_recognition_config(cfg: CN) -> None:
    """RECOGNITION.*: open-set recogniser and gallery (issue: open-set recognition)."""
    cfg.RECOGNITION = CN()
    # Train/evaluate the detector with every category mapped to one "object" class (datasets
    # named in DATASETS.* are read through their "<name>_agnostic" views).
    cfg.RECOGNITION.CLASS_AGNOSTIC = False

    cfg.RECOGNITION.EMBEDDER = CN()
    # torchvision ResNet trunk of the embedding network: resnet18, resnet34, resnet50, resnet101.
    cfg.RECOGNITION.EMBEDDER.ARCH = "resnet18"
    # Optional torchvision ImageNet weights file for the trunk (nothing is downloaded).
    cfg.RECOGNITION.EMBEDDER.TRUNK_WEIGHTS = ""
    # Trained recogniser checkpoint (tools/train_recognizer.py output) used by the pipeline.
    cfg.RECOGNITION.EMBEDDER.WEIGHTS = ""
    # Width of the hidden fully-connected layer of the embedding head.
    cfg.RECOGNITION.EMBEDDER.HIDDEN_DIM = 1024
    # Dimension of the product embedding.
    cfg.RECOGNITION.EMBEDDER.EMBED_DIM = 128
    # L2-normalise embeddings, so distances lie in [0, 2] and one threshold fits all products.
    cfg.RECOGNITION.EMBEDDER.NORMALIZE = True

    cfg.RECOGNITION.CROP = CN()
    # Side of the square crop fed to the embedder, pixels (224 in the D2S open-set paper).
    cfg.RECOGNITION.CROP.SIZE = 224
    # Context padding around each box, as a fraction of the box's longer side on each side.
    cfg.RECOGNITION.CROP.PADDING = 0.1

    cfg.RECOGNITION.TRAIN = CN()
    # Datasets whose boxes give the training crops (exemplars; one product per box).
    cfg.RECOGNITION.TRAIN.DATASETS = ("mini_rpc_train",)
    # Datasets whose boxes give the validation crops (top-1, macro-F1, threshold calibration).
    cfg.RECOGNITION.TRAIN.VAL_DATASETS = ("mini_rpc_val",)
    # Exemplar datasets whose boxes make the gallery written after training (held-out products
    # are added from them); (): DATASETS (set it when DATASETS adds synthesized scenes).
    cfg.RECOGNITION.TRAIN.GALLERY_DATASETS = ()
    # P: products per K x P batch.
    cfg.RECOGNITION.TRAIN.P = 8
    # K: crops per product per batch.
    cfg.RECOGNITION.TRAIN.K = 4
    # Training epochs (one epoch = as many batches as it takes to cover the crops once).
    cfg.RECOGNITION.TRAIN.EPOCHS = 30
    # Epochs with the "batch-all" triplet loss before switching to "batch-hard" (curriculum).
    cfg.RECOGNITION.TRAIN.ALL_TRIPLET_EPOCHS = 10
    # First epochs trained as a softmax classifier of the known products alone (cross-entropy
    # on a training-only BNNeck classifier over the embedding), before the triplet curriculum;
    # ALL_TRIPLET_EPOCHS still counts from the first epoch. 0: none (the paper).
    cfg.RECOGNITION.TRAIN.CLASSIFY_EPOCHS = 0
    # Weight of that cross-entropy added to the triplet loss in the triplet epochs ("Bag of
    # Tricks", Luo et al. 2019); 0: triplet loss alone (the paper).
    cfg.RECOGNITION.TRAIN.CE_WEIGHT = 0.0
    # Label smoothing of the cross-entropy (Luo et al.: 0.1).
    cfg.RECOGNITION.TRAIN.CE_LABEL_SMOOTHING = 0.1
    # Adam learning rate (the paper: 1e-2, then 1e-3).
    cfg.RECOGNITION.TRAIN.BASE_LR = 1e-3
    # Epoch at which the learning rate is multiplied by LR_DROP_FACTOR (0: never).
    cfg.RECOGNITION.TRAIN.LR_DROP_EPOCH = 20
    # Learning-rate factor applied at LR_DROP_EPOCH.
    cfg.RECOGNITION.TRAIN.LR_DROP_FACTOR = 0.1
    # Probability of random erasing of a training crop (the paper: 0.5).
    cfg.RECOGNITION.TRAIN.ERASE_PROB = 0.5
    # Rotate training crops by a random angle (checkout items lie at any angle on the tray).
    cfg.RECOGNITION.TRAIN.ROTATE = True
    # Strength of the photometric jitter of training crops (brightness, contrast, per-channel
    # colour cast, noise), so exemplars shot under studio light match checkout lighting; 0: off.
    cfg.RECOGNITION.TRAIN.COLOR_JITTER = 0.0
    # Probability of a Gaussian blur (sigma up to 1.5 px at 96 px) of a training crop.
    cfg.RECOGNITION.TRAIN.BLUR_PROB = 0.0
    # Probability that pieces of other products of the batch are pasted over a training crop's
    # border, as neighbours on a crowded tray cut into a checkout crop; 0: off.
    cfg.RECOGNITION.TRAIN.CLUTTER_PROB = 0.0
    # Fraction of products held out of recogniser training (added later through the gallery).
    cfg.RECOGNITION.TRAIN.HOLDOUT_FRACTION = 0.0
    # At most this many training crops per product (0: all), chosen with SEED.
    cfg.RECOGNITION.TRAIN.MAX_CROPS_PER_PRODUCT = 0
    # Save a resumable checkpoint every this many epochs.
    cfg.RECOGNITION.TRAIN.CHECKPOINT_PERIOD = 5
    # Validate (known / added top-1, as at the end) every this many epochs; 0: only at the end.
    cfg.RECOGNITION.TRAIN.EVAL_PERIOD = 0
    # Seed of the product split, the sampler and augmentation.
    cfg.RECOGNITION.TRAIN.SEED = 0

    cfg.RECOGNITION.GALLERY = CN()
    # Gallery file (tools/build_gallery.py output) used by the pipeline.
    cfg.RECOGNITION.GALLERY.FILE = ""
    # Exact nearest-neighbour search: "numpy" (fastest at 200 and 10,000 products in
    # benchmarks/bench_gallery.py), "torch", or "faiss" (needs faiss-cpu).
    cfg.RECOGNITION.GALLERY.BACKEND = "numpy"
    # Embedding distance beyond which a crop is an "unknown product" (<= 0: the gallery's own).
    cfg.RECOGNITION.GALLERY.UNKNOWN_DISTANCE = 0.0
    # At most this many exemplar embeddings per product kept in the gallery (0: all).
    cfg.RECOGNITION.GALLERY.MAX_PER_PRODUCT = 0
    # Galleries written by tools/train_recognizer.py also hold each exemplar at its three other
    # right-angle rotations (products lie at any angle on a tray); the paper: False.
    cfg.RECOGNITION.GALLERY.ROTATIONS = False
    # ... and this many copies of each exemplar under random lighting and blur (0: none).
    cfg.RECOGNITION.GALLERY.JITTER_VIEWS = 0

    cfg.RECOGNITION.DETECTOR = CN()
    # Config file of the class-agnostic detector used by the DPSNetOpenSet pipeline.
    cfg.RECOGNITION.DETECTOR.CONFIG_FILE = ""
    # Weights of that detector.
    cfg.RECOGNITION.DETECTOR.WEIGHTS = ""
    # Dataset whose metadata maps product ids to contiguous class ids ("": DATASETS.TEST[0]).
    cfg.RECOGNITION.CLASS_MAP_DATASET = ""
    # Unknown products: "drop" them from `instances` (kept in the output's "unknown_instances"),
    # or "keep" them in `instances` with pred_classes -1.
    cfg.RECOGNITION.UNKNOWN_POLICY = "drop"


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
