"""RECOGNITION.*: the open-set recogniser and its gallery."""

from detectron2.config import CfgNode as CN

__all__ = ["add_recognition_config"]


def add_recognition_config(cfg: CN) -> None:
    """RECOGNITION.*: open-set recogniser and gallery."""
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
