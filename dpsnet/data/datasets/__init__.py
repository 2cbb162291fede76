"""Dataset registrars: RPC, D2S, the mini world, and any COCO/RPC-format checkout data."""

from dpsnet.data.datasets.builtin import (
    datasets_root,
    register_all,
    register_mini_world,
    unregister_all,
)
from dpsnet.data.datasets.checkout import (
    CheckoutMetadata,
    category_metadata,
    layout_dataset,
    load_checkout_json,
    read_categories,
    read_layout_categories,
    register_checkout_dataset,
    require_categories_in_memory,
    unregister_dataset,
)
from dpsnet.data.datasets.d2s import load_d2s_json, register_all_d2s, register_d2s_layout
from dpsnet.data.datasets.rpc import register_all_rpc, register_rpc_layout

register_all()  # every built-in name, lazily (nothing is read until a dataset is loaded)

__all__ = [
    "CheckoutMetadata",
    "category_metadata",
    "datasets_root",
    "layout_dataset",
    "load_checkout_json",
    "load_d2s_json",
    "read_categories",
    "read_layout_categories",
    "register_all",
    "register_all_d2s",
    "register_all_rpc",
    "register_checkout_dataset",
    "register_d2s_layout",
    "register_mini_world",
    "register_rpc_layout",
    "require_categories_in_memory",
    "unregister_all",
    "unregister_dataset",
]
