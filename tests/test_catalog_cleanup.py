"""The conftest fixture removes what a test registers in detectron2's catalogs."""

from detectron2.data import DatasetCatalog, MetadataCatalog

NAME = "catalog_cleanup_probe"


def test_a_test_registers_a_dataset():
    DatasetCatalog.register(NAME, lambda: [])
    MetadataCatalog.get(NAME).set(thing_classes=["x"])
    assert NAME in DatasetCatalog.list()


def test_the_next_test_does_not_see_it():
    # Runs after the one above on its worker, or alone on another: either way NAME is unknown.
    assert NAME not in DatasetCatalog.list()
    assert NAME not in MetadataCatalog.list()
    DatasetCatalog.register(NAME, lambda: [])  # would raise "already registered" if it leaked
