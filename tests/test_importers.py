"""picpipe.importers: PicGo/PicList galleries, data.json and autobackup mark.json as records."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

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
    assert all(set(r) <= {"url", "host", "width", "height", "uploaded_at", "marked_at", "import"} for r in records)


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
