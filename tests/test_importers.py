"""picpipe.importers: PicGo/PicList galleries, data.json and autobackup mark.json as records."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from picpipe.errors import PicpipeError
from picpipe.importers import HistoryReader, read_history

SENTINEL = "SENTINEL-s3cr3t-7f3a"
T0 = 1700000000000  # 2023-11-14T22:13:20.000Z
T0_ISO = "2023-11-14T22:13:20.000Z"


def item(n: int, type_: str = "smms", **extra: Any) -> dict[str, Any]:
    """A gallery item as PicGo writes it."""
    base: dict[str, Any] = {
        "fileName": f"shot{n}.png",
        "extname": ".png",
        "imgUrl": f"https://i.example.com/shot{n}.png",
        "type": type_,
        "width": 800,
        "height": 600,
        "id": f"uuid-{n}",
        "createdAt": T0 + n,
        "updatedAt": T0 + n,
    }
    base.update(extra)
    return base


def gallery(items: list[Any]) -> dict[str, Any]:
    return {"gallery": items, "__gallery_KEY__": {i["id"]: 1 for i in items if isinstance(i, dict) and "id" in i}}


def write_gz(path: Path, data: Any) -> Path:
    path.write_bytes(gzip.compress(json.dumps(data).encode()))
    return path


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def read(path: Path) -> tuple[HistoryReader, list[dict[str, Any]]]:
    reader = HistoryReader(path)
    return reader, list(reader)


def error_of(path: Path) -> PicpipeError:
    with pytest.raises(PicpipeError) as info:
        list(HistoryReader(path))
    return info.value


# --- PicGo gallery --------------------------------------------------------------------------------


def test_picgo_db_gzip_gives_one_record_per_item(tmp_path: Path) -> None:
    db = write_gz(tmp_path / "picgo.db", gallery([item(1), item(2, "tcyun")]))
    reader, records = read(db)
    assert reader.format == "picgo-gallery"
    assert reader.skipped == []
    assert records[0] == {
        "url": "https://i.example.com/shot1.png",
        "host": "smms",
        "source": "shot1.png",
        "width": 800,
        "height": 600,
        "uploaded_at": "2023-11-14T22:13:20.001Z",
        "marked_at": "2023-11-14T22:13:20.001Z",
        "import": {"from": "picgo", "file": str(db), "id": "uuid-1", "file_name": "shot1.png", "type": "smms"},
    }
    assert records[1]["host"] == "tencent"
    assert records[1]["import"]["type"] == "tcyun"


def test_uncompressed_gallery_and_backup_db_are_read_too(tmp_path: Path) -> None:
    db = write_json(tmp_path / "picgo.bak.db", gallery([item(1)]))
    reader, records = read(db)
    assert reader.format == "picgo-gallery"
    assert [r["url"] for r in records] == ["https://i.example.com/shot1.png"]


def test_format_is_detected_by_content_not_name(tmp_path: Path) -> None:
    odd = write_gz(tmp_path / "whatever.json", gallery([item(1)]))
    assert HistoryReader(odd).format == "picgo-gallery"


def test_created_at_becomes_iso_times(tmp_path: Path) -> None:
    db = write_gz(tmp_path / "picgo.db", gallery([item(0, createdAt=T0)]))
    (record,) = read_history(db)
    assert record["uploaded_at"] == T0_ISO
    assert record["marked_at"] == T0_ISO


@pytest.mark.parametrize("created", [None, "1700000000000", True, float("nan"), 10**30, [1]])
def test_missing_or_bad_times_are_omitted(tmp_path: Path, created: Any) -> None:
    entry = item(1)
    if created is None:
        del entry["createdAt"]
    else:
        entry["createdAt"] = created
    path = tmp_path / "picgo.db"
    # NaN is not valid JSON for json.dumps(allow_nan=False); PicGo's JSON never has it, Python's may.
    path.write_bytes(gzip.compress(json.dumps(gallery([entry])).encode()))
    (record,) = read_history(path)
    assert "uploaded_at" not in record and "marked_at" not in record
    assert record["url"] == "https://i.example.com/shot1.png"


def test_missing_fields_are_omitted_not_null(tmp_path: Path) -> None:
    bare = {"imgUrl": "https://i.example.com/a.png"}
    odd = item(2, width="800", height=0)
    del odd["type"]
    db = write_gz(tmp_path / "picgo.db", gallery([bare, odd]))
    first, second = read_history(db)
    assert first == {"url": "https://i.example.com/a.png", "import": {"from": "picgo", "file": str(db)}}
    assert "width" not in second and "height" not in second and "host" not in second
    assert "type" not in second["import"]
    assert "null" not in json.dumps([first, second])


@pytest.mark.parametrize(
    ("type_", "host"),
    [
        ("smms", "smms"), ("tcyun", "tencent"), ("github", "github"), ("qiniu", "qiniu"), ("imgur", "imgur"),
        ("aliyun", "aliyun"), ("upyun", "upyun"), ("gitee", "gitee"), ("webdavplist", "webdav"),
        ("webdav", "webdav"), ("local", "local"), ("localplist", "local"), ("aws-s3", "s3"),
        ("aws-s3-plist", "s3"), ("s3", "s3"), ("SMMS", "smms"), ("LskyPlist", "lskyplist"), ("my-bed", "my-bed"),
    ],
)
def test_uploader_types_map_to_host_types(tmp_path: Path, type_: str, host: str) -> None:
    db = write_gz(tmp_path / "picgo.db", gallery([item(1, type_)]))
    (record,) = read_history(db)
    assert record["host"] == host
    assert record["import"]["type"] == type_


def test_origin_img_url_is_the_fallback(tmp_path: Path) -> None:
    entry = item(1, imgUrl="", originImgUrl="https://origin.example.com/shot1.png")
    db = write_gz(tmp_path / "picgo.db", gallery([entry]))
    (record,) = read_history(db)
    assert record["url"] == "https://origin.example.com/shot1.png"


def test_entries_without_usable_url_are_skipped_with_their_index(tmp_path: Path) -> None:
    entries: list[Any] = [
        item(0),
        item(1, imgUrl=""),
        item(2, imgUrl=42),
        item(3, imgUrl="ftp://files.example.com/x.png"),
        "not an object",
        item(5, imgUrl="  https://i.example.com/spaced.png  "),
    ]
    del entries[0]["imgUrl"]
    db = write_gz(tmp_path / "picgo.db", gallery(entries))
    reader, records = read(db)
    assert [r["url"] for r in records] == ["https://i.example.com/spaced.png"]
    assert len(reader.skipped) == 5
    for index, reason in zip([0, 1, 2, 3], reader.skipped, strict=False):
        assert reason.startswith(f"gallery[{index}]: no URL")
    assert reader.skipped[4] == "gallery[4]: not an object"


def test_skipped_is_reset_when_iterated_again(tmp_path: Path) -> None:
    db = write_gz(tmp_path / "picgo.db", gallery([item(0, imgUrl=""), item(1)]))
    reader = HistoryReader(db)
    assert len(list(reader)) == 1
    assert len(list(reader)) == 1
    assert len(reader.skipped) == 1


def test_import_file_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_gz(tmp_path / "picgo.db", gallery([item(1)]))
    monkeypatch.chdir(tmp_path)
    (record,) = read_history("picgo.db")
    assert record["import"]["file"] == str(tmp_path / "picgo.db")


# --- PicList ----------------------------------------------------------------------------------------


def piclist_items() -> list[dict[str, Any]]:
    config = {"accessKey": SENTINEL, "secretKey": SENTINEL, "bucket": "b", "nested": {"token": SENTINEL}}
    return [
        item(1, "aws-s3-plist", config=config),
        item(2, "webdavplist", config={"host": "dav.example.com", "password": SENTINEL}, password=SENTINEL),
        item(3, "qiniu", config={"ak": SENTINEL}),
    ]


def test_piclist_db_is_recognised_and_config_dropped(tmp_path: Path) -> None:
    db = write_gz(tmp_path / "piclist.db", gallery(piclist_items()))
    reader, records = read(db)
    assert reader.format == "picgo-gallery"
    assert [r["import"]["from"] for r in records] == ["piclist"] * 3
    assert [r["host"] for r in records] == ["s3", "webdav", "qiniu"]
    for record in records:
        assert "config" not in record and "config" not in record["import"]
        assert "password" not in record


def test_piclist_is_recognised_by_plist_type_alone(tmp_path: Path) -> None:
    db = write_gz(tmp_path / "piclist.db", gallery([item(1, "smms"), item(2, "lskyplist")]))
    assert {r["import"]["from"] for r in read_history(db)} == {"piclist"}


def test_no_secret_reaches_any_record(tmp_path: Path) -> None:
    items = piclist_items()
    items.append(item(4, imgUrl=f"https://user:{SENTINEL}@i.example.com/4.png"))
    items.append(item(5, imgUrl="", originImgUrl=f"http://{SENTINEL}@i.example.com/5.png"))
    db = write_gz(tmp_path / "piclist.db", gallery(items))
    mark = write_json(tmp_path / "mark.json", {"total": 2, "images": [
        {"space": "WebDAV", "path": f"https://user:{SENTINEL}@dav.example.com/dav/pics/a.png",
         "url": f"https://user:{SENTINEL}@i.example.com/a.png", "time": T0, "password": SENTINEL},
    ]})
    data = write_json(tmp_path / "data.json", {
        "picBed": {"current": "github", "github": {"token": SENTINEL, "repo": "me/pics"}},
        "uploaded": [item(6, "github", token=SENTINEL)],
    })
    output = [r for path in (db, mark, data) for r in read_history(path)]
    assert len(output) == 3 + 2 + 1 + 1
    dumped = json.dumps(output)
    assert SENTINEL not in dumped
    assert "https://i.example.com/4.png" in dumped
    assert "http://i.example.com/5.png" in dumped
    assert "https://dav.example.com/dav/pics/a.png" in dumped


# --- PicGo < 2.3 data.json --------------------------------------------------------------------------


def test_data_json_uploaded_items(tmp_path: Path) -> None:
    data = write_json(tmp_path / "data.json", {
        "picBed": {"current": "smms", "smms": {"token": SENTINEL}},
        "settings": {"autoRename": True},
        "uploaded": [item(1, "github"), item(2, "imgur")],
    })
    reader, records = read(data)
    assert reader.format == "picgo-data-json"
    assert [(r["host"], r["import"]["from"]) for r in records] == [("github", "picgo"), ("imgur", "picgo")]
    named = {"url", "host", "source", "width", "height", "uploaded_at", "marked_at", "import"}
    assert all(set(r) <= named for r in records)


@pytest.mark.parametrize("content", [
    {"picBed": {"current": "smms"}, "uploaded": [], "__migrateUploaded": True},
    {"picBed": {"current": "smms"}, "__migrateUploaded": True},
])
def test_migrated_data_json_is_zero_records_not_an_error(tmp_path: Path, content: dict[str, Any]) -> None:
    reader, records = read(write_json(tmp_path / "data.json", content))
    assert reader.format == "picgo-data-json"
    assert records == [] and reader.skipped == []


# --- autobackup mark.json ---------------------------------------------------------------------------


def test_mark_json_local_and_webdav_paths(tmp_path: Path) -> None:
    mark = write_json(tmp_path / "mark.json", {"total": 99, "images": [
        {"space": "NutStore", "path": "https://dav.jianguoyun.com/dav/picgo/a.png",
         "url": "https://i.example.com/a.png", "time": T0},
        {"space": "Local", "path": "/home/me/Autobackup/b.png", "url": "https://i.example.com/b.png", "time": T0},
        {"space": "Local", "path": "C:\\Users\\me@corp\\Autobackup\\c.png", "url": "https://i.example.com/c.png"},
    ]})
    reader, records = read(mark)
    assert reader.format == "autobackup-mark"
    assert records[0] == {
        "url": "https://i.example.com/a.png",
        "backups": [{"target": "NutStore", "location": "https://dav.jianguoyun.com/dav/picgo/a.png", "at": T0_ISO}],
        "marked_at": T0_ISO,
        "import": {"from": "autobackup", "file": str(mark)},
    }
    assert records[1]["backups"] == [{"target": "Local", "location": "/home/me/Autobackup/b.png", "at": T0_ISO}]
    assert records[2]["backups"] == [{"target": "Local", "location": "C:\\Users\\me@corp\\Autobackup\\c.png"}]
    assert "marked_at" not in records[2]


def test_mark_json_total_is_ignored_and_bad_images_skipped(tmp_path: Path) -> None:
    mark = write_json(tmp_path / "mark.json", {"total": 1, "images": [
        {"space": "NutStore", "path": "/p/a.png", "url": "https://i.example.com/a.png", "time": T0},
        {"space": "NutStore", "path": "/p/b.png", "url": None, "time": T0},
        ["not", "an", "object"],
        {"space": "NutStore", "path": "/p/d.png", "url": "https://i.example.com/d.png", "time": "yesterday"},
    ]})
    reader, records = read(mark)
    assert [r["url"] for r in records] == ["https://i.example.com/a.png", "https://i.example.com/d.png"]
    assert reader.skipped[0].startswith("images[1]: no URL")
    assert reader.skipped[1] == "images[2]: not an object"
    assert "at" not in records[1]["backups"][0]


def test_userinfo_is_stripped_but_the_rest_of_the_url_kept(tmp_path: Path) -> None:
    mark = write_json(tmp_path / "mark.json", {"images": [
        {"space": "WebDAV", "path": "https://alice:pw1234@dav.example.com:8443/dav/p/a.png?x=1",
         "url": "https://bob@i.example.com/a.png#frag", "time": T0},
    ]})
    (record,) = read_history(mark)
    assert record["url"] == "https://i.example.com/a.png#frag"
    assert record["backups"][0]["location"] == "https://dav.example.com:8443/dav/p/a.png?x=1"


# --- errors -----------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    err = error_of(tmp_path / "nope" / "picgo.db")
    assert err.type == "not_found"
    assert "picgo.db" in err.message


def test_folder_instead_of_file(tmp_path: Path) -> None:
    err = error_of(tmp_path)
    assert err.type == "io"
    assert "folder" in err.message


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "picgo.db"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"this is not deflate data at all" * 3)
    err = error_of(path)
    assert err.type == "corrupt_file"
    assert "gzip" in err.message and err.hint and "picgo.bak.db" in err.hint


def test_truncated_gzip(tmp_path: Path) -> None:
    whole = gzip.compress(json.dumps(gallery([item(n) for n in range(50)])).encode())
    path = tmp_path / "picgo.db"
    path.write_bytes(whole[: len(whole) // 2])
    err = error_of(path)
    assert err.type == "corrupt_file"
    assert "truncated" in err.message


def test_gzip_with_bad_checksum(tmp_path: Path) -> None:
    whole = bytearray(gzip.compress(json.dumps(gallery([item(1)])).encode()))
    whole[-8] ^= 0xFF  # CRC32 of the trailer
    path = tmp_path / "picgo.db"
    path.write_bytes(bytes(whole))
    assert error_of(path).type == "corrupt_file"


@pytest.mark.parametrize("content", [b'{"gallery": [', b"", b"   \n", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"])
def test_invalid_json(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(content)
    err = error_of(path)
    assert err.type == "corrupt_file"
    assert err.hint


def test_invalid_json_inside_gzip(tmp_path: Path) -> None:
    path = tmp_path / "picgo.db"
    path.write_bytes(gzip.compress(b'{"gallery": [{"imgUrl": '))
    err = error_of(path)
    assert err.type == "corrupt_file"
    assert "not valid JSON" in err.message and "line 1" in err.message


@pytest.mark.parametrize("content", [{"foo": 1}, [1, 2], {"gallery": "nope"}, "text", {"uploaded": None}])
def test_unknown_shape(tmp_path: Path, content: Any) -> None:
    err = error_of(write_json(tmp_path / "x.json", content))
    assert err.type == "unknown_format"
    for expected in ('"gallery"', '"uploaded"', '"images"'):
        assert expected in err.message
    assert err.hint is not None
    for location in ("~/.config/picgo/picgo.db", "%APPDATA%\\picgo\\picgo.db",
                     "~/Library/Application Support/picgo/picgo.db", "piclist.db", "Autobackup/mark.json"):
        assert location in err.hint


def test_errors_are_raised_when_the_reader_is_made(tmp_path: Path) -> None:
    with pytest.raises(PicpipeError):
        HistoryReader(tmp_path / "missing.db")


def test_error_dict_is_user_facing(tmp_path: Path) -> None:
    path = tmp_path / "picgo.db"
    path.write_bytes(b"\x1f\x8b garbage")
    error = error_of(path).to_dict("import")
    assert error["stage"] == "import" and error["type"] == "corrupt_file"
    assert "Traceback" not in json.dumps(error)


# --- file names: a gallery item's filePath / fileName become the record's source ---------------------


def test_absolute_file_path_is_the_source(tmp_path: Path) -> None:
    """PicGo-Core >= 1.6.1 (transformer/path.ts) stores the uploaded file's absolute filePath."""
    original = str(tmp_path / "shots" / "a.png")
    db = write_gz(tmp_path / "picgo.db", gallery([item(1, fileName="renamed.png", filePath=original)]))
    (record,) = read_history(db)
    assert record["source"] == original
    assert record["import"]["file_name"] == "renamed.png"
    assert "file_path" not in record["import"]


def test_file_name_alone_is_a_bare_source(tmp_path: Path) -> None:
    """PicList and PicGo before Core 1.6.1 store only fileName; a folder in it is no local folder."""
    db = write_gz(tmp_path / "piclist.db", gallery([
        item(1, fileName="b.png"), item(2, fileName="2024/05/c d.png"), item(3, fileName="..\\e.png"),
    ]))
    assert [r["source"] for r in read_history(db)] == ["b.png", "c d.png", "e.png"]


@pytest.mark.skipif(os.name == "nt", reason="a Windows path is local there")
def test_a_path_that_is_not_absolute_here_is_kept_aside(tmp_path: Path) -> None:
    windows = "C:\\Users\\me\\Pictures\\w.png"
    db = write_gz(tmp_path / "picgo.db", gallery([
        item(1, fileName="w.png", filePath=windows),
        item(2, filePath="relative/r.png"),
        item(3, fileName=None, filePath=windows),
    ]))
    first, second, third = read_history(db)
    assert first["source"] == "w.png" and first["import"]["file_path"] == windows
    assert second["source"] == "shot2.png" and second["import"]["file_path"] == "relative/r.png"
    assert third["source"] == "w.png"


def test_no_name_no_source_and_url_file_paths_are_ignored(tmp_path: Path) -> None:
    nameless = item(1)
    del nameless["fileName"]
    from_url = item(2, fileName="", filePath=f"https://user:{SENTINEL}@example.com/x.png")
    db = write_gz(tmp_path / "picgo.db", gallery([nameless, from_url, item(3, fileName="", filePath="")]))
    records = list(read_history(db))
    assert all("source" not in r and "file_path" not in r["import"] for r in records)
    assert SENTINEL not in json.dumps(records)


def test_secret_query_parameters_are_dropped_from_urls(tmp_path: Path) -> None:
    signed = ("https://b.s3.amazonaws.com/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F1"
              f"&X-Amz-Date=20240501T000000Z&X-Amz-Security-Token={SENTINEL}&X-Amz-Signature={SENTINEL}&w=100#top")
    db = write_gz(tmp_path / "picgo.db", gallery([
        item(1, imgUrl=signed),
        item(2, imgUrl=f"https://i.example.com/2.png?e=1700000000&token=AK:{SENTINEL}"),
        item(3, imgUrl=f"https://i.example.com/3.png?OSSAccessKeyId=AK&Signature={SENTINEL}&Expires=1"),
        item(4, imgUrl="https://i.example.com/4.png?v=2&keyword=cat"),
    ]))
    urls = [r["url"] for r in read_history(db)]
    assert urls == [
        "https://b.s3.amazonaws.com/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20240501T000000Z&w=100#top",
        "https://i.example.com/2.png?e=1700000000",
        "https://i.example.com/3.png?Expires=1",
        "https://i.example.com/4.png?v=2&keyword=cat",
    ]


def test_imported_names_work_with_find_and_link(run, tmp_path: Path) -> None:
    """End to end: pp-mark import, then pp-mark find --source and pp-link --md as a user runs them."""
    original = str(tmp_path / "shots" / "a.png")
    db = write_gz(tmp_path / "picgo.db", gallery([
        item(1, "smms", fileName="a.png", filePath=original, imgUrl="https://s2.loli.net/2024/05/01/aBcD3fGh.png"),
        item(2, "github", fileName="b.png", imgUrl="https://raw.githubusercontent.com/me/p/main/9f86d081884c.png"),
        item(3, "github", fileName="notes.jpg", imgUrl="https://raw.githubusercontent.com/me/p/main/notes.jpg"),
    ]))
    ledger = str(tmp_path / "ledger.jsonl")
    imported = run("pp-mark", "--ledger", ledger, "import", str(db))
    assert imported.returncode == 0, imported.stderr

    def find(pattern: str) -> list[str]:
        found = run("pp-mark", "--ledger", ledger, "find", "--source", pattern)
        assert found.returncode == 0, found.stderr
        return [json.loads(line)["url"] for line in found.stdout.splitlines()]

    assert find("a.png") == ["https://s2.loli.net/2024/05/01/aBcD3fGh.png"]
    assert find("b.png") == ["https://raw.githubusercontent.com/me/p/main/9f86d081884c.png"]
    assert len(find("*.png")) == 2 and len(find("*")) == 3
    assert find("shots/a.png") == find(original) == ["https://s2.loli.net/2024/05/01/aBcD3fGh.png"]
    assert find("shots/b.png") == []  # a bare name says nothing of its folder
    everything = run("pp-mark", "--ledger", ledger, "find")
    links = run("pp-link", "--md", input=everything.stdout)
    assert links.returncode == 0, links.stderr
    assert links.stdout.splitlines() == [
        "![a](https://s2.loli.net/2024/05/01/aBcD3fGh.png)",
        "![b](https://raw.githubusercontent.com/me/p/main/9f86d081884c.png)",
        "![notes](https://raw.githubusercontent.com/me/p/main/notes.jpg)",
    ]


def test_a_ledger_imported_before_names_gets_them_on_a_new_import(run, tmp_path: Path) -> None:
    """An old import (name only under import.file_name) is followed by a line with the source."""
    db = write_gz(tmp_path / "picgo.db", gallery([item(1, fileName="old.png")]))
    (record,) = read_history(db)
    old = {k: v for k, v in record.items() if k != "source"}
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(json.dumps(old) + "\n", encoding="utf-8")
    again = run("pp-mark", "--ledger", str(ledger), "import", str(db))
    assert "1 lines added, 0 already there" in again.stderr
    found = run("pp-mark", "--ledger", str(ledger), "find", "--source", "old.png")
    assert [json.loads(line)["url"] for line in found.stdout.splitlines()] == ["https://i.example.com/shot1.png"]


# --- picgo.log: PicGo-Core's CLI keeps no gallery, only its log -------------------------------------

FIXTURES = Path(__file__).parent / "fixtures"
LOG_SECRET = "S3NT1NEL-log-secret"


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Asia/Shanghai (UTC+8, no DST) as the local zone: the log's times are local times."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_picgo_log_uploads_become_records(local_zone: None) -> None:
    """tests/fixtures/picgo.log follows PicGo-Core's src/lib/Logger.ts (handleWriteLog: local time
    `YYYY-MM-DD HH:mm:ss [PicGo LEVEL] `, each message part followed by a space) and the upload
    flow of src/core/Lifecycle.ts: INFO "Uploading... Current uploader is [NAME]" in doUpload,
    then afterUpload's `ctx.log.success(`\\n${urls joined by \\n}`)`, or on failure WARN "failed"
    and an ERROR entry with the stack (start's catch)."""
    log = FIXTURES / "picgo.log"
    reader, records = read(log)
    assert reader.format == "picgo-log"
    assert reader.skipped == []
    assert records[0] == {
        "url": "https://s2.loli.net/2024/05/01/aBcDeFgHiJkLmNo.png",
        "host": "smms",
        "uploaded_at": "2024-05-01T02:00:00.000Z",
        "marked_at": "2024-05-01T02:00:00.000Z",
        "import": {"from": "picgo", "file": str(log), "line": 7, "type": "smms"},
    }
    assert [(r["url"], r["host"], r["import"]["line"]) for r in records[1:]] == [
        ("https://raw.githubusercontent.com/me/pics/main/img/shot-1.png", "github", 16),
        ("https://raw.githubusercontent.com/me/pics/main/img/diagram.svg", "github", 17),
        ("https://raw.githubusercontent.com/me/pics/main/img/%E6%88%AA%E5%9B%BE.png", "github", 18),
        ("https://pics.example.com/2024/05/photo.jpg?v=2", "s3", 39),
    ]
    assert {r["uploaded_at"] for r in records[1:4]} == {"2024-05-01T02:05:03.000Z"}
    assert all("source" not in r for r in records)  # the log names no local file
    dumped = json.dumps(records)
    # The failed tcyun upload (its stack names a URL) and the Welcome entry's avatar are no uploads.
    assert "myqcloud" not in dumped and "avatars" not in dumped and "tencent" not in dumped
    assert LOG_SECRET not in dumped and "AKIA" not in dumped


def test_log_without_trailing_spaces_or_with_crlf_reads_the_same(tmp_path: Path, local_zone: None) -> None:
    text = (FIXTURES / "picgo.log").read_text(encoding="utf-8")
    urls = [r["url"] for r in read_history(FIXTURES / "picgo.log")]
    stripped = tmp_path / "stripped.log"
    stripped.write_text("\n".join(line.rstrip() for line in text.splitlines()) + "\n", encoding="utf-8")
    crlf = tmp_path / "crlf.log"
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    archived = tmp_path / "picgo.log.1.gz"
    archived.write_bytes(gzip.compress(text.encode()))
    for path in (stripped, crlf, archived):
        assert [r["url"] for r in read_history(path)] == urls


def test_piclist_log_and_text_that_is_no_url(tmp_path: Path, local_zone: None) -> None:
    log = tmp_path / "piclist.log"
    log.write_text(
        "2024-06-01 08:00:00 [PicList INFO] Uploading... Current uploader is [webdavplist] \n"
        "2024-06-01 08:00:01 [PicList SUCCESS] \n"
        "https://dav.example.com/pics/one.png\n"
        "file:///home/me/pics/two.png\n"
        "/pics/three.png \n"
        "2024-06-01 08:00:02 [PicList SUCCESS] Configure config successfully! \n",
        encoding="utf-8",
    )
    reader, records = read(log)
    assert [(r["url"], r["host"], r["import"]["from"]) for r in records] == [
        ("https://dav.example.com/pics/one.png", "webdav", "piclist")]
    assert reader.skipped == ["line 4: not an http(s) URL in the upload's output",
                              "line 5: not an http(s) URL in the upload's output"]


def test_upload_that_recreated_the_log_is_read(tmp_path: Path) -> None:
    """Logger.handleLog puts its "too large" warning before the message of the entry that finds
    the log over settings.logFileSizeLimit (10 MB), in the new file it starts."""
    log = tmp_path / "picgo.log"
    log.write_text("2024-05-01 10:00:00 [PicGo SUCCESS] Log file is too large (> 10 MB), recreate log file \n"
                   "https://i.example.com/a.png\nhttps://i.example.com/b.png \n")
    assert [r["url"] for r in read_history(log)] == ["https://i.example.com/a.png", "https://i.example.com/b.png"]


def test_log_without_uploads_and_empty_log_are_zero_records(tmp_path: Path) -> None:
    quiet = tmp_path / "picgo.log"
    quiet.write_text("2024-05-01 10:00:00 [PicGo INFO] [PicGo Server] Listening at http://127.0.0.1:36677 \n"
                     "2024-05-01 10:00:05 [PicGo SUCCESS] PicGo has already installed picgo-plugin-s3 \n")
    empty = tmp_path / "empty" / "picgo.log"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    for path in (quiet, empty):
        reader, records = read(path)
        assert reader.format == "picgo-log" and records == [] and reader.skipped == []


def test_log_without_uploader_line_has_no_host(tmp_path: Path) -> None:
    """settings.logLevel = ["success"] keeps only the SUCCESS entries."""
    log = tmp_path / "picgo.log"
    log.write_text("2024-05-01 10:00:00 [PicGo SUCCESS] \nhttps://i.example.com/a.png \n")
    (record,) = read_history(log)
    assert "host" not in record and "type" not in record["import"]


@pytest.mark.parametrize("text", ["hello, this is not a history\n", "url: https://i.example.com/a.png\n",
                                  "[PicGo SUCCESS]: \nhttps://i.example.com/a.png\n"])
def test_other_text_says_what_the_cli_keeps(tmp_path: Path, text: str) -> None:
    path = tmp_path / "notes.txt"
    path.write_text(text, encoding="utf-8")
    err = error_of(path)
    assert err.type == "unknown_format"
    assert "plain text" in err.message and "corrupt" not in err.message
    assert err.hint is not None
    assert "CLI keeps no gallery" in err.hint and "pp-mark import ~/.picgo/picgo.log" in err.hint
    assert "close PicGo" not in err.hint


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"\xfe\xfd binary \x01\x02 no zero byte \xff"])
def test_binary_garbage_is_still_an_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "picgo.log"
    path.write_bytes(content)
    assert error_of(path).type == "corrupt_file"


def test_log_import_twice_adds_nothing(run, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.jsonl")
    log = str(FIXTURES / "picgo.log")
    first = run("pp-mark", "--ledger", ledger, "import", log, extra_env={"TZ": "Asia/Shanghai"})
    assert first.returncode == 0, first.stderr
    assert "5 records (picgo-log), 0 skipped" in first.stderr and "5 lines added" in first.stderr
    again = run("pp-mark", "--ledger", ledger, "import", log, extra_env={"TZ": "Asia/Shanghai"})
    assert "0 lines added, 5 already there" in again.stderr
    found = run("pp-mark", "--ledger", ledger, "find", "--host", "github", "--since", "2024-05-01T02:05:00Z")
    assert len(found.stdout.splitlines()) == 3
    links = run("pp-link", "--md", input=found.stdout)
    assert links.stdout.splitlines()[0] == "![shot-1](https://raw.githubusercontent.com/me/pics/main/img/shot-1.png)"
    for text in (first.stdout, first.stderr, Path(ledger).read_text()):
        assert LOG_SECRET not in text


# --- a real gallery written by @picgo/store (the library PicGo and PicList keep picgo.db with) -------

# @picgo/store 2.2.2, as npm picgo 3.1.0 installs it (PicGo 2.4 and 3.x depend on ^2.2.2, PicList on ^2.1.0)


@pytest.fixture(scope="session")
def picgo_store() -> Path:
    """node_modules holding @picgo/store: PicGo's own dependency, installed with npm picgo into
    .cache/npm by `make test` (no download at test time); skipped without node or that folder."""
    modules = ROOT / ".cache" / "npm" / "node_modules"
    if shutil.which("node") is None or not (modules / "@picgo" / "store" / "package.json").exists():
        pytest.skip("node, or @picgo/store in .cache/npm (installed with picgo by `make test`), missing")
    return modules


WRITE_GALLERY = """
const { DBStore } = require('@picgo/store')
const [dbPath, itemsJson] = process.argv.slice(1)  // node -e: no script path in argv
const db = new DBStore(dbPath, 'gallery')  // the collection name PicGo's and PicList's GalleryDB use
;(async () => {
  const items = JSON.parse(itemsJson)
  await db.insert(items[0])
  await db.insertMany(items.slice(1))
  const { data } = await db.get()
  await db.removeById(data[data.length - 1].id)
})().catch((e) => { console.error(e); process.exit(1) })
"""


def test_real_gallery_written_by_picgo_store(picgo_store: Path, run, tmp_path: Path) -> None:
    original = str(tmp_path / "shots" / "real.png")
    items = [
        # PicGo with PicGo-Core >= 1.6.1: filePath and mimeType; PicList: config with the uploader's secrets
        {"fileName": "real.png", "width": 640, "height": 480, "extname": ".png", "filePath": original,
         "mimeType": "image/png", "imgUrl": "https://s2.loli.net/2024/05/01/XyZ.png", "type": "smms"},
        {"fileName": "list.png", "width": 10, "height": 10, "extname": ".png", "type": "aws-s3-plist",
         "imgUrl": "https://pics.example.com/list.png", "config": {"secretAccessKey": SENTINEL}},
        {"fileName": "gone.png", "imgUrl": "https://i.example.com/gone.png", "type": "smms"},
    ]
    db = tmp_path / "picgo.db"
    wrote = subprocess.run(["node", "-e", WRITE_GALLERY, str(db), json.dumps(items)], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "NODE_PATH": str(picgo_store)})
    assert wrote.returncode == 0, wrote.stderr
    assert db.read_bytes()[:2] == b"\x1f\x8b"
    reader, records = read(db)
    assert reader.format == "picgo-gallery" and reader.skipped == []
    assert [(r["url"], r["source"], r["host"]) for r in records] == [
        ("https://s2.loli.net/2024/05/01/XyZ.png", original, "smms"),
        ("https://pics.example.com/list.png", "list.png", "s3"),
    ]
    assert all(r["import"]["id"] and r["uploaded_at"].endswith("Z") for r in records)
    assert SENTINEL not in json.dumps(records)
    ledger = str(tmp_path / "ledger.jsonl")
    assert run("pp-mark", "--ledger", ledger, "import", str(db)).returncode == 0
    found = run("pp-mark", "--ledger", ledger, "find", "--source", "real.png")
    assert run("pp-link", "--md", input=found.stdout).stdout == "![real](https://s2.loli.net/2024/05/01/XyZ.png)\n"
