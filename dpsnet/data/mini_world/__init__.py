"""The built-in mini checkout world: a small synthetic stand-in for RPC (and D2S).

``build_mini_world(root, seed=0, **sizes)`` writes it (``build.py``: the layout on disk);
``dpsnet.data.datasets.builtin`` registers it as ``mini_rpc_*`` / ``mini_d2s_*``. ``world.py``
says what a world is (sizes, presets, ids, files), ``products.py`` and ``render.py`` draw it,
``jobs.py`` runs the drawing per image, ``d2s.py`` writes the D2S-style variant.
"""

from dpsnet.data.mini_world.build import build_mini_world
from dpsnet.data.mini_world.products import SUPERCATEGORIES, ProductSpec, make_catalogue
from dpsnet.data.mini_world.render import LEVEL_ITEMS
from dpsnet.data.mini_world.world import (
    DEFAULT_SIZES,
    GENERATOR_VERSION,
    ID_OFFSETS,
    SIZE_PRESETS,
    MiniWorld,
)

__all__ = [
    "DEFAULT_SIZES",
    "GENERATOR_VERSION",
    "ID_OFFSETS",
    "LEVEL_ITEMS",
    "SIZE_PRESETS",
    "SUPERCATEGORIES",
    "MiniWorld",
    "ProductSpec",
    "build_mini_world",
    "make_catalogue",
]
