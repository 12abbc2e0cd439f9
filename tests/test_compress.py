"""pp-compress: privacy, alpha, originals untouched, bad inputs, animation, order."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import jsonl, parse_jsonl

GPS = 0x8825
ORIENTATION = 0x0112


def photo(width: int = 240, height: int = 160) -> Image.Image:
    """A photo-like image (gradients and sensor noise) with a red top-left block to track rotation."""
    gradient = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 24)
    image = Image.merge("RGB", (gradient, Image.blend(gradient.transpose(Image.Transpose.ROTATE_180), noise, 0.3),
                                Image.blend(gradient, noise, 0.5)))
    image.paste((255, 0, 0), (0, 0, 40, 40))
    return image


def jpeg_with_gps(path: Path, orientation: int = 6) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "PhoneMaker"
    gps = exif.get_ifd(GPS)
    gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 31.0, 12.0), "E", (13.0, 24.0, 36.0)
    photo().save(path, "JPEG", quality=95, exif=exif.tobytes(), comment=b"shot at home")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def compress(run):
    def _compress(*args: str, input: str = "") -> tuple[list[dict], object]:
        result = run("pp-compress", "-j", "2", *args, input=input, timeout=120)
        return parse_jsonl(result.stdout), result

    return _compress


def test_orientation_applied_and_gps_exif_comments_gone(compress, tmp_path):
    src = tmp_path / "phone.jpg"
    jpeg_with_gps(src)
    before = sha(src)
    [record], result = compress(str(src))
    assert result.returncode == 0, result.stderr
    assert sha(src) == before  # the original is untouched
    out = Path(record["path"])
    assert out != src and out.exists()
    with Image.open(out) as image:
        assert image.size == (160, 240)  # orientation 6 turned into pixels
        assert not image.getexif()  # no EXIF at all, so no GPS and no orientation tag
        assert "comment" not in image.info
        assert image.convert("RGB").getpixel((140, 10))[0] > 200  # red corner is now top-right
    assert b"PhoneMaker" not in out.read_bytes() and b"shot at home" not in out.read_bytes()
    assert record["source"] == str(src)
    assert record["width"] == 160 and record["height"] == 240 and record["format"] == "jpeg"
    assert record["sha256"] == sha(out) and record["size"] == out.stat().st_size
    info = record["compress"]
    assert info["before"] == src.stat().st_size and info["after"] == out.stat().st_size
    assert info["ssim"] >= info["target"] and info["method"]


def test_keep_metadata_keeps_exif(compress, tmp_path):
    src = tmp_path / "phone.jpg"
    jpeg_with_gps(src)
    [record], _ = compress("--keep-metadata", str(src))
    with Image.open(record["path"]) as image:
        assert image.getexif()[ORIENTATION] == 6
        assert image.getexif().get_ifd(GPS)[1] == "N"


def test_alpha_is_kept(compress, tmp_path):
    src = tmp_path / "logo.png"
    image = photo().convert("RGBA")
    image.paste((0, 0, 0, 0), (100, 50, 200, 150))
    image.save(src)
    [record], result = compress(str(src))
    assert result.returncode == 0
    with Image.open(record["path"]) as out:
        rgba = out.convert("RGBA")
        assert rgba.getpixel((150, 100))[3] == 0 and rgba.getpixel((10, 10))[3] == 255
    assert record["compress"]["after"] < record["compress"]["before"]


def test_bad_inputs_are_error_records_and_the_rest_goes_on(compress, tmp_path):
    good = tmp_path / "good.png"
    photo().save(good)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("this is text, not a picture\n")
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("L", (400, 400)).save(tmp_path / "bomb.png")
    (tmp_path / "folder.png").mkdir()
    names = ["empty.png", "notes.png", "truncated.png", "folder.png", "missing.png", "good.png"]
    records, result = compress(*[str(tmp_path / n) for n in names])
    assert result.returncode == 1
    types = [r.get("error", {}).get("type") for r in records]
    assert types == ["empty_file", "not_an_image", "corrupt_image", "is_a_folder", "not_found", None]
    bomb, result = compress("--max-pixels", "50000", str(tmp_path / "bomb.png"), str(good))
    assert [r.get("error", {}).get("type") for r in bomb] == ["too_large", None]
    assert "--max-pixels" in bomb[0]["error"]["hint"]
    assert "Traceback" not in result.stderr


def test_animated_gif_is_not_broken(compress, tmp_path):
    src = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (32, 32), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100, loop=0)
    [record], result = compress(str(src))
    assert result.returncode == 0
    assert record["compress"]["method"] == "kept" and "animated" in record["compress"]["reason"]
    with Image.open(record["path"]) as image:
        assert image.n_frames == 3


def test_not_smaller_keeps_the_original_and_says_so(compress, tmp_path):
    src = tmp_path / "tiny.png"
    Image.new("P", (4, 4), 0).save(src, optimize=True)
    [record], _ = compress(str(src))
    assert record["path"] == str(src)
    assert record["compress"]["method"] == "kept" and record["compress"]["reason"]
    assert record["sha256"] == sha(src)


def test_order_is_kept_under_jobs(compress, tmp_path):
    paths = []
    for i in range(8):
        path = tmp_path / f"img{i}.png"
        photo(60 + 40 * (i % 3), 50).save(path)
        paths.append(str(path))
    records, result = compress(input=jsonl([{"path": p, "i": i} for i, p in enumerate(paths)]))
    assert result.returncode == 0
    assert [r["i"] for r in records] == list(range(8))
    assert [r["source"] for r in records] == paths


def test_out_dir_names_and_in_place(compress, tmp_path):
    src = tmp_path / "photo.png"
    photo().save(src)
    out = tmp_path / "build"
    [record], _ = compress("--out", str(out), "--format", "jpeg", str(src))
    assert record["path"] == str(out / "photo.jpg") and record["format"] == "jpeg"
    with Image.open(record["path"]) as image:
        assert image.format == "JPEG"
    before = src.stat().st_size
    [record], _ = compress("--in-place", str(src))
    assert record["path"] == str(src) and src.stat().st_size < before
    assert not list(tmp_path.glob(".pp-compress-*"))
    _, usage = compress("--in-place", "--format", "webp", str(src))
    assert usage.returncode == 2 and "--in-place" in usage.stderr


def test_fixed_quality_and_webp(compress, tmp_path):
    src = tmp_path / "photo.png"
    photo().save(src)
    [record], _ = compress("--quality", "50", "--format", "webp", str(src))
    assert record["format"] == "webp" and record["compress"]["quality"] == 50
    with Image.open(io.BytesIO(Path(record["path"]).read_bytes())) as image:
        assert image.format == "WEBP"
    assert json.dumps(record)  # a plain JSON record


# The search and its encoders, in-process.

def test_search_finds_the_lowest_passing_quality_in_few_trials():
    from picpipe import imaging

    tried: list[int] = []

    def trial(quality: int) -> Image.Image:
        tried.append(quality)
        return Image.new("L", (1, 1), quality)

    class Score:  # SSIM that grows with quality and flattens near the top, like a real one
        def score(self, candidate: Image.Image) -> float:
            return 1 - 0.5 / (1 + candidate.getpixel((0, 0)))

    options = imaging.Options(target=1 - 0.5 / 64)  # first passes at 63
    result, quality, score = imaging._search(trial, Score(), options, 10, 100)  # type: ignore[arg-type]
    assert quality == 63 and score >= options.target and result.getpixel((0, 0)) == 63
    assert 62 in tried and len(tried) < 9  # proved the lowest, in fewer trials than halving from 10..100

    tried.clear()
    _, quality, score = imaging._search(trial, Score(), imaging.Options(target=0.999), 10, 100)  # type: ignore[arg-type]
    assert quality == 100 and score < 0.999 and tried == [10, 75, 100]  # nothing passes: three trials

    tried.clear()
    _, quality, _ = imaging._search(trial, Score(), imaging.Options(target=0.5), 10, 100)  # type: ignore[arg-type]
    assert quality == 10 and tried == [10]  # a screenshot that passes at once


def test_highest_below_a_size():
    from picpipe import imaging

    def encode(quality: int) -> bytes:
        return bytes(quality * 10)

    assert imaging._highest_below(encode, 40, 95, 700) == 69
    assert imaging._highest_below(encode, 40, 95, 10_000) == 95
    assert imaging._highest_below(encode, 40, 95, 400) is None


def test_an_opaque_png_gets_a_palette_without_alpha():
    from picpipe import imaging

    buffer = io.BytesIO()
    photo(120, 90).convert("RGBA").save(buffer, "PNG")  # RGBA, but opaque everywhere
    data, info = imaging.compress(buffer.getvalue(), "photo.png", imaging.Options())
    with Image.open(io.BytesIO(data)) as image:
        assert info["method"] == "png-palette+oxipng" and image.mode == "P"
        assert not image.has_transparency_data
