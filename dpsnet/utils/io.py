"""File helpers shared by every stage: atomic writes and image/JSON reading with clear errors."""

import contextlib
import io
import json
import os
import re
import struct
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError


def _read_umask() -> int:
    # The only portable way to read the umask is to set it and put it back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import: os.umask is process-wide and not thread-safe to probe later.
_UMASK = _read_umask()

#: Largest image (width x height, from the file's header) that ``read_image`` decodes when no
#: config says otherwise (``INPUT.MAX_IMAGE_PIXELS``): well above any checkout camera (RPC's
#: photos are 1.8 MP), well below what a hostile header can claim (60000 x 60000 = 3.6 GP).
MAX_IMAGE_PIXELS = 50_000_000

#: Image file extensions the tools look for in folders (``read_image`` decodes by content).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


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
    # mkstemp creates 0600; an output must get the mode any other new file would (the umask).
    os.fchmod(fd, 0o666 & ~_UMASK)
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


def set_max_image_pixels(limit: float) -> None:
    """Set the process-wide pixel limit of ``read_image`` (from ``INPUT.MAX_IMAGE_PIXELS``).

    Raises:
        ValueError: ``limit`` is not a positive number.
    """
    global MAX_IMAGE_PIXELS
    if not limit or limit <= 0:
        raise ValueError(f"INPUT.MAX_IMAGE_PIXELS must be > 0, got {limit}")
    MAX_IMAGE_PIXELS = int(limit)
    # Pillow refuses (as a "decompression bomb") anything above twice its own limit before we
    # see the size; keep its limit above ours so that our message, with the size, is the one.
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_IMAGE_PIXELS)


def image_size(path: str | os.PathLike, data: bytes | None = None) -> tuple[int, int]:
    """(width, height) from an image file's header, without decoding its pixels.

    Raises:
        BadInputError: the file is missing, empty, not an image format Pillow recognises, or its
            header claims more than ``MAX_IMAGE_PIXELS`` pixels.
    """
    path = Path(path)
    if data is None:
        if not path.is_file():
            raise BadInputError(f"{path}: image file not found")
        with open(path, "rb") as f:
            data = f.read(1 << 20)  # headers sit in the first bytes; Pillow reads no further
    if not data:
        raise BadInputError(f"{path}: image file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # lazy: parses the header only
                width, height = im.size
    except Image.DecompressionBombError as e:
        raise BadInputError(
            f"{path}: image too large ({_bomb_pixels(e)} pixels; limit {MAX_IMAGE_PIXELS}, "
            "INPUT.MAX_IMAGE_PIXELS)"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        raise BadInputError(
            f"{path}: not a readable image (unknown format or corrupt header; supported: "
            f"{' '.join(IMAGE_EXTENSIONS)})"
        ) from None
    if width <= 0 or height <= 0:
        raise BadInputError(f"{path}: image header claims a size of {width}x{height}")
    if width * height > MAX_IMAGE_PIXELS:
        raise BadInputError(
            f"{path}: image too large ({width}x{height} = {width * height} pixels; limit "
            f"{MAX_IMAGE_PIXELS}, INPUT.MAX_IMAGE_PIXELS)"
        )
    return width, height


def read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image as BGR uint8 (OpenCV's layout); the one image reader of dpsnet.

    The header's size is checked against ``MAX_IMAGE_PIXELS`` before any pixel is decoded, so a
    hostile file claiming 60000 x 60000 pixels costs a few bytes of reading, not gigabytes.

    Args:
        path: the image file (the format is found from its content, not its name).
        flags: OpenCV ``IMREAD_*`` flags (e.g. ``cv2.IMREAD_GRAYSCALE``,
            ``cv2.IMREAD_REDUCED_COLOR_8``).

    Raises:
        BadInputError: the file is missing, empty, oversized, truncated, or not a decodable
            image; the message says which file and which problem.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: image file not found")
    # Compressed pixels never take more than 8 bytes each (16-bit RGBA, uncompressed); a bigger
    # file is not an image we would decode, and reading it whole would be the attack itself.
    limit_bytes = 8 * MAX_IMAGE_PIXELS + (1 << 20)
    if path.stat().st_size > limit_bytes:
        raise BadInputError(
            f"{path}: file too large for an image ({path.stat().st_size} bytes; limit "
            f"{limit_bytes} from INPUT.MAX_IMAGE_PIXELS)"
        )
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise BadInputError(f"{path}: image file is empty")
    image_size(path, data[: 1 << 20].tobytes())
    if _truncated_jpeg(data):
        raise BadInputError(
            f"{path}: not a readable image (truncated JPEG: no end-of-image marker)"
        )
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as e:
        raise BadInputError(f"{path}: OpenCV could not decode it ({_one_line(e)})") from None
    if image is None:
        raise BadInputError(f"{path}: not a readable image (corrupt, truncated or unsupported)")
    return image


def try_read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """``read_image`` with ``cv2.imread``'s contract: None for a missing or unreadable file.

    For callers that test the result (``if image is None``) and report the file themselves;
    the header's size is still checked first.
    """
    try:
        return read_image(path, flags)
    except BadInputError:
        return None


def _truncated_jpeg(data: np.ndarray) -> bool:
    # A JPEG's last scan (SOS, FF DA) is followed by its end-of-image marker (FF D9); inside the
    # entropy-coded data a 0xFF byte is always stuffed (FF 00), so a cut-off file has none after
    # it. libjpeg would otherwise fill the missing rows with grey and only warn on stderr.
    if data.size < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    raw = data.tobytes()
    return raw.rfind(b"\xff\xd9") < raw.rfind(b"\xff\xda")


def _bomb_pixels(error: Exception) -> str:
    match = re.search(r"\((\d+) pixels\)", str(error))
    return match.group(1) if match else "too many"


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
