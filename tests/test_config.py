"""Configuration: TOML profiles, env: indirection, PICPIPE_* and flag overrides, warnings."""

from __future__ import annotations

import os

import pytest

from picpipe import config, redact
from picpipe.errors import UsageError

TOML = """
ledger = "~/my-ledger.jsonl"

[link]
format = "html"

[profiles.nutstore]
type = "webdav"
url = "https://dav.jianguoyun.com/dav/picpipe/"
user = "me@example.com"
password = "env:NUTSTORE_APP_PASSWORD"

[profiles.blog-cdn]
type = "qiniu"
bucket = "blog"
access_key = "AK-literal-value"
secret_key = "SK-literal-value"
base_url = "https://img.example.com"
"""


def write(tmp_path, text: str = TOML, mode: int = 0o600):
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_profiles_env_indirection_and_precedence(tmp_path, capsys):
    path = write(tmp_path)
    environ = {"NUTSTORE_APP_PASSWORD": "app-pass-1234", "PICPIPE_BLOG_CDN_BUCKET": "blog-from-env"}
    cfg = config.load(path, environ)
    nut = cfg.profile("nutstore")
    assert nut == {"type": "webdav", "url": "https://dav.jianguoyun.com/dav/picpipe/", "user": "me@example.com",
                   "password": "app-pass-1234", "name": "nutstore"}
    cdn = cfg.profile("blog-cdn", {"base_url": "https://flag.example.com", "region": None})
    assert cdn["bucket"] == "blog-from-env"            # environment beats the file
    assert cdn["base_url"] == "https://flag.example.com"  # flags beat both
    assert "region" not in cdn                          # an unset flag changes nothing
    assert cfg.ledger() == os.path.expanduser("~/my-ledger.jsonl")
    assert cfg.section_layers("link") == ({}, {"format": "html"})
    assert capsys.readouterr().err == ""  # 0600 file, known keys: no warning


def test_a_type_name_is_a_profile_and_env_only_profiles_work(tmp_path):
    cfg = config.Config(None, {}, {})
    assert cfg.profile("local") == {"type": "local", "name": "local"}
    env = {"PICPIPE_MYS3_TYPE": "s3", "PICPIPE_MYS3_BUCKET": "b", "PICPIPE_MYS3_SECRET_KEY": "sk-from-env-99"}
    cfg = config.Config(None, {}, env)
    assert cfg.profile("mys3") == {"type": "s3", "bucket": "b", "secret_key": "sk-from-env-99", "name": "mys3"}
    assert redact.mask_registered("x sk-from-env-99 y") == "x *** y"


def test_a_profile_not_from_the_config_with_an_unknown_type_is_a_usage_error():
    from picpipe.hosts import open_host

    with pytest.raises(UsageError, match="profile 'x' has type 'ftp'") as caught:
        open_host({"name": "x", "type": "ftp"})
    assert "sftp" in (caught.value.hint or "")


def test_missing_default_file_is_empty_but_an_explicit_one_must_exist(tmp_path):
    assert config.load(environ={"XDG_CONFIG_HOME": str(tmp_path)}).data == {}
    with pytest.raises(UsageError, match="does not exist"):
        config.load(environ={"PICPIPE_CONFIG": str(tmp_path / "nope.toml")})


def test_config_path_follows_xdg():
    assert config.config_path({"XDG_CONFIG_HOME": "/x"}) == config.Path("/x/picpipe/config.toml")
    assert config.config_path({"PICPIPE_CONFIG": "/y/c.toml", "XDG_CONFIG_HOME": "/x"}) == config.Path("/y/c.toml")


@pytest.mark.parametrize(
    ("name", "environ", "message"),
    [
        ("nutstore", {}, "NUTSTORE_APP_PASSWORD is not set"),
        ("nope", {}, "no profile named 'nope'"),
        ("bad name!", {}, "bad profile name"),
    ],
)
def test_profile_errors_are_usage_errors_with_hints(tmp_path, name, environ, message):
    cfg = config.load(write(tmp_path), environ)
    with pytest.raises(UsageError, match=message) as info:
        cfg.profile(name)
    assert info.value.hint


def test_bad_toml_and_bad_shapes(tmp_path):
    with pytest.raises(UsageError, match="not valid TOML"):
        config.load(write(tmp_path, "[profiles.x\ntype = 1"), {})
    with pytest.raises(UsageError, match="bad profile name"):
        config.load(write(tmp_path, '[profiles.link]\ntype = "local"\n'), {})
    with pytest.raises(UsageError, match="has type 'ftp'"):
        config.load(write(tmp_path, '[profiles.x]\ntype = "ftp"\n'), {}).profile("x")


def test_warnings_for_readable_secrets_and_unknown_keys(tmp_path, capsys):
    config.load(write(tmp_path, mode=0o644), {"NUTSTORE_APP_PASSWORD": "x"})
    err = capsys.readouterr().err
    assert "readable by other users" in err and "chmod 600" in err
    # only env: references: nothing secret in the file, no warning
    config.load(write(tmp_path, '[profiles.n]\ntype = "webdav"\npassword = "env:P"\n', mode=0o644), {})
    assert capsys.readouterr().err == ""
    loaded = config.load(write(tmp_path, '[profiles.q]\ntype = "qiniu"\nbukcet = "typo"\n[extra]\n'), {})
    err = capsys.readouterr().err
    assert "unknown top-level key 'extra'" in err and "bukcet" not in err  # a profile's keys: when it is used
    loaded.profile("q")
    assert "unknown key 'bukcet'" in capsys.readouterr().err


def test_cli_reports_config_errors_with_exit_2(run, tmp_path):
    path = write(tmp_path, "this is = not toml [")
    result = run("pp-link", "--md", input="", extra_env={"PICPIPE_CONFIG": str(path)})
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "text",
    ['link = "md"\n', "ledger = 5\n", "[link]\nrewrite = 5\n", "[link]\ntemplate = 5\n", '[link]\nrewrite = [1]\n'],
)
def test_wrongly_typed_settings_are_usage_errors(tmp_path, text):
    with pytest.raises(UsageError, match="must be"):
        config.load(write(tmp_path, text), {})


def test_link_settings_resolve_env_only_when_used(run, tmp_path):
    path = write(tmp_path, '[link]\ntemplate = "env:MYTPL"\n')
    rec = '{"url": "https://x.example/a.png"}\n'
    # the flag overrides the template, so the unset MYTPL does not matter
    assert run("pp-link", "--url", input=rec, extra_env={"PICPIPE_CONFIG": str(path)}).stdout == "https://x.example/a.png\n"
    # the environment layer beats the file's template
    env_wins = run("pp-link", input=rec, extra_env={"PICPIPE_CONFIG": str(path), "PICPIPE_LINK_FORMAT": "bbcode"})
    assert env_wins.stdout == "[img]https://x.example/a.png[/img]\n"
    unset = run("pp-link", input=rec, extra_env={"PICPIPE_CONFIG": str(path)})
    assert unset.returncode == 2 and "MYTPL is not set" in unset.stderr
    used = run("pp-link", input=rec, extra_env={"PICPIPE_CONFIG": str(path), "MYTPL": "<$url>"})
    assert used.stdout == "<https://x.example/a.png>\n"


def test_ledger_setting_follows_env_and_empty_variables_count_as_unset(tmp_path):
    cfg = config.load(write(tmp_path, 'ledger = "env:MYLEDGER"\n[link]\nformat = "url"\n'),
                      {"MYLEDGER": "/data/l.jsonl", "PICPIPE_LINK_FORMAT": ""})
    assert cfg.ledger() == "/data/l.jsonl"
    assert cfg.section_layers("link") == ({}, {"format": "url"})
    assert config.Config(None, {}, {"PICPIPE_X_TYPE": ""}).profile("local")["type"] == "local"


def test_a_literal_server_secret_in_a_readable_file_is_warned_about(tmp_path, capsys):
    config.load(write(tmp_path, '[server]\nsecret = "s3cret-for-the-server"\n', mode=0o644), {})
    assert "chmod 600" in capsys.readouterr().err
    config.load(write(tmp_path, '[server]\nsecret = "env:PP_SECRET"\n', mode=0o644), {"PP_SECRET": "x" * 9})
    assert "chmod 600" not in capsys.readouterr().err


def test_the_ledger_table_path_sync_and_sync_every(tmp_path, capsys):
    cfg = config.load(write(tmp_path, '[ledger]\npath = "~/l.jsonl"\nsync = "nutstore"\nsync_every = 30\n'), {})
    assert cfg.ledger() == os.path.expanduser("~/l.jsonl")
    assert cfg.ledger_sync() == ("nutstore", 30.0)
    # the environment beats the file; "off" turns the automatic sync off for one run
    env = {"PICPIPE_LEDGER": "/x.jsonl", "PICPIPE_LEDGER_SYNC": "nas", "PICPIPE_LEDGER_SYNC_EVERY": "0.5"}
    assert config.Config(cfg.path, cfg.data, env).ledger() == "/x.jsonl"
    assert config.Config(cfg.path, cfg.data, env).ledger_sync() == ("nas", 0.5)
    assert config.Config(cfg.path, cfg.data, {"PICPIPE_LEDGER_SYNC": "off"}).ledger_sync() == (None, 30.0)
    # a plain `ledger = "path"` still works, with no sync and the default interval
    plain = config.load(write(tmp_path, 'ledger = "~/p.jsonl"\n'), {})
    assert (plain.ledger(), plain.ledger_sync()) == (os.path.expanduser("~/p.jsonl"), (None, 60.0))
    assert capsys.readouterr().err == ""
    config.load(write(tmp_path, '[ledger]\nsnyc = "nas"\n'), {})
    assert "[ledger] has unknown key 'snyc'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[ledger]\npath = 5\n", "ledger.path must be a file path string"),
        ("[ledger]\nsync = 5\n", "ledger.sync must be a profile name"),
        ('[ledger]\nsync = ["a", "b"]\n', "ledger.sync must be a profile name"),
        ('[ledger]\nsync = "my nas"\n', "is no profile name"),
        ('[ledger]\nsync_every = "often"\n', "ledger.sync_every must be a number of seconds"),
        ("[ledger]\nsync_every = -1\n", "is not a number of seconds"),
        ("[ledger]\nsync_every = true\n", "is not a number of seconds"),
        ("ledger = [1]\n", "must be a file path string or a \\[ledger\\] table"),
    ],
)
def test_a_wrong_ledger_table_is_a_usage_error_with_a_hint(tmp_path, text, message):
    with pytest.raises(UsageError, match=message) as info:
        config.load(write(tmp_path, text), {})
    assert info.value.hint
