"""The built-in mini checkout world: a small synthetic stand-in for RPC (and D2S).

``build_mini_world(root, seed=0, **sizes)`` writes it; ``dpsnet.data.datasets.builtin`` registers
it as ``mini_rpc_*`` / ``mini_d2s_*``. See ``build.py`` for the layout on disk.
"""

from dpsnet.data.mini_world.build import (
    DEFAULT_SIZES,
    GENERATOR_VERSION,
    ID_OFFSETS,
    LEVEL_NAMES,
    MiniWorld,
    build_mini_world,
)
from dpsnet.data.mini_world.products import SUPERCATEGORIES, ProductSpec, make_catalogue
from dpsnet.data.mini_world.render import LEVELS

__all__ = [
    "DEFAULT_SIZES",
    "GENERATOR_VERSION",
    "ID_OFFSETS",
    "LEVELS",
    "LEVEL_NAMES",
    "SUPERCATEGORIES",
    "MiniWorld",
    "ProductSpec",
    "build_mini_world",
    "make_catalogue",
]
