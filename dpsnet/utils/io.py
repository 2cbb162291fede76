"""File helpers shared by every stage: atomic writes and image/JSON reading with clear errors."""

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np


class BadInputError(ValueError):
    """A file that a stage was given is missing, corrupt or malformed. The message names it."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    A job killed half-way never leaves a half-written ``path`` behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=suffix or "".join(path.suffixes)
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)


def atomic_write_image(path: str | os.PathLike, image: np.ndarray, params=None) -> None:
    """Write a BGR (or grey) image with OpenCV atomically; the extension picks the codec."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", image, params or [])
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the image")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file raises ``BadInputError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise BadInputError(
            f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
    except UnicodeDecodeError as e:
        raise BadInputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image as BGR uint8 (OpenCV's layout).

    Raises:
        BadInputError: the file is missing, empty, or not a decodable image; the message says
            which file and which problem.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: image file not found")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise BadInputError(f"{path}: image file is empty")
    image = cv2.imdecode(data, flags)
    if image is None:
        raise BadInputError(f"{path}: not a readable image (corrupt or unsupported format)")
    return image
