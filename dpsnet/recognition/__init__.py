"""Open-set recognition: class-agnostic detection, a metric-learning recogniser, a gallery."""

from dpsnet.data.agnostic import (
    class_agnostic_config,
    dataset_name_for,
    make_class_agnostic,
    register_agnostic_view,
)
from dpsnet.recognition.embedder import ProductEmbedder, load_embedder, save_embedder
from dpsnet.recognition.gallery import UNKNOWN, Gallery
from dpsnet.recognition.meta_arch import (  # registers the meta-architecture
    DPSNetOpenSet,
    load_open_set_parts,
)
from dpsnet.recognition.sampler import PKBatchSampler

__all__ = [
    "UNKNOWN",
    "DPSNetOpenSet",
    "Gallery",
    "PKBatchSampler",
    "ProductEmbedder",
    "class_agnostic_config",
    "dataset_name_for",
    "load_embedder",
    "load_open_set_parts",
    "make_class_agnostic",
    "register_agnostic_view",
    "save_embedder",
]
