"""SYNTHESIS.* and RENDER.*: exemplar masks, scene composition and rendering."""

from detectron2.config import CfgNode as CN

__all__ = ["add_synthesis_config", "add_render_config"]


def add_synthesis_config(cfg: CN) -> None:
    """SYNTHESIS.*: masks, pose pruning and scene composition."""
    cfg.SYNTHESIS = CN()
    # Seed of every random choice in synthesis; image i uses (SEED, i).
    cfg.SYNTHESIS.SEED = 0
    add_synthesis_masks_config(cfg)
    add_synthesis_compose_config(cfg)


def add_synthesis_masks_config(cfg: CN) -> None:
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


def add_synthesis_compose_config(cfg: CN) -> None:
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


def add_render_config(cfg: CN) -> None:
    """RENDER.*: translation of synthesized scenes toward the real look."""
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
