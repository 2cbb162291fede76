#!/usr/bin/env bash
# Creates .venv at the repo root and installs torch, detectron2 (pure Python unless one is
# already importable) and dpsnet in editable mode with its test tools. Idempotent: each step
# is skipped when what it installs already imports.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# torch/torchvision are pinned together: torchvision's compiled ops must match torch's ABI.
# 2.14.1/0.29.1 are the newest this platform serves (REFERENCE.md section 5).
TORCH_PINS=${TORCH_PINS:-"torch==2.14.1 torchvision==0.29.1"}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check"

if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "[install] torch + torchvision ($TORCH_PINS)"
  $PIP install $TORCH_PINS
fi

# setuptools<81 keeps pkg_resources, which detectron2 0.6's model_zoo imports; wheel is needed
# to build detectron2 without build isolation.
$PIP install -q "setuptools<81" wheel

if ! "$PY" -c "import detectron2" >/dev/null 2>&1; then
  echo "[install] detectron2 0.6 (pure Python build of pb1-detectron2)"
  "$PY" scripts/install_detectron2.py
fi

# The report's real-browser test (tests/demo/test_demo.py) needs a headless Chromium: Debian's
# package, only as root where apt-get exists (DPSNET_NO_BROWSER=1 skips it). Best effort: a
# machine without it still installs, and the test is skipped saying why.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
    && [ "${DPSNET_NO_BROWSER:-0}" != 1 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[install] chromium (Debian package, for the report's browser test)"
    export DEBIAN_FRONTEND=noninteractive
    APT_INSTALL="timeout 900 apt-get install -y -q --no-install-recommends chromium"
    if ! $APT_INSTALL >/dev/null 2>&1; then
      timeout 300 apt-get update -qq >/dev/null 2>&1 || true
      $APT_INSTALL >/dev/null 2>&1 \
        || echo "[install] chromium: apt-get failed (no network?); the browser test will skip"
    fi
  else
    echo "[install] no chromium (needs root and apt-get to install it); the browser test will skip"
  fi
fi

echo "[install] dpsnet (editable) with dev tools"
$PIP install -q -e ".[dev]"
"$PY" -c "import dpsnet, detectron2, torch; print('[install] ok: torch', torch.__version__, \
'detectron2', detectron2.__version__)"
