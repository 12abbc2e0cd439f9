"""Key templates: PicList's rename placeholders beside picpipe's, one instant per key, keys that
never leave their folder whatever the file's name and folders hold, and dedupe that does not
depend on the key (random placeholders give a new key per run, the ledger still finds the bytes)."""

from __future__ import annotations

import hashlib
import ntpath
import posixpath
import random
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from conftest import parse_jsonl
from picpipe.errors import PicpipeError, UsageError
from picpipe.keys import check_template, local_folders, make_key, sanitize, ulid

DATA = b"the bytes of an image"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
NOW = 1700000000.123  # 2023-11-14 22:13:20.123 UTC, 2023-11-15 06:13:20.123 in UTC+8


@pytest.fixture
def utc8(monkeypatch):
    """Local time UTC+8 (a POSIX TZ string: no tzdata needed), so that PicList's local-time
    placeholders and picpipe's UTC ones fall on different days."""
    monkeypatch.setenv("TZ", "CST-8")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def image(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)
    return path


def key(template: str, path: str = "shot.PNG", **kw) -> str:
    return make_key(template, path, DATA, now=kw.pop("now", NOW), **kw)


@pytest.mark.parametrize("template, expected", [
    ("{Y}", "2023"), ("{y}", "23"), ("{m}", "11"), ("{d}", "15"), ("{h}", "06"), ("{i}", "13"), ("{s}", "20"),
    ("{ms}", "123"), ("{timestamp}", "1700000000123"), ("{timestampS}", "1700000000"),
    ("{year}-{month}-{day}", "2023-11-14"),  # picpipe's dates stay UTC
    ("{md5}", hashlib.md5(DATA).hexdigest()), ("{md5-16}", hashlib.md5(DATA).hexdigest()[:16]),
    ("{md5:6}", hashlib.md5(DATA).hexdigest()[:6]), ("{sha1}", hashlib.sha1(DATA).hexdigest()),
    ("{sha256}", hashlib.sha256(DATA).hexdigest()), ("{sha256-8}", hashlib.sha256(DATA).hexdigest()[:8]),
    ("{sha256:12}", hashlib.sha256(DATA).hexdigest()[:12]), ("{filename}", "shot"), ("{name}", "shot"),
])
def test_placeholders_with_known_values(utc8, template, expected):
    assert key(template + "{ext}") == expected + ".png"


@pytest.mark.parametrize("template, shape", [
    ("{uuid}", r"[0-9a-f]{32}"),
    ("{ulid}", r"[0-9A-HJKMNP-TV-Z]{26}"),
    ("{str-6}", r"[A-Za-z0-9]{6}"),
    ("{STR-20}", r"[A-Za-z0-9]{20}"),  # PicList matches {str-N} in any case
    ("{auto}", r"[1-9][0-9]*"),
    ("{localFolder}", r"[^/]+"),
])
def test_placeholder_shapes(template, shape):
    for _ in range(50):
        assert re.fullmatch(shape + r"\.png", key(template)), key(template)


def test_the_extension_is_appended_when_the_template_has_no_ext_as_piclist_does():
    assert key("{Y}/{md5-16}") .endswith(".png")  # lower case, as picpipe's {ext}
    assert key("{name}{ext}") == "shot.png"  # not twice
    assert key("{ext}/{name}") == ".png/shot"  # where {ext} stands, and only there
    assert make_key("{filename}", "README", DATA) == "README"  # no extension to add


def test_random_and_once_per_key_placeholders():
    repeated = key("{uuid}-{uuid}/{ulid}-{ulid}/{auto}-{auto}/{str-8}-{str-8}")
    (u1, u2), (l1, l2), (a1, a2), (s1, s2) = (part.split("-") for part in repeated.removesuffix(".png").split("/"))
    assert u1 == u2 and uuid.UUID(u1).version == 4  # as PicList: one {uuid} per file name
    assert l1 == l2 and a1 == a2
    assert s1 != s2  # each {str-N} draws again
    first, second = int(key("{auto}").removesuffix(".png")), int(key("{auto}").removesuffix(".png"))
    assert second == first + 1  # PicList's batch rename counts 1, 2, 3; here, the keys of this run
    assert len({key("{str-10}") for _ in range(200)}) == 200


def test_auto_counts_without_gaps_or_repeats_across_threads():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        numbers = sorted(pool.map(lambda _: int(key("{auto}").removesuffix(".png")), range(800)))
    assert numbers == list(range(numbers[0], numbers[0] + 800))


def test_ulid_time_order_length_and_alphabet():
    def time_of(value: str) -> int:
        return sum(CROCKFORD.index(c) << 5 * (9 - i) for i, c in enumerate(value[:10]))

    moments = sorted(random.Random(7).sample(range(2 ** 48), 500))
    ids = [ulid(ms) for ms in moments]
    assert ids == sorted(ids) and all(len(i) == 26 and set(i) <= set(CROCKFORD) for i in ids)
    assert [time_of(i) for i in ids] == moments
    assert ulid(0).startswith("0" * 10) and ulid(2 ** 48 - 1).startswith("7ZZZZZZZZZ")  # 48 bits of time
    assert len({ulid(5) for _ in range(1000)}) == 1000  # 80 random bits
    in_a_key = key("{ulid}").removesuffix(".png")
    assert time_of(in_a_key) == round(NOW * 1000)
    consecutive = [key("{ulid}", now=NOW + step / 1000) for step in range(300)]
    assert consecutive == sorted(consecutive)


def test_every_time_placeholder_of_a_key_tells_one_instant(utc8, monkeypatch):
    """Each make_key reads the clock once: a clock that jumps 999 ms at every read would show
    any second read as a mismatch between the placeholders."""
    clock = iter(range(1_700_000_000_999_000_000, 1_800_000_000_000_000_000, 999_000_000))
    reads = []

    def time_ns() -> int:
        reads.append(1)
        return next(clock)

    monkeypatch.setattr("picpipe.keys.time.time_ns", time_ns)
    template = "{timestamp}/{timestampS}/{ms}/{Y}{m}{d}{h}{i}{s}/{year}{month}{day}/{ulid}{ext}"
    for n in range(1, 200):
        stamp, seconds, ms, local, utc, made = make_key(template, "a.png", DATA).removesuffix(".png").split("/")
        assert len(reads) == n
        moment = int(stamp)
        assert int(seconds) == moment // 1000 and int(ms) == moment % 1000
        assert local == time.strftime("%Y%m%d%H%M%S", time.localtime(moment // 1000))
        assert utc == time.strftime("%Y%m%d", time.gmtime(moment // 1000))
        assert sum(CROCKFORD.index(c) << 5 * (9 - i) for i, c in enumerate(made[:10])) == moment


def test_a_given_instant_rounds_to_one_millisecond_for_all():
    assert key("{timestampS}.{ms}/{timestamp}", now=1700000000.9996) == "1700000001.000/1700000001000.png"


def test_both_syntaxes_in_one_template(utc8):
    md5, sha = hashlib.md5(DATA).hexdigest(), hashlib.sha256(DATA).hexdigest()
    made = make_key("{year}/{m}/{localFolder}/{name}-{md5-16}-{sha256:8}-{str-4}{ext}", "shot.PNG", DATA,
                    now=NOW, source="/home/me/blog/shot.png")
    assert re.fullmatch(rf"2023/11/blog/shot-{md5[:16]}-{sha[:8]}-[A-Za-z0-9]{{4}}\.png", made), made
    assert make_key("{{{Y}}}-{{x}}", "a.jpg", DATA, now=NOW) == "{2023}-{x}.jpg"  # {{ }} are braces


@pytest.mark.parametrize("source, count, folders", [
    ("/home/me/pics/blog/a.png", 1, "blog"),
    ("/home/me/pics/blog/a.png", 2, "pics/blog"),
    ("/home/me/pics/blog/a.png", 0, "blog"),  # PicList: at least one
    ("/home/me/pics/blog/a.png", 9, "home/me/pics/blog"),
    ("/home/me/pics/../blog/./a.png", 2, "me/blog"),
    ("C:\\Users\\me\\pics\\a.png", 2, "me/pics"),
    ("C:\\Users\\me\\pics\\a.png", 4, "C/Users/me/pics"),  # PicList drops the drive's colon
    ("D:/work\\mixed/a.png", 2, "work/mixed"),
    ("\\\\server\\share\\pics\\a.png", 2, "share/pics"),
    ("/a.png", 1, ""),
])
def test_local_folder_posix_and_windows(source, count, folders):
    assert local_folders(source, count) == folders


def test_local_folder_placeholder_forms(tmp_path, monkeypatch):
    source = "C:\\Users\\me\\pics\\a.png"
    for template, expected in [("{localFolder:2}", "me/pics"), ("{localFolder}", "pics"), ("{localFolder:}", "pics"),
                               ("{LOCALFOLDER:3}", "Users/me/pics"), ("{localFolder2}", "me/pics")]:
        assert make_key(template + "/{filename}{ext}", "a.png", DATA, source=source) == expected + "/a.png"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes" / "img").mkdir(parents=True)
    assert make_key("{localFolder:2}/{filename}{ext}", "x.png", DATA, source="notes/img/x.png") == "notes/img/x.png"
    assert make_key("{localFolder}/{filename}{ext}", "x.png", DATA, source="x.png") == f"{tmp_path.name}/x.png"
    assert make_key("{localFolder}/{filename}{ext}", "/elsewhere/x.png", DATA) == "elsewhere/x.png"  # no source


HOSTILE = ["..", ".", "...", "", " ", " .. ", "/", "\\", "\x00", "\n", "\r", "\t", "\x7f", "\x85", "\x1b[31m",
           "C:", "c:", ":", ".:", "图", "\u202e", "\u3000..\u3000", "..\\..", "../..", "a", "é", "😀", "%2e%2e", "~",
           "$HOME", "\\\\?\\", "//", "CON", "nul\x00l"]


def hostile_name(rng: random.Random) -> str:
    return "".join(rng.choice(HOSTILE) for _ in range(rng.randint(1, 4)))


def assert_contained(made: str) -> None:
    assert made and not made.startswith("/") and "\\" not in made
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", made)
    assert not re.match(r"[A-Za-z]:", made)  # no Windows drive
    for part in made.split("/"):
        assert part and part == part.strip() and part not in (".", "..")
    assert sanitize(made) == made  # what pp-upload --delete accepts back
    assert posixpath.normpath(posixpath.join("/root", made)).startswith("/root/")
    windows = ntpath.normpath(ntpath.join("D:\\root", made))
    assert windows.startswith("D:\\root\\"), windows


def test_hostile_folder_and_file_names_never_escape():
    """A property over random folder and file names: `..`, slashes, backslashes, NUL and other
    controls, drives, unicode; POSIX and Windows-style paths; every template form that puts
    them in a key."""
    rng = random.Random(15)
    templates = ["{localFolder:3}/{filename}{ext}", "{localFolder:9}/{name}-{str-3}", "{localFolder}{filename}",
                 "{filename}/{localFolder:2}{ext}", "{localFolder:2}/../{name}/..{ext}"]
    made_count = 0
    for _ in range(3000):
        folders = [hostile_name(rng) for _ in range(rng.randint(0, 5))]
        file = hostile_name(rng) + rng.choice([".png", ".PNG", "", ".", "..png", "\\.png"])
        sep = rng.choice(["/", "\\"])
        source = rng.choice(["", sep, "C:" + sep, "\\\\host\\share\\"]) + sep.join([*folders, file])
        try:
            made = make_key(rng.choice(templates), source, DATA, source=source)
        except PicpipeError as exc:  # nothing left once made safe: an error record, never a bad key
            assert exc.type == "bad_key"
            continue
        assert_contained(made)
        made_count += 1
    assert made_count > 2500


@pytest.mark.parametrize("key, safe", [
    ("C:/Windows/win.ini", "C/Windows/win.ini"),
    ("c:evil.png", "cevil.png"),
    ("a/C:/b.png", "a/C:/b.png"),  # only a first segment is read as a drive
    ("x\x85y\x9f.png", "xy.png"),  # C1 controls too
    (".:/x.png", "x.png"),  # a drive's colon dropped leaves `.`: dropped too
    ("../c:/x.png", "c/x.png"),  # the first segment once `..` is gone
    ("图:x.png", "图x.png"),  # Windows takes any character before a colon for a drive
])
def test_sanitize_drives_and_c1_controls(key, safe):
    assert sanitize(key) == safe


@pytest.mark.parametrize("template, words", [
    ("{nope}", ["unknown placeholder {nope}", "{localFolder:N}", "{str-N}", "{sha256:N}", "{ulid}"]),
    ("{str-0}", ["0 random characters", "1 to 128"]),
    ("{str-500}", ["500 random characters"]),
    ("{name:>8}", ["unknown placeholder {name:>8}"]),  # no Python format specs: keys are not str.format
    ("{name.__class__}", ["unknown placeholder"]),
    ("{Y", ["a single '{'"]),
    ("Y}", ["a single '}'"]),
    ("{}", ["unknown placeholder {}"]),
])
def test_bad_templates_are_usage_errors(template, words):
    with pytest.raises(UsageError) as caught:
        check_template(template)
    text = f"{caught.value} {caught.value.hint}"
    assert all(word in text for word in words), text


@pytest.mark.parametrize("command", [
    ("pp-upload", "--host", "local", "--path", "{localFolder:1}/{nope}{ext}"),
    ("pp-upload", "--host", "local"),  # the profile's path (PICPIPE_LOCAL_PATH)
    ("pp-backup", "--to", "usb", "--path", "{str-}"),
])
def test_unknown_placeholders_stop_the_command_before_any_upload(run, tmp_path, command):
    src = image(tmp_path / "a.png", (200, 0, 0))
    host = tmp_path / "site"
    result = run(*command, str(src), extra_env={"PICPIPE_LOCAL_DIR": str(host), "PICPIPE_LOCAL_PATH": "{nope}",
                                                "PICPIPE_USB_TYPE": "local", "PICPIPE_USB_DIR": str(host),
                                                "PICPIPE_LEDGER": str(tmp_path / "ledger.jsonl")})
    assert result.returncode == 2 and result.stdout == ""
    assert "unknown placeholder {" in result.stderr and "{str-N}" in result.stderr and "{name}" in result.stderr
    assert "Traceback" not in result.stderr and not host.exists()


def test_piclist_template_end_to_end_and_dedupe_by_content(run, tmp_path):
    """`{str-6}` makes a new key for the same bytes on every run (PicList's behaviour); pp-upload
    still finds the bytes in the ledger by sha256 and answers with the first URL, sending nothing."""
    first_src = image(tmp_path / "shots" / "blog" / "a.png", (10, 120, 30))
    copy = tmp_path / "elsewhere" / "renamed.png"
    copy.parent.mkdir()
    shutil.copy(first_src, copy)
    host, ledger = tmp_path / "site", tmp_path / "ledger.jsonl"
    env = {"PICPIPE_LOCAL_DIR": str(host), "PICPIPE_LEDGER": str(ledger), "PICPIPE_LOCAL_BASE_URL": "https://i.example/"}
    args = ("--host", "local", "--path", "{localFolder:1}/{filename}-{str-6}{ext}")

    uploaded = run("pp-upload", *args, "shots/blog/a.png", extra_env=env)  # relative, from the run's folder
    assert uploaded.returncode == 0, uploaded.stderr
    [first] = parse_jsonl(uploaded.stdout)
    assert re.fullmatch(r"blog/a-[A-Za-z0-9]{6}\.png", first["key"]), first["key"]
    assert first["url"] == "https://i.example/" + first["key"]
    assert (host / first["key"]).read_bytes() == first_src.read_bytes()
    assert run("pp-mark", input=uploaded.stdout, extra_env=env).returncode == 0

    again = run("pp-upload", *args, "-j", "4", input=f"{first_src}\n{copy}\n{copy}\n", extra_env=env)
    assert again.returncode == 0, again.stderr
    records = parse_jsonl(again.stdout)
    assert all(r["deduped"] is True and r["url"] == first["url"] and r["key"] == first["key"] for r in records)
    assert [p for p in host.rglob("*") if p.is_file()] == [host / first["key"]]  # nothing sent again

    forced = run("pp-upload", *args, "--no-dedupe", str(copy), extra_env=env)
    [fresh] = parse_jsonl(forced.stdout)
    assert re.fullmatch(r"elsewhere/renamed-[A-Za-z0-9]{6}\.png", fresh["key"]) and fresh["key"] != first["key"]
    assert len([p for p in host.rglob("*") if p.is_file()]) == 2


def test_random_keys_in_one_run_send_the_same_bytes_once(run, tmp_path):
    src = image(tmp_path / "a.png", (1, 2, 3))
    host = tmp_path / "site"
    result = run("pp-upload", "--host", "local", "-j", "4", "--path", "{ulid}", "--ledger", str(tmp_path / "l.jsonl"),
                 input=f"{src}\n" * 5, extra_env={"PICPIPE_LOCAL_DIR": str(host)})
    assert result.returncode == 0, result.stderr
    records = parse_jsonl(result.stdout)
    assert len({r["url"] for r in records}) == 1 and sum(1 for r in records if r.get("deduped")) == 4
    [stored] = [p for p in host.rglob("*") if p.is_file()]
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}\.png", stored.name)
