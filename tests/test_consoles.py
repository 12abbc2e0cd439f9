"""Consoles and locales: stdout is UTF-8 JSON whatever the locale, stdin is read as UTF-8, stderr
shows what the console cannot as escapes and never raises. The real commands, run as a user would
under PYTHONIOENCODING=cp936 (a Chinese Windows console's code page), LANG=C, and a console that is
ASCII only; each run's stdout must be byte for byte that of the same run under C.UTF-8."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import command_path

NAME = "截图 1.png"
MISSING = "缺失 图.png"
UTF8 = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
LOCALES = {
    "cp936": {"PYTHONIOENCODING": "cp936"},
    "C": {"LANG": "C", "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0"},
    "ascii": {"PYTHONIOENCODING": "ascii"},
    "ascii-strict": {"PYTHONIOENCODING": "ascii:strict"},
}
#: What the console's encoding is in each locale: stderr is written in it.
STDERR_ENCODING = {"cp936": "gbk", "C": "utf-8", "ascii": "ascii", "ascii-strict": "ascii"}


def locale_env(env: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The test environment with no locale or Python I/O settings of its own, then `extra`'s."""
    kept = {k: v for k, v in env.items()
            if not k.startswith("LC_") and k not in ("LANG", "LANGUAGE", "PYTHONIOENCODING", "PYTHONUTF8",
                                                     "PYTHONCOERCECLOCALE")}
    return {**kept, **extra}


def pp(name: str, *args: str, env: dict[str, str], cwd: Path, input: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([command_path(name), *args], input=input, capture_output=True, env=env, cwd=cwd,
                          timeout=60)


def scrub(stdout: bytes, root: Path) -> list[object]:
    """The records with the run's own folder and times taken out: what must not differ by locale."""
    def clean(value: object) -> object:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not k.endswith("_at") and k != "at"}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value.replace(str(root), "<root>") if isinstance(value, str) else value

    text = stdout.decode("utf-8")  # strict: stdout is UTF-8 or the test fails here
    return [clean(json.loads(line)) for line in text.splitlines()]


def session(root: Path, env: dict[str, str]) -> dict[str, subprocess.CompletedProcess]:
    """pp-compress | pp-upload --host local | pp-mark | pp-link, pp-scan and pp-typora on 截图 1.png
    (and a missing 缺失 图.png), each stage fed the stdout of the one before."""
    root.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(root / NAME)
    (root / "post.md").write_text(f"![shot](<{NAME}>)\n![gone]({MISSING.replace(' ', '%20')})\n", encoding="utf-8")
    env = {**env, "PICPIPE_LOCAL_DIR": str(root / "host"), "PICPIPE_LOCAL_BASE_URL": "https://img.example.com/",
           "PICPIPE_LEDGER": str(root / "ledger.jsonl"), "PICPIPE_PIPELINE_HOST": "local"}
    runs = {"compress": pp("pp-compress", "--out", "out", NAME, MISSING, env=env, cwd=root)}
    runs["upload"] = pp("pp-upload", "--host", "local", "--path", "{filename}", env=env, cwd=root,
                        input=runs["compress"].stdout)
    runs["mark"] = pp("pp-mark", env=env, cwd=root, input=runs["upload"].stdout)
    runs["link"] = pp("pp-link", "--md", env=env, cwd=root, input=runs["mark"].stdout)
    runs["find"] = pp("pp-mark", "find", "--source", "截图*", env=env, cwd=root)
    runs["scan"] = pp("pp-scan", "post.md", env=env, cwd=root)
    runs["typora"] = pp("pp-typora", "--path", "t/{filename}", NAME, env=env, cwd=root)
    return runs


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    root = tmp_path_factory.mktemp("utf8") / "run"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PICPIPE_")}
    clean.update(XDG_CONFIG_HOME=str(root.parent / "config"), XDG_DATA_HOME=str(root.parent / "data"),
                 XDG_CACHE_HOME=str(root.parent / "cache"), PYTHONPATH=str(Path(__file__).parent.parent))
    return root, session(root, locale_env(clean, UTF8))


@pytest.mark.parametrize("locale", LOCALES)
def test_stdout_is_the_same_utf8_under_every_locale_and_stderr_never_raises(locale, env, tmp_path, baseline):
    base_root, base = baseline
    root = tmp_path / "run"
    runs = session(root, locale_env(env, LOCALES[locale]))
    for stage, result in runs.items():
        stderr = result.stderr.decode(STDERR_ENCODING[locale])  # strict: in the console's encoding
        assert "Traceback" not in stderr and "internal" not in stderr, (stage, stderr)
        assert result.returncode == base[stage].returncode, (stage, result.returncode, stderr)
        if stage in ("link", "typora"):
            assert result.stdout.decode("utf-8") == base[stage].stdout.decode("utf-8"), stage
        else:
            assert scrub(result.stdout, root) == scrub(base[stage].stdout, base_root), stage
    assert runs["link"].stdout.decode("utf-8") == "![截图 1](https://img.example.com/%E6%88%AA%E5%9B%BE%201.png)\n"
    assert runs["compress"].returncode == 1  # the missing file
    missing = runs["compress"].stderr.decode(STDERR_ENCODING[locale])
    shown = {"gbk": MISSING, "utf-8": MISSING, "ascii": "\\u7f3a\\u5931 \\u56fe.png"}[STDERR_ENCODING[locale]]
    assert f"{shown}: no such file" in missing, missing
    assert [r["path"] for r in scrub(runs["scan"].stdout, root)] == [f"<root>/{NAME}", f"<root>/{MISSING}"]


def test_a_pipeline_of_two_commands_under_cp936(env, tmp_path):
    Image.new("RGB", (32, 32), (0, 90, 200)).save(tmp_path / NAME)
    shell = (f"printf '%s\\n' '{NAME}' '{{\"path\": \"{MISSING}\"}}' | {command_path('pp-upload')} --host local "
             f"--path '{{filename}}' | {command_path('pp-link')} --md; echo \"${{PIPESTATUS[*]}}\" >&2")
    run_env = locale_env({**env, "PICPIPE_LOCAL_DIR": str(tmp_path / "host"),
                          "PICPIPE_LOCAL_BASE_URL": "https://img.example.com/"}, LOCALES["cp936"])
    result = subprocess.run(["bash", "-c", shell], capture_output=True, env=run_env, cwd=tmp_path, timeout=60)
    stderr = result.stderr.decode("gbk")
    assert result.stdout.decode("utf-8") == "![截图 1](https://img.example.com/%E6%88%AA%E5%9B%BE%201.png)\n", stderr
    assert stderr.splitlines()[-1] == "0 1 1", stderr  # printf, then each: one record failed
    assert f"{MISSING}: no such file" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("name", ["pp-compress", "pp-upload", "pp-link", "pp-mark", "pp-backup", "pp-davtest",
                                  "pp-scan", "pp-fetch", "pp-rewrite", "pp-typora", "pp-server", "pp-paste"])
def test_help_and_version_print_utf8_on_an_ascii_console(name, env, tmp_path):
    ascii_env = locale_env(env, LOCALES["ascii"])
    for flag in ("--help", "--version"):
        result = pp(name, flag, env=ascii_env, cwd=tmp_path)
        assert result.returncode == 0 and result.stderr == b"", result.stderr
        result.stdout.decode("utf-8")
    full = pp(name, "--help", env=locale_env(env, UTF8), cwd=tmp_path)
    assert pp(name, "--help", env=ascii_env, cwd=tmp_path).stdout == full.stdout  # pp-compress's has ©


def test_a_usage_error_naming_an_unshowable_name_is_escaped(env, tmp_path):
    result = pp("pp-upload", "--host", "图床", "x.png", env=locale_env(env, LOCALES["ascii-strict"]), cwd=tmp_path)
    stderr = result.stderr.decode("ascii")
    assert result.returncode == 2 and "\\u56fe\\u5e8a" in stderr and "Traceback" not in stderr, stderr
    bad_flag = pp("pp-link", "--截图", env=locale_env(env, LOCALES["ascii"]), cwd=tmp_path)
    assert bad_flag.returncode == 2 and "--\\u622a\\u56fe" in bad_flag.stderr.decode("ascii")


def test_ascii_file_names_say_so_per_record_instead_of_a_bug(env, tmp_path):
    """LC_ALL=C with UTF-8 mode turned off: Python's file names are ASCII, a UTF-8 name from stdin cannot be
    opened. One error record with the fix, the rest goes on; a name given as an argument still works."""
    Image.new("RGB", (16, 16), (9, 9, 9)).save(tmp_path / NAME)
    Image.new("RGB", (16, 16), (9, 9, 90)).save(tmp_path / "plain.png")
    ascii_fs = locale_env({**env, "PICPIPE_LOCAL_DIR": str(tmp_path / "host")},
                          {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"})
    result = pp("pp-upload", "--host", "local", env=ascii_fs, cwd=tmp_path, input=f"{NAME}\nplain.png\n".encode())
    records = [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]
    stderr = result.stderr.decode("ascii")
    assert result.returncode == 1 and "Traceback" not in stderr, stderr
    assert records[0]["error"]["type"] == "bad_file_name" and "PYTHONUTF8=1" in records[0]["error"]["hint"]
    assert records[0]["path"] == NAME and "url" in records[1]
    assert "\\u622a\\u56fe 1.png" in stderr
    by_argument = pp("pp-upload", "--host", "local", NAME, env=ascii_fs, cwd=tmp_path)
    assert by_argument.returncode == 0, by_argument.stderr
    ledger = pp("pp-mark", "--ledger", "账本.jsonl", "find", env=ascii_fs, cwd=tmp_path)
    assert ledger.returncode == 2 and "Traceback" not in ledger.stderr.decode("ascii"), ledger.stderr


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file names must be UTF-8")
def test_a_file_name_that_is_no_utf8_goes_through_as_an_argument(env, tmp_path):
    """A Latin-1 name from an old disk: as an argument it travels as JSON `\\udce9` (Python's
    surrogateescape), and the next stage opens the same bytes; as a line of stdin it is refused
    (records are UTF-8), with the way round in the hint."""
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(raw.decode("utf-8", "surrogateescape"))
    run_env = {**env, "PICPIPE_LOCAL_DIR": str(tmp_path / "host")}
    compress = subprocess.run([command_path("pp-compress"), "--out", "out", b"caf\xe9.png"], capture_output=True,
                              env=run_env, cwd=tmp_path, timeout=60)
    assert compress.returncode == 0, compress.stderr
    line = compress.stdout.decode("utf-8")
    assert '"source":"caf\\udce9.png"' in line
    upload = pp("pp-upload", "--host", "local", env=run_env, cwd=tmp_path, input=compress.stdout)
    assert upload.returncode == 0 and json.loads(upload.stdout)["url"], upload.stderr
    link = pp("pp-link", "--md", env=run_env, cwd=tmp_path, input=upload.stdout)
    assert link.stdout.decode("utf-8").startswith("![caf\\udce9]("), link.stdout  # valid UTF-8, nothing lost
    refused = pp("pp-upload", "--host", "local", env=run_env, cwd=tmp_path, input=b"caf\xe9.png\n")
    error = json.loads(refused.stdout)["error"]
    assert refused.returncode == 1 and error["type"] == "bad_encoding" and "xargs -0" in error["hint"], error


# -- the OS-specific code paths, both branches run here ---------------------------------------------
def test_fd_mode_on_posix_tells_closed_read_only_and_writable(tmp_path):
    from picpipe.cli import fd_mode

    read_end, write_end = os.pipe()
    try:
        assert fd_mode(read_end) == os.O_RDONLY and fd_mode(write_end) == os.O_WRONLY
    finally:
        os.close(read_end)
        os.close(write_end)
    assert fd_mode(read_end) is None


def test_fd_mode_on_windows_asks_msvcrt(monkeypatch):
    """Windows has no fcntl: an open fd is read-write, a closed one is closed (msvcrt.get_osfhandle fails)."""
    import types

    from picpipe import cli
    from picpipe.cli import fd_mode

    def get_osfhandle(fd: int) -> int:
        os.fstat(fd)  # OSError(EBADF) for a closed fd, as msvcrt raises
        return 1000 + fd

    monkeypatch.setitem(sys.modules, "msvcrt", types.SimpleNamespace(get_osfhandle=get_osfhandle))
    monkeypatch.setitem(sys.modules, "fcntl", None)  # importing it would fail, as on Windows
    monkeypatch.setattr(cli, "os", types.SimpleNamespace(name="nt", O_RDWR=os.O_RDWR))  # cli's os only
    read_end, write_end = os.pipe()
    os.close(write_end)
    try:
        assert fd_mode(read_end) == os.O_RDWR
    finally:
        os.close(read_end)
    assert fd_mode(read_end) is None


def test_hold_closed_stdio_fills_pythonw_none_streams(monkeypatch):
    """pythonw.exe (and a service) starts with sys.stderr None: messages go nowhere, without an error."""
    from picpipe import cli, console

    monkeypatch.setattr(sys, "stderr", None)
    monkeypatch.setattr(cli, "fd_mode", lambda fd: os.O_RDWR)
    cli.hold_closed_stdio()
    assert sys.stderr is not None
    stand_in = sys.stderr
    console.say("截图 \udcff")  # no exception, even for a lone surrogate
    stand_in.close()


def test_utf8_stdio_reconfigures_what_the_locale_chose(monkeypatch):
    from picpipe.cli import utf8_stdio

    out, err = io.BytesIO(), io.BytesIO()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("截图\n".encode()), encoding="gbk"))
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out, encoding="gbk"))
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(err, encoding="ascii", errors="strict"))
    utf8_stdio()
    assert sys.stdin.readline() == "截图\n"
    sys.stdout.write("截图 \udcff\n")
    sys.stderr.write("截图\n")
    sys.stdout.flush()
    sys.stderr.flush()
    assert out.getvalue() == "截图 \\udcff\n".encode()
    assert err.getvalue() == b"\\u622a\\u56fe\n"
