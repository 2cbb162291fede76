#!/usr/bin/env python
"""dpsnet: a Detectron2 plugin for automatic retail checkout.

detectron2 itself is deliberately absent from ``install_requires``: it is not published under
that name on PyPI, so listing it would make every ``pip install`` fail to resolve. ``make
install`` (scripts/install.sh) installs it first, as detectron2's own projects assume.
"""

from setuptools import find_packages, setup

setup(
    name="dpsnet",
    version="0.1.0",
    description="DPSNet for automatic retail checkout, as a Detectron2 plugin",
    packages=find_packages(exclude=("tests*", "tools*", "demo*", "benchmarks*", "configs*")),
    package_data={"dpsnet": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pycocotools>=2.0.6",
        "albumentations>=1.4",
        "fvcore>=0.1.5,<0.1.6",  # detectron2 0.6 pins this range
        "tqdm>=4.60",
        "tensorboard>=2.10",
        "matplotlib>=3.6",
        "PyYAML>=6.0",
        "scipy>=1.15",  # scipy.stats.bootstrap(rng=...)
        # detectron2 0.6's model_zoo imports pkg_resources, removed from setuptools 81.
        "setuptools<81",
    ],
    extras_require={
        "dev": [
            "pytest>=7.3",  # tmp_path_retention_policy
            "pytest-xdist>=3",
            "ruff==0.17.5",  # exact: lint and format results change between ruff releases
            # The public RPC evaluation tool, used only as a test oracle for metric parity.
            "rpctool==0.1.6",
        ],
        # The peer detector of benchmarks/bench_peer.py only; dpsnet never imports it.
        "peer": ["ultralytics>=8.3"],
        # tools/export_model.py --format onnx (and its check) only; TorchScript needs nothing.
        "export": ["onnx>=1.16", "onnxruntime>=1.18"],
    },
)
