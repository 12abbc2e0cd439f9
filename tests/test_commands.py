"""The stream contract of the real entry points: exit codes, stderr, pipes, signals, --help."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import command_path, ctrl_c_works, jsonl, parse_jsonl

ALL = ["pp-compress", "pp-upload", "pp-link", "pp-mark", "pp-backup", "pp-davtest",
       "pp-scan", "pp-fetch", "pp-rewrite", "pp-typora", "pp-server"]


@pytest.mark.parametrize("name", ALL)
def test_help_shows_pipeline_examples(run, name):
    result = run(name, "--help")
    assert result.returncode == 0
    examples = result.stdout.split("examples:")[1]
    pipelines = [line for line in examples.splitlines() if line.strip().startswith(("ls ", "pp-", "ssh "))]
    assert len(pipelines) >= 2
    assert any("|" in line for line in pipelines)


@pytest.mark.parametrize("sub", ["find", "merge", "import", "check"])
def test_mark_subcommand_help(run, sub):
    result = run("pp-mark", sub, "--help")
    assert result.returncode == 0
    assert f"pp-mark {sub}" in result.stdout and "examples:" in result.stdout


@pytest.mark.parametrize("name", ALL)
def test_version(run, name):
    result = run(name, "--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"{name} (picpipe) ")


def test_mixed_input_errors_as_records_exit_1_and_the_rest_goes_through(run):
    data = '{"url": "https://a.example/1.png", "mine": 7}\n{"url": broken\n\n[1]\n{"url": "https://a.example/2.png"}\n'
    result = run("pp-mark", "--ledger", "l.jsonl", input=data)
    assert result.returncode == 1
    out = parse_jsonl(result.stdout)
    assert [r.get("url") for r in out] == ["https://a.example/1.png", None, None, "https://a.example/2.png"]
    assert out[0]["mine"] == 7  # unknown fields pass through untouched
    assert out[1]["error"]["type"] == "bad_json" and "line 2" in out[1]["error"]["message"]
    assert out[2]["error"]["type"] == "not_an_object" and "line 4" in out[2]["error"]["message"]
    assert "Traceback" not in result.stderr


def test_pp_link_error_records_go_to_stderr_only(run):
    data = jsonl([
        {"url": "https://a.example/1.png", "source": "x/one.png"},
        {"path": "two.png", "error": {"stage": "upload", "type": "http_403", "message": "denied", "hint": "check"}},
        {"path": "three.png"},
        {"url": "https://a.example/4.png"},
    ])
    result = run("pp-link", "--md", input=data)
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["![one](https://a.example/1.png)", "![4](https://a.example/4.png)"]
    assert "line 2" in result.stderr and "http_403" in result.stderr and "denied" in result.stderr
    assert "line 3" in result.stderr and "no_url" in result.stderr


def test_all_good_exits_0_and_output_order_is_input_order(run):
    records = [{"url": f"https://a.example/{i}.png"} for i in range(200)]
    result = run("pp-link", "--url", "-j", "8", input=jsonl(records))
    assert result.returncode == 0
    assert result.stdout.splitlines() == [r["url"] for r in records]
    assert result.stderr == ""


def test_positional_paths(run):
    result = run("pp-link", "a.png", "b.png", "--url")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "argument 1" in result.stderr and "argument 2" in result.stderr


def test_usage_errors_exit_2_without_traceback(run):
    for args in (["--md", "--html"], ["--rewrite", "no-equals-sign"], ["-j", "0"], ["--bogus"]):
        result = run("pp-link", *args, input="")
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr
        assert result.stderr.strip()


def test_reader_closing_the_pipe_early_is_quiet(env, tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text(jsonl([{"url": f"https://a.example/{i}.png", "pad": "x" * 200} for i in range(50_000)]))
    shell = f"'{command_path('pp-link')}' --md < '{big}' | head -1; echo \"status ${{PIPESTATUS[0]}}\""
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env, timeout=60)
    lines = result.stdout.splitlines()
    assert lines[0] == "![0](https://a.example/0.png)"
    assert lines[1] == "status 141"
    assert result.stderr == ""


def test_ctrl_c_writes_finished_records_and_no_half_line(env, tmp_path):
    proc = subprocess.Popen(
        [command_path("pp-mark"), "--ledger", str(tmp_path / "l.jsonl")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=ctrl_c_works,
    )
    assert proc.stdin and proc.stdout
    received = b""
    for i in range(3):  # one record at a time, so neither pipe fills up
        proc.stdin.write(json.dumps({"url": f"https://a.example/{i}.png", "pad": "y" * 100_000}).encode() + b"\n")
        proc.stdin.flush()
        while received.count(b"\n") < i + 1:
            chunk = proc.stdout.read1(1 << 20)
            assert chunk, "pp-mark stopped writing"
            received += chunk
    time.sleep(0.2)  # pp-mark now waits for the next line
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=20)
    output = received + rest
    assert proc.returncode == 130
    assert output.endswith(b"\n")
    assert [r["url"] for r in parse_jsonl(output.decode())] == [f"https://a.example/{i}.png" for i in range(3)]
    assert b"interrupted" in err and b"Traceback" not in err
    ledger_lines = (tmp_path / "l.jsonl").read_text().splitlines()
    assert len(ledger_lines) == 3 and all(json.loads(line) for line in ledger_lines)


def test_debug_shows_a_traceback_for_an_internal_error(env):
    # A bug inside the link formatter, injected into the real entry point.
    script = ("import sys, picpipe.commands.link as c; c.format_link = lambda *a: 1 / 0; "
              "sys.argv[0] = 'pp-link'; sys.exit(c.main())")
    record = '{"url": "https://x.example/a.png"}\n'
    quiet = subprocess.run([sys.executable, "-c", script, "--json"], input=record, capture_output=True,
                           text=True, env=env, timeout=30)
    loud = subprocess.run([sys.executable, "-c", script, "--json"], input=record, capture_output=True,
                          text=True, env={**env, "PICPIPE_DEBUG": "1"}, timeout=30)
    for result in (quiet, loud):
        assert result.returncode == 1
        assert parse_jsonl(result.stdout)[0]["error"]["type"] == "internal"
        assert "ZeroDivisionError" in result.stderr
    assert "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in loud.stderr


def test_lone_surrogates_and_a_bom_in_the_middle_do_not_stop_the_stream(run, tmp_path):
    data = ('{"url": "https://x.example/1.png"}\n{"url": "https://x.example/\\udcff.png"}\n'
            '\ufeff{"url": "https://x.example/3.png"}\n')
    result = run("pp-mark", "--ledger", "l.jsonl", input=data)
    assert result.returncode == 0, result.stderr
    assert [r["url"] for r in parse_jsonl(result.stdout)] == [
        "https://x.example/1.png", "https://x.example/\udcff.png", "https://x.example/3.png"]
    assert len((tmp_path / "l.jsonl").read_text().splitlines()) == 3
    link = run("pp-link", "--json", input=data)
    assert link.returncode == 0 and len(parse_jsonl(link.stdout)) == 3


def test_progress_line_is_cleared_before_a_message(monkeypatch):
    import io

    from picpipe import console

    class FakeTTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    fake = FakeTTY()
    monkeypatch.setattr("sys.stderr", fake)
    console.progress_shown = True
    console.say("line 3: boom")
    assert fake.getvalue().startswith("\r\033[K") and fake.getvalue().endswith("boom\n")
    assert console.progress_shown is False


def test_terminal_stdin_without_paths_is_a_usage_error(env):
    import os
    import pty

    leader, follower = pty.openpty()
    try:
        result = subprocess.run([command_path("pp-link"), "--md"], stdin=follower, capture_output=True,
                                text=True, env=env, timeout=20)
    finally:
        os.close(leader)
        os.close(follower)
    assert result.returncode == 2
    assert "no input" in result.stderr


def test_unreadable_stdin_is_a_plain_error(env, tmp_path):
    target = tmp_path / "out.txt"
    shell = f"'{command_path('pp-link')}' --md 0>'{target}'"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 1
    assert "internal error" not in result.stderr and "Bad file descriptor" in result.stderr


def test_upstream_errors_are_told_once_along_a_pipeline(env):
    shell = (f"printf '{{bad\\n' | '{command_path('pp-mark')}' --ledger /dev/null | "
             f"'{command_path('pp-link')}' --json | '{command_path('pp-link')}'")
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env, timeout=30)
    assert result.stderr.count("invalid JSON") == 2  # where it was read, and where it leaves the stream
