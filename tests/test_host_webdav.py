"""The webdav host against real servers: WsgiDAV (Basic and Digest) and rclone serve webdav,
which replaces files even under If-None-Match: *, so "never overwrite" must hold without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import jsonl, parse_jsonl
from davservers import PASSWORD, USER, profile_env, rclone_webdav, wsgidav
from test_upload import image


def dav_env(url: str, password: str = PASSWORD) -> dict[str, str]:
    return profile_env("dav", url + "blog/images/", password, base_url="https://img.example.com/")


@pytest.fixture(params=["wsgidav-basic", "wsgidav-digest", "rclone"])
def server(request, tmp_path: Path):
    root = tmp_path / "dav"
    root.mkdir()
    if request.param == "rclone":
        with rclone_webdav(root) as dav:
            yield dav.url, root
    else:
        with wsgidav(root, auth=request.param.split("-")[1]) as dav:
            yield dav.url, root


def test_upload_makes_folders_reuses_refuses_overwrites_deletes(run, tmp_path, server):
    url, root = server
    env = dav_env(url)
    a = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    b = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    args = ("--host", "dav", "--no-dedupe", "--path", "{year}/{name} 图{ext}")

    first = run("pp-upload", *args, str(a), extra_env=env)
    assert first.returncode == 0, first.stderr
    [record] = parse_jsonl(first.stdout)
    stored = root / "blog" / "images" / record["key"]
    assert stored.read_bytes() == a.read_bytes()  # blog/, images/ and the year were made
    assert record["url"] == "https://img.example.com/" + record["key"].replace(" ", "%20").replace(
        "图", "%E5%9B%BE")

    again = run("pp-upload", *args, str(a), extra_env=env)
    assert parse_jsonl(again.stdout)[0]["reused"] is True

    clash = run("pp-upload", *args, str(b), extra_env=env)
    assert clash.returncode == 1 and parse_jsonl(clash.stdout)[0]["error"]["type"] == "conflict"
    assert stored.read_bytes() == a.read_bytes()  # rclone would have replaced it on a blind PUT

    replaced = run("pp-upload", *args, "--overwrite", str(b), extra_env=env)
    assert replaced.returncode == 0 and stored.read_bytes() == b.read_bytes()

    deleted = run("pp-upload", "--host", "dav", "--delete", input=replaced.stdout, extra_env=env)
    assert deleted.returncode == 0 and not stored.exists()


def test_wrong_password_is_an_error_record_with_the_nutstore_hint(run, tmp_path, server):
    url, _ = server
    src = image(tmp_path / "a.png", (5, 5, 5))
    wrong = "not-the-app-password"
    result = run("pp-upload", "--host", "dav", "--no-dedupe", str(src), extra_env=dav_env(url, wrong))
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["status"] == 401 and "app password" in error["hint"]
    assert wrong not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_many_images_one_listing_per_folder(run, tmp_path):
    """Concurrent workers share one PROPFIND; each new image costs one PUT."""
    root = tmp_path / "dav"
    root.mkdir()
    files = [image(tmp_path / f"{i}.png", (i, i, 99)) for i in range(10)]
    with wsgidav(root) as dav:
        result = run("pp-upload", "--host", "dav", "-j", "4", "--path", "set/{sha256:12}{ext}",
                     input=jsonl([{"path": str(f)} for f in files]), extra_env=dav_env(dav.url))
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in (root / "blog/images/set").iterdir()) == sorted(
            r["key"].split("/")[1] for r in parse_jsonl(result.stdout))
        sent = [method for method, _ in dav.requests]
        # one PROPFIND (404: no folder yet); MKCOL set/ answers 409 (no parent), then from the top:
        # MKCOL images/ answers 409 (no blog/), blog/, images/ and set/ are made; one PUT per image
        assert sent.count("PROPFIND") == 1 and sent.count("MKCOL") == 5 and sent.count("PUT") == 10
        assert len(sent) == 16


def test_a_password_in_the_url_moves_to_the_auth_and_never_into_links(run, tmp_path):
    root = tmp_path / "dav"
    root.mkdir()
    src = image(tmp_path / "a.png", (8, 8, 8))
    with wsgidav(root) as dav:
        url = dav.url.replace("http://", f"http://{USER}:{PASSWORD}@") + "pics/"
        env = {"PICPIPE_D_TYPE": "webdav", "PICPIPE_D_URL": url}
        result = run("pp-upload", "--host", "d", str(src), extra_env=env)
    assert result.returncode == 0, result.stderr
    [record] = parse_jsonl(result.stdout)
    assert record["url"].startswith(dav.url + "pics/") and (root / "pics" / record["key"]).exists()
    assert PASSWORD not in result.stdout + result.stderr
