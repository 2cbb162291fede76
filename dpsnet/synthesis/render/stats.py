"""Image statistics that describe a set's "look": colour, blur, noise and vignetting.

The fast renderer moves each synthesized image toward these statistics of one randomly chosen
target image; the same numbers, summarised per set, measure how far a set is from the target
domain before and after rendering.

Every statistic is measured at a common *working scale* (the longer side resized to
``work_size`` pixels), so that sets of different resolutions are compared as the detector sees
them after resizing, not pixel for pixel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from dpsnet.utils.io import BadInputError, atomic_write_json, load_json, read_image

logger = logging.getLogger(__name__)

# Bump when a statistic's definition changes, so stale caches are recomputed.
STATS_VERSION = 3
# Quantile levels of the per-channel Lab histograms (the histogram-matching targets).
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 33)
# Pre-blur (pixels) of the blur estimator's fine gradients (see ``blur_sigma``).
_PRE_BLUR = 0.5


def working_scale(shape: tuple[int, ...], work_size: int) -> float:
    """Factor that resizes an image of ``shape`` (H, W, ...) so its longer side is work_size."""
    return float(work_size) / float(max(shape[0], shape[1]))


def to_working(image: np.ndarray, work_size: int) -> np.ndarray:
    """Resize (area interpolation) so that the longer side is ``work_size``; never upsample."""
    s = working_scale(image.shape, work_size)
    if s >= 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def bgr_to_lab(image: np.ndarray) -> np.ndarray:
    """uint8 BGR (H, W, 3) -> float32 Lab (H, W, 3) with L in [0, 100], a/b in about [-127, 127]."""
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)


def lab_to_bgr(lab: np.ndarray) -> np.ndarray:
    """float32 Lab (H, W, 3) -> float32 BGR in [0, 1] (clipped)."""
    return np.clip(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2BGR), 0.0, 1.0)


def blur_sigma(gray: np.ndarray, probe: float = 1.0, top: float = 0.02) -> float:
    """Blur of an image's edges, as a Gaussian sigma in pixels (the re-blur ratio method).

    At an edge blurred by sigma, re-blurring by ``probe`` divides the gradient peak by
    ``sqrt(sigma^2 + probe^2) / sigma`` (Zhuo and Sim, 2011). The ratio is taken at the local
    maxima of the strongest ``top`` fraction of edges, whose height is far above the noise, so
    the estimate depends on the edges' blur, not on the content's contrast or on pixel noise.
    A half-pixel pre-blur steadies the gradients; it is removed in quadrature again. A perfectly
    sharp step reads about 0.75 (the pixel grid's own blur); blurs add in quadrature above it.

    Args:
        gray: (H, W) grey image (any range).

    Returns:
        The sigma estimate (5.0 when no edge shows any sharpness).
    """
    gray = gray.astype(np.float32)

    def grad(x: np.ndarray) -> np.ndarray:
        return np.hypot(cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1))

    g_fine = grad(cv2.GaussianBlur(gray, (0, 0), _PRE_BLUR))
    g_probe = grad(cv2.GaussianBlur(gray, (0, 0), float(np.hypot(_PRE_BLUR, probe))))
    peaks = g_probe >= cv2.dilate(g_probe, np.ones((3, 3), np.uint8))
    strong = g_probe > max(np.quantile(g_probe, 1.0 - top), 1e-6)
    sel = peaks & strong
    if not sel.any():
        return 5.0
    ratio = float(np.median(g_fine[sel] / g_probe[sel]))
    if ratio <= 1.0 + 1e-4:
        return 5.0
    total = probe / np.sqrt(ratio * ratio - 1.0)
    return float(np.sqrt(max(0.0, total * total - _PRE_BLUR**2)))


def noise_sigma(gray: np.ndarray) -> float:
    """Standard deviation of pixel noise, in 0-255 grey levels (Immerkaer's estimator).

    The Laplacian-difference kernel cancels smooth content; pixels on strong edges (the top half
    of gradient magnitudes) are left out so that texture is not read as noise.

    Args:
        gray: (H, W) float32 grey image in [0, 255].
    """
    if min(gray.shape) < 3:
        return 0.0
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    resp = np.abs(cv2.filter2D(gray, cv2.CV_32F, kernel))[1:-1, 1:-1]
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0)[1:-1, 1:-1]
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1)[1:-1, 1:-1]
    mag = np.hypot(gx, gy)
    flat = mag <= np.quantile(mag, 0.5)
    if not flat.any():
        return 0.0
    return float(np.sqrt(np.pi / 2.0) / 6.0 * np.mean(resp[flat]))


def radial_r2(h: int, w: int) -> np.ndarray:
    """(H, W) squared distance from the image centre, normalised so that the corners are 1."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy = (yy - (h - 1) / 2.0) / ((h - 1) / 2.0 + 1e-6)
    dx = (xx - (w - 1) / 2.0) / ((w - 1) / 2.0 + 1e-6)
    return (dx * dx + dy * dy) / 2.0


def vignetting(lightness: np.ndarray) -> float:
    """Fractional darkening at the corners: fit ``L = c0 * (1 - k * r^2)``, return k.

    Args:
        lightness: (H, W) Lab L channel at working scale.
    """
    h, w = lightness.shape
    r2 = radial_r2(h, w).ravel()
    design = np.stack([np.ones_like(r2), r2], axis=1)
    (c0, c1), *_ = np.linalg.lstsq(design, lightness.ravel(), rcond=None)
    if c0 <= 1e-3:
        return 0.0
    return float(-c1 / c0)


@dataclass
class ImageStats:
    """The look of one image (all measured at working scale)."""

    lab_mean: list[float]  # (3,) mean of L, a, b
    lab_std: list[float]  # (3,) standard deviation of L, a, b
    lab_quantiles: list[list[float]]  # (3, len(QUANTILE_LEVELS)) per-channel quantile function
    blur: float  # edge blur sigma in working-scale pixels, see ``blur_sigma``
    noise: float  # grey-level noise sigma at working scale, 0-255 units
    vignetting: float  # corner darkening fraction k, see ``vignetting``


def image_stats(image: np.ndarray, work_size: int) -> ImageStats:
    """Measure ``ImageStats`` of one uint8 BGR image (H, W, 3)."""
    small = to_working(image, work_size)
    lab = bgr_to_lab(small)
    flat = lab.reshape(-1, 3)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return ImageStats(
        lab_mean=flat.mean(axis=0).tolist(),
        lab_std=flat.std(axis=0).tolist(),
        lab_quantiles=np.quantile(flat, QUANTILE_LEVELS, axis=0).T.tolist(),
        blur=blur_sigma(gray),
        noise=noise_sigma(gray),
        vignetting=vignetting(lab[..., 0]),
    )


@dataclass
class SetStats:
    """Per-image statistics of a set of images (a sample of it when the set is large)."""

    files: list[str]
    lab_mean: np.ndarray  # (N, 3)
    lab_std: np.ndarray  # (N, 3)
    lab_quantiles: np.ndarray  # (N, 3, Q)
    blur: np.ndarray  # (N,)
    noise: np.ndarray  # (N,)
    vignetting: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.files)

    @classmethod
    def from_images(cls, files: Sequence[str], stats: Sequence[ImageStats]) -> SetStats:
        if not stats:
            raise ValueError("no image statistics: every image of the set was unreadable")
        return cls(
            files=list(files),
            lab_mean=np.array([s.lab_mean for s in stats], np.float32),
            lab_std=np.array([s.lab_std for s in stats], np.float32),
            lab_quantiles=np.array([s.lab_quantiles for s in stats], np.float32),
            blur=np.array([s.blur for s in stats], np.float32),
            noise=np.array([s.noise for s in stats], np.float32),
            vignetting=np.array([s.vignetting for s in stats], np.float32),
        )

    def to_json(self) -> dict:
        return {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()
        }

    @classmethod
    def from_json(cls, d: dict) -> SetStats:
        return cls(
            files=list(d["files"]),
            **{
                k: np.asarray(d[k], np.float32)
                for k in ("lab_mean", "lab_std", "lab_quantiles", "blur", "noise", "vignetting")
            },
        )

    def summary(self) -> dict[str, float]:
        """Set-level medians, for reports."""
        return {
            "images": len(self),
            "L_mean": float(np.median(self.lab_mean[:, 0])),
            "a_mean": float(np.median(self.lab_mean[:, 1])),
            "b_mean": float(np.median(self.lab_mean[:, 2])),
            "L_std": float(np.median(self.lab_std[:, 0])),
            "blur": float(np.median(self.blur)),
            "noise": float(np.median(self.noise)),
            "vignetting": float(np.median(self.vignetting)),
        }


def set_distance(a: SetStats, b: SetStats) -> dict[str, float]:
    """How far set ``a``'s look is from set ``b``'s (0 = same statistics).

    Returns:
        ``colour_w1``: mean over L, a, b of the 1-Wasserstein distance between the two sets'
        pooled per-channel distributions (mean quantile functions), in Lab units;
        ``blur``, ``noise``, ``vignetting``: absolute differences of the set medians.
    """
    qa = a.lab_quantiles.mean(axis=0)
    qb = b.lab_quantiles.mean(axis=0)
    sa, sb = a.summary(), b.summary()
    return {
        "colour_w1": float(np.mean(np.abs(qa - qb))),
        "blur": abs(sa["blur"] - sb["blur"]),
        "noise": abs(sa["noise"] - sb["noise"]),
        "vignetting": abs(sa["vignetting"] - sb["vignetting"]),
    }


def _stats_one(args: tuple[str, int]) -> tuple[str, ImageStats | None, str | None]:
    path, work_size = args
    try:
        return path, image_stats(read_image(path), work_size), None
    except BadInputError as e:
        return path, None, str(e)


def _cache_key(files: Sequence[str], work_size: int) -> str:
    h = hashlib.sha1(f"v{STATS_VERSION}:{work_size}".encode())
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}:missing\n".encode())
    return h.hexdigest()


def sample_files(files: Sequence[str], max_images: int, seed: int) -> list[str]:
    """A deterministic sample of at most ``max_images`` files (all of them when 0), in order."""
    files = list(files)
    if max_images <= 0 or len(files) <= max_images:
        return files
    idx = np.random.default_rng([seed, 7]).choice(len(files), size=max_images, replace=False)
    return [files[i] for i in sorted(idx)]


def estimate_set_stats(
    files: Sequence[str],
    *,
    work_size: int = 512,
    max_images: int = 200,
    seed: int = 0,
    cache_file: str | os.PathLike | None = None,
    num_workers: int = 0,
    desc: str = "image statistics",
) -> SetStats:
    """Measure (or load from ``cache_file``) the statistics of a sample of ``files``.

    The cache is keyed by the sampled files' paths, sizes and modification times and by the
    statistic definitions, so a changed target set is measured again. Unreadable images are
    skipped with a warning naming them.

    Args:
        files: image paths of the set.
        work_size: longer side of the working scale, in pixels.
        max_images: sample size (0 = every image).
        seed: seed of the sample.
        cache_file: JSON file to read/write the statistics; None = no cache.
        num_workers: processes (0 = this process).
        desc: progress-bar label.
    """
    if not files:
        raise ValueError(f"{desc}: the image set is empty")
    chosen = sample_files(files, max_images, seed)
    key = _cache_key(chosen, work_size)
    if cache_file is not None and Path(cache_file).is_file():
        try:
            cached = load_json(cache_file)
            if cached.get("key") == key:
                logger.info("%s: loaded from cache %s", desc, cache_file)
                return SetStats.from_json(cached["stats"])
        except (BadInputError, KeyError, TypeError, ValueError) as e:
            logger.warning("%s: ignoring unreadable cache %s (%s)", desc, cache_file, e)
    jobs = [(f, work_size) for f in chosen]
    results = []
    if num_workers > 0 and len(jobs) > 1:
        with get_context("fork").Pool(num_workers) as pool:
            it = pool.imap(_stats_one, jobs, chunksize=4)
            results = list(tqdm(it, total=len(jobs), desc=desc, leave=False))
    else:
        results = [_stats_one(j) for j in tqdm(jobs, desc=desc, leave=False)]
    good_files, good = [], []
    for path, st, err in results:
        if st is None:
            logger.warning("%s: skipped %s", desc, err)
            continue
        good_files.append(path)
        good.append(st)
    stats = SetStats.from_images(good_files, good)
    if cache_file is not None:
        atomic_write_json(cache_file, {"key": key, "stats": stats.to_json()})
    return stats


def stats_to_text(stats: SetStats) -> str:
    """One-line summary of a set for logs."""
    return json.dumps({k: round(v, 3) for k, v in stats.summary().items()})
