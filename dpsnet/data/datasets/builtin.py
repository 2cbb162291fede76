"""Registration at ``import dpsnet``: RPC, D2S and the mini world under ``$DPSNET_DATASETS``.

Nothing is read here: names are registered with loaders that read files when called, so
importing dpsnet is cheap even when no data is on disk. Re-running ``register_all`` (a
notebook cell, a worker process) replaces the registrations instead of raising.
"""

import os

from dpsnet.data.datasets.checkout import register_checkout_dataset, unregister_dataset
from dpsnet.data.datasets.d2s import register_all_d2s, register_d2s_layout
from dpsnet.data.datasets.rpc import register_all_rpc, register_rpc_layout

#: Environment variable naming the datasets root; default ``datasets`` under the working dir.
DATASETS_ENV = "DPSNET_DATASETS"

#: Keys of the mini world's D2S-style files.
MINI_D2S_KEYS = ("training", "validation", "validation_wo_occlusion")


def datasets_root() -> str:
    """Absolute datasets root: ``$DPSNET_DATASETS`` or ``./datasets``."""
    return os.path.abspath(os.environ.get(DATASETS_ENV) or "datasets")


def register_mini_world(root: str | os.PathLike, prefix: str = "mini") -> dict:
    """Register a mini world folder (see ``dpsnet.data.mini_world``); reads nothing now.

    Names: ``{prefix}_rpc_train``, ``{prefix}_rpc_{val,test}[_{easy,medium,hard}]``,
    ``{prefix}_rpc_pool`` (unlabelled: no annotations, ``evaluator_type`` None) and
    ``{prefix}_d2s_{training,validation,validation_wo_occlusion}``.

    Returns:
        dict: key (``train``, ``val``, ``test_hard``, ``pool``, ``d2s_training``, ...) ->
        registered name.
    """
    root = os.fspath(root)
    extra = {"mini_world_root": root}
    names = register_rpc_layout(root, f"{prefix}_rpc", metadata=extra)
    names["pool"] = f"{prefix}_rpc_pool"
    register_checkout_dataset(
        names["pool"],
        os.path.join(root, "instances_pool.json"),
        os.path.join(root, "pool"),
        metadata={"dataset_root": root, "split": "pool", "unlabelled": True, **extra},
        categories_json=os.path.join(root, "instances_train2019.json"),
        evaluator_type=None,
        with_masks=False,
    )
    d2s = register_d2s_layout(os.path.join(root, "d2s"), f"{prefix}_d2s", keys=MINI_D2S_KEYS)
    names.update({f"d2s_{k}": v for k, v in d2s.items()})
    return names


def unregister_all(names) -> None:
    """Remove every name in ``names`` (a dict of names or an iterable) from the catalogs."""
    for name in names.values() if isinstance(names, dict) else names:
        unregister_dataset(name)


def register_all(root: str | os.PathLike | None = None) -> dict:
    """Register RPC (``root/rpc``), D2S (``root/d2s``) and the mini world (``root/mini_world``).

    Returns:
        dict: ``{"rpc": {...}, "d2s": {...}, "mini_world": {...}}`` of registered names.
    """
    root = os.fspath(root) if root is not None else datasets_root()
    return {
        "rpc": register_all_rpc(os.path.join(root, "rpc")),
        "d2s": register_all_d2s(os.path.join(root, "d2s")),
        "mini_world": register_mini_world(os.path.join(root, "mini_world"), "mini"),
    }
