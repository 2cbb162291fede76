"""The product embedder: a torchvision ResNet trunk and a small head to a metric space."""

import hashlib
import logging
import os

import torch
import torch.nn.functional as F
import torchvision
from detectron2.config import configurable
from torch import nn

from dpsnet.utils.io import BadInputError
from dpsnet.utils.weights import load_weights_file

logger = logging.getLogger(__name__)

_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
# torchvision's ImageNet statistics (RGB, [0, 1]); right for its pretrained weights and harmless
# for a trunk trained from scratch.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class ProductEmbedder(nn.Module):
    """Maps product crops to embeddings; close embeddings mean the same product.

    Head as in Hermans et al. ("In Defense of the Triplet Loss"): global average pooling,
    FC-BN-ReLU, FC to the embedding, optionally L2-normalised.
    """

    @configurable
    def __init__(
        self,
        *,
        arch: str = "resnet18",
        embed_dim: int = 128,
        hidden_dim: int = 1024,
        normalize: bool = True,
        trunk_weights: str = "",
    ):
        """
        Args:
            arch: torchvision ResNet name.
            embed_dim: embedding dimension D.
            hidden_dim: width of the hidden layer of the head.
            normalize: L2-normalise the embeddings.
            trunk_weights: optional torchvision state-dict file for the trunk (e.g. ImageNet
                weights the user has on disk); its ``fc.*`` entries are ignored.
        """
        super().__init__()
        if arch not in _ARCHS:
            raise ValueError(f"unknown embedder arch {arch!r}; choose one of {_ARCHS}")
        trunk = getattr(torchvision.models, arch)(weights=None)
        if trunk_weights:
            _load_trunk(trunk, trunk_weights)
        feat_dim = trunk.fc.in_features
        trunk.fc = nn.Identity()
        self.arch = arch
        self.embed_dim = embed_dim
        self.normalize = normalize
        self.trunk = trunk
        self.head = nn.Sequential(
            nn.Linear(feat_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, embed_dim),
        )
        self.register_buffer("pixel_mean", torch.tensor(_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(_STD).view(1, 3, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        e = cfg.RECOGNITION.EMBEDDER
        return {
            "arch": e.ARCH,
            "embed_dim": e.EMBED_DIM,
            "hidden_dim": e.HIDDEN_DIM,
            "normalize": e.NORMALIZE,
            "trunk_weights": e.TRUNK_WEIGHTS,
        }

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """
        Args:
            crops: (N, 3, S, S) RGB crops in [0, 1].

        Returns:
            (N, D) embeddings (unit length when ``normalize``).
        """
        x = (crops - self.pixel_mean) / self.pixel_std
        x = self.head(self.trunk(x))
        return F.normalize(x, dim=1) if self.normalize else x

    @torch.no_grad()
    def embed(self, crops: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Embeddings in eval mode, by batches; uint8 crops are scaled to [0, 1].

        Returns:
            (N, D) float32 tensor on the CPU.
        """
        was_training = self.training
        self.eval()
        device = self.pixel_mean.device
        out = []
        for start in range(0, crops.shape[0], batch_size):
            batch = crops[start : start + batch_size].to(device)
            if batch.dtype == torch.uint8:
                batch = batch.float() / 255.0
            out.append(self(batch).float().cpu())
        self.train(was_training)
        if not out:
            return torch.zeros((0, self.embed_dim))
        return torch.cat(out)


def _load_trunk(trunk: nn.Module, path: str) -> None:
    if not os.path.isfile(path):
        raise BadInputError(f"{path}: trunk weights file not found")
    state = load_weights_file(path)  # one-line errors; never suggests unpickling
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise BadInputError(
            f"{path}: does not match a torchvision {type(trunk).__name__} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    logger.info("Loaded trunk weights from %s", path)


def save_embedder(model: ProductEmbedder, path: str, extra: dict | None = None) -> None:
    """Save the embedder's weights and the settings needed to rebuild it, atomically."""
    from dpsnet.utils.io import atomic_path

    payload = {
        "model": model.state_dict(),
        "arch": model.arch,
        "embed_dim": model.embed_dim,
        "hidden_dim": model.head[0].out_features,
        "normalize": model.normalize,
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_embedder(path: str, device: str = "cpu") -> tuple[ProductEmbedder, dict]:
    """Rebuild an embedder from a :func:`save_embedder` checkpoint.

    Returns:
        The model in eval mode and the checkpoint's other entries (e.g. ``crop_size``).

    Raises:
        BadInputError: the file is missing, unreadable, or not an embedder checkpoint.
    """
    if not os.path.isfile(path):
        raise BadInputError(f"{path}: recogniser checkpoint not found")
    ckpt = load_weights_file(path)  # one-line errors; never suggests unpickling
    need = ("model", "arch", "embed_dim", "hidden_dim", "normalize")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in need):
        raise BadInputError(f"{path}: not a recogniser checkpoint (needs keys {need})")
    model = ProductEmbedder(
        arch=ckpt["arch"],
        embed_dim=ckpt["embed_dim"],
        hidden_dim=ckpt["hidden_dim"],
        normalize=ckpt["normalize"],
    )
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, {k: v for k, v in ckpt.items() if k not in need}


def fingerprint(model: nn.Module) -> str:
    """A short hash of the weights: a gallery records it to catch a mismatched embedder."""
    h = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
