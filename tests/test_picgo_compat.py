"""pp-server side by side with the real PicGo-Core server (npm picgo 3.1.0 and its S3 plugin,
installed into .cache/npm by `make test`), both uploading to one S3 bucket on moto, asked what
Typora, Obsidian Image Auto Upload, PicList clients and PicGo-Core's own clients ask: the same
answer where PicGo's is right, the documented difference where picpipe is stricter (or PicGo
does not have the feature). Skipped when node or the npm packages are missing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_editors import SECRET, Server, fake_clipboard, free_port, obsidian_form

from conftest import ROOT
from picgoserver import BUCKET, PicGo, moto_bucket, needs_picgo, stored
from test_upload import image

#: PicGo 3.x's item fields (its server's route handler builds exactly these).
ITEM_FIELDS = ["origin", "imgUrl", "fileName", "type", "contentType", "size", "width", "height", "extname"]

pytestmark = needs_picgo


@pytest.fixture(scope="module")
def bucket() -> Iterator[tuple[str, object]]:
    """moto's S3 on 127.0.0.1 with one bucket: (endpoint, boto3 client)."""
    yield from moto_bucket()


def picpipe(tmp: Path, endpoint: str, env: dict[str, str]) -> Server:
    """pp-server uploading to the same bucket (profile s3, keys under picpipe/), with a spare profile."""
    (tmp / "tmp").mkdir(parents=True, exist_ok=True)
    config = tmp / "picpipe.toml"
    config.write_text(f"""\
ledger = "{tmp / 'ledger.jsonl'}"

[pipeline]
host = "s3"
path = "picpipe/{{sha256:16}}{{ext}}"

[profiles.s3]
type = "s3"
endpoint = "{endpoint}"
bucket = "{BUCKET}"
region = "us-east-1"
access_key = "testing"
secret_key = "testing"
path_style = "true"

[profiles.spare]
type = "local"
dir = "{tmp / 'spare'}"
base_url = "https://spare.example.com/"
""")
    server = Server({**env, "PICPIPE_CONFIG": str(config), "TMPDIR": str(tmp / "tmp")}, (), free_port())
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def both(bucket, tmp_path_factory) -> Iterator[tuple[PicGo, Server, Path]]:
    """PicGo and pp-server, without a secret (as most people run them), a clipboard holding a PNG."""
    endpoint, _ = bucket
    root = tmp_path_factory.mktemp("side-by-side")
    clip = image(root / "clip.png", (250, 120, 0)).read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PICPIPE_", "PICGO_"))}
    env.update(fake_clipboard(root, ["image/png"], {"image/png": clip}), XDG_CONFIG_HOME=str(root / "config"),
               XDG_DATA_HOME=str(root / "data"), XDG_CACHE_HOME=str(root / "cache"), PYTHONPATH=str(ROOT))
    picgo = PicGo(root / "picgo-home", endpoint, env)
    ours = picpipe(root / "picpipe", endpoint, env)
    yield picgo, ours, root
    picgo.stop()
    ours.proc.kill()
    ours.proc.wait()


def test_typora_json_list_same_shape_and_bytes(both, bucket, tmp_path):
    picgo, ours, _ = both
    shots = [image(tmp_path / "post" / "截图 1.png", (10, 200, 30)), image(tmp_path / "post" / "b.png", (9, 9, 90))]
    payload = {"list": [str(p) for p in shots]}
    theirs, mine = picgo.post(json=payload), ours.post(json=payload)
    assert theirs.status_code == mine.status_code == 200, (theirs.text, mine.text)
    a, b = theirs.json(), mine.json()
    assert set(a) == {"success", "result", "items"} and set(b) == set(a) | {"fullResult"}
    assert a["success"] is b["success"] is True
    for urls in (a["result"], b["result"]):
        assert [stored(bucket[1], url) for url in urls] == [p.read_bytes() for p in shots]
    for theirs_item, my_item in zip(a["items"], b["items"]):
        assert list(my_item) == list(theirs_item) == ITEM_FIELDS
        same = {k: v for k, v in theirs_item.items() if k not in ("imgUrl", "type")}
        assert {k: my_item[k] for k in same} == same  # origin, name, type, size, dimensions, extension
        assert (theirs_item["type"], my_item["type"]) == ("aws-s3", "s3")  # the uploader's name, the profile's type
    assert [item["imgUrl"] for item in b["items"]] == b["result"]
    assert {"host", "key", "url", "sha256"} <= set(b["fullResult"][0])  # what /delete looks up


def test_obsidian_multipart_list_field_picgo3_refuses_it(both, bucket, tmp_path):
    """Obsidian Image Auto Upload's remote-server mode sends its files in the field `list`:
    PicGo 3.x reads only `files` and answers 400; pp-server (as PicList) takes any file field."""
    picgo, ours, _ = both
    data = image(tmp_path / "paste.png", (200, 0, 200)).read_bytes()
    body, content_type = obsidian_form([("1700000000123.png", data)])
    theirs = picgo.post(data=body, headers={"Content-Type": content_type})
    assert theirs.status_code == 400 and theirs.json() == {
        "success": False, "result": [], "items": [], "message": "No files found in form-data: files"}
    mine = ours.post(data=body, headers={"Content-Type": content_type, "Origin": "app://obsidian.md"})
    assert mine.status_code == 200 and stored(bucket[1], mine.json()["result"][0]) == data


def test_picgo_core_multipart_files(both, bucket, tmp_path):
    picgo, ours, _ = both
    data = image(tmp_path / "one.png", (1, 2, 250)).read_bytes()
    files = [("files", ("one.png", data, "image/png"))]
    theirs, mine = picgo.post(files=files), ours.post(files=files)
    assert theirs.status_code == mine.status_code == 200
    for answer in (theirs.json(), mine.json()):
        assert stored(bucket[1], answer["result"][0]) == data and answer["items"][0]["fileName"] == "one.png"
    assert theirs.json()["items"][0]["origin"].endswith("/one.png")  # PicGo: its temp file's path
    assert mine.json()["items"][0]["origin"] == "one.png"  # picpipe: the name the client sent


def test_uploader_parameter_and_picgo_error_codes(both, tmp_path):
    picgo, ours, _ = both
    payload = {"list": [str(image(tmp_path / "u.png", (60, 60, 200)))]}
    theirs = picgo.post("/upload?uploader=aws-s3", json=payload)
    mine = ours.post("/upload?uploader=aws-s3", json=payload)
    assert theirs.status_code == mine.status_code == 200  # picpipe: PicGo's aws-s3 is the profile of type s3
    spare = ours.post("/upload?uploader=spare", json=payload)
    assert spare.json()["result"][0].startswith("https://spare.example.com/")
    for query, code, status in (("uploader=nope", "UNKNOWN_UPLOADER", 400), ("uploader=", "INVALID_UPLOAD_OPTION", 400),
                                ("configName=nowhere", "UPLOAD_CONFIG_NOT_FOUND", 400)):
        theirs, mine = picgo.post("/upload?" + query, json=payload), ours.post("/upload?" + query, json=payload)
        assert theirs.status_code == mine.status_code == status, (query, theirs.text, mine.text)
        a, b = theirs.json(), mine.json()
        assert list(b) == list(a) == ["success", "result", "items", "code", "message"]
        assert a["code"] == b["code"] == code and a["success"] is b["success"] is False
    unknown = 'Uploader "nope" is not registered. Available uploaders: ['
    assert picgo.post("/upload?uploader=nope", json=payload).json()["message"].startswith(unknown)
    assert ours.post("/upload?uploader=nope", json=payload).json()["message"] == unknown + "s3, spare, local]."
    invalid = 'Invalid upload option parameter "uploader": provide one non-empty string value.'
    assert picgo.post("/upload?uploader=", json=payload).json()["message"] == invalid
    assert ours.post("/upload?uploader=", json=payload).json()["message"] == invalid


def test_clipboard_on_an_empty_body(both, bucket):
    picgo, ours, root = both
    theirs, mine = picgo.post(), ours.post()
    assert theirs.status_code == mine.status_code == 200, (theirs.text, mine.text)
    clip = (root / "clip.png").read_bytes()
    assert stored(bucket[1], theirs.json()["result"][0]) == stored(bucket[1], mine.json()["result"][0]) == clip
    assert ours.post(headers={"Origin": "null"}).status_code == 403  # a page may not read the clipboard


def test_piclist_delete_and_what_picpipe_refuses(both, bucket, tmp_path):
    picgo, ours, _ = both
    src = image(tmp_path / "d.png", (33, 66, 99))
    full = ours.post("/upload?picbed=aws-s3", json={"list": [str(src)]}).json()["fullResult"]
    assert stored(bucket[1], full[0]["url"]) == src.read_bytes()
    assert picgo.post("/delete", json={"list": full}).status_code == 404  # PicGo-Core has no /delete
    deleted = ours.post("/delete", json={"list": full})
    assert deleted.json() == {"success": True, "message": "delete success: 1, fail: 0"}
    with pytest.raises(Exception, match="NoSuchKey|Not Found|404"):
        stored(bucket[1], full[0]["url"])
    # A key the ledger does not have stays, whatever the client says.
    theirs = picgo.post(json={"list": [str(src)]}).json()["result"][0]
    forged = {**full[0], "key": urlsplit(theirs).path.split(f"/{BUCKET}/", 1)[1], "url": theirs, "sha256": None}
    assert ours.post("/delete", json={"list": [forged]}).status_code == 400
    assert stored(bucket[1], theirs) == src.read_bytes()

    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    assert picgo.post(json={"list": [str(text)]}).json()["success"] is True  # PicGo uploads any file
    refused = ours.post(json={"list": [str(text)]})
    assert refused.status_code == 500 and "not an image file" in refused.json()["message"]
    page = {"Origin": "https://evil.example"}
    assert picgo.post(json={"list": [str(src)]}, headers=page).headers["Access-Control-Allow-Origin"] == "*"
    assert ours.post(json={"list": [str(src)]}, headers=page).status_code == 403
    assert picgo.post("/heartbeat").json() == ours.post("/heartbeat").json() == {"success": True, "result": "alive"}


def test_secret_carriers_piclist_key(bucket, tmp_path):
    endpoint, client = bucket
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PICPIPE_", "PICGO_"))}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"), PYTHONPATH=str(ROOT),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    picgo = PicGo(tmp_path / "home", endpoint, env, secret=SECRET)
    ours = picpipe(tmp_path / "pp", endpoint, {**env, "PICPIPE_SERVER_SECRET": SECRET})
    try:
        payload = {"list": [str(image(tmp_path / "s.png", (5, 50, 5)))]}
        for carrier in ({"headers": {"Authorization": f"Bearer {SECRET}"}}, {"headers": {"X-PicGo-Secret": SECRET}},
                        {"params": {"secret": SECRET}}):
            assert picgo.post(json=payload, **carrier).status_code == 200
            assert ours.post(json=payload, **carrier).status_code == 200
        for answer in (picgo.post(json=payload), ours.post(json=payload, params={"key": "wrong"})):
            assert answer.status_code == 401 and answer.json() == {"success": False, "message": "Unauthorized"}
        assert picgo.post(json=payload, params={"key": SECRET}).status_code == 401  # PicList's carrier: not PicGo's
        assert ours.post(json=payload, params={"key": SECRET}).status_code == 200
    finally:
        picgo.stop()
        status, stderr = ours.stop()
    assert SECRET not in stderr
