"""Install detectron2 v0.6 as pure Python from the ``pb1-detectron2`` source distribution.

detectron2 publishes no wheel on PyPI. ``pb1-detectron2==0.6`` is a source distribution of
detectron2 v0.6 whose C++/CUDA sources (``layers/csrc``) are missing, so its build fails as
published. This script downloads it (checking its sha256), empties its extension list and
installs it without build isolation into the running interpreter's environment. The compiled
ops it lacks (rotated boxes, deformable convs, the fast COCO evaluator) are reported clearly by
``dpsnet.compat`` when used.

If an importable detectron2 is already present (for example one built from source with its
compiled ops), it is kept.
"""

import hashlib
import importlib.util
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SDIST = "pb1-detectron2-0.6.tar.gz"
SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
INDEX = "https://pypi.org/simple/pb1-detectron2/"


def _sdist_url() -> str:
    with urllib.request.urlopen(INDEX, timeout=60) as resp:
        page = resp.read().decode("utf-8")
    for href in re.findall(r'href="([^"]+)"', page):
        if href.split("#")[0].endswith(SDIST):
            return href.split("#")[0]
    raise SystemExit(f"error: {SDIST} not listed at {INDEX}")


def main() -> int:
    if importlib.util.find_spec("detectron2") is not None:
        print("detectron2 already importable: keeping it")
        return 0
    with tempfile.TemporaryDirectory(prefix="d2build-") as tmp:
        archive = Path(tmp) / SDIST
        url = _sdist_url()
        print(f"downloading {url}")
        with urllib.request.urlopen(url, timeout=300) as resp:
            archive.write_bytes(resp.read())
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != SHA256:
            raise SystemExit(f"error: {archive.name} sha256 {digest} != expected {SHA256}")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / SDIST[: -len(".tar.gz")]
        setup_py = src / "setup.py"
        text = setup_py.read_text()
        patched = text.replace("ext_modules=get_extensions(),", "ext_modules=[],")
        if patched == text:
            raise SystemExit(f"error: could not find the extension list in {setup_py}")
        setup_py.write_text(patched)
        cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", str(src)]
        print(" ".join(cmd))
        subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
