"""dpsnet: DPSNet for automatic retail checkout, as a Detectron2 plugin."""

from dpsnet import compat  # noqa: F401  (first: shims detectron2 0.6 before it is imported)

# isort: split
from dpsnet import (
    data,  # noqa: F401  (registers datasets)
    evaluation,  # noqa: F401  (the RPC evaluator)
    modeling,  # noqa: F401  (registers backbone, heads, meta-archs)
    recognition,  # noqa: F401  (registers the open-set meta-arch DPSNetOpenSet)
)
from dpsnet.config import add_dpsnet_config

__all__ = ["add_dpsnet_config"]
__version__ = "0.1.0"
