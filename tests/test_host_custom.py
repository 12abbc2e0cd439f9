"""The custom host: SM.MS, Imgur and a WebDAV server described in a profile (no code of theirs in
picpipe), uploaded to through those descriptions against the same fakes and server their own hosts'
tests use; ShareX .sxcu files imported into profiles and uploaded through; the errors a description
can meet (a wrong token, a link not where the profile says, an HTTP 200 that says it failed)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import requests

from conftest import ROOT, jsonl, parse_jsonl
from davservers import PASSWORD, USER, wsgidav
from fakehost import FakeHandler, Fault, serving
from fakes.chevereto import API_KEY, CheveretoServer, FakeChevereto
from fakes.imgur import CLIENT_ID, FakeImgur, ImgurServer
from fakes.lsky import TOKEN as LSKY_TOKEN
from fakes.lsky import FakeLsky, LskyServer
from fakes.smms import TOKEN, FakeSmms, SmmsServer
from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts.custom import CustomHost, parse_template
from test_upload import image

SXCU = ROOT / "tests" / "fixtures" / "sxcu"


@pytest.fixture(scope="module")
def smms_server():
    with serving(FakeSmms, SmmsServer) as running:
        yield running


@pytest.fixture
def smms(smms_server):
    for part in (smms_server.objects, smms_server.images, smms_server.uploads, smms_server.requests,
                 smms_server.faults):
        part.clear()
    return smms_server


@pytest.fixture(scope="module")
def imgur():
    with serving(FakeImgur, ImgurServer) as running:
        yield running


def config(tmp_path: Path, text: str) -> dict[str, str]:
    """A config file holding `text`; the environment that points at it."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return {"PICPIPE_CONFIG": str(path), "PICPIPE_LEDGER": str(tmp_path / "ledger.jsonl")}


def smms_profile(server: SmmsServer, **changes: str) -> str:
    """SM.MS API v2 (hosts.md §8) as a description: multipart `smfile`, the raw token in Authorization,
    the link at data.url, HTTP 200 with success false for some failures, GET /delete/<hash>."""
    settings = {"url": f"{server.url}/api/v2/upload", "field": "smfile", "image_url": "data.url",
                "success": "success == true", "error": "message",
                "deletion_url": f"{server.url}/api/v2/delete/{{json:data.hash}}", **changes}
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    return (f'[profiles.sm]\ntype = "custom"\nretries = 0\n{lines}'
            '[profiles.sm.headers]\nAuthorization = "env:SMMS_TOKEN"\n[profiles.sm.form]\nformat = "json"\n')


def test_smms_described_upload_and_delete(run, tmp_path, smms):
    a, b = image(tmp_path / "a.png", (200, 0, 0)), image(tmp_path / "b.png", (0, 200, 0))
    env = {**config(tmp_path, smms_profile(smms)), "SMMS_TOKEN": TOKEN}
    result = run("pp-upload", "--host", "sm", str(a), str(b), extra_env=env)
    assert result.returncode == 0, result.stderr
    records = parse_jsonl(result.stdout)
    for record, source in zip(records, (a, b)):
        assert requests.get(record["url"], timeout=5).content == source.read_bytes()
        delete_hash = record["key"].rpartition("/")[2]  # the key is the deletion URL the answer gave
        assert record["key"] == f"{smms.url}/api/v2/delete/{delete_hash}" and delete_hash in smms.images
    assert TOKEN not in result.stdout + result.stderr

    deleted = run("pp-upload", "--host", "sm", "--delete", input=jsonl(records[:1]), extra_env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert parse_jsonl(deleted.stdout)[0]["deleted_at"]
    assert requests.get(records[0]["url"], timeout=5).status_code == 404
    assert len(smms.images) == 1


def test_a_description_from_the_environment_alone(run, tmp_path, smms):
    env = {"PICPIPE_SM_TYPE": "custom", "PICPIPE_SM_URL": f"{smms.url}/api/v2/upload", "PICPIPE_SM_FIELD": "smfile",
           "PICPIPE_SM_HEADERS": '{"Authorization": "env:SMMS_TOKEN"}', "PICPIPE_SM_IMAGE_URL": "data.url",
           "SMMS_TOKEN": TOKEN, "PICPIPE_LEDGER": str(tmp_path / "ledger.jsonl")}
    a = image(tmp_path / "a.png", (33, 66, 99))
    result = run("pp-upload", "--host", "sm", str(a), extra_env=env)
    assert result.returncode == 0, result.stderr
    assert requests.get(parse_jsonl(result.stdout)[0]["url"], timeout=5).content == a.read_bytes()


def test_wrong_token_is_an_error_record_with_a_hint_and_never_printed(run, tmp_path, smms):
    wrong = "smmsWrongWrong0123456789"
    env = {**config(tmp_path, smms_profile(smms)), "SMMS_TOKEN": wrong}
    result = run("pp-upload", "--host", "sm", str(image(tmp_path / "a.png", (1, 2, 3))), extra_env=env)
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["type"] == "auth" and error["code"] == "unauthorized" and "Unauthorized" in error["message"]
    assert "headers" in error["hint"] and "env:" in error["hint"]
    assert wrong not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr


def test_a_link_not_at_the_path_names_the_path_and_shows_the_answer_masked(run, tmp_path, smms):
    env = {**config(tmp_path, smms_profile(smms, image_url="data.link")), "SMMS_TOKEN": TOKEN}
    result = run("pp-upload", "--host", "sm", str(image(tmp_path / "a.png", (4, 5, 6))), extra_env=env)
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["type"] == "bad_answer" and "image_url = 'data.link'" in error["message"]
    assert '"success": true' in error["message"] and "image_url" in error["hint"]

    # An answer that echoes the token: shown, but masked.
    smms.faults.append(Fault(200, body=json.dumps({"success": True, "data": {"you": TOKEN}}).encode()))
    echoed = run("pp-upload", "--host", "sm", str(image(tmp_path / "b.png", (7, 8, 9))), extra_env=env)
    message = parse_jsonl(echoed.stdout)[0]["error"]["message"]
    assert "***" in message and TOKEN not in echoed.stdout + echoed.stderr


def test_http_200_that_says_failed_is_an_error_record(run, tmp_path, smms):
    env = {**config(tmp_path, smms_profile(smms)), "SMMS_TOKEN": TOKEN}
    body = {"success": False, "code": "flood", "message": "Flood detected. You can only upload 20 images per hour"}
    smms.faults.append(Fault(200, body=json.dumps(body).encode()))
    result = run("pp-upload", "--host", "sm", str(image(tmp_path / "a.png", (3, 3, 3))), extra_env=env)
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["type"] == "rejected" and error["code"] == "flood" and "Flood detected" in error["message"]
    assert "success == true" in error["hint"]


def imgur_profile(server: ImgurServer, body: str = "multipart") -> dict[str, object]:
    """Imgur API 3 (hosts.md §9): `Authorization: Client-ID <id>`, field `image` (a file, or base64 in a
    urlencoded form), the link at data.link, DELETE /3/image/<deletehash>."""
    return {"name": "im", "type": "custom", "retries": 0, "url": f"{server.url}/3/image", "body": body,
            "field": "image", "headers": {"Authorization": "Client-ID {env:IMGUR_ID}"},
            "form": {"type": "file" if body == "multipart" else "base64"}, "image_url": "data.link",
            "success": "success", "deletion_url": f"{server.url}/3/image/{{json:data.deletehash}}",
            "delete_method": "DELETE"}


@pytest.mark.parametrize("body", ["multipart", "form"])
def test_imgur_described(imgur, monkeypatch, body):
    monkeypatch.setenv("IMGUR_ID", CLIENT_ID)
    host = CustomHost(imgur_profile(imgur, body))
    stored = host.put("2025/06/shot.png", b"\x89PNG one", "image/png")
    image_id = stored.url.rpartition("/")[2].partition(".")[0]
    assert stored.url.startswith("https://i.imgur.com/") and imgur.objects[image_id] == b"\x89PNG one"
    deletehash = stored.key.rpartition("/")[2]
    assert imgur.deletehashes[deletehash] == image_id

    host.check_key(stored.key)
    host.delete(stored.key)
    assert image_id not in imgur.objects
    host.delete(stored.key)  # already gone (404): deleted
    host.close()


def test_imgur_wrong_client_id(imgur, monkeypatch):
    monkeypatch.setenv("IMGUR_ID", "imgurWrongClient0123456")
    host = CustomHost(imgur_profile(imgur))
    with pytest.raises(PicpipeError) as caught:
        host.put("a.png", b"x", "image/png")
    assert caught.value.type == "auth" and "Invalid client_id" in caught.value.message
    assert "imgurWrongClient0123456" not in caught.value.message + str(caught.value.hint)


def test_lsky_2_described(run, tmp_path):
    """Lsky Pro 2.x (hosts/lsky.py's API): Bearer token with Accept: application/json, multipart `file` and
    `strategy_id`, {"status": bool, "message", "data"} with HTTP 200 for refused uploads, the link at
    data.links.url, DELETE /api/v1/images/{key}."""
    with serving(FakeLsky, LskyServer) as lsky:
        def profile(strategy: str) -> str:
            return f"""
[profiles.lsky]
type = "custom"
url = "{lsky.url}/api/v1/upload"
headers = {{ Authorization = "Bearer {{env:LSKY_TOKEN}}", Accept = "application/json" }}
form = {{ strategy_id = "{strategy}" }}
image_url = "data.links.url"
success = "status == true"
error = "message"
deletion_url = "{lsky.url}/api/v1/images/{{json:data.key}}"
delete_method = "DELETE"
retries = 0
"""
        a = image(tmp_path / "a.png", (5, 50, 150))
        env = {**config(tmp_path, profile("2")), "LSKY_TOKEN": LSKY_TOKEN}
        result = run("pp-upload", "--host", "lsky", str(a), extra_env=env)
        assert result.returncode == 0, result.stderr
        [record] = parse_jsonl(result.stdout)
        assert requests.get(record["url"], timeout=5).content == a.read_bytes()
        [(key, entry)] = lsky.images.items()
        assert record["key"] == f"{lsky.url}/api/v1/images/{key}" and lsky.forms[-1]["strategy_id"] == "2"

        deleted = run("pp-upload", "--host", "lsky", "--delete", input=jsonl([record]), extra_env=env)
        assert deleted.returncode == 0, deleted.stderr
        assert not lsky.images and requests.get(record["url"], timeout=5).status_code == 404

        refused = run("pp-upload", "--host", "lsky", "--no-dedupe", str(a),
                      extra_env={**config(tmp_path, profile("9")), "LSKY_TOKEN": LSKY_TOKEN})
        error = parse_jsonl(refused.stdout)[0]["error"]
        assert refused.returncode == 1 and error["type"] == "rejected" and "选定的策略不存在" in error["message"]

        wrong = run("pp-upload", "--host", "lsky", "--no-dedupe", str(a),
                    extra_env={**env, "LSKY_TOKEN": "1|wrongLskyToken0123456789"})
        error = parse_jsonl(wrong.stdout)[0]["error"]
        assert error["type"] == "auth" and "Authentication failed." in error["message"]
        assert LSKY_TOKEN not in wrong.stdout + wrong.stderr and "wrongLskyToken" not in wrong.stdout + wrong.stderr


def test_webdav_described_as_a_put(run, tmp_path):
    """A PUT of the bytes to a URL naming the file, with Basic auth made from {base64:...}: WsgiDAV
    answers 412 to If-None-Match: * on a taken name, and the bytes there are compared."""
    a, other = image(tmp_path / "a.png", (10, 20, 30)), image(tmp_path / "other" / "a.png", (30, 20, 10))
    (tmp_path / "dav").mkdir()
    with wsgidav(tmp_path / "dav") as dav:
        env = {**config(tmp_path, f"""
[profiles.dav]
type = "custom"
method = "PUT"
url = "{dav.url}{{key}}"
base_url = "{dav.url}"
deletion_url = "{dav.url}{{key}}"
delete_method = "DELETE"
retries = 0
headers = {{ Authorization = "Basic {{base64:{USER}:{{env:DAV_PASSWORD}}}}" }}
"""), "DAV_PASSWORD": PASSWORD}
        args = ("pp-upload", "--host", "dav", "--no-dedupe", "--path", "img {name}{ext}")
        first = run(*args, str(a), extra_env=env)
        assert first.returncode == 0, first.stderr
        [record] = parse_jsonl(first.stdout)
        assert record["url"] == f"{dav.url}img%20a.png" and record["key"] == record["url"]
        assert (tmp_path / "dav" / "img a.png").read_bytes() == a.read_bytes()
        assert dav.requests[-1] == ("PUT", "/img a.png")

        again = run(*args, str(a), extra_env=env)
        assert parse_jsonl(again.stdout)[0]["reused"] is True
        taken = run(*args, str(other), extra_env=env)  # the same key, other bytes
        assert taken.returncode == 1 and parse_jsonl(taken.stdout)[0]["error"]["type"] == "conflict"
        assert (tmp_path / "dav" / "img a.png").read_bytes() == a.read_bytes()  # nothing overwritten

        deleted = run("pp-upload", "--host", "dav", "--delete", input=jsonl([record]), extra_env=env)
        assert deleted.returncode == 0, deleted.stderr
        assert not (tmp_path / "dav" / "img a.png").exists()
        assert PASSWORD not in first.stderr + again.stderr + taken.stdout + deleted.stderr


class Answers(FakeHandler):
    """A server that answers as the test says: the request's headers and body are kept."""

    seen: list[tuple[str, str, dict[str, str], bytes]] = []
    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"")

    def handle_request(self) -> None:
        Answers.seen.append((self.command, self.path, dict(self.headers), self.body()))
        status, headers, body = Answers.answer
        self.reply(status, body, headers, content_type=headers.get("Content-Type", "text/plain"))


@pytest.fixture
def answers():
    Answers.seen = []
    with serving(Answers) as server:
        yield server


def test_location_header_regex_and_response_text(answers, monkeypatch):
    monkeypatch.setenv("UP_TOKEN", "upTokenSecret0123456789")
    base = {"name": "up", "type": "custom", "retries": 0, "method": "PUT", "url": answers.url + "/up/{name}",
            "headers": {"X-Token": "env:UP_TOKEN"}, "query": {"keep": "1"}}
    Answers.answer = (201, {"Location": "/files/abc.png"}, b"stored")
    stored = CustomHost({**base, "image_url": "{header:Location}"}).put("x/a b.png", b"bytes", "image/png")
    assert stored.url == answers.url + "/files/abc.png" and stored.key == "x/a b.png"
    method, path, headers, body = Answers.seen[-1]
    assert (method, path, body) == ("PUT", "/up/a%20b.png?keep=1", b"bytes")
    assert headers["Content-Type"] == "image/png" and headers["X-Token"] == "upTokenSecret0123456789"
    assert headers["If-None-Match"] == "*"

    Answers.answer = (200, {}, b'<p>done: <a href="https://cdn.example.com/i/QX7.png">link</a></p>')
    stored = CustomHost({**base, "image_url": '{regex:href="(?<url>[^"]+)"|url}'}).put("a.png", b"1", "image/png")
    assert stored.url == "https://cdn.example.com/i/QX7.png"

    Answers.answer = (200, {}, b"https://cdn.example.com/i/plain.png\n")  # no image_url: the answer's text
    posted = CustomHost({**base, "method": "POST", "url": answers.url + "/up"}).put("a.png", b"1", "image/png")
    assert posted.url == "https://cdn.example.com/i/plain.png"
    assert CustomHost(base).put("a.png", b"1", "image/png").url == answers.url + "/up/a.png"  # a PUT's own URL


def test_json_body_and_pomf_style_answer(answers):
    """Pomf (uguu.se and its clones, a common ShareX target): files[0].url."""
    Answers.answer = (200, {"Content-Type": "application/json"},
                      json.dumps({"success": True, "files": [{"url": "https://a.pomf.example/xyz.png"}]}).encode())
    host = CustomHost({"name": "p", "type": "custom", "url": answers.url + "/upload", "body": "json",
                       "field": "data", "form": {"name": "{name}", "kind": "{mime}"},
                       "image_url": "{json:files[0].url}", "success": "success"})
    assert host.put("2025/a.png", b"\x00\x01", "image/png").url == "https://a.pomf.example/xyz.png"
    sent = json.loads(Answers.seen[-1][3])
    assert sent == {"name": "a.png", "kind": "image/png", "data": base64.b64encode(b"\x00\x01").decode()}
    # No deletion_url: --delete is refused, with a hint.
    with pytest.raises(PicpipeError) as caught:
        host.check_key("https://a.pomf.example/xyz.png")
    assert caught.value.type == "unsupported" and "deletion_url" in str(caught.value.hint)


def test_delete_elsewhere_carries_no_credentials(answers, monkeypatch):
    monkeypatch.setenv("UP_TOKEN", "upTokenSecret0123456789")
    with serving(Answers) as other:
        host = CustomHost({"name": "up", "type": "custom", "url": answers.url + "/upload",
                           "headers": {"Authorization": "Bearer {env:UP_TOKEN}"}, "deletion_url": "{json:del}"})
        Answers.answer = (200, {}, b"")
        host.delete(answers.url + "/del/1")
        host.delete(other.url + "/del/2")
    (_, _, same, _), (_, _, elsewhere, _) = Answers.seen
    assert same["Authorization"] == "Bearer upTokenSecret0123456789" and "Authorization" not in elsewhere
    with pytest.raises(PicpipeError):
        host.check_key("file:///etc/passwd")


class Redirects(FakeHandler):
    """/go/N answers 302 to Redirects.to + /N; anything else is kept in Answers.seen and answered 200."""

    to = ""

    def handle_request(self) -> None:
        if self.path.startswith("/go/"):
            self.reply(302, b"", {"Location": Redirects.to + "/" + self.path[4:]})
            return
        Answers.seen.append((self.command, self.path, dict(self.headers), self.body()))
        self.reply(200, b"deleted")


def test_a_redirect_to_another_server_carries_no_credentials(answers, monkeypatch):
    """requests drops only Authorization when a redirect changes the server; a custom header such as
    X-API-Key must not follow a deletion link (or the look at a taken name) there either."""
    monkeypatch.setenv("UP_TOKEN", "upTokenSecret0123456789")
    with serving(Redirects) as up, serving(Redirects) as other:
        host = CustomHost({"name": "up", "type": "custom", "method": "PUT", "url": up.url + "/put/{key}",
                           "headers": {"X-API-Key": "{env:UP_TOKEN}"}, "deletion_url": "{json:del}"})
        Redirects.to = other.url.replace("127.0.0.1", "localhost")  # another server, by name
        host.delete(up.url + "/go/1")
        assert host.holds(up.url + "/go/2", {"X-API-Key": "upTokenSecret0123456789"}, b"other") is False
        Redirects.to = up.url  # the same server: the headers go along
        host.delete(up.url + "/go/3")
    paths = {path: headers for _, path, headers, _ in Answers.seen}
    assert set(paths) == {"/1", "/2", "/3"}
    assert "X-API-Key" not in paths["/1"] and "X-API-Key" not in paths["/2"]
    assert paths["/3"]["X-API-Key"] == "upTokenSecret0123456789"


@pytest.mark.parametrize("settings, said", [
    ({"image_url": "{prompt}"}, "{prompt} is not a function"),
    ({"image_url": "{json:data.url"}, "is not closed"),
    ({"image_url": "data[*].url"}, "is not a path"),
    ({"image_url": "{regex:(unclosed}"}, "not valid"),
    ({"method": "GET"}, "POST or PUT"),
    ({"body": "xml"}, "no body kind"),
    ({"headers": {"Authorization": "env:PICPIPE_TEST_UNSET_VARIABLE"}},
     '[profiles.c] headers.Authorization = "env:PICPIPE_TEST_UNSET_VARIABLE" but the environment variable '
     "PICPIPE_TEST_UNSET_VARIABLE is not set"),
    ({"headers": {"Authorization": "Bearer {env:PICPIPE_TEST_UNSET_VARIABLE}"}},
     "[profiles.c] headers.Authorization has {env:PICPIPE_TEST_UNSET_VARIABLE} but the environment variable "
     "PICPIPE_TEST_UNSET_VARIABLE is not set"),
    ({"headers": {"X": ["a"]}}, "headers.X is not a string"),
    ({"url": "ftp://host/{key}"}, "not an http(s) URL"),
])
def test_profile_mistakes_are_usage_errors(settings, said):
    with pytest.raises(UsageError) as caught:
        CustomHost({"name": "c", "type": "custom", "url": "https://h.example/up", **settings})
    assert said in caught.value.message


def test_a_profile_mistake_stops_pp_upload_with_exit_2(run, tmp_path):
    env = config(tmp_path, '[profiles.c]\ntype = "custom"\nurl = "https://h.example/up"\nimage_url = "{select:a|b}"\n')
    result = run("pp-upload", "--host", "c", str(image(tmp_path / "a.png", (1, 1, 1))), extra_env=env)
    assert result.returncode == 2 and "{select} is not a function" in result.stderr and not result.stdout


def test_template_syntax():
    assert parse_template(r"a\{b\}\|c", "t") == ("a{b}|c",)
    [call] = parse_template("{json:{response}|files[0].url}", "t")
    assert call.name == "json" and len(call.args) == 2


def import_sxcu(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "picpipe.hosts.custom", "import", str(SXCU / name), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_import_modern_sxcu_and_upload_through_it(run, env, tmp_path, smms):
    secret = json.loads((SXCU / "smms.sxcu").read_text())["Headers"]["Authorization"]
    imported = import_sxcu("smms.sxcu", env=env)
    assert imported.returncode == 0, imported.stderr
    assert secret not in imported.stdout + imported.stderr
    assert "PICPIPE_SM_MS_HEADER_AUTHORIZATION" in imported.stderr
    profile = tomllib.loads(imported.stdout)["profiles"]["sm-ms"]
    assert profile["headers"] == {"Authorization": "env:PICPIPE_SM_MS_HEADER_AUTHORIZATION"}
    assert (profile["field"], profile["form"], profile["image_url"]) == ("smfile", {"format": "json"},
                                                                         "{json:data.url}")

    toml = imported.stdout.replace("https://sm.ms", smms.url)  # the fake, in place of sm.ms
    settings = {**config(tmp_path, toml), "PICPIPE_SM_MS_HEADER_AUTHORIZATION": TOKEN, "PICPIPE_SM_MS_RETRIES": "0"}
    a = image(tmp_path / "a.png", (90, 0, 90))
    result = run("pp-upload", "--host", "sm-ms", str(a), extra_env=settings)
    assert result.returncode == 0, result.stderr
    [record] = parse_jsonl(result.stdout)
    assert requests.get(record["url"], timeout=5).content == a.read_bytes()
    [entry] = smms.images.values()
    assert record["key"] == entry["delete"]  # DeletionURL: {json:data.delete}


def test_import_legacy_sxcu_and_upload_through_it(run, env, tmp_path, imgur):
    """ShareX before 13: RequestType, $json:...$ and $regex:1|1$ naming a RegexList pattern."""
    imported = import_sxcu("imgur-legacy.sxcu", "--name", "imgur", env=env)
    assert imported.returncode == 0, imported.stderr
    assert "9f8e7d6c5b4a321" not in imported.stdout + imported.stderr
    profile = tomllib.loads(imported.stdout)["profiles"]["imgur"]
    assert profile["image_url"] == "{json:data.link}" and profile["form"] == {"type": "file", "name": "{filename}"}

    toml = imported.stdout.replace("https://api.imgur.com", imgur.url)
    settings = {**config(tmp_path, toml), "PICPIPE_IMGUR_HEADER_AUTHORIZATION": f"Client-ID {CLIENT_ID}",
                "PICPIPE_IMGUR_RETRIES": "0"}
    result = run("pp-upload", "--host", "imgur", str(image(tmp_path / "a.png", (0, 90, 90))), extra_env=settings)
    assert result.returncode == 0, result.stderr
    [record] = parse_jsonl(result.stdout)
    deletehash = record["key"].removeprefix("https://imgur.com/delete/")
    assert imgur.deletehashes[deletehash] == record["url"].rpartition("/")[2].partition(".")[0]


def test_import_chevereto_sxcu_upload_and_delete(run, env, tmp_path):
    """A Chevereto site's .sxcu (Lensdump's, ShareX 14.1): the API key in Arguments, `source = {input}`
    (empty for a file in ShareX) left out, DeletionURL the image's delete_url."""
    imported = import_sxcu("lensdump.sxcu", env=env)
    assert imported.returncode == 0, imported.stderr
    secret = json.loads((SXCU / "lensdump.sxcu").read_text())["Arguments"]["key"]
    assert secret not in imported.stdout + imported.stderr
    profile = tomllib.loads(imported.stdout)["profiles"]["lensdump"]
    assert profile["form"] == {"key": "env:PICPIPE_LENSDUMP_FORM_KEY", "album_id": "Xy1"}
    with serving(FakeChevereto, CheveretoServer) as site:
        toml = imported.stdout.replace("https://lensdump.com", site.url)
        settings = {**config(tmp_path, toml), "PICPIPE_LENSDUMP_FORM_KEY": API_KEY, "PICPIPE_LENSDUMP_RETRIES": "0"}
        a = image(tmp_path / "a.png", (250, 200, 0))
        result = run("pp-upload", "--host", "lensdump", str(a), extra_env=settings)
        assert result.returncode == 0, result.stderr
        [record] = parse_jsonl(result.stdout)
        assert requests.get(record["url"], timeout=5).content == a.read_bytes()
        assert "/delete/" in record["key"] and site.key_via == ["field"]

        deleted = run("pp-upload", "--host", "lensdump", "--delete", input=jsonl([record]), extra_env=settings)
        assert deleted.returncode == 0, deleted.stderr
        assert not site.images and requests.get(record["url"], timeout=5).status_code == 404

        wrong = run("pp-upload", "--host", "lensdump", "--no-dedupe", str(a),
                    extra_env={**settings, "PICPIPE_LENSDUMP_FORM_KEY": "chv_wrong_key_0123456789"})
        error = parse_jsonl(wrong.stdout)[0]["error"]
        assert error["message"].endswith("Invalid API key.")  # ErrorMessage: {json:error.message}
        assert API_KEY not in wrong.stdout + wrong.stderr and "chv_wrong_key" not in wrong.stdout + wrong.stderr


@pytest.mark.parametrize("sxcu, said", [
    ({"RequestURL": "https://h.example/s", "DestinationType": "URLShortener"}, "not an image or file uploader"),
    ({"RequestURL": "https://h.example/t", "Body": "JSON", "Version": "15.0.0"}, "carries no file"),
    ({"RequestURL": "https://h.example/u", "FileFormName": "f", "URL": "{prompt:Which URL?}",
      "Version": "15.0.0"}, "{prompt} is not a function"),
    ({"Name": "x"}, "has no RequestURL"),
])
def test_import_refuses_what_picpipe_cannot_run(env, tmp_path, sxcu, said):
    path = tmp_path / "x.sxcu"
    path.write_text(json.dumps(sxcu))
    result = subprocess.run([sys.executable, "-m", "picpipe.hosts.custom", "import", str(path)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2 and said in result.stderr and not result.stdout
