"""Editors: pp-typora run the way Typora runs it, pp-server asked what Typora, Obsidian and PicGo
clients ask. Uploads go to a local host profile (https://img.example.com/ over a folder), copies
to a local backup folder, records to a ledger file: every test checks the bytes that arrived."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import requests

from conftest import command_path, ctrl_c_works, parse_jsonl
from test_upload import image

BASE = "https://img.example.com/"
SECRET = "s3cret-Token-for-pp-server-9c1e"
#: A server started without a desktop session: the clipboard cannot be read.
NO_DESKTOP = {"DISPLAY": "", "WAYLAND_DISPLAY": ""}


def write_config(tmp_path: Path, backup: bool = True, extra: str = "") -> Path:
    config = tmp_path / "picpipe.toml"
    config.write_text(f"""\
ledger = "{tmp_path / 'ledger.jsonl'}"

[pipeline]
host = "site"
{'backup = "shelf"' if backup else ''}

[profiles.site]
type = "local"
dir = "{tmp_path / 'site'}"
base_url = "{BASE}"

[profiles.shelf]
type = "local"
dir = "{tmp_path / 'shelf'}"
{extra}""")
    return config


@pytest.fixture
def config_env(env, tmp_path) -> dict[str, str]:
    (tmp_path / "tmp").mkdir()
    return {**env, "PICPIPE_CONFIG": str(write_config(tmp_path)), "TMPDIR": str(tmp_path / "tmp")}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hosted(tmp_path: Path, url: str) -> bytes:
    """The bytes behind a URL of the local host profile."""
    assert url.startswith(BASE), url
    return (tmp_path / "site" / unquote(url[len(BASE):])).read_bytes()


def ledger(tmp_path: Path) -> list[dict]:
    path = tmp_path / "ledger.jsonl"
    return parse_jsonl(path.read_text()) if path.exists() else []


def shelf(tmp_path: Path) -> set[str]:
    """sha256 of every file in the backup folder."""
    return {sha(p.read_bytes()) for p in (tmp_path / "shelf").rglob("*") if p.is_file()}


def typora(paths: list[Path | str], env: dict[str, str], cwd: Path, options: str = "") -> subprocess.CompletedProcess:
    """Typora's Custom Command: `<command> "path-1" "path-2" ...` through a shell."""
    command = f'"{command_path("pp-typora")}" {options} ' + " ".join(f'"{p}"' for p in paths)
    return subprocess.run(command, shell=True, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def typora_urls(stdout: str, count: int) -> list[str]:
    """What Typora reads: the last N lines, each an http(s) URL, else "Fail to parse"."""
    lines = stdout.splitlines()[-count:]
    assert len(lines) == count and all(line.startswith(("http://", "https://")) for line in lines), stdout
    return lines


@contextmanager
def web_folder(folder: Path) -> Iterator[str]:
    """Images online: a static web server over `folder` on 127.0.0.1."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[assignment]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# -- pp-typora -------------------------------------------------------------------------------------

def test_typora_prints_one_url_per_image_in_order_last_on_stdout(config_env, tmp_path):
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 0)]
    images = [image(tmp_path / "post" / name, colour)
              for name, colour in zip(["a.png", "b b.png", "截图 1.png", "d.png"], colours)]
    result = typora(images, config_env, tmp_path)
    assert result.returncode == 0, result.stderr
    urls = typora_urls(result.stdout, len(images))
    assert result.stdout == "".join(url + "\n" for url in urls)  # nothing but the URLs on stdout
    for url, src in zip(urls, images):
        assert hosted(tmp_path, url) == src.read_bytes()
    digests = [sha(p.read_bytes()) for p in images]
    assert shelf(tmp_path) == set(digests)
    marked = {entry["sha256"]: entry for entry in ledger(tmp_path) if entry.get("url")}
    assert [marked[d]["url"] for d in digests] == urls
    assert all(marked[d]["backups"][0]["target"] == "shelf" for d in digests)
    assert "4 images uploaded to site" in result.stderr


def test_typora_a_failing_image_prints_no_urls_exits_1_and_says_why(config_env, tmp_path):
    good = image(tmp_path / "good.png", (10, 120, 30))
    missing = tmp_path / "gone away.png"
    result = typora([good, missing], config_env, tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""  # a shifted or shortened list would put URLs under the wrong images
    assert f"pp-typora: error: {missing}: no such file" in result.stderr
    assert "hint: " in result.stderr and "1 of 2 images failed" in result.stderr
    assert "Traceback" not in result.stderr
    # The good image went through the whole pipeline; the next try finds it in the ledger.
    [url] = {e["url"] for e in ledger(tmp_path) if e.get("url") and "error" not in e}
    assert hosted(tmp_path, url) == good.read_bytes()
    assert shelf(tmp_path) == {sha(good.read_bytes())}
    missing.write_bytes(image(tmp_path / "other.png", (1, 2, 3)).read_bytes())
    again = typora([good, missing], config_env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert typora_urls(again.stdout, 2)[0] == url


def test_typora_flags_and_environment_override_the_config(config_env, tmp_path):
    src = image(tmp_path / "photo.png", (120, 30, 200))
    second = tmp_path / "second"
    env = {**config_env, "PICPIPE_PIPELINE_COMPRESS": "true", "PICPIPE_PIPELINE_BACKUP": "shelf, spare",
           "PICPIPE_SPARE_TYPE": "local", "PICPIPE_SPARE_DIR": str(second)}
    result = typora([src], env, tmp_path, options="--path 'editor/{sha256:8}{ext}'")
    assert result.returncode == 0, result.stderr
    [url] = typora_urls(result.stdout, 1)
    assert url.startswith(BASE + "editor/")
    [entry] = [e for e in ledger(tmp_path) if e.get("url")][-1:]
    assert "compress" in entry and entry["source"] == str(src)  # pp-compress ran first
    assert hosted(tmp_path, url) == Path(entry["path"]).read_bytes()
    assert {b["target"] for b in entry["backups"]} == {"shelf", "spare"}
    # the original, and the compressed bytes that went online (what a repair puts back)
    assert {sha(p.read_bytes()) for p in second.rglob("*") if p.is_file()} == {
        sha(src.read_bytes()), sha(Path(entry["path"]).read_bytes())}

    off = typora([src], {**env, "PICPIPE_PIPELINE_COMPRESS": "maybe"}, tmp_path)
    assert off.returncode == 2 and off.stdout == "" and "true or false" in off.stderr


def test_typora_without_a_pipeline_host_shows_the_config_to_write(env, tmp_path):
    src = image(tmp_path / "a.png", (1, 1, 1))
    result = typora([src], env, tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert "no image host configured" in result.stderr
    assert "[pipeline]" in result.stderr and 'host = "myhost"' in result.stderr
    assert "PICPIPE_PIPELINE_HOST" in result.stderr and "Traceback" not in result.stderr

    unknown = typora([src], {**env, "PICPIPE_PIPELINE_HOST": "nowhere"}, tmp_path)
    assert unknown.returncode == 2 and "no profile named 'nowhere'" in unknown.stderr


def test_typora_a_stage_that_refuses_its_configuration_is_a_usage_error(config_env, tmp_path):
    src = image(tmp_path / "a.png", (5, 5, 5))
    env = {**config_env, "PICPIPE_PIPELINE_BACKUP": "dav", "PICPIPE_DAV_TYPE": "webdav"}  # no url
    result = typora([src], env, tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert "pp-backup refused to run" in result.stderr and "Traceback" not in result.stderr


def test_typora_online_images_are_fetched_and_uploaded_to_the_host(config_env, tmp_path):
    online = image(tmp_path / "www" / "pics" / "old.png", (200, 100, 0))
    local = image(tmp_path / "new.png", (0, 100, 200))
    with web_folder(tmp_path / "www") as site:
        result = typora([f"{site}pics/old.png", local], config_env, tmp_path)
    assert result.returncode == 0, result.stderr
    remote_url, local_url = typora_urls(result.stdout, 2)
    assert hosted(tmp_path, remote_url) == online.read_bytes()
    assert hosted(tmp_path, local_url) == local.read_bytes()
    entry = next(e for e in ledger(tmp_path) if e.get("url") == remote_url)
    assert entry["replaces"] == f"{site}pics/old.png"
    assert not (tmp_path / "fetched").exists()  # downloads go to the cache, not the current folder


def test_typora_help_has_examples(run):
    for name in ("pp-typora", "pp-server"):
        result = run(name, "--help")
        assert result.returncode == 0
        examples = result.stdout.split("examples:")[1]
        assert any(line.strip().startswith("pp-") and "|" in line for line in examples.splitlines())


# -- pp-server -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A pp-server process; `stop()` sends Ctrl-C and returns (exit status, stderr)."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([command_path("pp-server"), "--port", str(port), *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=ctrl_c_works)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pp-server exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if requests.post(self.url + "/heartbeat", timeout=2).json() == {"success": True, "result": "alive"}:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("pp-server did not answer /heartbeat")

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        stdout, stderr = self.proc.communicate(timeout=15)
        assert stdout == ""
        return self.proc.returncode, stderr

    def post(self, path: str = "/upload", **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kwargs)


@pytest.fixture
def serve(config_env):
    started: list[Server] = []

    def _serve(*args: str, env: dict[str, str] | None = None) -> Server:
        server = Server({**config_env, **(env or {})}, args, free_port())
        started.append(server)
        server.wait_ready()
        return server

    yield _serve
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def listening_address(port: int) -> str:
    """The local address of the socket listening on `port`, from /proc/net/tcp (Linux)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            return socket.inet_ntoa(bytes.fromhex(address)[::-1])
    raise AssertionError(f"nothing listens on port {port}")


def test_server_typora_picgo_app_mode_and_its_test_request(serve, tmp_path):
    icons = tmp_path / "Typora.app" / "Contents" / "Resources" / "TypeMark" / "assets" / "icon"
    big, small = image(icons / "icon_512x512.png", (30, 60, 90)), image(icons / "icon_256x256.png", (90, 60, 30))
    server = serve()
    if Path("/proc/net/tcp").exists():
        assert listening_address(server.port) == "127.0.0.1"
    answer = server.post(data=json.dumps({"list": [str(big), str(small)]}),
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True and len(body["result"]) == 2
    assert [hosted(tmp_path, url) for url in body["result"]] == [big.read_bytes(), small.read_bytes()]
    assert shelf(tmp_path) == {sha(big.read_bytes()), sha(small.read_bytes())}
    assert {e["url"] for e in ledger(tmp_path) if e.get("url")} == set(body["result"])
    status, stderr = server.stop()
    assert status == 0 and "stopped" in stderr and "Traceback" not in stderr
    assert "listening on http://127.0.0.1:" in stderr and "POST /upload 200 2 images" in stderr


def test_server_obsidian_picgo_mode_json_list_of_vault_paths(serve, tmp_path):
    vault = tmp_path / "My Vault" / "附件"
    images = [image(vault / "Pasted image 20240101120000.png", (1, 50, 100)), image(vault / "图 2.png", (100, 50, 1))]
    server = serve()
    answer = server.post(data=json.dumps({"list": [str(p) for p in images]}, ensure_ascii=False).encode(),
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.json()["success"] is True
    assert [hosted(tmp_path, url) for url in answer.json()["result"]] == [p.read_bytes() for p in images]


def obsidian_form(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """The body image-auto-upload's payloadGenerator builds in remote server mode (field `list`)."""
    boundary_string = "BoundaryQx7k2m9a0b3c4d5e"
    boundary = f"------{boundary_string}".encode()
    chunks = []
    for name, data in files:
        chunks += [boundary + b"\r\n",
                   f'Content-Disposition: form-data; name="list"; filename="{name}"\r\n'
                   "Content-Type: application/octet-stream\r\n\r\n".encode(), data, b"\r\n"]
    chunks.append(boundary + b"--\r\n")
    return b"".join(chunks), f"multipart/form-data; boundary=----{boundary_string}"


def test_server_obsidian_remote_server_mode_multipart_list(serve, tmp_path):
    pasted = image(tmp_path / "vault" / "clip.png", (250, 10, 10)).read_bytes()
    vault_file = image(tmp_path / "vault 笔记" / "我的 photo.png", (10, 250, 10))
    odd = pasted + b"\r\n--not-a-boundary\r\n\r\n\r\n"  # an image ending in bytes that look like multipart syntax
    # A pasted or vault image arrives as "<ms timestamp>.png", a path from the note under its whole path.
    files = [("1700000000123.png", pasted), (str(vault_file), vault_file.read_bytes()), ("1700000000124.png", odd)]
    body, content_type = obsidian_form(files)
    server = serve(env={"PICPIPE_PIPELINE_PATH": "{name}{ext}"})
    answer = server.post(data=body, headers={"Content-Type": content_type, "Origin": "app://obsidian.md"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == "app://obsidian.md"  # fetch() in the app reads it
    urls = answer.json()["result"]
    assert [hosted(tmp_path, url) for url in urls] == [data for _, data in files]
    # Keys keep the names the client sent, without their folders.
    assert urls == [BASE + "1700000000123.png", BASE + quote("我的 photo.png"), BASE + "1700000000124.png"]
    assert list((tmp_path / "tmp").iterdir()) == []  # the received files are gone


def test_server_picgo_core_multipart_files_are_uploaded_then_removed(serve, tmp_path):
    first = image(tmp_path / "up" / "one.png", (3, 33, 133)).read_bytes()
    second = image(tmp_path / "up" / "two.png", (133, 33, 3)).read_bytes()
    server = serve()
    answer = server.post(files=[("files", ("one.png", first, "image/png")),
                                ("files", ("../../.two.png", second, "image/png"))])
    assert answer.status_code == 200, answer.text
    assert [hosted(tmp_path, url) for url in answer.json()["result"]] == [first, second]
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not (tmp_path / "two.png").exists() and not (tmp_path / ".two.png").exists()

    empty = server.post(files={"note": (None, "just a field")})
    assert empty.status_code == 400 and empty.json()["success"] is False and "files" in empty.json()["message"]


def test_server_a_failing_image_fails_the_request_naming_it(serve, tmp_path):
    good = image(tmp_path / "good.png", (7, 77, 177))
    missing = tmp_path / "no such.png"
    server = serve()
    answer = server.post(json={"list": [str(good), str(missing)]})
    assert answer.status_code == 500
    body = answer.json()
    assert body["success"] is False and body["result"] == []
    assert body["message"].startswith(f"{missing}: no such file (")
    assert {e["sha256"] for e in ledger(tmp_path) if e.get("url") and "error" not in e} == {sha(good.read_bytes())}


def test_server_always_200_for_clients_that_drop_error_bodies(serve, tmp_path):
    server = serve("--always-200", env=NO_DESKTOP)
    failed = server.post(json={"list": [str(tmp_path / "missing.png")]})
    assert failed.status_code == 200 and failed.json()["success"] is False
    assert f"{tmp_path / 'missing.png'}: no such file" in failed.json()["message"]
    clipboard = server.post()  # Obsidian's clipboard upload in PicGo mode: a POST without a body
    assert clipboard.status_code == 200 and "no graphical session" in clipboard.json()["message"]
    deleted = server.post("/delete", json={"list": [{"url": BASE + "never.png"}]})
    assert deleted.status_code == 200 and deleted.json()["success"] is False


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not JSON"),
    (b'{"list": "/a.png"}', "must be an array"),
    (b'{"list": ["/a.png", "  "]}', "non-empty string"),
    (b'{"list": ["/a.png", 7]}', "non-empty string"),
    (b'["/a.png"]', "JSON object"),
    (b"", "no graphical session"),  # the clipboard, and this machine has none
    (b"{}", "no graphical session"),
    (b'{"list": []}', "no graphical session"),
])
def test_server_bad_requests_are_400(serve, tmp_path, body, message):
    answer = serve(env=NO_DESKTOP).post(data=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["success"] is False and message in answer.json()["message"]
    assert answer.json()["result"] == [] and answer.json()["items"] == []  # PicGo 3.x's shape
    assert not (tmp_path / "site").exists()


def test_server_routes_heartbeat_404_and_size_cap(serve):
    server = serve()
    assert server.post("/heartbeat").json() == {"success": True, "result": "alive"}
    for method, path in (("POST", "/"), ("GET", "/upload"), ("GET", "/delete"), ("GET", "/heartbeat")):
        answer = requests.request(method, server.url + path, timeout=10)
        assert answer.status_code == 404 and answer.json() == {"success": False}
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 200000000\r\n\r\n{")
        reply = conn.makefile("rb").read()  # the server answers and closes without reading 200 MB
    assert reply.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in reply


def test_server_secret(serve, tmp_path):
    src = image(tmp_path / "a.png", (44, 44, 44))
    server = serve(env={"PICPIPE_SERVER_SECRET": SECRET})
    payload = {"list": [str(src)]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-PicGo-Secret": SECRET[:-1]},
                    {"Authorization": SECRET}):
        answer = server.post(json=payload, headers=headers)
        assert answer.status_code == 401 and answer.json() == {"success": False, "message": "Unauthorized"}
    assert not (tmp_path / "site").exists()
    assert server.post("/heartbeat").status_code == 200  # only /upload is protected
    for headers, params in (({"Authorization": f"Bearer {SECRET}"}, None), ({"X-PicGo-Secret": SECRET}, None),
                            ({}, {"secret": SECRET})):
        answer = server.post(json=payload, headers=headers, params=params)
        assert answer.status_code == 200 and hosted(tmp_path, answer.json()["result"][0]) == src.read_bytes()
    status, stderr = server.stop()
    assert status == 0 and "secret required" in stderr and SECRET not in stderr and "POST /upload 401" in stderr


def test_server_secret_file_and_never_on_the_command_line(serve, run, config_env, tmp_path):
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET + "\n")
    server = serve("--secret-file", str(secret_file))
    assert server.post(json={"list": ["/x.png"]}).status_code == 401
    assert server.post(json={"list": [str(tmp_path / "none.png")]},
                       headers={"Authorization": f"Bearer {SECRET}"}).status_code == 500
    refused = run("pp-server", "--secret", SECRET, extra_env={"PICPIPE_CONFIG": config_env["PICPIPE_CONFIG"]})
    assert refused.returncode == 2 and SECRET not in refused.stderr and "--secret-file" in refused.stderr


def test_server_web_pages_are_refused_without_the_secret(serve, tmp_path):
    src = image(tmp_path / "id_rsa.png", (9, 9, 9))
    server = serve()
    for origin in ("https://evil.example", "http://localhost:8080"):
        answer = server.post(data=json.dumps({"list": [str(src)]}),
                             headers={"Content-Type": "text/plain", "Origin": origin})
        assert answer.status_code == 403 and "Access-Control-Allow-Origin" not in answer.headers
        preflight = requests.options(server.url + "/upload", timeout=10,
                                     headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 403 and "Access-Control-Allow-Origin" not in preflight.headers
    rebound = server.post(json={"list": [str(src)]}, headers={"Host": f"evil.example:{server.port}"})
    assert rebound.status_code == 403  # DNS rebinding: a page whose name now points at 127.0.0.1
    assert not (tmp_path / "site").exists()


def test_server_web_pages_with_the_secret_get_cors(serve, tmp_path):
    src = image(tmp_path / "a.png", (19, 29, 39))
    server = serve(env={"PICPIPE_SERVER_SECRET": SECRET})
    origin = "https://notes.example.com"
    preflight = requests.options(server.url + "/upload", timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == origin
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    answer = server.post(json={"list": [str(src)]}, headers={"Origin": origin, "Authorization": f"Bearer {SECRET}"})
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == origin
    refused = server.post(json={"list": [str(src)]}, headers={"Origin": origin})
    assert refused.status_code == 401 and "Access-Control-Allow-Origin" not in refused.headers


def test_server_online_images_in_the_list_are_fetched(serve, tmp_path):
    online = image(tmp_path / "www" / "b.jpg.png", (70, 140, 210))
    local = image(tmp_path / "a.png", (210, 140, 70))
    server = serve()
    with web_folder(tmp_path / "www") as site:
        answer = server.post(json={"list": [str(local), site + "b.jpg.png"]})
    assert answer.status_code == 200, answer.text
    assert [hosted(tmp_path, url) for url in answer.json()["result"]] == [local.read_bytes(), online.read_bytes()]


def test_server_requests_at_once(serve, tmp_path):
    images = [image(tmp_path / f"{i}.png", (i * 20, 0, 255 - i * 20)) for i in range(6)]
    server = serve()
    answers: list[requests.Response] = [None] * len(images)  # type: ignore[list-item]

    def send(index: int) -> None:
        answers[index] = server.post(json={"list": [str(images[index])]})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for answer, src in zip(answers, images):
        assert answer.status_code == 200 and hosted(tmp_path, answer.json()["result"][0]) == src.read_bytes()
    assert {e["sha256"] for e in ledger(tmp_path) if e.get("url")} == {sha(p.read_bytes()) for p in images}


def test_server_binding_other_than_loopback_must_be_asked_for_and_warns(serve, run, config_env, tmp_path):
    in_config = tmp_path / "open.toml"
    text = write_config(tmp_path).read_text()
    in_config.write_text(text.replace("[pipeline]", '[server]\nhost = "0.0.0.0"\n\n[pipeline]'))
    refused = run("pp-server", extra_env={"PICPIPE_CONFIG": str(in_config)})
    assert refused.returncode == 2 and "pp-server --host 0.0.0.0" in refused.stderr

    server = serve("--host", "0.0.0.0")
    if Path("/proc/net/tcp").exists():
        assert listening_address(server.port) == "0.0.0.0"
    status, stderr = server.stop()
    assert status == 0
    assert "warning: listening on 0.0.0.0: other machines can reach this server and no secret is set" in stderr


def test_server_without_a_pipeline_host_does_not_start(run, tmp_path):
    result = run("pp-server", "--port", str(free_port()))
    assert result.returncode == 2 and "[pipeline]" in result.stderr and "Traceback" not in result.stderr


def test_editors_upload_only_images(tmp_path, serve):
    """A request that names ~/.ssh/id_rsa (or a .txt) publishes nothing: only image files go in."""
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    picture = image(tmp_path / "ok.png", (1, 2, 3))
    server = serve()
    answer = server.post(json={"list": [str(picture), str(secret)]})
    assert answer.status_code == 500 and "not an image file" in answer.json()["message"]
    assert "id_rsa" in answer.json()["message"]
    site = [f for f in (tmp_path / "site").rglob("*") if f.is_file()]
    assert site and all(b"OPENSSH" not in f.read_bytes() for f in site)


def test_server_serves_editor_pages_loaded_from_files(serve, tmp_path):
    """Typora's window is a file:// page: its requests say Origin: null (or file://); PicGo serves
    them, and so must we, or "PicGo (app)" mode breaks. Only images go through (see above)."""
    src = image(tmp_path / "shot.png", (7, 77, 177))
    server = serve()
    for origin in ("null", "file://"):
        answer = server.post(json={"list": [str(src)]}, headers={"Origin": origin})
        assert answer.status_code == 200, answer.text
        assert answer.headers["Access-Control-Allow-Origin"] == origin
        assert hosted(tmp_path, answer.json()["result"][0]) == src.read_bytes()


def test_server_refuses_a_chunked_body_plainly(serve, tmp_path):
    src = image(tmp_path / "c.png", (5, 50, 150))
    server = serve()
    body = iter([json.dumps({"list": [str(src)]}).encode()])  # a generator: requests sends it chunked
    answer = requests.post(server.url + "/upload", data=body, timeout=10)
    assert answer.status_code == 411 and "Content-Length" in answer.json()["message"]


# -- pp-server: PicGo 3.x and PicList --------------------------------------------------------------

OTHER = "https://other.example.com/"


@pytest.fixture
def two_hosts_env(config_env, tmp_path) -> dict[str, str]:
    """Profiles site (the pipeline's host), shelf and other, all of type local; no backup."""
    config = write_config(tmp_path, backup=False, extra=f"""
[profiles.other]
type = "local"
dir = "{tmp_path / 'other'}"
base_url = "{OTHER}"
""")
    return {**config_env, "PICPIPE_CONFIG": str(config)}


def test_server_answers_picgo3_items_and_piclist_full_result(serve, tmp_path):
    shot = image(tmp_path / "notes" / "shot 1.png", (40, 80, 120))
    server = serve(env={"PICPIPE_PIPELINE_PATH": "{sha256:12}{ext}"})
    body = server.post(json={"list": [str(shot)]}).json()
    [url] = body["result"]
    digest = sha(shot.read_bytes())
    item = {"origin": str(shot), "imgUrl": url, "fileName": "shot 1.png", "type": "local",
            "contentType": "image/png", "size": shot.stat().st_size, "width": 40, "height": 30, "extname": ".png"}
    assert body["items"] == [item]
    [full] = body["fullResult"]
    assert full == {**item, "host": "site", "key": digest[:12] + ".png", "url": url, "sha256": digest,
                    "uploaded_at": full["uploaded_at"]}
    form = server.post(files=[("files", ("截图.png", shot.read_bytes(), "image/png"))]).json()
    assert form["result"] == [url] and form["items"][0]["origin"] == form["items"][0]["fileName"] == "截图.png"


def test_server_uploader_picbed_and_config_name_choose_the_profile(serve, two_hosts_env, tmp_path):
    src = image(tmp_path / "a.png", (1, 100, 200))
    server = serve(env=two_hosts_env)

    def upload(query: str) -> requests.Response:
        return server.post("/upload?" + query, json={"list": [str(src)]})

    for query, base in (("uploader=other", OTHER), ("configName=other", OTHER),
                        ("picbed=local&configName=OTHER", OTHER), ("uploader=local", BASE), ("picbed=site", BASE),
                        ("configId=site", BASE), ("picbed=other&configName=Default", OTHER)):
        answer = upload(query)
        assert answer.status_code == 200, (query, answer.text)
        assert answer.json()["result"][0].startswith(base), query
        assert answer.json()["fullResult"][0]["host"] == ("other" if base == OTHER else "site")
    assert (tmp_path / "other").is_dir()
    assert {e["host"] for e in ledger(tmp_path)} == {"site", "other"}

    unknown = upload("uploader=aws-s3")
    assert unknown.status_code == 400
    assert unknown.json() == {"success": False, "result": [], "items": [], "code": "UNKNOWN_UPLOADER",
                              "message": 'Uploader "aws-s3" is not registered. Available uploaders: '
                                         "[site, shelf, other, local]."}
    for query, code in (("picbed=qiniu&configName=other", "UPLOAD_CONFIG_NOT_FOUND"),
                        ("configName=nowhere", "UPLOAD_CONFIG_NOT_FOUND"),
                        ("uploader=", "INVALID_UPLOAD_OPTION"),
                        ("uploader=site&uploader=other", "INVALID_UPLOAD_OPTION")):
        answer = upload(query)
        assert answer.status_code == 400 and answer.json()["code"] == code, (query, answer.text)


def test_server_uploader_of_a_type_with_several_profiles_and_none_the_pipelines(serve, two_hosts_env, tmp_path):
    src = image(tmp_path / "a.png", (9, 8, 7))
    server = serve(env={**two_hosts_env, "PICPIPE_PIPELINE_HOST": "other", "PICPIPE_GH_TYPE": "github"})
    assert server.post("/upload?uploader=local", json={"list": [str(src)]}).json()["result"][0].startswith(OTHER)
    server.stop()
    server = serve(env={**two_hosts_env, "PICPIPE_SPARE_TYPE": "local", "PICPIPE_SPARE_DIR": str(tmp_path / "spare"),
                        "PICPIPE_PIPELINE_HOST": "spare"})
    answer = server.post("/upload?uploader=spare", json={"list": [str(src)]})  # a profile of the environment
    assert answer.status_code == 200 and answer.json()["fullResult"][0]["host"] == "spare"
    # PicGo's github is picpipe's github: no such profile here
    assert server.post("/upload?uploader=github", json={"list": [str(src)]}).json()["code"] == "UNKNOWN_UPLOADER"


def test_server_piclist_key_query_is_a_secret_carrier(serve, tmp_path):
    src = image(tmp_path / "k.png", (3, 6, 9))
    server = serve(env={"PICPIPE_SERVER_SECRET": SECRET})
    assert server.post(json={"list": [str(src)]}, params={"key": "wrong"}).status_code == 401
    answer = server.post(json={"list": [str(src)]}, params={"key": SECRET, "picbed": "site"})
    assert answer.status_code == 200 and hosted(tmp_path, answer.json()["result"][0]) == src.read_bytes()
    status, stderr = server.stop()
    assert status == 0 and SECRET not in stderr and "POST /upload 401" in stderr and "key=" not in stderr


def test_server_delete_takes_what_the_ledger_has_and_nothing_else(serve, tmp_path):
    first, second = image(tmp_path / "1.png", (10, 20, 30)), image(tmp_path / "2.png", (30, 20, 10))
    server = serve(env={"PICPIPE_PIPELINE_BACKUP": ""})
    full = server.post(json={"list": [str(first), str(second)]}).json()["fullResult"]
    stored = [tmp_path / "site" / unquote(item["url"][len(BASE):]) for item in full]
    assert all(path.exists() for path in stored)
    stranger = tmp_path / "site" / "not-recorded.png"
    stranger.write_bytes(first.read_bytes())

    # Obsidian Image Auto Upload sends back the fullResult it kept; the ledger says what it is.
    deleted = server.post("/delete", json={"list": [full[0]]}, headers={"Origin": "app://obsidian.md"})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"success": True, "message": "delete success: 1, fail: 0"}
    assert not stored[0].exists() and stored[1].exists()
    tomb = [e for e in ledger(tmp_path) if e.get("url") == full[0]["url"]][-1]
    assert tomb["deleted_at"] and tomb["host"] == "site"

    again = server.post("/delete", json={"list": [full[0]]})
    assert again.status_code == 400 and again.json()["success"] is False
    assert "deleted already" in again.json()["message"]
    forged = [{"host": "site", "key": "not-recorded.png", "url": BASE + "not-recorded.png"},
              {**full[1], "sha256": "0" * 64}, {**full[1], "key": "not-recorded.png"}, {"imgUrl": 5},
              {"sha256": full[1]["sha256"], "mirrors": [{}]}]  # a hash alone names no one copy
    refused = server.post("/delete", json={"list": forged})
    assert refused.status_code == 400 and refused.json()["message"].startswith("delete error: ")
    assert len(refused.json()["errors"]) == 5 and "not an upload in the ledger" in refused.json()["errors"][0]
    assert "names no upload" in refused.json()["errors"][4]
    assert stranger.exists() and stored[1].exists()
    mixed = server.post("/delete", json={"list": [{"imgUrl": full[1]["url"]}, forged[0]]})  # PicList's imgUrl alone
    assert mixed.status_code == 200 and mixed.json()["message"] == "delete success: 1, fail: 1"
    assert not stored[1].exists() and stranger.exists()

    for body, status in ((b"", 400), (b'{"list": []}', 400), (b'{"list": ["/a.png"]}', 400), (b"{no", 400)):
        answer = server.post("/delete", data=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == status and answer.json()["success"] is False
    assert server.post("/delete", json={"list": []}).json()["message"] == "no file to delete"
    for origin in ("null", "file://", "https://evil.example"):
        assert server.post("/delete", json={"list": [full[0]]}, headers={"Origin": origin}).status_code == 403


def test_server_delete_finds_an_upload_however_its_url_is_spelled(serve, two_hosts_env, tmp_path):
    """The ledger finds a URL by its identity (`HTTPS://IMG.EXAMPLE.COM/%61.png` is `.../a.png`);
    /delete takes what it found: the upload's own URL and its mirrors', by hash or by URL alone."""
    config = Path(two_hosts_env["PICPIPE_CONFIG"])
    config.write_text(config.read_text().replace('host = "site"', 'host = ["site", "other"]'))
    server = serve(env=two_hosts_env)
    first, second = image(tmp_path / "s.png", (12, 34, 56)), image(tmp_path / "t.png", (65, 43, 21))
    full = server.post(json={"list": [str(first), str(second)]}).json()["fullResult"]

    def respelled(url: str) -> str:
        scheme, _, rest = url.partition("://")
        host, _, path = rest.partition("/")
        return f"{scheme.upper()}://{host.upper()}/" + "".join(f"%{ord(c):02X}" if c.isalnum() else c for c in path)

    [mirror] = full[0]["mirrors"]
    assert respelled(full[0]["url"]) != full[0]["url"]
    items = [{**full[0], "url": respelled(full[0]["url"]), "mirrors": [{**mirror, "url": respelled(mirror["url"])}]},
             {"imgUrl": respelled(full[1]["url"])}]  # PicList's imgUrl alone
    deleted = server.post("/delete", json={"list": items})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"success": True, "message": "delete success: 2, fail: 0"}
    gone = {e["host"]: e for e in ledger(tmp_path) if e.get("sha256") == full[0]["sha256"]}
    assert gone["site"]["deleted_at"] and gone["other"]["deleted_at"]
    assert [e for e in ledger(tmp_path) if e.get("url") == full[1]["url"]][-1]["deleted_at"]
    for url in (full[0]["url"], full[1]["url"]):
        assert not (tmp_path / "site" / unquote(url[len(BASE):])).exists()
    assert not (tmp_path / "other" / unquote(mirror["url"][len(OTHER):])).exists()

FAKE_WL_PASTE = f"""#!{sys.executable}
import os, sys
spec = os.environ["FAKE_CLIPBOARD"]
types = open(spec + ".types").read().split()
if sys.argv[1:] == ["--list-types"]:
    print("\\n".join(types))
elif sys.argv[-2] == "--type" and sys.argv[-1] in types:
    sys.stdout.buffer.write(open(spec + "." + sys.argv[-1].replace("/", "-"), "rb").read())
else:
    sys.exit("No suitable type of content copied")
"""


def fake_clipboard(tmp_path: Path, types: list[str], data: dict[str, bytes]) -> dict[str, str]:
    """A Wayland session whose wl-paste offers `types` (the bytes of each in `data`)."""
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    (tools / "wl-paste").write_text(FAKE_WL_PASTE)
    (tools / "wl-paste").chmod(0o755)
    spec = tmp_path / "clipboard"
    spec.with_suffix(".types").write_text("\n".join(types))
    for kind, content in data.items():
        Path(f"{spec}.{kind.replace('/', '-')}").write_bytes(content)
    return {"FAKE_CLIPBOARD": str(spec), "WAYLAND_DISPLAY": "wayland-test", "DISPLAY": "",
            "XDG_SESSION_TYPE": "wayland", "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}


def test_server_empty_body_uploads_the_clipboard(serve, tmp_path):
    png = image(tmp_path / "copied.png", (200, 50, 100)).read_bytes()
    server = serve(env=fake_clipboard(tmp_path, ["image/png", "text/html"], {"image/png": png}))
    for body in (None, {}, {"list": []}):
        answer = server.post(json=body) if body is not None else server.post()
        assert answer.status_code == 200, answer.text
        assert hosted(tmp_path, answer.json()["result"][0]) == png
        assert re.fullmatch(r"\d{14}\.png", answer.json()["items"][0]["fileName"])
    assert list((tmp_path / "tmp").iterdir()) == []
    for origin in ("null", "file://"):  # a page (a sandboxed frame says null) may not read the clipboard
        assert server.post(headers={"Origin": origin}).status_code == 403

    text = serve(env=fake_clipboard(tmp_path, ["text/plain"], {"text/plain": b"hello"})).post()
    assert text.status_code == 400 and "the clipboard holds text (text/plain), not an image" in text.json()["message"]


def test_server_and_typora_upload_to_every_pipeline_host(serve, two_hosts_env, tmp_path):
    """[pipeline] host = ["site", "other"]: the URL is site's, other has a copy (the record's mirrors)."""
    config = Path(two_hosts_env["PICPIPE_CONFIG"])
    config.write_text(config.read_text().replace('host = "site"', 'host = ["site", "other"]'))
    src = image(tmp_path / "m.png", (77, 7, 177))
    result = typora([src], two_hosts_env, tmp_path)
    assert result.returncode == 0, result.stderr
    [url] = typora_urls(result.stdout, 1)
    assert hosted(tmp_path, url) == src.read_bytes()
    copies = {e["host"]: e["url"] for e in ledger(tmp_path) if e.get("sha256") == sha(src.read_bytes())}
    assert copies["site"] == url and copies["other"].startswith(OTHER)  # every copy is in the ledger
    assert (tmp_path / "other" / unquote(copies["other"][len(OTHER):])).read_bytes() == src.read_bytes()

    second = image(tmp_path / "n.png", (1, 7, 17))
    server = serve(env=two_hosts_env)
    body = server.post(json={"list": [str(second)]}).json()
    assert body["result"][0].startswith(BASE) and body["fullResult"][0]["mirrors"][0]["host"] == "other"
    only = server.post("/upload?uploader=other", json={"list": [str(image(tmp_path / "o.png", (5, 5, 5)))]}).json()
    assert only["result"][0].startswith(OTHER) and "mirrors" not in only["fullResult"][0]
    deleted = server.post("/delete", json={"list": body["fullResult"]})  # every copy goes
    assert deleted.json() == {"success": True, "message": "delete success: 1, fail: 0"}
    gone = {e["host"]: e for e in ledger(tmp_path) if e.get("sha256") == sha(second.read_bytes())}
    assert gone["site"]["deleted_at"] and gone["other"]["deleted_at"]
    assert not list((tmp_path / "other").rglob("n*.png")) and not any(
        sha(p.read_bytes()) == sha(second.read_bytes()) for p in (tmp_path / "other").rglob("*") if p.is_file())
    status, stderr = server.stop()
    assert "upload to site, other" in stderr
