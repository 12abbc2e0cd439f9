"""Shell completion: `pp-... --print-completion bash` prints a script for the shell to source.

Why shtab (a static script generated from the argparse parsers) and not argcomplete (Python
answers each TAB): a TAB then starts no Python, and a command's normal start does no work for
completion. Importing this module costs an `argparse.Action`; shtab and the parsers of the
subcommands are loaded only when a script is asked for.

pp-mark and pp-backup choose a subcommand with `cli.split_subcommand`, each its own parser; the
script sees them joined under one parser, so that `pp-mark f<TAB>` says `find` and
`pp-mark find --<TAB>` lists find's options. Options naming a profile complete the host types
and, in bash, zsh and PowerShell, the `[profiles.NAME]` of the config file as it is at TAB time; file and
folder options complete paths, other values nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

SHELLS = ("bash", "zsh", "tcsh", "fish", "powershell")

#: What a value of each metavar is, for the shell: a file, a folder or a profile name.
FILE_METAVARS = {"FILE", "PATH", "DOC_OR_FOLDER"}
DIR_METAVARS = {"DIR"}
PROFILE_METAVARS = {"PROFILE"}


class PrintCompletion(argparse.Action):
    """`--print-completion SHELL`: like --version, acts during parsing, so that a command's
    required options (pp-upload --host) need not be given."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, choices=SHELLS, metavar="SHELL", default=argparse.SUPPRESS,
                         help="print the completion script of this command for SHELL "
                              f"({', '.join(SHELLS)}) and exit; see the README, Shell completion")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        text = script(parser, str(values))
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            from picpipe.cli import broken_pipe

            parser.exit(broken_pipe())
        parser.exit(0)


OPTION = "--print-completion"


def add_option(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """--print-completion SHELL, said in the epilog of every command's --help and registered only
    when `argv` asks for it: always there, it would take argparse's abbreviations of a command's own
    --p... options (`pp-server --p 8080` for --port, `pp-upload --pa` for --path)."""
    parser.epilog = (parser.epilog + "\n" if parser.epilog else "") + (
        f"shell completion:\n  {OPTION} SHELL   print this command's completion script for SHELL and exit\n"
        f"      ({', '.join(SHELLS)}); see the README, Shell completion\n")
    if any(word == OPTION or word.startswith(OPTION + "=") for word in argv):
        parser.add_argument(OPTION, action=PrintCompletion)


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of the command `parser` belongs to (pp-mark's for `pp-mark find`)."""
    import shtab

    prog = parser.prog.split()[0]
    whole = command_parser(prog) or parser
    preamble = {"bash": BASH_PROFILES, "zsh": ZSH_PROFILES, "powershell": POWERSHELL_PROFILES}.get(shell, "")
    preamble = preamble.replace("@TYPES@", host_type_words()).replace(
        "@TYPE_LIST@", ", ".join(f"'{word}'" for word in host_type_words().split()))
    if shell == "bash" and any(isinstance(a, argparse._SubParsersAction) for a in whole._actions):
        # The first word of pp-mark/pp-backup is a subcommand or, for the default one, an image.
        preamble += f"\n{shell_prefix(prog)}_pos_0_COMPGEN=_shtab_compgen_files\n"
    return str(shtab.complete(whole, shell, preamble=preamble))


def command_parser(prog: str) -> argparse.ArgumentParser | None:
    """The parser of the command `prog` with its subcommands under it; None for no such command."""
    import importlib

    from picpipe.cli import Command
    from picpipe.commands import COMMANDS

    if prog not in COMMANDS:
        return None
    module = importlib.import_module(COMMANDS[prog])
    classes: dict[str, type[Command]] = getattr(module, "COMMAND_CLASSES", {}) or {
        value.prog: value for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Command) and value.prog == prog}
    roots = [cls for cls in classes.values() if cls.prog == prog]
    if not roots:
        return None
    parser = roots[0]().build_parser([OPTION])  # the script completes --print-completion too
    subcommands = {name: cls for name, cls in classes.items() if cls is not roots[0]}
    if subcommands:
        # The default subcommand's own positional (its images) would hide the subcommands from
        # shtab's zsh and shift its bash positions: the subcommands take the first place.
        for action in parser._get_positional_actions():
            parser._remove_action(action)
            parser._positionals._group_actions.remove(action)
        choice = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        for name, cls in subcommands.items():
            choice.add_parser(name, parents=[cls().build_parser([])], add_help=False,
                              help=cls.description.split("\n")[0], description=cls.description)
    annotate(parser)
    return parser


def annotate(parser: argparse.ArgumentParser) -> None:
    """Tell shtab what each value is (`action.complete`), here and in every subcommand."""
    import shtab

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                annotate(subparser)
        elif action.choices is None and action.nargs != 0:
            metavar = action.metavar if isinstance(action.metavar, str) else ""
            if metavar in PROFILE_METAVARS or (action.dest == "host" and metavar == "NAME"):
                action.complete = profiles()  # type: ignore[attr-defined]
            elif metavar in DIR_METAVARS:
                action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
            elif metavar in FILE_METAVARS or not action.option_strings:
                action.complete = shtab.FILE  # type: ignore[attr-defined]


def profiles() -> dict[str, str]:
    """A profile name: a host type (`--host local`), or, in bash, zsh and PowerShell, a profile of the config file."""
    types = host_type_words()
    return {"bash": "_picpipe_profiles", "zsh": "_picpipe_profiles", "powershell": "_picpipe_profiles",
            "tcsh": f"({types})", "fish": types}


def host_type_words() -> str:
    from picpipe.config import host_types

    return " ".join(host_types())


def shell_prefix(prog: str) -> str:
    """shtab's name for the command's shell variables."""
    return re.sub(r"\W", "_", f"_shtab_{prog}")


#: The config file's profiles, read by the shell at TAB time (a file of config.py's names: PICPIPE_CONFIG,
#: else $XDG_CONFIG_HOME/picpipe/config.toml); [profiles.NAME] and [profiles."NAME"] tables.
_CONFIG = '"${PICPIPE_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/picpipe/config.toml}"'
_PROFILE_NAMES = (
    r"""sed -n 's/^[[:space:]]*\[[[:space:]]*profiles\."\{0,1\}\([A-Za-z0-9][A-Za-z0-9_-]*\)"\{0,1\}"""
    rf"""[[:space:]]*\].*/\1/p' {_CONFIG} 2>/dev/null"""
)
BASH_PROFILES = f"""\
_picpipe_profiles() {{
  compgen -W "@TYPES@ $({_PROFILE_NAMES})" -- "$1"
}}
"""
ZSH_PROFILES = f"""\
_picpipe_profiles() {{
  compadd -- @TYPES@ $({_PROFILE_NAMES})
}}
"""
#: The same for PowerShell (shtab calls it with the word being completed): config.py's path, on Windows too.
POWERSHELL_PROFILES = r"""
function _picpipe_profiles {
  param([string]$WordToComplete)
  $config = $env:PICPIPE_CONFIG
  if (-not $config) {
    $base = if ($env:XDG_CONFIG_HOME) { $env:XDG_CONFIG_HOME } else { Join-Path $HOME '.config' }
    $config = Join-Path (Join-Path $base 'picpipe') 'config.toml'
  }
  $names = @(@TYPE_LIST@)
  if (Test-Path -LiteralPath $config) {
    $names += Get-Content -LiteralPath $config -ErrorAction SilentlyContinue | ForEach-Object {
      if ($_ -match '^\s*\[\s*profiles\."?([A-Za-z0-9][A-Za-z0-9_-]*)"?\s*\]') { $Matches[1] }
    }
  }
  $names | Where-Object { $_ -like "$WordToComplete*" }
}
"""
