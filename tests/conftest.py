"""Shared pytest setup: one torch thread per test worker, a fixed seed per test, and detectron2's
dataset catalogs left as each test found them."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Pinned loss values must hold on every machine: bfloat16 is chosen only where it measures
# faster (dpsnet.utils.precision), so the suite pins float32 and contiguous layout; the
# precision tests switch them on explicitly.
os.environ.setdefault("DPSNET_PRECISION", "float32")
os.environ.setdefault("DPSNET_CHANNELS_LAST", "off")

import pytest  # noqa: E402
import torch  # noqa: E402

import dpsnet  # noqa: E402,F401  (applies the detectron2 shims and registers everything)
from dpsnet.data.mini_world import SIZE_PRESETS  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _restore_dataset_catalogs():
    """Remove the datasets (and metadata) a test registered, so that test order cannot matter.

    detectron2's catalogs are global to the process; names registered by session- or
    module-scoped fixtures exist before this fixture runs and are kept.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    datasets, metadata = set(DatasetCatalog.list()), set(MetadataCatalog.list())
    yield
    for name in set(DatasetCatalog.list()) - datasets:
        DatasetCatalog.remove(name)
    for name in set(MetadataCatalog.list()) - metadata:
        MetadataCatalog.remove(name)


#: Sizes of the test suite's mini world: built in about a second (the "small" preset with fewer
#: test and pool images).
MINI_WORLD_TEST_SIZES = dict(SIZE_PRESETS["small"], test_images=6, pool_images=6)


@pytest.fixture(scope="session")
def mini_world(tmp_path_factory):
    """A tiny mini world (``dpsnet.data.mini_world``) registered under unique names.

    Returns a ``MiniWorld``: ``.root``, ``.seed``, ``.sizes``, ``.counts`` (the generator's own
    counts per split), ``.paths`` (files by role) and ``.names`` (split key -> dataset name:
    ``train``, ``val``, ``test``, ``{val,test}_{easy,medium,hard}``, ``pool``,
    ``d2s_training``, ``d2s_validation``, ``d2s_validation_wo_occlusion``). Read-only: tests
    that change files make their own copy.
    """
    import uuid

    from dpsnet.data.datasets import register_mini_world, unregister_all
    from dpsnet.data.mini_world import build_mini_world

    world = build_mini_world(tmp_path_factory.mktemp("mini_world"), 0, **MINI_WORLD_TEST_SIZES)
    world.names = register_mini_world(world.root, prefix=f"mini_fixture_{uuid.uuid4().hex[:8]}")
    yield world
    unregister_all(world.names)


@pytest.fixture(autouse=True)
def _fresh_loggers():
    """Drop the handlers a tool's ``setup_logger`` attached during a test.

    detectron2's ``setup_logger`` is cached and binds its console handler to the ``sys.stdout``
    of its first call: under pytest that is a test's captured stream, closed when the test ends,
    and a later test that logs through it gets a "Logging error" traceback on its stderr.
    """
    yield
    import logging

    from detectron2.utils import logger as d2_logger

    d2_logger.setup_logger.cache_clear()
    for name in ("dpsnet", "detectron2", "d2", "fvcore"):
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            log.removeHandler(handler)


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(name)``: ``benchmarks/<name>.py`` imported as a module (not a package)."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def one_image_labelling():
    """``labeller._label_one`` on one 100x100 tray (image id 7) with a "total" counting view.

    ``.output(boxes, scores, classes, count, probs=None)`` builds a teacher's output;
    ``.label(output, **params)`` selects (image level 0.8, keep 0.6, uncertain 0.3, ignore mode,
    plus ``params``); contiguous classes 0, 1, 2 are dataset ids 10, 11, 12.
    """
    from types import SimpleNamespace

    from detectron2.structures import Boxes, Instances

    from dpsnet.distill.labeller import _label_one
    from dpsnet.distill.pseudo_labels import CountLayout

    def output(boxes, scores, classes, count, probs=None):
        inst = Instances((100, 100))
        inst.pred_boxes = Boxes(torch.tensor(boxes))
        inst.scores = torch.tensor(scores)
        inst.pred_classes = torch.tensor(classes)
        if probs is not None:
            inst.pred_probs = torch.tensor(probs)
        return {"instances": inst, "counts": torch.tensor([count])}

    base = {
        "threshold": 0.8,
        "instance_threshold": 0.6,
        "uncertain_threshold": 0.3,
        "uncertain_mode": "ignore",
    }
    record = {"image_id": 7, "file_name": "tray.jpg", "height": 100, "width": 100}

    def label(out, **params):
        layout = CountLayout(("total",), 3)
        return _label_one(record, out, layout, {**base, **params}, None, {0: 10, 1: 11, 2: 12})

    return SimpleNamespace(output=output, label=label)
