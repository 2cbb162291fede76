"""Every dpsnet config key carries a one-line comment saying what it does (dpsnet/config/)."""

import re
from pathlib import Path

import pytest
from detectron2.config import get_cfg

from dpsnet.config import add_dpsnet_config

CONFIG = Path(__file__).resolve().parents[1] / "dpsnet" / "config"
KEY = re.compile(r"^\s*cfg\.([A-Z0-9_.]+) = (.*)$")


def _key_lines():
    for path in sorted(CONFIG.glob("*.py")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = KEY.match(line)
            if m and m.group(2) != "CN()":  # a subtree is not a key
                yield path.name, i, lines


def test_the_config_package_holds_keys():
    assert sum(1 for _ in _key_lines()) > 200


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG.glob("*.py")))
def test_every_key_has_its_own_comment(name):
    missing = []
    for file, i, lines in _key_lines():
        if file != name:
            continue
        above = lines[i - 1].strip()
        if not (above.startswith("#") or "#" in lines[i]):
            missing.append(f"{file}:{i + 1}: {lines[i].strip()}")
    assert not missing, "keys without a comment of their own:\n" + "\n".join(missing)


def test_add_dpsnet_config_adds_every_subtree():
    cfg = get_cfg()
    add_dpsnet_config(cfg)
    for subtree in ("DPSNET", "COUNTING_HEAD"):
        assert subtree in cfg.MODEL
    for subtree in ("SYNTHESIS", "RENDER", "DISTILL", "RECOGNITION", "PRETRAIN"):
        assert subtree in cfg
    assert "RPC" in cfg.TEST and "REGISTER" in cfg.DATASETS
