"""The sftp host against a real OpenSSH server (tests/sshd.py: sshd -D on 127.0.0.1 with its own host
key, config and authorized_keys; skipped with the reason when openssh-server is not installed).

Password logins are refused here for every user: the tests run as root, and root has no password
to give (a wrong one is still refused as such, which is what the auth test needs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, jsonl, parse_jsonl
from sshd import PASSPHRASE, Sshd, free_port, sshd
from test_upload import image

BASE = "https://img.example.com/"


@pytest.fixture
def server(tmp_path: Path):
    with sshd(tmp_path) as running:
        yield running


def sftp_env(server: Sshd, www: Path, **settings: str) -> dict[str, str]:
    """The PICPIPE_VPS_* variables of an sftp profile logged in by key, publishing `www`."""
    values = {"type": "sftp", "server": "127.0.0.1", "port": str(server.port), "user": server.user,
              "key_file": str(server.client_key), "known_hosts": str(server.known_hosts), "dir": str(www),
              "base_url": BASE, "retries": "1", "timeout": "10", **settings}
    return {f"PICPIPE_VPS_{key.upper()}": value for key, value in values.items() if value}


def logins(server: Sshd) -> int:
    return server.log().count("Accepted publickey for")


def test_upload_makes_folders_reuses_refuses_overwrites_deletes(run, tmp_path, server):
    www = tmp_path / "www" / "img"  # neither exists yet
    env = sftp_env(server, www)
    a = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    b = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    args = ("--host", "vps", "--no-dedupe", "--path", "{year}/{name} 图{ext}")

    first = run("pp-upload", *args, str(a), extra_env=env)
    assert first.returncode == 0, first.stderr
    [record] = parse_jsonl(first.stdout)
    stored = www / record["key"]
    assert stored.read_bytes() == a.read_bytes()
    assert record["host"] == "vps" and "reused" not in record
    assert record["url"] == BASE + record["key"].replace(" ", "%20").replace("图", "%E5%9B%BE")

    again = run("pp-upload", *args, str(a), extra_env=env)
    assert again.returncode == 0 and parse_jsonl(again.stdout)[0]["reused"] is True

    clash = run("pp-upload", *args, str(b), extra_env=env)
    error = parse_jsonl(clash.stdout)[0]["error"]
    assert clash.returncode == 1 and error["type"] == "conflict" and "--overwrite" in error["hint"]
    assert stored.read_bytes() == a.read_bytes()
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]  # no temp file left behind

    replaced = run("pp-upload", *args, "--overwrite", str(b), extra_env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert stored.read_bytes() == b.read_bytes() and [p.name for p in stored.parent.iterdir()] == [stored.name]

    deleted = run("pp-upload", "--host", "vps", "--delete", input=replaced.stdout, extra_env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted_at" in parse_jsonl(deleted.stdout)[0] and not stored.exists()
    gone = run("pp-upload", "--host", "vps", "--delete", input=replaced.stdout, extra_env=env)
    assert gone.returncode == 0, gone.stderr  # already gone counts as deleted
    assert logins(server) == 6  # one connection per run
    assert "Traceback" not in first.stderr + clash.stderr + deleted.stderr


def test_an_unknown_host_key_is_refused_with_its_fingerprint_and_the_keyscan_hint(run, tmp_path, server):
    www = tmp_path / "www"
    files = [image(tmp_path / f"{i}.png", (i, 1, 1)) for i in range(3)]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    env = sftp_env(server, www, known_hosts=str(empty))
    result = run("pp-upload", "--host", "vps", *map(str, files), extra_env=env)
    assert result.returncode == 1
    errors = [r["error"] for r in parse_jsonl(result.stdout)]
    assert [e["type"] for e in errors] == ["host_key_unknown"] * 3
    fingerprint = server.fingerprint()
    assert errors[0]["fingerprint"] == fingerprint and f"ED25519 key {fingerprint}" in errors[0]["message"]
    assert f"ssh-keyscan -p {server.port} 127.0.0.1 >> {empty}" in errors[0]["hint"]
    assert not www.exists() and empty.read_text() == ""  # nothing sent, nothing accepted
    assert "Accepted " not in server.log() and server.connections() == 1  # not asked again

    # The default files, as ssh reads them: ~/.ssh/known_hosts (missing here) names itself in the hint.
    home = tmp_path / "home"
    home.mkdir()
    default = run("pp-upload", "--host", "vps", str(files[0]),
                  extra_env={**sftp_env(server, www, known_hosts=""), "HOME": str(home)})
    error = parse_jsonl(default.stdout)[0]["error"]
    assert error["type"] == "host_key_unknown" and f">> {home}/.ssh/known_hosts" in error["hint"]
    assert not (home / ".ssh").exists()


def test_a_changed_host_key_is_refused(run, tmp_path, server):
    impostor = (server.folder / "stranger_ed25519.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {impostor[0]} {impostor[1]}\n")
    src = image(tmp_path / "a.png", (1, 2, 3))
    result = run("pp-upload", "--host", "vps", str(src), extra_env=sftp_env(server, tmp_path / "www",
                                                                            known_hosts=str(known)))
    error = parse_jsonl(result.stdout)[0]["error"]
    assert result.returncode == 1 and error["type"] == "host_key_changed"
    assert error["fingerprint"] == server.fingerprint() and "intercepting" in error["hint"]
    assert f"ssh-keygen -R '[127.0.0.1]:{server.port}'" in error["hint"]
    assert not (tmp_path / "www").exists() and "Accepted " not in server.log()


def test_refused_logins_are_auth_errors_and_no_secret_is_printed(run, tmp_path, server):
    www = tmp_path / "www"
    src = image(tmp_path / "a.png", (9, 9, 9))
    wrong_password = "Not-the-password-31337"
    cases = {
        "password": sftp_env(server, www, key_file="", password=wrong_password),
        "unknown key": sftp_env(server, www, key_file=str(server.stranger_key)),
        "no passphrase": sftp_env(server, www, key_file=str(server.locked_key)),
        "wrong passphrase": sftp_env(server, www, key_file=str(server.locked_key), key_passphrase=wrong_password),
    }
    for case, env in cases.items():
        result = run("pp-upload", "--host", "vps", str(src), extra_env=env)
        assert result.returncode == 1, case
        error = parse_jsonl(result.stdout)[0]["error"]
        assert error["type"] == "auth", (case, error)
        assert f"check user ({server.user})" in error["hint"] if "key" in case or "password" in case else \
            "key_passphrase" in error["message"] + error["hint"]
        assert wrong_password not in result.stdout + result.stderr and "Traceback" not in result.stderr, case
    assert not www.exists()

    unlocked = run("pp-upload", "--host", "vps", str(src),
                   extra_env=sftp_env(server, www, key_file=str(server.locked_key), key_passphrase=PASSPHRASE))
    assert unlocked.returncode == 0, unlocked.stderr
    assert (www / parse_jsonl(unlocked.stdout)[0]["key"]).read_bytes() == src.read_bytes()
    assert PASSPHRASE not in unlocked.stdout + unlocked.stderr


def test_twenty_images_with_four_workers_share_one_connection(run, tmp_path, server):
    www = tmp_path / "www"
    files = [image(tmp_path / f"{i}.png", (i * 10, 5, 99)) for i in range(20)]
    result = run("pp-upload", "--host", "vps", "-j", "4", "--path", "set/{sha256:12}{ext}",
                 input=jsonl([{"path": str(f)} for f in files]), extra_env=sftp_env(server, www))
    assert result.returncode == 0, result.stderr
    records = parse_jsonl(result.stdout)
    assert [r["path"] for r in records] == [str(f) for f in files]  # input order
    for record, file in zip(records, files, strict=True):
        assert (www / record["key"]).read_bytes() == file.read_bytes()
    assert len(list((www / "set").iterdir())) == 20  # and no temp files
    assert logins(server) == 1
    sessions = server.log().count("subsystem 'sftp'")
    assert 1 <= sessions <= 4  # a session per worker at most, reused


def test_keys_stay_inside_dir(run, tmp_path, server):
    www = tmp_path / "www"
    outside = image(tmp_path / "outside.png", (1, 1, 1))
    env = sftp_env(server, www)

    record = {"host": "vps", "key": "../outside.png", "url": BASE + "../outside.png"}
    result = run("pp-upload", "--host", "vps", "--delete", input=jsonl([record]), extra_env=env)
    assert result.returncode == 1 and parse_jsonl(result.stdout)[0]["error"]["type"] == "bad_key"
    assert outside.exists()

    src = image(tmp_path / "src" / "a.png", (2, 2, 2))
    escaped = run("pp-upload", "--host", "vps", "--path", "../../{name}{ext}", str(src), extra_env=env)
    assert escaped.returncode == 0, escaped.stderr
    assert (www / parse_jsonl(escaped.stdout)[0]["key"]).read_bytes() == src.read_bytes()

    # A symlink inside dir that leads out of it is not followed.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (www / "link").symlink_to(elsewhere)
    linked = run("pp-upload", "--host", "vps", "--no-dedupe", "--path", "link/{name}{ext}", str(src), extra_env=env)
    error = parse_jsonl(linked.stdout)[0]["error"]
    assert linked.returncode == 1 and error["type"] == "bad_key" and "symlink" in error["message"]
    assert list(elsewhere.iterdir()) == []


def test_connection_refused_is_a_clear_error_and_tried_once_per_run(run, tmp_path):
    port = free_port()  # nothing listens there
    env = {"PICPIPE_VPS_TYPE": "sftp", "PICPIPE_VPS_SERVER": "127.0.0.1", "PICPIPE_VPS_PORT": str(port),
           "PICPIPE_VPS_BASE_URL": BASE, "PICPIPE_VPS_RETRIES": "1", "PICPIPE_VPS_KNOWN_HOSTS": str(tmp_path / "kh")}
    (tmp_path / "kh").write_text("")
    files = [image(tmp_path / f"{i}.png", (i, 7, 7)) for i in range(3)]
    result = run("pp-upload", "--host", "vps", *map(str, files), extra_env=env)
    assert result.returncode == 1
    errors = [r["error"] for r in parse_jsonl(result.stdout)]
    assert [e["type"] for e in errors] == ["connection_refused"] * 3
    assert f"127.0.0.1:{port}" in errors[0]["message"] and "sshd runs" in errors[0]["hint"]
    assert result.stderr.count("try 2 of 2") == 1 and "Traceback" not in result.stderr


def test_profile_mistakes_are_usage_errors(run, tmp_path):
    src = image(tmp_path / "a.png", (3, 3, 3))
    base = {"PICPIPE_VPS_TYPE": "sftp", "PICPIPE_VPS_SERVER": "127.0.0.1"}
    no_url = run("pp-upload", "--host", "vps", str(src), extra_env=base)
    assert no_url.returncode == 2 and "no public URL" in no_url.stderr
    for key, value, said in [("PORT", "99999", "port"), ("KEY_FILE", str(tmp_path / "nope"), "key_file"),
                             ("KNOWN_HOSTS", str(tmp_path / "nope"), "known_hosts")]:
        result = run("pp-upload", "--host", "vps", str(src),
                     extra_env={**base, "PICPIPE_VPS_BASE_URL": BASE, f"PICPIPE_VPS_{key}": value})
        assert result.returncode == 2 and said in result.stderr, result.stderr


def test_paramiko_is_imported_only_when_an_sftp_profile_is_used():
    code = ("import sys; from picpipe.config import host_class; keys = host_class('sftp').keys; "
            "assert 'server' in keys and 'paramiko' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_server_that_never_answers_is_a_timeout(run, tmp_path):
    import socket

    with socket.socket() as silent:  # accepts connections (the kernel does), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        env = {"PICPIPE_VPS_TYPE": "sftp", "PICPIPE_VPS_SERVER": "127.0.0.1",
               "PICPIPE_VPS_PORT": str(silent.getsockname()[1]), "PICPIPE_VPS_BASE_URL": BASE,
               "PICPIPE_VPS_RETRIES": "0", "PICPIPE_VPS_TIMEOUT": "1"}
        files = [image(tmp_path / f"{i}.png", (i, 8, 8)) for i in range(2)]
        result = run("pp-upload", "--host", "vps", *map(str, files), extra_env=env, timeout=30)
    errors = [r["error"] for r in parse_jsonl(result.stdout)]
    assert [e["type"] for e in errors] == ["timeout"] * 2, errors
    assert "within 1 s" in errors[0]["message"] and "Traceback" not in result.stderr


def test_a_dropped_connection_is_made_again(run, env, tmp_path, server):
    """sshd's session process is killed between two images: the second goes over a new connection."""
    import os
    import signal

    from conftest import command_path

    www = tmp_path / "www"
    first, second = image(tmp_path / "a.png", (1, 50, 1)), image(tmp_path / "b.png", (1, 60, 1))
    process = subprocess.Popen([command_path("pp-upload"), "--host", "vps"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**env, **sftp_env(server, www)}, cwd=tmp_path)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(str(first) + "\n")
    process.stdin.flush()
    assert parse_jsonl(process.stdout.readline())[0]["url"].startswith(BASE)
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    for pid in children:  # the session of that one connection (sshd forks one per connection)
        os.kill(int(pid), signal.SIGTERM)
    process.stdin.write(str(second) + "\n")
    process.stdin.close()
    [record] = parse_jsonl(process.stdout.read())
    assert process.wait(30) == 0, process.stderr.read() if process.stderr else ""
    assert (www / record["key"]).read_bytes() == second.read_bytes()
    assert logins(server) == 2


def test_hashed_known_hosts_entries_are_read(run, tmp_path, server):
    """Debian's ssh writes known_hosts hashed (HashKnownHosts yes): such a line is as good."""
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts.read_text())
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert known.read_text().startswith("|1|")
    src = image(tmp_path / "a.png", (4, 4, 4))
    result = run("pp-upload", "--host", "vps", str(src),
                 extra_env=sftp_env(server, tmp_path / "www", known_hosts=str(known)))
    assert result.returncode == 0, result.stderr
