"""A configured secret never reaches stdout, stderr or the ledger, whatever fails."""

from __future__ import annotations

import json

import pytest

from conftest import SENTINEL, jsonl
from httpfixture import closed_port, running
from picpipe import redact

ENV_SECRET = "EnvSecret-7c1e-never-print"
FLAG_SECRET = "Pass-From-Env-Ref-92ad"


@pytest.fixture
def secret_env(tmp_path, env):
    config = tmp_path / "config" / "picpipe" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        "[profiles.nutstore]\n"
        'type = "webdav"\nurl = "https://dav.jianguoyun.com/dav/p/"\nuser = "me"\n'
        f'password = "{SENTINEL}"\n'
        "[profiles.cos]\n"
        'type = "tencent"\nsecret_id = "env:COS_ID"\nsecret_key = "env:COS_KEY"\n'
    )
    config.chmod(0o644)  # also triggers the readable-secrets warning, which must not quote them
    env.update(COS_ID="id-not-secret-enough", COS_KEY=FLAG_SECRET, PICPIPE_SMMS_TOKEN=ENV_SECRET)
    return env


SECRETS = (SENTINEL, ENV_SECRET, FLAG_SECRET)


def leaks(*texts: str) -> list[str]:
    return [s for s in SECRETS for t in texts if s in t]


def test_records_that_carry_secrets(run, secret_env, tmp_path):
    records = [
        {"url": f"https://me:{SENTINEL}@dav.example/a.png", "note": f"pw {ENV_SECRET}"},
        {"url": "https://x.example/b.png", "password": FLAG_SECRET, "nested": {"token": SENTINEL}},
        {"path": "c.png", "error": {"stage": "upload", "type": "http_401", "message": f"bad auth {SENTINEL}"}},
    ]
    data = jsonl(records) + f'{{"broken": "{SENTINEL}\n' + f"/photos/{ENV_SECRET}.png\n"
    ledger = tmp_path / "l.jsonl"
    tee = run("pp-mark", "--ledger", str(ledger), input=data, extra_env=secret_env)
    link = run("pp-link", "--template", "{note} {url} $url", input=tee.stdout, extra_env=secret_env)
    found = run("pp-mark", "--ledger", str(ledger), "find", extra_env=secret_env)
    assert tee.returncode == 1 and link.returncode == 1
    assert "readable by other users" in tee.stderr
    assert tee.stdout.count("\n") == 5  # every record still went through, masked
    assert "***" in tee.stdout and "***" in link.stdout
    assert leaks(tee.stdout, tee.stderr, link.stdout, link.stderr, found.stdout, found.stderr,
                 ledger.read_text()) == []
    assert "password" not in ledger.read_text() and "token" not in ledger.read_text()


def test_usage_errors_and_debug_tracebacks(run, secret_env, tmp_path):
    bad_flag = run("pp-link", "-j", SENTINEL, extra_env=secret_env)
    bad_rule = run("pp-link", "--rewrite", FLAG_SECRET, input="", extra_env=secret_env)
    no_ledger = run("pp-mark", "--ledger", str(tmp_path / ENV_SECRET), "find", "--debug", extra_env=secret_env)
    assert bad_flag.returncode == 2 and bad_rule.returncode == 2 and no_ledger.returncode == 2
    assert leaks(bad_flag.stderr, bad_rule.stderr, no_ledger.stderr) == []


def test_broken_config_file_with_a_secret(run, env, tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text(f'[profiles.x]\npassword = "{SENTINEL}\n')
    result = run("pp-link", input="", extra_env={**env, "PICPIPE_CONFIG": str(config)})
    assert result.returncode == 2 and "not valid TOML" in result.stderr
    assert SENTINEL not in result.stderr


def test_check_and_import_failures(run, secret_env, tmp_path):
    with running() as server:
        dead = server.url(f"/missing.png?token={SENTINEL}").replace("http://", f"http://u:{ENV_SECRET}@")
        check = run("pp-mark", "check", "-", input=jsonl([{"url": dead}]), extra_env=secret_env)
    assert check.returncode == 1 and "http_404" in check.stdout
    mark = tmp_path / "mark.json"
    mark.write_text(json.dumps({"images": [{"space": "NutStore", "url": "https://i.example/a.png", "time": 1,
                                            "path": f"https://me:{FLAG_SECRET}@dav.example/a.png",
                                            "password": SENTINEL}]}))
    ledger = tmp_path / "l.jsonl"
    imported = run("pp-mark", "--ledger", str(ledger), "import", str(mark), extra_env=secret_env)
    assert imported.returncode == 0
    assert leaks(check.stdout, check.stderr, imported.stdout, imported.stderr, ledger.read_text()) == []


def test_redact_text_shapes():
    assert redact.redact_text("GET https://bob:hunter2@h.example/x?token=abc&X-Amz-Signature=def") == (
        "GET https://bob:***@h.example/x?token=***&X-Amz-Signature=***")
    assert redact.redact_text("Authorization: Bearer ghp_abcdef") == "Authorization: Bearer ***"
    redact.register("abc")  # too short to mask safely everywhere
    assert redact.mask_registered("abc") == "abc"
    assert redact.drop_secret_fields({"a": [{"Secret-Key": 1, "b": 2}]}) == {"a": [{"b": 2}]}


def test_short_secrets_do_not_garble_records_and_quoted_secrets_are_masked(run, env, tmp_path):
    quoted = 'pa"ss\\wd-99-long'
    extra = {**env, "PICPIPE_NAS_PASSWORD": "2026", "PICPIPE_CDN_TOKEN": quoted}
    records = [
        {"url": "https://x.example/2026/photo.png", "uploaded_at": "2026-11-21T00:00:00.000Z"},
        {"url": "https://x.example/b.png", "note": quoted, "same": "2026"},
    ]
    ledger = tmp_path / "l.jsonl"
    result = run("pp-mark", "--ledger", str(ledger), input=jsonl(records), extra_env=extra)
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out[0] == records[0]  # a short secret inside a URL or a date is left alone...
    assert out[1]["same"] == "***" and out[1]["note"] == "***"  # ...but not as a whole value
    assert quoted not in result.stdout and json.dumps(quoted)[1:-1] not in result.stdout
    assert json.dumps(quoted)[1:-1] not in ledger.read_text()
    assert "https://x.example/2026/photo.png" in ledger.read_text()


def test_secret_keys_short_url_passwords_env_refs_templates_and_merge(run, env, tmp_path):
    config = tmp_path / "config" / "picpipe" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[profiles.nas]\ntype = "webdav"\npassword = "hunt3r2"\n'
                      '[profiles.cdn]\ntype = "github"\ntoken = \'pa"ss\\word99\'\n')  # TOML literal: one \\
    extra = {**env, "PICPIPE_OTHER_PASSWORD": "env:REALPW", "REALPW": "realpassword42", "PICPIPE_NAS_TOKEN": SENTINEL}
    records = [{SENTINEL: "as a key", "url": "https://me:hunt3r2@dav.example/a.png"},
               {"url": "https://x.example/b.png", "note": "realpassword42", "cfg": {"k": 'pa"ss\\word99'}}]
    ledger = tmp_path / "l.jsonl"
    (tmp_path / "in.jsonl").write_text(jsonl(records))
    linked = run("pp-link", "--json", "--template", "$url {cfg}", input=jsonl(records), extra_env=extra)
    merged = [run("pp-mark", "--ledger", str(ledger), "merge", str(tmp_path / "in.jsonl"), extra_env=extra)
              for _ in range(3)]
    assert "warning" in merged[0].stderr and "shorter than 8" in merged[0].stderr
    assert [m.stderr.count("2 lines added") for m in merged] == [1, 0, 0]  # idempotent, masked or not
    texts = [linked.stdout, linked.stderr, ledger.read_text()]
    for secret in ("hunt3r2", "realpassword42", 'pa\\"ss', SENTINEL):
        assert not [t for t in texts if secret in t], secret


TAIL = "Tail-9c2e-never-print"


@pytest.mark.parametrize("url", [f"https://me:{SENTINEL}/{TAIL}@dav.example.com:99999/",
                                 f"https://me:{SENTINEL}#{TAIL}@dav.example.com:99999/",
                                 f"https://me:{SENTINEL}@x:{TAIL}@dav.example.com:99999/"])
def test_no_piece_of_a_url_password_in_a_bad_url_message(run, tmp_path, url):
    """Review finding 1: a password holding '/', '#' or '@' came back as the "port" or half-masked."""
    from test_upload import image

    png = str(image(tmp_path / "a.png", (1, 2, 3)))
    results = [run("pp-backup", "--to", "nas", "--ledger", str(tmp_path / "l.jsonl"), png,
                   extra_env={"PICPIPE_NAS_TYPE": "webdav", "PICPIPE_NAS_URL": url}),
               run("pp-upload", "--host", "webdav", png, extra_env={"PICPIPE_WEBDAV_URL": url}),
               run("pp-davtest", "--url", url)]
    for result in results:
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "is not a usable URL: " in result.stderr and "'https://***@dav.example.com:99999/'" in result.stderr
        assert SENTINEL not in result.stdout + result.stderr and TAIL not in result.stdout + result.stderr
    said = results[0].stderr
    assert ("the port '99999'" in said) if "@x:" in url else ("write '/', '#' and '?' in the password" in said)


def test_a_url_password_with_an_at_sign_is_never_shown(run):
    """A well-formed url whose password holds '@' and ':' is used; no piece of it reaches the output."""
    url = f"http://me:{SENTINEL}@x:{TAIL}@127.0.0.1:{closed_port()}/dav/"
    result = run("pp-davtest", "--url", url)
    assert result.returncode == 1 and "connection_refused" in result.stdout and "Traceback" not in result.stderr
    assert SENTINEL not in result.stdout + result.stderr and TAIL not in result.stdout + result.stderr
