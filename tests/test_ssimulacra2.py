"""picpipe.ssimulacra2 against an independent implementation, on real photos.

The oracle is the `ssimulacra2` package on PyPI (a separate Python port of libjxl's tool). It blurs
with scipy's Gaussian and reflects at the edges where libjxl uses its recursive Gaussian with zero
padding, so the two differ by a fraction of a point; on the photos of scikit-image, JPEG-compressed
at the qualities where pp-compress makes its choices, they agree within TOLERANCE.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from picpipe.ssimulacra2 import Reference, ssimulacra2

#: Points of SSIMULACRA2 the two implementations may differ by at JPEG qualities 70-95.
TOLERANCE = 1.0


def jpeg(pixels: np.ndarray, quality: int, subsampling: int = 2) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
    return np.asarray(Image.open(buffer).convert(Image.fromarray(pixels).mode))


def photo(name: str) -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)())


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "immunohistochemistry", "camera"])
def test_agrees_with_the_pypi_oracle_on_photos(name, tmp_path):
    from ssimulacra2 import compute_ssimulacra2

    original = photo(name)
    Image.fromarray(original).save(tmp_path / "original.png")
    reference = Reference(original)
    for quality in (70, 85, 95):
        distorted = jpeg(original, quality)
        Image.fromarray(distorted).save(tmp_path / "distorted.png")
        oracle = compute_ssimulacra2(str(tmp_path / "original.png"), str(tmp_path / "distorted.png"))
        ours = reference.score(distorted)
        assert abs(ours - oracle) <= TOLERANCE, (name, quality, ours, oracle)


def test_scale_and_order():
    original = photo("astronaut")
    assert ssimulacra2(original, original) == 100.0
    scores = [ssimulacra2(original, jpeg(original, q)) for q in (20, 50, 80, 95)]
    assert scores == sorted(scores) and scores[0] < 50 < scores[-1] < 100
    # the metric sees colour: a hue change that luma alone would hardly show costs many points
    tinted = original.copy()
    tinted[..., 2] = np.clip(tinted[..., 2].astype(int) + 40, 0, 255)
    assert ssimulacra2(original, tinted) < 70


def test_grey_alpha_small_and_mismatched_images():
    grey = photo("camera")
    assert 70 < ssimulacra2(grey, jpeg(grey, 85)) < 100  # one band is read as grey RGB
    rgba = np.dstack([photo("astronaut"), np.full((512, 512), 255, np.uint8)])
    rgba[100:200, 100:200, 3] = 0
    changed = rgba.copy()
    changed[100:200, 100:200, :3] = 0  # invisible: fully transparent pixels
    assert ssimulacra2(rgba, changed) == 100.0
    changed[100:200, 100:200, 3] = 255  # now they show
    assert ssimulacra2(rgba, changed) < 60
    tiny = np.zeros((5, 6, 3), np.uint8)
    assert ssimulacra2(tiny, tiny) == 100.0
    with pytest.raises(ValueError, match="sizes differ"):
        Reference(grey).score(grey[:-1])
