"""The fast, non-learned renderer: move a synthesized image's look toward a real target image.

Per image, one target image is drawn (from the seed) out of the target set's cached statistics,
and the source image is moved toward it in five steps:

1. colour-statistics transfer in Lab (Reinhard et al. 2001: match each channel's mean and
   standard deviation);
2. partial histogram matching of each Lab channel to the target's quantile function;
3. vignetting: darken the corners by the target's corner falloff minus the source set's;
4. blur: the Gaussian that brings the image's edge blur up to the target's (blurs add in
   quadrature);
5. noise: grey-level Gaussian noise that brings the image's noise up to the target's.

Nothing moves geometrically, so the labels stay valid; the label-preservation check still runs
on every output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from dpsnet.synthesis.render.stats import (
    QUANTILE_LEVELS,
    SetStats,
    bgr_to_lab,
    blur_sigma,
    lab_to_bgr,
    noise_sigma,
    radial_r2,
    to_working,
    working_scale,
)

logger = logging.getLogger(__name__)


@dataclass
class FastRenderParams:
    """Strengths of the fast renderer's steps (``cfg.RENDER.FAST``)."""

    color_strength: float = 1.0  # 0..1 blend of the Reinhard Lab transfer
    hist_strength: float = 0.5  # 0..1 blend of the per-channel histogram matching
    match_blur: bool = True  # blur toward the target's edge blur
    match_noise: bool = True  # add noise up to the target's noise level
    match_vignetting: bool = True  # darken corners toward the target's vignetting
    max_vignetting: float = 0.5  # cap on the added corner darkening fraction
    max_blur: float = 3.0  # cap on the blur sigma, working-scale pixels
    work_size: int = 512  # working scale of the statistics (longer side, pixels)

    @classmethod
    def from_config(cls, cfg) -> FastRenderParams:
        f = cfg.RENDER.FAST
        return cls(
            color_strength=f.COLOR_STRENGTH,
            hist_strength=f.HIST_STRENGTH,
            match_blur=f.MATCH_BLUR,
            match_noise=f.MATCH_NOISE,
            match_vignetting=f.MATCH_VIGNETTING,
            max_vignetting=f.MAX_VIGNETTING,
            max_blur=f.MAX_BLUR,
            work_size=cfg.RENDER.STATS.WORK_SIZE,
        )


def reinhard_transfer(
    lab: np.ndarray, mean: np.ndarray, std: np.ndarray, strength: float = 1.0
) -> np.ndarray:
    """Match each Lab channel's mean and standard deviation to ``mean``/``std``.

    Args:
        lab: (H, W, 3) float32 Lab image.
        mean, std: (3,) target statistics.
        strength: 0 returns ``lab``, 1 the fully transferred image.
    """
    flat = lab.reshape(-1, 3)
    mu = flat.mean(axis=0)
    sd = flat.std(axis=0) + 1e-6
    out = (lab - mu) / sd * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return (lab + strength * (out - lab)).astype(np.float32)


def histogram_match(lab: np.ndarray, quantiles: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Map each channel through its own distribution function onto the target's quantiles.

    Values are binned (256 bins over each channel's range); a bin maps to the target quantile
    at the *middle* of its cumulative mass, so a large flat region (a plain background) lands in
    the middle of the target's distribution instead of at its lower end.

    Args:
        lab: (H, W, 3) float32 image.
        quantiles: (3, Q) target quantile function per channel at ``QUANTILE_LEVELS``.
        strength: blend between the input (0) and the fully matched image (1).
    """
    if strength <= 0:
        return lab
    out = np.empty_like(lab)
    for c in range(3):
        x = lab[..., c]
        lo, hi = float(x.min()), float(x.max())
        if hi - lo < 1e-6:
            out[..., c] = np.interp(0.5, QUANTILE_LEVELS, quantiles[c])
            continue
        idx = np.rint((x - lo) * (255.0 / (hi - lo))).astype(np.int32)
        counts = np.bincount(idx.ravel(), minlength=256).astype(np.float64)
        cdf = np.cumsum(counts) / counts.sum()
        mid = cdf - counts / (2.0 * counts.sum())
        table = np.interp(mid, QUANTILE_LEVELS, quantiles[c]).astype(np.float32)
        out[..., c] = table[idx]
    return (lab + strength * (out - lab)).astype(np.float32)


def matching_blur(gray_work: np.ndarray, target_blur: float, max_sigma: float) -> float:
    """The Gaussian sigma (working-scale pixels) after which ``blur_sigma`` reads the target's.

    Measured blur grows monotonically with added blur, but not exactly in quadrature near the
    pixel grid's own blur, so the sigma is found by bisection (6 steps, to ``max_sigma`` / 64).
    Returns 0 when the image is already at least as blurred as the target.
    """
    if blur_sigma(gray_work) >= target_blur:
        return 0.0
    lo, hi = 0.0, max_sigma
    if blur_sigma(cv2.GaussianBlur(gray_work, (0, 0), hi)) <= target_blur:
        return hi
    for _ in range(6):
        mid = 0.5 * (lo + hi)
        if blur_sigma(cv2.GaussianBlur(gray_work, (0, 0), mid)) < target_blur:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class FastRenderer:
    """Statistics-matching renderer; picklable, so it runs in worker processes.

    Args:
        target: statistics of the (unlabelled) target set.
        source: statistics of the source set, used for the vignetting difference (None assumes
            flat-lit sources).
        params: step strengths.
    """

    name = "fast"
    parallel_safe = True

    def __init__(
        self,
        target: SetStats,
        source: SetStats | None = None,
        params: FastRenderParams | None = None,
    ):
        if len(target) == 0:
            raise ValueError("FastRenderer needs statistics of at least one target image")
        self.target = target
        self.params = params or FastRenderParams()
        # Negative "vignetting" in a synthesized set is content (dark items on a bright
        # background), not lighting: count it as none.
        self.source_vignetting = (
            max(0.0, float(np.median(source.vignetting))) if source is not None else 0.0
        )

    def render(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Render one uint8 BGR image (H, W, 3); returns a uint8 BGR image of the same shape.

        The same ``rng`` state gives the same output.
        """
        p, t = self.params, self.target
        j = int(rng.integers(len(t)))
        h, w = image.shape[:2]
        lab = bgr_to_lab(image)
        if p.color_strength > 0:
            lab = reinhard_transfer(lab, t.lab_mean[j], t.lab_std[j], p.color_strength)
        lab = histogram_match(lab, t.lab_quantiles[j], p.hist_strength)
        bgr = lab_to_bgr(lab)
        if p.match_vignetting:
            k = float(np.clip(t.vignetting[j] - self.source_vignetting, 0.0, p.max_vignetting))
            if k > 0:
                bgr = bgr * (1.0 - k * radial_r2(h, w))[..., None]
        # Working scale -> native pixels: native = working / scale.
        native_per_work = 1.0 / min(1.0, working_scale(image.shape, p.work_size))
        if p.match_blur:
            gray = cv2.cvtColor(to_working(bgr, p.work_size), cv2.COLOR_BGR2GRAY)
            sigma = matching_blur(gray, float(t.blur[j]), p.max_blur)
            if sigma > 0:
                bgr = cv2.GaussianBlur(bgr, (0, 0), sigma * native_per_work)
        out = bgr * 255.0
        t_noise = float(t.noise[j]) if p.match_noise else 0.0
        if t_noise > 0:
            gray = cv2.cvtColor(to_working(out.astype(np.float32), p.work_size), cv2.COLOR_BGR2GRAY)
            add = float(np.sqrt(max(0.0, t_noise**2 - noise_sigma(gray) ** 2)))
            if add > 0:
                # Downscaling by area averages native noise over native_per_work^2 pixels, so
                # native noise must be that much stronger to read as ``add`` at working scale.
                sigma_native = add * native_per_work
                lum = rng.normal(0.0, sigma_native, size=(h, w, 1)).astype(np.float32)
                chroma = rng.normal(0.0, 0.25 * sigma_native, size=(h, w, 3)).astype(np.float32)
                out = out + lum + chroma
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
