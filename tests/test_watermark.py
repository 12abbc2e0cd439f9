"""Watermarks (issue 15): where the mark lands, that nothing else changes, opacity, the minimum,
logos with alpha, CJK text and its fonts, orientation, the quality reference, the config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from conftest import parse_jsonl
from picpipe import watermark
from picpipe.errors import UsageError

WIDTH, HEIGHT = 800, 600
MARGIN = round(0.02 * HEIGHT)  # the default margin: 2% of the shorter side


def gradient(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """Colour that changes everywhere, so that a pixel put back wrong would show."""
    ramp = Image.linear_gradient("L")
    return Image.merge("RGB", (ramp.resize((width, height)), ramp.rotate(90).resize((width, height)),
                               Image.new("L", (width, height), 90)))


def vips(picture: Image.Image):
    import pyvips

    return pyvips.Image.new_from_array(np.asarray(picture), interpretation="srgb" if picture.mode != "L" else "b-w")


def array(image) -> np.ndarray:
    from picpipe.quality import pixels

    return pixels(image)


def changed_box(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the pixels that differ, right and bottom exclusive."""
    diff = (before != after).any(axis=2) if before.ndim == 3 else before != after
    if not diff.any():
        return None
    ys, xs = np.nonzero(diff)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# -- the library: picpipe.watermark.apply on pyvips images ----------------------------------------

@pytest.mark.parametrize("position", list(watermark.POSITIONS))
def test_the_mark_lands_in_its_place_and_nothing_else_changes(position):
    original = gradient()
    spec = watermark.spec(text="© picpipe 2025", position=position)
    marked, info = watermark.mark(vips(original), spec)
    before, after = np.asarray(original), array(marked)
    assert after.shape == before.shape
    x, y, w, h = info["box"]
    left, top, right, bottom = changed_box(before, after)
    # Every changed pixel is inside the box the record reports, and the ink fills most of it.
    assert x <= left and y <= top and right <= x + w and bottom <= y + h
    assert (right - left) >= 0.8 * w and (bottom - top) >= 0.6 * h
    outside = np.ones(before.shape[:2], bool)
    outside[y:y + h, x:x + w] = False
    assert (before[outside] == after[outside]).all()  # exactly, not nearly
    # The box fits the size (15% of the width and of the height) and sits at the margin.
    assert w <= 0.15 * WIDTH + 1 and h <= 0.15 * HEIGHT + 1 and w >= 0.14 * WIDTH
    across, down = watermark.POSITIONS[position]
    expect_x = {0: MARGIN, 0.5: (WIDTH - w) / 2, 1: WIDTH - MARGIN - w}[across]
    expect_y = {0: MARGIN, 0.5: (HEIGHT - h) / 2, 1: HEIGHT - MARGIN - h}[down]
    assert abs(x - expect_x) <= 1 and abs(y - expect_y) <= 1


def test_opacity_blends_between_the_original_and_the_full_mark():
    original = gradient()
    full = array(watermark.apply(vips(original), watermark.spec(text="picpipe", opacity=1)))
    half = array(watermark.apply(vips(original), watermark.spec(text="picpipe", opacity=0.5)))
    faint = array(watermark.apply(vips(original), watermark.spec(text="picpipe", opacity=0.2)))
    before = np.asarray(original).astype(float)
    ink = (full != before).any(axis=2)
    assert ink.sum() > 500
    for result, opacity in ((half, 0.5), (faint, 0.2)):
        expected = before + opacity * (full - before)
        assert np.abs(result[ink] - expected[ink]).max() <= 1.5  # rounding of two blends
    # The fill is white and the outline dark: both are in the full mark.
    assert (full[ink] >= 250).all(axis=1).sum() > 100 and (full[ink] <= 5).all(axis=1).sum() > 100


def test_small_images_pass_unmarked():
    small = vips(gradient(300, 150))
    marked, info = watermark.mark(small, watermark.spec(text="picpipe"))
    assert "below the 200 px" in info["skipped"] and "box" not in info
    assert (array(marked) == array(small)).all()
    _, info = watermark.mark(small, watermark.spec(text="picpipe", min_side=100))
    assert info["box"]



def test_a_text_too_long_for_the_image_leaves_it_unmarked_with_a_note():
    """Even at its smallest size the text is wider than the image: no mark, never a crash."""
    picture = vips(gradient(250, 250))
    marked, info = watermark.mark(picture, watermark.spec(text="© example.com " * 40))
    assert "does not fit on 250x250" in info["skipped"] and "box" not in info
    assert (array(marked) == array(picture)).all()
    narrow = vips(gradient(3, 3))
    _, info = watermark.mark(narrow, watermark.spec(text="picpipe", min_side=0))
    assert "does not fit" in info["skipped"]


def logo(path: Path) -> Path:
    """A red disc on a transparent 200x100 canvas, its edge soft."""
    picture = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    ImageDraw.Draw(picture).ellipse((50, 0, 150, 100), fill=(255, 0, 0, 255))
    picture.save(path)
    return path


def test_a_logo_keeps_its_transparency_and_is_scaled_to_the_size(tmp_path):
    white = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
    for opacity, expected in ((1.0, (255, 0, 0)), (0.5, (255, 128, 128))):
        spec = watermark.spec(image_file=str(logo(tmp_path / "logo.png")), position="center", opacity=opacity)
        marked, info = watermark.mark(vips(white), spec)
        x, y, w, h = info["box"]
        assert (w, h) == (120, 60)  # 2:1 in a box of 15% of 800 by 15% of 600
        after = array(marked)
        assert tuple(after[y + h // 2, x + w // 2]) == pytest.approx(expected, abs=1)  # the disc's centre
        assert tuple(after[y + 2, x + 2]) == (255, 255, 255)  # its transparent corner: untouched
        left, top, right, bottom = changed_box(np.asarray(white), after)
        assert x + 0.2 * w <= left and right <= x + 0.8 * w  # only the disc, not its square


def test_grey_and_transparent_images_keep_their_bands():
    grey = vips(Image.new("L", (400, 300), 100))
    marked = watermark.apply(grey, watermark.spec(text="picpipe", opacity=1))
    assert marked.bands == 1 and array(marked).max() == 255 and array(marked).min() == 0
    clear = vips(Image.new("RGBA", (400, 300), (0, 0, 0, 0)))
    marked, info = watermark.mark(clear, watermark.spec(text="picpipe", opacity=1))
    pixels = array(marked)
    assert marked.bands == 4 and pixels[..., 3].max() == 255  # the mark is opaque on a transparent image
    x, y, w, h = info["box"]
    assert pixels[:y, :, 3].max() == 0  # and the rest stays transparent


def test_bad_values_are_usage_errors_with_hints(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    cases = [dict(text="x", opacity=0), dict(text="x", opacity=1.5), dict(text="x", size="150%"),
             dict(text="x", position="upper-left"), dict(text="x", margin="-3"), dict(text="  "),
             dict(text="x", image_file="logo.png"), dict(), dict(image_file=str(tmp_path / "notes.png")),
             dict(image_file=str(tmp_path / "missing.png")), dict(text="x", font=str(tmp_path / "notes.png"))]
    for case in cases:
        with pytest.raises(UsageError) as caught:
            watermark.spec(**case)
        assert caught.value.hint, case


# -- fonts: CJK glyphs or a clear error, never tofu -----------------------------------------------

def cjk_font() -> str:
    try:
        found = watermark.choose_font("中文水印")
    except UsageError:
        pytest.skip("no CJK font on this machine (apt install fonts-wqy-microhei or fonts-noto-cjk)")
    assert found is not None
    return found


def test_cjk_text_is_drawn_with_a_font_that_has_its_glyphs():
    font = cjk_font()
    # Pillow's bundled font has none of them: it would draw four identical boxes (tofu).
    assert watermark._missing(ImageFont.load_default(32), "中文水印") == list("中文水印")
    assert watermark._missing(ImageFont.truetype(font, 32), "中文水印") == []
    original = gradient()
    spec = watermark.spec(text="中文水印", opacity=1)
    assert spec.font == font
    after = array(watermark.apply(vips(original), spec))
    ink = (after != np.asarray(original)).any(axis=2)
    assert ink.sum() > 500
    tofu = watermark.Spec(text="中文水印", opacity=1, font=None)  # what an unchecked spec would draw
    boxes = array(watermark.apply(vips(original), tofu))
    assert not (boxes == after).all()
    # The four glyphs differ from each other; four tofu boxes would be the same shape four times.
    x, y, w, h = watermark.mark(vips(original), spec)[1]["box"]
    quarters = [ink[y:y + h, x + i * w // 4:x + (i + 1) * w // 4].sum() for i in range(4)]
    assert len(set(quarters)) == 4


def test_no_font_for_the_text_is_a_usage_error_naming_the_option(monkeypatch):
    monkeypatch.setattr(watermark, "_candidates", lambda characters: [])
    with pytest.raises(UsageError) as caught:
        watermark.spec(text="版权所有 picpipe")
    assert "版 权 所 有" in caught.value.message and "--watermark-font" in caught.value.hint
    assert watermark.spec(text="© picpipe").font is None  # Latin needs no font file


def latin_font(tmp_path: Path) -> Path:
    """Pillow's bundled font as a file: a font without CJK glyphs that every machine has."""
    data = getattr(ImageFont.load_default(10), "font_bytes", None)
    if not data:
        pytest.skip("this Pillow keeps no bytes of its bundled font")
    path = tmp_path / "latin.ttf"
    path.write_bytes(data)
    return path


# -- pp-compress -----------------------------------------------------------------------------------

@pytest.fixture
def compress(run):
    def _compress(*args: str, extra_env: dict[str, str] | None = None):
        result = run("pp-compress", "-j", "1", *args, extra_env=extra_env, timeout=120)
        assert "Traceback" not in result.stderr
        return parse_jsonl(result.stdout), result

    return _compress


def test_pp_compress_marks_before_judging_so_a_lossless_target_is_met(compress, tmp_path):
    src = tmp_path / "gradient.png"
    gradient().save(src)
    [record], result = compress("--format", "png", "--target", "100", "--watermark", "© picpipe",
                                "--out", str(tmp_path / "out"), str(src))
    assert result.returncode == 0, result.stderr
    info = record["compress"]
    # Scored against the marked pixels: a lossless PNG of them scores 100. Against the original it never could.
    assert info["ssimulacra2"] == 100 and info["target"] == 100
    x, y, w, h = info["watermark"]["box"]
    before = np.asarray(gradient())
    with Image.open(record["path"]) as out:
        after = np.asarray(out.convert("RGB"))
    left, top, right, bottom = changed_box(before, after)
    assert x <= left and y <= top and right <= x + w and bottom <= y + h
    assert right > WIDTH - MARGIN - 5 and bottom > HEIGHT - MARGIN - 5  # bottom-right, at the margin
    outside = np.ones(before.shape[:2], bool)
    outside[y:y + h, x:x + w] = False
    assert (before[outside] == after[outside]).all()


def test_the_mark_is_never_dropped_to_keep_a_smaller_original(compress, tmp_path):
    src = tmp_path / "flat.png"
    Image.new("RGB", (400, 300), (40, 90, 160)).save(src, optimize=True)
    [record], result = compress("--watermark", "picpipe", "--out", str(tmp_path / "out"), str(src))
    assert result.returncode == 0
    assert record["path"] != str(src) and record["compress"]["method"] != "kept"
    x, y, w, h = record["compress"]["watermark"]["box"]
    with Image.open(record["path"]) as out:
        pixels = np.asarray(out.convert("RGB"))
    marked = (pixels != (40, 90, 160)).any(axis=2)
    assert marked.sum() > 300 and marked[y:y + h, x:x + w].sum() == marked.sum()


def test_a_portrait_photo_is_marked_bottom_right_as_seen(compress, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown turned 90° clockwise: portrait
    src = tmp_path / "portrait.jpg"
    Image.new("RGB", (600, 400), (128, 128, 128)).save(src, quality=95, exif=exif.tobytes())
    for extra in ([], ["--keep-metadata"]):
        [record], result = compress("--format", "png", "--target", "100", "--watermark", "picpipe",
                                    "--watermark-opacity", "1", "--out", str(tmp_path / "out"), *extra, str(src))
        assert result.returncode == 0, result.stderr
        with Image.open(record["path"]) as out:
            assert out.size == (400, 600)
            assert out.getexif().get(0x0112, 1) == 1  # upright pixels: no viewer turns them again
            pixels = np.asarray(out.convert("L")).astype(int)
        ys, xs = np.nonzero(np.abs(pixels - 128) > 40)
        assert xs.min() > 400 / 2 and ys.min() > 600 * 0.8, extra
        assert xs.max() >= 400 - MARGIN - 3 and ys.max() >= 600 - MARGIN - 3


def test_small_images_and_animations_pass_unmarked_with_a_note(compress, tmp_path):
    gradient(150, 120).save(tmp_path / "icon.png")
    frames = [Image.new("RGB", (300, 300), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    gradient(300, 300).save(tmp_path / "still.gif")
    gradient(150, 120).save(tmp_path / "tiny.gif")
    records, result = compress("--watermark", "picpipe", "--out", str(tmp_path / "out"),
                               *(str(tmp_path / n) for n in ("icon.png", "anim.gif", "still.gif", "tiny.gif")))
    assert result.returncode == 0, result.stderr
    icon, anim, still, tiny = (r["compress"] for r in records)
    assert "below the 200 px" in icon["watermark"]["skipped"]
    assert anim["method"] == "kept" and "not marked" in anim["watermark"]["skipped"]
    assert records[1]["path"] == str(tmp_path / "anim.gif")
    assert still["watermark"]["box"] and records[2]["format"] == "png"  # a GIF is written as PNG to be marked
    assert tiny["method"] == "kept" and records[3]["format"] == "gif"  # one too small to be marked stays a GIF


def test_bad_watermark_files_are_usage_errors_and_nothing_is_processed(compress, tmp_path):
    src = tmp_path / "a.png"
    gradient().save(src)
    (tmp_path / "notes.png").write_text("not a picture")
    font = str(latin_font(tmp_path))
    for args, said in ((["--watermark-image", str(tmp_path / "notes.png")], "not an image that can be read"),
                       (["--watermark-image", str(tmp_path / "missing.png")], "cannot read the watermark image"),
                       (["--watermark", "中文水印", "--watermark-font", font], "has no glyphs for 中 文 水 印"),
                       (["--watermark", "x", "--watermark-font", str(tmp_path / "notes.png")], "cannot use the font")):
        records, result = compress(*args, str(src))
        assert result.returncode == 2 and records == [], args
        assert said in result.stderr and "hint:" in result.stderr, result.stderr
    records, result = compress("--watermark", "x", "--watermark-size", "2", str(src))
    assert result.returncode == 2 and "at most 1" in result.stderr


def test_the_config_marks_what_the_pipelines_compress(compress, tmp_path, env):
    config = Path(env["XDG_CONFIG_HOME"]) / "picpipe" / "config.toml"
    config.parent.mkdir(parents=True)
    logo(config.parent / "logo.png")
    config.write_text('[compress]\nwatermark_image = "logo.png"\nwatermark_position = "top-left"\n'
                      'watermark_opacity = 1\nwatermark_margin = 10\n')
    src = tmp_path / "a.png"
    gradient().save(src)
    out = str(tmp_path / "out")
    [record], result = compress("--out", out, str(src))
    assert result.returncode == 0, result.stderr
    assert record["compress"]["watermark"]["box"][:2] == [10, 10]  # the logo, top-left, 10 px in
    assert record["compress"]["watermark"]["box"][2:] == [120, 60]
    [record], _ = compress("--out", out, "--watermark", "text wins", str(src))  # a flag's text replaces the logo
    assert record["compress"]["watermark"]["box"][3] < 60
    [record], _ = compress("--out", out, "--no-watermark", str(src))
    assert "watermark" not in record["compress"]
    [record], _ = compress("--out", out, str(src), extra_env={"PICPIPE_COMPRESS_WATERMARK_POSITION": "bottom"})
    x, y, w, h = record["compress"]["watermark"]["box"]
    assert y + h == HEIGHT - 10 and abs(x - (WIDTH - w) / 2) <= 1
    records, result = compress("--out", out, str(src), extra_env={"PICPIPE_COMPRESS_WATERMARK_OPACITY": "3"})
    assert result.returncode == 2 and records == []
    assert "PICPIPE_COMPRESS_*" in result.stderr and "watermark_opacity" in result.stderr
    config.write_text('[compress]\nwatermark_image = "gone.png"\n')
    records, result = compress("--out", out, str(src))
    assert result.returncode == 2 and str(config.parent / "gone.png") in result.stderr
    config.write_text('[compress]\nwatermark_opacity = "half"\n')
    records, result = compress("--out", out, str(src))
    assert result.returncode == 2 and "watermark_opacity" in result.stderr


def test_pp_typora_publishes_the_marked_image_when_the_config_says_so(run, tmp_path):
    config = tmp_path / "picpipe.toml"
    config.write_text(f"""\
ledger = "{tmp_path / 'ledger.jsonl'}"
[pipeline]
host = "site"
compress = true
[compress]
watermark = "© picpipe"
watermark_opacity = 1
[profiles.site]
type = "local"
dir = "{tmp_path / 'site'}"
base_url = "https://img.example.com/"
""")
    src = tmp_path / "post" / "shot.png"
    src.parent.mkdir()
    gradient().save(src)
    result = run("pp-typora", str(src), extra_env={"PICPIPE_CONFIG": str(config)}, timeout=120)
    assert result.returncode == 0, result.stderr
    url = result.stdout.splitlines()[-1]
    [published] = [p for p in (tmp_path / "site").rglob("*") if p.is_file()]
    assert url.endswith(published.name)
    with Image.open(published) as out:
        after = np.asarray(out.convert("RGB")).astype(int)
    diff = np.abs(after - np.asarray(gradient()).astype(int)).max(axis=2)
    corner = diff[HEIGHT - 60:, WIDTH - 150:]
    assert corner.max() > 100 and (corner > 60).sum() > 200  # the mark, bottom-right
    assert diff[:HEIGHT - 100].max() < 40  # the rest: only the palette's rounding
