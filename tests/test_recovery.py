"""The day an image host dies: Markdown posts whose images lived on host A are repaired from the
WebDAV backups with the README's recipe, onto host B. Every server is real and local."""

from __future__ import annotations

import hashlib
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from test_compress import jpeg_with_gps

from conftest import command_path, parse_jsonl
from davservers import PASSWORD, USER, wsgidav
from test_upload import image


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def static_site(folder: Path) -> Iterator[tuple[str, ThreadingHTTPServer]]:
    """A web server for an image host's folder: http://127.0.0.1:PORT/."""
    folder.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server
    finally:
        server.shutdown()
        server.server_close()


def sh(run_shell, script: str) -> str:
    result = run_shell(script)
    assert result.returncode == 0, result.stderr
    return result.stdout


ONE = "# One\n\n![cover]({img0})\n\nText with `![x]({code1})` in code.\n"
TWO = ("Intro\n\n![second][s]\n\n```\n![d]({code2})\n```\n\n[s]: {img1} \"title\"\n"
       "<img src=\"{img2}\" width=\"80\">\n")


def posts_with(images: list[str], code: list[str]) -> dict[str, str]:
    fields = {f"img{i}": u for i, u in enumerate(images)} | {f"code{i}": u for i, u in enumerate(code)}
    return {"one.md": ONE.format(**fields), "two.md": TWO.format(**fields)}


def test_dead_host_links_are_restored_from_backups_onto_a_new_host(env, tmp_path):
    import subprocess

    def run_shell(script: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)

    originals = [image(tmp_path / "shots" / "截图 1.png", (30, 200, 30))]
    for name in ("cover", "trip"):  # photos with GPS: what went online had it stripped by pp-compress
        originals.append(tmp_path / "shots" / f"{name}.jpg")
        jpeg_with_gps(originals[-1])
    bin_dir = str(Path(command_path("pp-upload")).parent)
    env.update(PATH=bin_dir + ":" + env["PATH"], PICPIPE_LEDGER=str(tmp_path / "ledger.jsonl"),
               PICPIPE_A_TYPE="local", PICPIPE_A_DIR=str(tmp_path / "host-a"),
               PICPIPE_B_TYPE="local", PICPIPE_B_DIR=str(tmp_path / "host-b"),
               PICPIPE_NAS_TYPE="webdav", PICPIPE_NAS_USER=USER, PICPIPE_NAS_PASSWORD=PASSWORD)
    posts = tmp_path / "posts"
    posts.mkdir()
    (tmp_path / "dav").mkdir()
    with wsgidav(tmp_path / "dav") as dav, static_site(tmp_path / "host-b") as (url_b, _):
        env["PICPIPE_NAS_URL"] = dav.url + "backup/"
        env["PICPIPE_B_BASE_URL"] = url_b
        with static_site(tmp_path / "host-a") as (url_a, _):
            env["PICPIPE_A_BASE_URL"] = url_a
            urls = sh(run_shell, "ls shots/* | pp-compress --out compressed | pp-upload --host a | pp-mark | "
                      "pp-backup --to nas | pp-link --url").splitlines()
            assert len(urls) == 3 and all(u.startswith(url_a) for u in urls)
            served_by_a = {hashlib.sha256(f.read_bytes()).hexdigest() for f in (tmp_path / "host-a").rglob("*.*")}
            for name, text in posts_with(urls, urls).items():
                (posts / name).write_text(text)
        # host A is gone (its server stopped, its files lost), and so are the laptop's shots and copies
        for file in [*(tmp_path / "host-a").rglob("*.*"), *(tmp_path / "compressed").iterdir(), *originals]:
            file.unlink()

        recipe = ("pp-mark check | pp-backup restore | pp-upload --host b | pp-mark | pp-rewrite posts/; "
                  "echo \"${PIPESTATUS[*]}\"")  # the README's recipe, word for word
        statuses = sh(run_shell, recipe).splitlines()[-1]
        assert statuses == "1 0 0 0 0"  # check reports the 3 dead links (exit 1); every repair stage succeeds

        # the same bytes get the same key on B: every image link moved from A to B, the code did not
        expected = posts_with([u.replace(url_a, url_b) for u in urls], urls)
        assert {name: (posts / name).read_text() for name in expected} == expected
        for url in urls:  # B serves what A served: the compressed bytes, no GPS
            served = urllib.request.urlopen(url.replace(url_a, url_b), timeout=5).read()
            assert hashlib.sha256(served).hexdigest() in served_by_a
        assert {hashlib.sha256(f.read_bytes()).hexdigest() for f in (tmp_path / "host-b").rglob("*.*")} == \
            served_by_a
        # done once: the ledger knows which URLs were replaced, so the same recipe again finds nothing dead
        assert sh(run_shell, recipe).splitlines()[-1] == "0 0 0 0 0"


def test_a_profile_moved_to_a_new_domain_repairs_under_the_same_name(run, tmp_path):
    """The test domain of a Qiniu bucket expired: the same profile now has another base_url."""
    src = image(tmp_path / "a.png", (9, 99, 199))
    ledger = str(tmp_path / "ledger.jsonl")
    env = {"PICPIPE_Q_TYPE": "local", "PICPIPE_Q_DIR": str(tmp_path / "bucket"),
           "PICPIPE_Q_BASE_URL": "http://127.0.0.1:9/", "PICPIPE_USB_TYPE": "local",
           "PICPIPE_USB_DIR": str(tmp_path / "usb")}
    first = run("pp-upload", "--host", "q", "--ledger", ledger, str(src), extra_env=env)
    backed = run("pp-backup", "--to", "usb", "--ledger", ledger, input=first.stdout, extra_env=env)
    (tmp_path / "post.md").write_text(f"![a]({parse_jsonl(first.stdout)[0]['url']})\n")
    env["PICPIPE_Q_BASE_URL"] = "https://img.example.com/"
    restored = run("pp-backup", "restore", "--out", str(tmp_path / "r"), input=backed.stdout, extra_env=env)
    again = run("pp-upload", "--host", "q", "--ledger", ledger, input=restored.stdout, extra_env=env)
    [record] = parse_jsonl(again.stdout)
    assert record["url"].startswith("https://img.example.com/") and record["replaces"].startswith("http://127.0.0.1:9/")
    rewrite = run("pp-rewrite", str(tmp_path / "post.md"), input=again.stdout)
    assert rewrite.returncode == 0 and (tmp_path / "post.md").read_text() == f"![a]({record['url']})\n"
