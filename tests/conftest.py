"""Shared pytest setup: one torch thread per test worker, and a fixed seed per test."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import dpsnet  # noqa: E402,F401  (applies the detectron2 shims and registers everything)

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
