"""Shell completion (`--print-completion`): each command's script is valid, and bash, driven as
it is on a TAB (COMP_WORDS, COMP_CWORD, the registered function), offers the options,
subcommands, profile names and paths it should."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from picpipe.commands import COMMANDS
from picpipe.completion import SHELLS, command_parser

#: Sources the script, fills the variables bash sets on a TAB, calls the function `complete -p`
#: names for the command, and prints one candidate a line.
DRIVER = r"""
source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
spec=$(complete -p "$1") || exit 3
fn=${spec##* -F }; fn=${fn%% *}
"$fn" || exit 4
printf '%s\n' "${COMPREPLY[@]}"
"""


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every command's bash script, as the command prints it."""
    folder = tmp_path_factory.mktemp("completion")
    found = {}
    for name in COMMANDS:
        done = run_command(name, "--print-completion", "bash")
        assert done.returncode == 0, done.stderr
        found[name] = folder / f"{name}.bash"
        found[name].write_text(done.stdout)
    return found


def run_command(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", COMMANDS[name], *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def complete(scripts: dict[str, Path], tmp_path: Path, env: dict[str, str]):
    """complete("pp-mark", "find", "--h") → what bash offers for the last word, in a folder
    holding photo.png, notes.md and the folder out/, with a config of two profiles."""
    (tmp_path / "work" / "out").mkdir(parents=True)
    (tmp_path / "work" / "photo.png").write_bytes(b"")
    (tmp_path / "work" / "notes.md").write_text("")
    config = tmp_path / "config.toml"
    config.write_text('[profiles.nutstore]\ntype = "webdav"\n\n[profiles.nutstore.headers]\nx = "y"\n\n'
                      '[profiles."my-r2"]\ntype = "s3"\n\n[link]\nformat = "md"\n')

    def _complete(name: str, *words: str) -> list[str]:
        done = subprocess.run(["bash", "--norc", "-c", DRIVER, "driver", str(scripts[name]), name, *words],
                              capture_output=True, text=True, cwd=tmp_path / "work", timeout=30,
                              env={**env, "PICPIPE_CONFIG": str(config)})
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if line]
    return _complete


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_prints_a_bash_script_that_offers_all_its_options(name: str, scripts: dict[str, Path],
                                                                      complete) -> None:
    checked = subprocess.run(["bash", "-n", str(scripts[name])], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    parser = command_parser(name)
    assert parser is not None
    offered = set(complete(name, "--"))
    assert {"--help", "--version", "--print-completion", "--debug"} <= offered
    assert offered == {s for s in option_strings(parser) if s.startswith("--")}


@pytest.mark.parametrize("name, subcommands", [("pp-mark", {"find", "merge", "import", "check", "index"}),
                                               ("pp-backup", {"ledger", "restore"})])
def test_subcommands_complete_with_their_own_options(name: str, subcommands: set[str], complete) -> None:
    first = set(complete(name, ""))
    assert subcommands <= first
    assert {"photo.png", "notes.md"} <= first  # the default subcommand takes images
    parser = command_parser(name)
    assert parser is not None
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for sub in subcommands:
        assert complete(name, sub[:2]) == [s for s in sorted(subcommands) if s.startswith(sub[:2])] + \
            [f for f in ("notes.md",) if f.startswith(sub[:2])]
        # after options of the main command, as split_subcommand finds it
        offered = set(complete(name, "--ledger", "x.jsonl", sub, "--"))
        assert offered == {s for s in option_strings(choices[sub]) if s.startswith("--")}


def test_subcommand_options(complete) -> None:
    assert complete("pp-mark", "find", "--s") == ["--sha256", "--since", "--source"]
    assert complete("pp-backup", "restore", "--o") == ["--out"]
    assert "--to" not in complete("pp-mark", "find", "--")


def test_profile_options_offer_host_types_and_the_config_profiles(complete) -> None:
    offered = complete("pp-upload", "--host", "")
    assert {"local", "webdav", "s3", "qiniu", "github", "nutstore", "my-r2"} <= set(offered)
    assert "headers" not in offered and "link" not in offered and "photo.png" not in offered
    assert complete("pp-upload", "--host", "nut") == ["nutstore"]
    assert complete("pp-backup", "--to", "n") == ["nutstore"]
    assert complete("pp-davtest", "--target", "my") == ["my-r2"]
    assert complete("pp-mark", "find", "--host", "nu") == ["nutstore"]


def test_profiles_without_a_config_file_are_the_host_types(complete, tmp_path: Path) -> None:
    (tmp_path / "config.toml").unlink()
    assert complete("pp-upload", "--host", "l") == ["local", "lsky"]


def test_paths_complete_files_or_folders_and_other_values_nothing(complete) -> None:
    assert complete("pp-compress", "--watermark-image", "ph") == ["photo.png"]
    assert complete("pp-compress", "--out", "") == ["out"]
    assert complete("pp-backup", "restore", "--out", "") == ["out"]
    assert complete("pp-link", "--ledger", "n") == ["notes.md"]
    assert complete("pp-rewrite", "no") == ["notes.md"]
    assert complete("pp-link", "-j", "") == []
    assert complete("pp-link", "--template", "") == []
    assert complete("pp-compress", "--format", "") != []


def test_the_shells_are_the_choices_of_the_option(complete) -> None:
    assert complete("pp-link", "--print-completion", "") == list(SHELLS)


def test_a_subcommand_prints_its_commands_script_and_required_options_are_not_asked_for() -> None:
    whole = run_command("pp-mark", "--print-completion", "bash")
    assert whole.returncode == 0 and "_shtab_pp_mark_find_option_strings" in whole.stdout
    assert run_command("pp-mark", "find", "--print-completion", "bash").stdout == whole.stdout
    upload = run_command("pp-upload", "--print-completion", "zsh")  # --host is required otherwise
    assert upload.returncode == 0 and upload.stdout.startswith("#compdef pp-upload")


def test_an_unknown_shell_is_a_usage_error() -> None:
    done = run_command("pp-link", "--print-completion", "cmd.exe")
    assert done.returncode == 2 and done.stdout == ""
    assert "invalid choice: 'cmd.exe'" in done.stderr and "bash" in done.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_every_shell_gets_a_script(shell: str) -> None:
    done = run_command("pp-backup", "--print-completion", shell)
    assert done.returncode == 0, done.stderr
    assert "restore" in done.stdout and "--to" in done.stdout
    if shell in ("tcsh", "fish"):  # the host types as words: fish would run "(local ...)" as a command
        assert ("/(alist aliyun" if shell == "tcsh" else '-xka "alist aliyun') in done.stdout


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh not installed (make test installs it as root)")
@pytest.mark.parametrize("name", ["pp-mark", "pp-upload", "pp-backup"])
def test_zsh_registers_the_script_from_fpath_and_from_eval(name: str, tmp_path: Path) -> None:
    """The README's two ways: the file _NAME in a folder of $fpath before compinit, or eval."""
    script = tmp_path / f"_{name}"
    script.write_text(run_command(name, "--print-completion", "zsh").stdout)
    assert subprocess.run(["zsh", "-n", str(script)]).returncode == 0
    function = "_shtab_" + name.replace("-", "_")
    for setup, registered in ((f"fpath=({tmp_path} $fpath); compinit -u -D", [f"_{name}", "0"]),
                              (f'compinit -u -D && eval "$(<{script})"', [function, "1"])):
        done = subprocess.run(["zsh", "-f", "-c", f"autoload -Uz compinit && {setup} && "
                               f"print -r -- $_comps[{name}] ${{+functions[_picpipe_profiles]}}"],
                              capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == registered  # the profile names: at once, or when autoloaded


def test_a_normal_start_does_not_load_shtab(env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "picpipe.commands.link", "--md"],
                          input='{"url": "https://img.example.com/a.png"}\n', capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.stdout == "![a](https://img.example.com/a.png)\n"
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "picpipe.completion" in imported and "picpipe.config" in imported
    assert "shtab" not in imported and "picpipe.commands.mark" not in imported


@pytest.mark.parametrize(("name", "args", "field"), [
    ("pp-server", ["--p", "8080"], "port"), ("pp-upload", ["--p", "{sha256}{ext}", "--host", "local"], "path"),
    ("pp-fetch", ["--p", "2"], "per_host"),
])
def test_abbreviations_of_a_commands_own_options_still_parse(name: str, args: list[str], field: str) -> None:
    """--print-completion is registered only when asked for: `pp-server --p 8080` is --port, as before it came."""
    done = run_command(name, *args, "--help")
    assert done.returncode == 0 and "ambiguous" not in done.stderr, done.stderr
    assert "--print-completion SHELL" in done.stdout  # said in the epilog all the same
    classes = {cls.prog: cls for cls in vars(__import__(COMMANDS[name], fromlist=["x"])).values()
               if isinstance(cls, type) and getattr(cls, "prog", None) == name}
    parsed = classes[name]().build_parser(args).parse_args(args)
    assert str(getattr(parsed, field)) == args[1]


def test_powershell_completes_profile_names(tmp_path: Path) -> None:
    """shtab calls the function named for --host with the word; it offers the host types and the
    config's profiles (read as bash reads them). No pwsh here: the script's wiring is checked."""
    script = run_command("pp-upload", "--print-completion", "powershell").stdout
    assert "'_shtab_pp_upload___host' = '_picpipe_profiles'" in script
    function = script[script.index("function _picpipe_profiles"):]
    assert "'local', " in function and "'webdav'" in function and "profiles\\." in function
    backup = run_command("pp-backup", "--print-completion", "powershell").stdout
    assert "___to' = '_picpipe_profiles'" in backup
