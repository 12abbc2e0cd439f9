"""Structural similarity (SSIM) between two images, in-process and with numpy only.

pp-compress searches, per image, for the smallest encoding whose SSIM against the original stays above a
target; that search encodes and scores the same image several times, so the score has to be cheap and must
not pull scipy or scikit-image into the command. This is the standard SSIM of Wang et al. (2004) with the
parameters of ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=-1)`` and agrees with it to float32 precision.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

MAX_PIXELS = 4_000_000
"""Larger images are box-downscaled to at most this many pixels before comparing (speed and memory)."""

_SIGMA = 1.5
_RADIUS = int(3.5 * _SIGMA + 0.5)  # truncate=3.5 as in skimage: an 11-tap window
_TAPS = np.exp(-0.5 * (np.arange(-_RADIUS, _RADIUS + 1) / _SIGMA) ** 2)
_TAPS = (_TAPS / _TAPS.sum()).astype(np.float32)
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_BAND_VALUES = 2**17  # values per channel in one band of rows: keeps a band's working set in the CPU cache
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def ssim(reference: Image.Image, candidate: Image.Image) -> float:
    """Mean SSIM of candidate against reference (same size), 1.0 = identical.

    Each RGB channel is scored separately and the scores averaged. If either image has transparency, RGB
    is composited over black and alpha is scored as a fourth channel, so changed transparency lowers the
    score. Any Pillow mode is accepted (16-bit greyscale is scaled to the 8-bit range). Images of more
    than MAX_PIXELS pixels are first downscaled, both the same way (box filter), to fit within it. Images
    smaller than the 11x11 window are scored with a single window covering the whole image.
    """
    return Reference(reference).score(candidate)


class Reference:
    """An original prepared once, to score the many candidates of a quality search against it.

    It keeps the original's pixels and, band by band, their blurred mean and variance, so a trial blurs
    three maps instead of five. Windows where the candidate equals the original score exactly 1 and are
    not computed: a screenshot's untouched background costs nothing. A greyscale pair is scored on one
    channel, which equals the mean over three identical ones.
    """

    def __init__(self, image: Image.Image) -> None:
        width, height = image.size
        if width * height == 0:
            raise ValueError(f"cannot compare empty images ({width}x{height})")
        self.image_size = image.size
        self.size = image.size
        if width * height > MAX_PIXELS:
            scale = math.sqrt(MAX_PIXELS / (width * height))
            self.size = (max(1, int(width * scale)), max(1, int(height * scale)))
        self.alpha = image.has_transparency_data
        self._x = _pixels(image, self.size, self.alpha)
        self.grey = _is_grey(self._x)
        self._stats: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (channels, top) -> (ux, vx)

    def score(self, candidate: Image.Image) -> float:
        """SSIM of one candidate (see `ssim`)."""
        if candidate.size != self.image_size:
            raise ValueError(f"cannot compare images of different sizes: {self.image_size} and {candidate.size}")
        alpha = self.alpha or candidate.has_transparency_data
        x = self._x
        if alpha and not self.alpha:
            x = np.concatenate([x, np.full_like(x[:1], 255)])
        y = _pixels(candidate, self.size, alpha)
        if alpha and x[3].min() == 255 and y[3].min() == 255:
            # Transparency that is opaque everywhere (a quantizer's RGBA palette) is no fourth
            # channel: scoring it would add a perfect 1.0 and flatter the colours.
            x, y = x[:3], y[:3]
        if len(x) == 3 and self.grey and _is_grey(y):
            x, y = x[:1], y[:1]
        return self._windowed(x, y) if min(self.size) > 2 * _RADIUS else _global_ssim(x, y)

    def _windowed(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean of the SSIM map over all channels, computed a band of rows at a time."""
        channels, height, width = x.shape
        out_width = width - 2 * _RADIUS
        rows = max(8, _BAND_VALUES // (channels * width))
        changed = (x != y).any(axis=0)
        changed_rows = changed.any(axis=1)
        total = 0.0
        for top in range(0, height - 2 * _RADIUS, rows):
            band = slice(top, top + rows + 2 * _RADIUS)
            count = min(rows, height - 2 * _RADIUS - top) * out_width  # SSIM values in this band
            if not changed_rows[band].any():
                total += channels * count
                continue
            columns = np.flatnonzero(changed[band].any(axis=0))
            first, last = max(0, columns[0] - 2 * _RADIUS), min(out_width - 1, columns[-1])
            ux, vx = self._band_stats(x, top, band)
            ux, vx = ux[:, :, first : last + 1], vx[:, :, first : last + 1]
            xb = x[:, band, first : last + 1 + 2 * _RADIUS]
            yb = y[:, band, first : last + 1 + 2 * _RADIUS]
            uy, uyy, uxy = _blur(np.stack([yb, yb * yb, xb * yb]))
            vy = uyy - uy * uy
            vxy = uxy - ux * uy
            s = (2 * ux * uy + _C1) * (2 * vxy + _C2) / ((ux * ux + uy * uy + _C1) * (vx + vy + _C2))
            total += float(s.sum(dtype=np.float64)) + channels * (count - s.shape[1] * s.shape[2])
        return total / (channels * (height - 2 * _RADIUS) * out_width)

    def _band_stats(self, x: np.ndarray, top: int, band: slice) -> tuple[np.ndarray, np.ndarray]:
        """The original's blurred mean and variance over one band, computed once per channel count."""
        key = (len(x), top)
        if key not in self._stats:
            xb = x[:, band]
            ux, uxx = _blur(np.stack([xb, xb * xb]))
            self._stats[key] = (ux, uxx - ux * ux)
        return self._stats[key]


def _is_grey(pixels: np.ndarray) -> bool:
    """Three colour channels (and no alpha) that are equal everywhere."""
    return len(pixels) == 3 and np.array_equal(pixels[0], pixels[1]) and np.array_equal(pixels[0], pixels[2])


def _pixels(image: Image.Image, size: tuple[int, int], alpha: bool) -> np.ndarray:
    """float32 array (channel, row, column) on the 0..255 scale: RGB, premultiplied by A if alpha."""
    if image.mode not in _SIXTEEN_BIT:
        image = image.convert("RGBA" if alpha else "RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BOX)
    if image.mode in _SIXTEEN_BIT:
        grey = np.clip(np.asarray(image, dtype=np.float32) * np.float32(255 / 65535), 0, 255)
        return np.stack([grey] * 3 + ([np.full_like(grey, 255)] if alpha else []))
    pixels = np.ascontiguousarray(np.moveaxis(np.asarray(image, dtype=np.float32), -1, 0))
    if alpha:
        pixels[:3] *= pixels[3] / np.float32(255)
    return pixels


def _blur(maps: np.ndarray) -> np.ndarray:
    """Gaussian-filter the last two axes, keeping only the 'valid' part (each side shrinks by _RADIUS).

    skimage filters with mode='reflect' and then drops _RADIUS pixels at every edge before averaging;
    the pixels it keeps are exactly those whose window never reaches the padding, so skipping both the
    padding and the crop gives the same values.
    """
    for axis in (maps.ndim - 2, maps.ndim - 1):
        n = maps.shape[axis] - 2 * _RADIUS
        out = _slab(maps, axis, _RADIUS, n) * _TAPS[_RADIUS]
        pair = np.empty_like(out)
        for k in range(1, _RADIUS + 1):  # the window is symmetric: add the mirrored taps first
            np.add(_slab(maps, axis, _RADIUS - k, n), _slab(maps, axis, _RADIUS + k, n), out=pair)
            pair *= _TAPS[_RADIUS + k]
            out += pair
        maps = out
    return maps


def _slab(array: np.ndarray, axis: int, start: int, n: int) -> np.ndarray:
    """View of `n` consecutive entries along `axis`, from `start`."""
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, start + n)
    return array[tuple(index)]


def _global_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM with one uniform window over each whole channel, for images smaller than the Gaussian window."""
    x64 = x.reshape(len(x), -1).astype(np.float64)
    y64 = y.reshape(len(y), -1).astype(np.float64)
    ux, uy = x64.mean(axis=1), y64.mean(axis=1)
    vx, vy = x64.var(axis=1), y64.var(axis=1)
    vxy = ((x64 - ux[:, None]) * (y64 - uy[:, None])).mean(axis=1)
    s = (2 * ux * uy + _C1) * (2 * vxy + _C2) / ((ux * ux + uy * uy + _C1) * (vx + vy + _C2))
    return float(s.mean())
