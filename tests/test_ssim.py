"""picpipe.ssim: the similarity score that pp-compress's quality search relies on."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from picpipe import ssim as ssim_module
from picpipe.ssim import ssim


def photo(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A deterministic photo-like RGB image: smooth gradients, hard edges and fine texture."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 128 + 100 * np.sin(xx / 23) * np.cos(yy / 17)
    green = 255 * xx / width
    blue = 50 + 150 * (((xx // 40) + (yy // 40)) % 2) + 40 * ((xx - 160) ** 2 + (yy - 120) ** 2 < 60**2)
    texture = np.random.default_rng(seed).normal(0, 12, (height, width, 3))
    pixels = np.stack([red, green, blue], axis=-1) + texture
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert(image.mode)


def noisy(image: Image.Image, sigma: float, seed: int = 1) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    pixels = pixels + np.random.default_rng(seed).normal(0, sigma, pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "1"])
def test_identical_images_score_one(mode):
    image = photo().convert(mode)
    assert ssim(image, image.copy()) == pytest.approx(1.0, abs=1e-6)


def test_matches_skimage_on_real_images():
    skimage = pytest.importorskip("skimage")
    from skimage.metrics import structural_similarity

    def expected(reference: np.ndarray, candidate: np.ndarray) -> float:
        return structural_similarity(
            reference,
            candidate,
            channel_axis=-1 if reference.ndim == 3 else None,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )

    worst = 0.0
    for name in ("astronaut", "chelsea", "coffee", "camera"):
        reference = Image.fromarray(getattr(skimage.data, name)())
        candidates = [jpeg(reference, q) for q in (30, 60, 90)] + [noisy(reference, 8), noisy(reference, 25)]
        for candidate in candidates:
            got = ssim(reference, candidate)
            want = expected(np.asarray(reference), np.asarray(candidate))
            assert got == pytest.approx(want, abs=0.002), name
            worst = max(worst, abs(got - want))
    assert worst < 1e-4  # float32 filtering, otherwise the same computation

    # Transparency: RGB premultiplied by alpha, alpha as a fourth channel.
    reference = photo().convert("RGBA")
    candidate = jpeg(photo(), 50).convert("RGBA")
    reference.putalpha(Image.linear_gradient("L").resize(reference.size))
    candidate.putalpha(Image.linear_gradient("L").rotate(3).resize(candidate.size))

    def premultiplied(image: Image.Image) -> np.ndarray:
        pixels = np.asarray(image, dtype=np.float64)
        return np.concatenate([pixels[..., :3] * pixels[..., 3:] / 255, pixels[..., 3:]], axis=-1)

    assert ssim(reference, candidate) == pytest.approx(
        expected(premultiplied(reference), premultiplied(candidate)), abs=0.002
    )


def test_lower_jpeg_quality_scores_lower():
    reference = photo()
    scores = [ssim(reference, jpeg(reference, q)) for q in (95, 80, 60, 40, 20, 5)]
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) == len(scores)
    assert 0 < scores[-1] < scores[0] < 1


def test_greyscale_input():
    grey = photo().convert("L")
    assert 0.3 < ssim(grey, jpeg(grey, 30)) < 0.99
    assert ssim(grey, grey.convert("RGB")) == pytest.approx(1.0, abs=1e-6)


def test_sixteen_bit_greyscale_is_scaled_to_eight_bit():
    grey = photo().convert("L")
    wide = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # 0..255 -> 0..65535
    assert wide.mode == "I;16"
    assert ssim(wide, grey) == pytest.approx(1.0, abs=1e-6)
    assert ssim(wide.convert("I"), grey.convert("RGB")) == pytest.approx(1.0, abs=1e-6)


def test_palette_input():
    original = photo()
    palette = original.quantize(64)
    assert palette.mode == "P"
    assert 0.3 < ssim(original, palette) < 0.99
    assert ssim(palette, palette.convert("RGB")) == pytest.approx(1.0, abs=1e-6)


def test_palette_transparency_counts():
    palette = photo().quantize(64)
    see_through = palette.copy()
    see_through.info["transparency"] = 0
    assert ssim(palette, palette.copy()) == pytest.approx(1.0, abs=1e-6)
    assert ssim(see_through, see_through.copy()) == pytest.approx(1.0, abs=1e-6)
    assert ssim(palette, see_through) < 0.999


def test_change_of_alpha_alone_scores_below_one():
    reference = photo().convert("RGBA")
    candidate = reference.copy()
    alpha = np.full((reference.height, reference.width), 255, np.uint8)
    alpha[60:180, 80:240] = 128
    candidate.putalpha(Image.fromarray(alpha))
    assert np.array_equal(np.asarray(reference)[..., :3], np.asarray(candidate)[..., :3])
    assert ssim(reference, candidate) < 0.95
    assert ssim(reference.convert("RGB"), candidate) < 0.95  # opaque against translucent


def test_different_sizes_raise():
    with pytest.raises(ValueError, match="different sizes"):
        ssim(photo(320, 240), photo(240, 320))


def test_empty_images_raise():
    with pytest.raises(ValueError, match="empty"):
        ssim(Image.new("RGB", (0, 0)), Image.new("RGB", (0, 0)))


def test_images_smaller_than_the_window():
    tiny = photo(5, 40)
    assert ssim(tiny, tiny.copy()) == pytest.approx(1.0, abs=1e-6)
    assert 0 < ssim(tiny, noisy(tiny, 30)) < 0.99


def test_large_images_are_downscaled_alike(monkeypatch):
    # Like a camera image, smooth at the pixel level. (Downscaling averages away pixel-level differences,
    # so the score of a downscaled image with pixel-level detail would come out higher.)
    reference = photo(240, 180).resize((960, 720), Image.Resampling.LANCZOS)
    candidate = jpeg(reference, 40)
    full = ssim(reference, candidate)

    shapes = []
    pixels = ssim_module._pixels

    def recording_pixels(*args):
        result = pixels(*args)
        shapes.append(result.shape)
        return result

    monkeypatch.setattr(ssim_module, "_pixels", recording_pixels)
    monkeypatch.setattr(ssim_module, "MAX_PIXELS", 345_600)
    small = ssim(reference, candidate)
    assert shapes[0] == shapes[1]
    assert shapes[0][1] * shapes[0][2] <= 345_600
    assert shapes[0][1] * shapes[0][2] > 345_000
    assert small == pytest.approx(full, abs=0.02)


def test_an_opaque_alpha_channel_does_not_flatter_the_score():
    """A quantizer's palette carries alpha 255 everywhere: it must score like the RGB pixels."""
    from PIL import Image

    from picpipe.ssim import ssim

    base = Image.effect_noise((64, 48), 40).convert("RGB")
    degraded = base.quantize(8).convert("RGB")
    opaque_palette = degraded.convert("RGBA").quantize(8)  # a P image with an RGBA palette
    assert abs(ssim(base, opaque_palette) - ssim(base, degraded)) < 1e-6


def test_a_reference_scores_like_a_fresh_comparison():
    """The cached blurs, the skipped unchanged windows and the one-channel greyscale path change nothing."""
    from picpipe.ssim import Reference

    original = photo(200, 150)
    patched = original.copy()
    patched.paste(noisy(original.crop((60, 40, 90, 70)), 25), (60, 40))  # one changed patch, the rest equal
    reference = Reference(original)
    for candidate in (jpeg(original, 40), patched, jpeg(original, 90), original.copy()):
        assert reference.score(candidate) == pytest.approx(ssim(original, candidate), abs=1e-9)
    assert 0.9 < reference.score(patched) < 0.999
    skimage = pytest.importorskip("skimage.metrics")
    expected = skimage.structural_similarity(np.asarray(original), np.asarray(patched), channel_axis=-1,
                                             gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                             data_range=255)
    assert reference.score(patched) == pytest.approx(expected, abs=1e-6)

    grey = original.convert("L")
    assert Reference(grey).score(jpeg(grey, 30)) == pytest.approx(
        Reference(grey.convert("RGB")).score(jpeg(grey, 30).convert("RGB")), abs=1e-6)
    with pytest.raises(ValueError):
        reference.score(photo(150, 200))
