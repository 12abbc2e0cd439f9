"""pp-fetch against a local image site: bytes, names, dedupe, retries, limits, errors as records."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from PIL import Image

from conftest import jsonl, parse_jsonl
from fakehost import FakeHandler, FakeServer, Fault, serving
from picpipe.errors import PicpipeError
from picpipe.fetch import Fetcher

REFERER = "https://weibo.com/"
NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
SVG = b'<?xml version="1.0"?>\n<!-- logo -->\n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>\n'


def picture(fmt: str = "PNG", colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt)
    return buffer.getvalue()


class Site(FakeHandler):
    """GET serves `objects` by percent-decoded path ("*": any other path), `meta[path]["type"]` as
    Content-Type; 404 HTML page otherwise. Special routes:
    /redirect/P → 302 to /P; /referer/P → 403 page unless the Referer is REFERER;
    /unsized/P → no Content-Length (body ends with the connection); /cut/P → the first answer
    stops halfway through the body; /wait/P → answers after 0.1 s, the most requests seen at once
    in `meta["flight"]["max"]`."""

    def handle_request(self) -> None:
        path = unquote(urlsplit(self.path).path)
        server = self.server
        if path.startswith("/redirect/"):
            self.reply(302, headers={"Location": self.path[len("/redirect"):]})
            return
        if path.startswith("/referer/") and self.headers.get("Referer") != REFERER:
            self.reply(403, "<h1>hotlink forbidden</h1>", content_type="text/html")
            return
        data = server.objects.get(path, server.objects.get("*"))
        if data is None:
            self.reply(404, "<html><body>Not Found</body></html>", content_type="text/html; charset=utf-8")
            return
        kind = server.meta.get(path, {}).get("type", "image/png")
        if path.startswith("/wait/"):
            flight = server.meta.setdefault("flight", {"now": 0, "max": 0})
            with server.lock:
                flight["now"] += 1
                flight["max"] = max(flight["max"], flight["now"])
            time.sleep(0.1)
            with server.lock:
                flight["now"] -= 1
        if path.startswith("/unsized/"):
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
            return
        if path.startswith("/cut/") and not server.meta.setdefault("cut", {}).get(path):
            server.meta["cut"][path] = "done"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self.reply(200, data, content_type=kind)


@pytest.fixture
def site() -> Iterator[FakeServer]:
    with serving(Site) as server:
        yield server


@pytest.fixture
def fetch(run):
    """pp-fetch with proxies kept away from 127.0.0.1: (exit code, records, stderr)."""

    def _fetch(records: list[dict] | str, *args: str):
        text = records if isinstance(records, str) else jsonl(records)
        result = run("pp-fetch", *args, input=text, extra_env=NO_PROXY)
        assert "Traceback" not in result.stderr
        return result.returncode, parse_jsonl(result.stdout), result.stderr

    return _fetch


def gets(server: FakeServer) -> list[str]:
    return [path for method, path in server.requests if method == "GET"]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def test_bytes_names_and_folders(site, fetch, tmp_path):
    png, jpeg, gif = picture(), picture("JPEG"), picture("GIF")
    site.objects.update({"/2024/05/a.png": png, "/图片/我的 图.png": png, "/图片/b c.png": picture(colour=(1, 2, 3)),
                         "/noext": jpeg, "/image.php": gif, "/dir/": png, "/logo.svg": SVG})
    site.meta["/noext"] = {"type": "application/octet-stream"}  # the name's extension comes from the bytes
    site.meta["/image.php"] = {"type": "image/gif"}
    site.meta["/logo.svg"] = {"type": "image/svg+xml"}
    urls = [site.url + p for p in ("/2024/05/a.png", "/图片/我的 图.png", "/%E5%9B%BE%E7%89%87/b%20c.png",
                                   "/noext", "/image.php?id=7", "/dir/", "/logo.svg#top")]
    code, out, _ = fetch([{"url": u, "alt": "keep me"} for u in urls])
    assert code == 0
    root = tmp_path / "fetched" / "127.0.0.1"
    expected = ["2024/05/a.png", "图片/我的 图.png", "图片/b c.png", "noext.jpg", "image.php.gif", "dir/index.png",
                "logo.svg"]
    assert [r["path"] for r in out] == [str(root / name) for name in expected]
    for record, url in zip(out, urls):
        data = Path(record["path"]).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
        assert record["url"] == url and record["alt"] == "keep me"  # url as it was: pp-upload sets replaces
        assert record["fetched"]["status"] == 200 and record["fetched"]["url"] == url.split("#")[0]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["fetched"]["at"])
    assert Path(out[0]["path"]).read_bytes() == png and Path(out[3]["path"]).read_bytes() == jpeg
    assert [r["mime"] for r in out] == ["image/png"] * 3 + ["image/jpeg", "image/gif", "image/png", "image/svg+xml"]
    assert (out[0]["width"], out[0]["height"], out[0]["format"]) == (8, 6, "png")
    assert files_under(tmp_path / "fetched") == {f"127.0.0.1/{name}" for name in expected}  # no temp files left


def test_same_url_fetched_once_existing_file_reused_other_bytes_beside(site, fetch, tmp_path):
    first = picture()
    site.objects["/a.png"] = first
    url = site.url + "/a.png"
    code, out, _ = fetch([{"url": url, "n": n} for n in range(6)], "-j", "4")
    assert code == 0 and [r["n"] for r in out] == list(range(6))
    assert gets(site) == ["/a.png"]  # six records, one download
    target = tmp_path / "fetched" / "127.0.0.1" / "a.png"
    assert {r["path"] for r in out} == {str(target)} and target.read_bytes() == first
    before = target.stat().st_ino

    code, out, err = fetch([{"url": url}])  # a second run: the file with the same bytes is kept
    assert code == 0 and out[0]["path"] == str(target) and target.stat().st_ino == before
    assert "0 new files" in err and "1 already there" in err

    second = picture(colour=(0, 0, 255))
    site.objects["/a.png"] = second  # the host now serves other bytes at the same URL
    code, out, _ = fetch([{"url": url}])
    digest = hashlib.sha256(second).hexdigest()
    beside = target.with_name(f"a-{digest[:12]}.png")
    assert code == 0 and out[0]["path"] == str(beside) and out[0]["sha256"] == digest
    assert beside.read_bytes() == second and target.read_bytes() == first  # nothing overwritten


def test_two_spellings_of_one_url_are_fetched_once_and_keep_their_own_url(site, fetch, tmp_path):
    site.objects["/截图(1).png"] = picture()
    urls = [site.url + "/截图(1).png", site.url + "/%E6%88%AA%E5%9B%BE%281%29.png#x"]
    code, out, _ = fetch([{"url": url} for url in urls])
    assert code == 0 and len(gets(site)) == 1
    assert [r["url"] for r in out] == urls  # each record keeps the spelling it came with
    assert out[0]["path"] == out[1]["path"] == str(tmp_path / "fetched" / "127.0.0.1" / "截图(1).png")
    assert out[0]["fetched"] == out[1]["fetched"]  # where the bytes came from: the one request made


def test_404_is_an_error_record_not_retried_and_the_rest_goes_through(site, fetch):
    site.objects["/ok.png"] = picture()
    code, out, err = fetch([{"url": site.url + "/gone.png"}, {"url": site.url + "/ok.png"}], "--retries", "3")
    assert code == 1
    assert out[0]["error"]["type"] == "http_404" and out[0]["error"]["stage"] == "fetch"
    assert "pp-mark find --url" in out[0]["error"]["hint"] and "path" not in out[0]
    assert "error" not in out[1] and Path(out[1]["path"]).is_file()
    assert sorted(gets(site)) == ["/gone.png", "/ok.png"]  # the 404 was asked once
    assert "http_404" in err and "hint:" in err


def test_500_and_a_reset_are_retried_then_200(site, fetch):
    site.objects["/flaky.png"] = picture()
    site.faults += [Fault(500), Fault.reset_mid_body()]
    code, out, err = fetch([{"url": site.url + "/flaky.png"}], "--retries", "2")
    assert code == 0 and out[0]["sha256"] == hashlib.sha256(picture()).hexdigest()
    assert gets(site) == ["/flaky.png"] * 3
    assert "HTTP 500, try 2 of 3" in err


def test_500_that_lasts_is_an_error_after_the_retries(site, fetch):
    site.faults += [Fault(503)] * 3
    code, out, _ = fetch([{"url": site.url + "/x.png"}], "--retries", "2")
    assert code == 1 and out[0]["error"]["type"] == "http_503"
    assert len(gets(site)) == 3


def test_a_body_cut_short_is_fetched_again(site, fetch, tmp_path):
    data = picture(size=(300, 200))
    site.objects["/cut/big.png"] = data
    code, out, err = fetch([{"url": site.url + "/cut/big.png"}], "--retries", "1")
    assert code == 0 and Path(out[0]["path"]).read_bytes() == data
    assert gets(site) == ["/cut/big.png"] * 2 and "while reading" in err


def test_per_host_limit(site, fetch):
    site.objects["*"] = picture()
    code, out, _ = fetch([{"url": f"{site.url}/wait/{n}.png"} for n in range(8)], "-j", "8", "--per-host", "2")
    assert code == 0 and len(gets(site)) == 8
    assert site.meta["flight"]["max"] == 2


def test_connection_refused(fetch):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, _ = fetch([{"url": f"http://127.0.0.1:{port}/a.png"}], "--retries", "1")
    assert code == 1 and out[0]["error"]["type"] == "connection_refused"
    assert "port" in out[0]["error"]["hint"]


def test_slow_server_times_out(site, fetch, tmp_path):
    site.objects["/slow.png"] = picture()
    site.faults.append(Fault.slow(3))
    code, out, _ = fetch([{"url": site.url + "/slow.png"}], "--timeout", "0.3", "--retries", "0")
    error = out[0]["error"]
    assert code == 1 and error["type"] == "timeout" and "0.3 s" in error["message"]
    assert "--timeout" in error["hint"] and f"127.0.0.1:{site.port}" in error["message"]
    assert files_under(tmp_path / "fetched") == set()


@pytest.mark.parametrize("route", ["/big.png", "/unsized/big.png"])  # declared length, or none at all
def test_too_large_leaves_nothing_behind(site, fetch, tmp_path, route):
    site.objects[route] = picture(size=(200, 200)) + os.urandom(4000)
    code, out, _ = fetch([{"url": site.url + route}], "--max-size", "2k")
    assert code == 1 and out[0]["error"]["type"] == "too_large" and "2048 bytes" in out[0]["error"]["message"]
    assert "--max-size" in out[0]["error"]["hint"]
    assert files_under(tmp_path / "fetched") == set()


def test_not_an_image(site, fetch, tmp_path):
    site.objects["/login.png"] = b"<html><body>Please log in</body></html>"
    site.meta["/login.png"] = {"type": "text/html; charset=utf-8"}
    code, out, _ = fetch([{"url": site.url + "/login.png"}])
    error = out[0]["error"]
    assert code == 1 and error["type"] == "not_an_image" and "text/html; charset=utf-8" in error["message"]
    assert "--referer" in error["hint"]
    assert files_under(tmp_path / "fetched") == set()


def test_redirect_followed_and_named_after_the_url_asked(site, fetch, tmp_path):
    site.objects["/new.png"] = picture()
    code, out, _ = fetch([{"url": site.url + "/redirect/new.png"}])
    assert code == 0
    assert out[0]["path"] == str(tmp_path / "fetched" / "127.0.0.1" / "redirect" / "new.png")
    assert out[0]["fetched"]["url"] == site.url + "/new.png" and out[0]["url"] == site.url + "/redirect/new.png"
    assert [(m, p) for m, p in site.requests] == [("GET", "/redirect/new.png"), ("GET", "/new.png")]


def test_hotlink_403_hint_names_referer_and_referer_is_sent(site, fetch):
    site.objects["/referer/w.jpg"] = picture("JPEG")
    url = site.url + "/referer/w.jpg"
    code, out, _ = fetch([{"url": url}])
    assert code == 1 and out[0]["error"]["type"] == "http_403" and "--referer" in out[0]["error"]["hint"]
    assert len(gets(site)) == 1  # a 403 will not change: no retry
    code, out, _ = fetch([{"url": url}], "--referer", REFERER)
    assert code == 0 and out[0]["mime"] == "image/jpeg"


def test_bad_lines_and_records_without_url_are_error_records_the_rest_goes_through(site, fetch):
    site.objects["/a.png"] = picture()
    upstream = {"url": "https://x.example/b.png", "error": {"stage": "scan", "type": "x", "message": "m"}}
    lines = (jsonl([{"url": site.url + "/a.png"}]) + '{"url": broken\n' + jsonl([
        {"alt": "no url"}, {"path": "/docs/local.png", "ref": {"line": 3}}, {"url": "ftp://x.example/c.png"},
        upstream]) + "plain.png\n")
    code, out, err = fetch(lines)
    assert code == 1 and len(out) == 7
    assert "error" not in out[0] and Path(out[0]["path"]).is_file()
    assert out[1]["error"]["type"] == "bad_json" and "line 2" in out[1]["error"]["message"]
    assert out[2]["error"]["type"] == "no_url" and out[2]["alt"] == "no url"
    assert out[3] == {"path": "/docs/local.png", "ref": {"line": 3}}  # local images pass through untouched
    assert out[4]["error"]["type"] == "bad_url"
    assert out[5] == upstream  # an earlier stage's error passes on
    assert out[6] == {"path": "plain.png"}
    assert "line 2" in err and "no_url" in err


def test_nothing_is_written_outside_out(site, fetch, tmp_path):
    site.objects["*"] = picture()
    before = files_under(tmp_path)
    paths = ["/../../escape1.png", "/a/%2e%2e/%2e%2e/%2e%2e/escape2.png", "/%2e%2e%2f%2e%2e%2fescape3.png",
             "/..%5c..%5cescape4.png", "/%2Fetc%2Fescape5.png", "/nul%00name.png", "/", "/%2e%2e"]
    code, out, _ = fetch([{"url": site.url + p} for p in paths])
    assert code == 0
    out_dir = tmp_path / "fetched"
    assert [Path(r["path"]).relative_to(out_dir / "127.0.0.1").as_posix() for r in out] == [
        "escape1.png", "escape2.png", "escape3.png", "escape4.png", "etc/escape5.png", "nulname.png",
        "index.png", "index.png"]
    assert {p for p in files_under(tmp_path) - before if not p.startswith("fetched/")} == set()


def test_a_symlink_out_of_the_folder_is_refused(site, tmp_path):
    site.objects["/a.png"] = picture()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "fetched").mkdir()
    (tmp_path / "fetched" / "127.0.0.1").symlink_to(elsewhere)
    fetcher = Fetcher(tmp_path / "fetched", timeout=5)
    try:
        with pytest.raises(PicpipeError) as caught:
            fetcher.fetch_record({"url": site.url + "/a.png"})
    finally:
        fetcher.close()
    assert caught.value.type == "bad_path" and list(elsewhere.iterdir()) == []


def test_usage_errors_exit_2(run, tmp_path):
    (tmp_path / "afile").write_text("x")
    for args in (["--referer", "weibo.com"], ["--out", "afile/sub"], ["--max-size", "lots"], ["--retries", "-1"]):
        result = run("pp-fetch", *args, input='{"url": "http://127.0.0.1:9/a.png"}\n')
        assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr, args


def test_migration_pipe_into_pp_upload_records_replaces(site, fetch, run, tmp_path):
    site.objects["/blog/a.png"] = picture()
    url = site.url + "/blog/a.png"
    code, out, _ = fetch([{"url": url, "ref": {"doc": "post.md", "line": 1}}])
    assert code == 0
    uploaded = run("pp-upload", "--host", "local", input=jsonl(out))
    assert uploaded.returncode == 0, uploaded.stderr
    record = json.loads(uploaded.stdout)
    assert record["replaces"] == url and record["url"] != url and record["ref"]["doc"] == "post.md"
    assert record["sha256"] == hashlib.sha256(picture()).hexdigest()
