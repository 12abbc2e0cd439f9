"""SSIMULACRA2, the perceptual metric of the JPEG XL and AVIF projects, in numpy.

pp-compress searches, per image, for the smallest encoding that still looks like the original;
it scores several candidates of one image, so the original's half of the work (its XYB planes and
blurred statistics at all six scales) is done once, in :class:`Reference`, and each candidate
costs three blurs per plane and scale instead of five.

This follows libjxl's tools/ssimulacra2.cc (version 2.1, April 2023): linear-light downscaling,
XYB rescaled to about 0..1, SSIM without the luminance denominator, the ringing and blurring edge
maps, 1- and 4-norms over 6 scales x 3 planes x 3 maps, and the same 108 weights and final curve.
Its blur is libjxl's recursive Gaussian (Charalampidis 2016, sigma 1.5, zero outside the image),
which is exactly a 9-tap sum of truncated cosines: we apply that kernel directly.
Scores: 100 identical, 90 "visually lossless" (no difference in a flicker test at 1:1), 85 no
difference in a flip test, 80 none side by side, 70 artefacts hard to notice without the original.
"""

from __future__ import annotations

import math

import numpy as np

_NUM_SCALES = 6
_C2 = np.float32(0.0009)
#: Transparent images are scored over a dark and a light background, the worse one counts (as ssimulacra2 does).
ALPHA_BACKGROUNDS = (0.1, 0.9)

# The opsin absorbance of libjxl's XYB: rows mix linear R, G, B; then a cube root with a bias.
_OPSIN = np.array([[0.30, 0.622, 0.078],
                   [0.23, 0.692, 0.078],
                   [0.24342268924547819, 0.20476744424496821, 1 - 0.24342268924547819 - 0.20476744424496821]],
                  dtype=np.float32)
_BIAS = np.float32(0.0037930732552754493)
_BIAS_CBRT = np.float32(np.cbrt(np.float64(_BIAS)))

# Weights of the 108 sub-scores, in the order: plane X, Y, B; scale 1:1 .. 1:32; norm 1, 4; map ssim,
# ringing, blurring.
_WEIGHTS = np.array([
    0.0, 0.0007376606707406586, 0.0, 0.0, 0.0007793481682867309, 0.0, 0.0, 0.0004371155730107379, 0.0,
    1.1041726426657346, 0.00066284834129271, 0.00015231632783718752, 0.0, 0.0016406437456599754, 0.0,
    1.8422455520539298, 11.441172603757666, 0.0, 0.0007989109436015163, 0.000176816438078653, 0.0,
    1.8787594979546387, 10.94906990605142, 0.0, 0.0007289346991508072, 0.9677937080626833, 0.0,
    0.00014003424285435884, 0.9981766977854967, 0.00031949755934435053, 0.0004550992113792063, 0.0, 0.0,
    0.0013648766163243398, 0.0, 0.0, 0.0, 0.0, 0.0, 7.466890328078848, 0.0, 17.445833984131262,
    0.0006235601634041466, 0.0, 0.0, 6.683678146179332, 0.00037724407979611296, 1.027889937768264,
    225.20515300849274, 0.0, 0.0, 19.213238186143016, 0.0011401524586618361, 0.001237755635509985,
    176.39317598450694, 0.0, 0.0, 24.43300999870476, 0.28520802612117757, 0.0004485436923833408, 0.0, 0.0,
    0.0, 34.77906344483772, 44.835625328877896, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0008680556573291698, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0005313191874358747, 0.0, 0.00016533814161379112,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0004179171803251336, 0.0017290828234722833, 0.0, 0.0020827005846636437,
    0.0, 0.0, 8.826982764996862, 23.19243343998926, 0.0, 95.1080498811086, 0.9863978034400682,
    0.9834382792465353, 0.0012286405048278493, 171.2667255897307, 0.9807858872435379, 0.0, 0.0, 0.0,
    0.0005130064588990679, 0.0, 0.00010854057858411537]).reshape(3, _NUM_SCALES, 2, 3)


def _recursive_gaussian_taps(sigma: float = 1.5) -> np.ndarray:
    """The impulse response of libjxl's CreateRecursiveGaussian(sigma): sum over k = 1, 3, 5 of
    beta_k cos(omega_k m) for |m| <= N, solved as in the paper's equations (37)-(56)."""
    radius = round(3.2795 * sigma + 0.2546)
    omega = np.array([1.0, 3.0, 5.0]) * math.pi / (2 * radius)
    p = np.array([1, -1, 1]) / np.tan(0.5 * omega)
    r = np.array([1, -1, 1]) * p * p / np.sin(omega)
    rho = np.exp(-0.5 * sigma * sigma * omega * omega) / radius
    d13 = p[0] * r[1] - r[0] * p[1]
    zeta15 = (p[1] * r[2] - r[1] * p[2]) / d13
    zeta35 = (p[2] * r[0] - r[2] * p[0]) / d13
    matrix = np.array([p, r, [zeta15, zeta35, 1.0]])
    gamma = np.array([1.0, radius * radius - sigma * sigma, zeta15 * rho[0] + zeta35 * rho[1] + rho[2]])
    beta = np.linalg.solve(matrix, gamma)
    m = np.arange(-radius, radius + 1)
    taps = (beta[:, None] * np.cos(omega[:, None] * m[None, :])).sum(axis=0)
    return taps[1:-1].astype(np.float32)  # cos(k pi / 2) = 0 at |m| = N


_TAPS = _recursive_gaussian_taps()
_HALF = len(_TAPS) // 2


def _blur(plane: np.ndarray) -> np.ndarray:
    """Separable blur with zero outside the image (libjxl's boundary)."""
    height, width = plane.shape
    padded = np.zeros((height, width + 2 * _HALF), np.float32)
    padded[:, _HALF:_HALF + width] = plane
    rows = padded[:, _HALF:_HALF + width] * _TAPS[_HALF]
    for m in range(1, _HALF + 1):
        rows += (padded[:, _HALF - m:_HALF - m + width] + padded[:, _HALF + m:_HALF + m + width]) * _TAPS[_HALF + m]
    padded = np.zeros((height + 2 * _HALF, width), np.float32)
    padded[_HALF:_HALF + height] = rows
    out = padded[_HALF:_HALF + height] * _TAPS[_HALF]
    for m in range(1, _HALF + 1):
        out += (padded[_HALF - m:_HALF - m + height] + padded[_HALF + m:_HALF + m + height]) * _TAPS[_HALF + m]
    return out


def _srgb_table() -> np.ndarray:
    values = np.arange(256, dtype=np.float64) / 255
    linear = np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)
    return linear.astype(np.float32)


_SRGB_TO_LINEAR = _srgb_table()


def to_linear(pixels: np.ndarray, background: float | None = None) -> np.ndarray:
    """Linear-light RGB planes (3, H, W) float32 from 8-bit sRGB pixels (H, W, 1-4 bands).

    Grey is expanded to RGB; alpha is blended over `background` (in sRGB, as ssimulacra2 does)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    bands = pixels.shape[2]
    colour = pixels[:, :, :3] if bands >= 3 else np.repeat(pixels[:, :, :1], 3, axis=2)
    if bands in (2, 4) and background is not None:
        alpha = pixels[:, :, -1:].astype(np.float32) / 255
        blended = colour.astype(np.float32) / 255 * alpha + background * (1 - alpha)
        linear = np.where(blended <= 0.04045, blended / 12.92, ((blended + 0.055) / 1.055) ** 2.4)
        return np.ascontiguousarray(linear.transpose(2, 0, 1), dtype=np.float32)
    return np.ascontiguousarray(_SRGB_TO_LINEAR[colour].transpose(2, 0, 1))


def _xyb(linear: np.ndarray) -> np.ndarray:
    """libjxl's XYB, made positive (X*14+0.42, Y+0.01, B-Y+0.55) as ssimulacra2 does."""
    mixed = np.tensordot(_OPSIN, linear, axes=1)
    mixed += _BIAS
    np.maximum(mixed, 0, out=mixed)
    np.cbrt(mixed, out=mixed)
    mixed -= _BIAS_CBRT
    x = (mixed[0] - mixed[1]) * np.float32(0.5 * 14)
    x += np.float32(0.42)
    y = (mixed[0] + mixed[1]) * np.float32(0.5)
    b = mixed[2] - y
    b += np.float32(0.55)
    y += np.float32(0.01)
    return np.stack([x, y, b])


def _downsample(linear: np.ndarray) -> np.ndarray:
    """2x2 box average; an odd last row or column repeats the edge (libjxl's Downsample)."""
    _, height, width = linear.shape
    if height % 2 or width % 2:
        linear = np.pad(linear, ((0, 0), (0, height % 2), (0, width % 2)), mode="edge")
    return (linear[:, 0::2, 0::2] + linear[:, 1::2, 0::2] + linear[:, 0::2, 1::2] + linear[:, 1::2, 1::2]) * 0.25


def _norms(values: np.ndarray) -> tuple[float, float]:
    """The 1-norm (mean) and 4-norm of a non-negative map."""
    squared = values * values
    return float(values.mean(dtype=np.float64)), float(np.mean(squared * squared, dtype=np.float64)) ** 0.25


class _Scale:
    """The original's planes at one scale, with what every comparison needs of them."""

    def __init__(self, xyb: np.ndarray) -> None:
        self.xyb = xyb
        self.mu = np.stack([_blur(p) for p in xyb])
        self.sigma = np.stack([_blur(p * p) for p in xyb])
        self.edge = np.abs(xyb - self.mu)
        self.edge += 1


def _pyramid(linear: np.ndarray) -> list[np.ndarray]:
    """Linear planes at the scales ssimulacra2 compares (stops below 8 pixels, as libjxl does)."""
    levels = [linear]
    while len(levels) < _NUM_SCALES and min(levels[-1].shape[1:]) >= 8:
        levels.append(_downsample(levels[-1]))
    return levels


def _features(original: _Scale, xyb: np.ndarray) -> np.ndarray:
    """(3 planes, 2 norms, 3 maps) of one scale."""
    out = np.zeros((3, 2, 3))
    for c in range(3):
        img1, img2 = original.xyb[c], xyb[c]
        mu1, mu2 = original.mu[c], _blur(img2)
        sigma22 = _blur(img2 * img2)
        sigma12 = _blur(img1 * img2)
        mu12 = mu1 * mu2
        num_m = mu1 - mu2
        num_m *= num_m
        np.subtract(1, num_m, out=num_m)
        num_s = sigma12
        num_s -= mu12
        num_s *= 2
        num_s += _C2
        denom_s = original.sigma[c] - mu1 * mu1  # (s11 - mu11) + (s22 - mu22) in libjxl's order, so that
        sigma22 -= mu2 * mu2  # identical images give num_s == denom_s exactly: a score of 100
        denom_s += sigma22
        denom_s += _C2
        num_m *= num_s
        num_m /= denom_s
        d = np.subtract(1, num_m, out=num_m)
        np.maximum(d, 0, out=d)
        out[c, :, 0] = _norms(d)
        ratio = np.abs(img2 - mu2)
        ratio += 1
        ratio /= original.edge[c]
        ratio -= 1
        out[c, :, 1] = _norms(np.maximum(ratio, 0))
        np.negative(ratio, out=ratio)
        out[c, :, 2] = _norms(np.maximum(ratio, 0, out=ratio))
    return out


def _score(features: list[np.ndarray]) -> float:
    weights = _WEIGHTS[:, :len(features)]
    total = float(np.sum(weights * np.abs(np.stack(features, axis=1))))
    total *= 0.9562382616834844
    total = 2.326765642916932 * total - 0.020884521182843837 * total ** 2 + 6.248496625763138e-05 * total ** 3
    return 100.0 - 10.0 * total ** 0.6276336467831387 if total > 0 else 100.0


class Reference:
    """An original (H, W, bands) uint8 sRGB array, prepared to score many candidates against."""

    def __init__(self, pixels: np.ndarray) -> None:
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        self.shape = pixels.shape[:2]
        self.alpha = pixels.shape[2] in (2, 4)
        backgrounds: tuple[float | None, ...] = ALPHA_BACKGROUNDS if self.alpha else (None,)
        self._scales = [[_Scale(_xyb(level)) for level in _pyramid(to_linear(pixels, bg))] for bg in backgrounds]
        self._backgrounds = backgrounds

    def score(self, pixels: np.ndarray) -> float:
        """SSIMULACRA2 of a candidate of the same size (100 = identical)."""
        if pixels.shape[:2] != self.shape:
            height, width = self.shape
            raise ValueError(f"sizes differ: {pixels.shape[1]}x{pixels.shape[0]} against {width}x{height}")
        scores = []
        for background, scales in zip(self._backgrounds, self._scales, strict=True):
            levels = _pyramid(to_linear(pixels, background))
            scores.append(_score([_features(scale, _xyb(level)) for scale, level in zip(scales, levels, strict=True)]))
        return min(scores)


def ssimulacra2(original: np.ndarray, distorted: np.ndarray) -> float:
    """SSIMULACRA2 of two same-sized 8-bit sRGB arrays (H, W[, bands])."""
    return Reference(original).score(distorted)
