"""Configuration (DESIGN §3): one TOML file of named profiles, overridable from the environment.

Precedence, lowest first: the file, `PICPIPE_*` environment variables, command-line flags.
A value written `env:NAME` is read from the environment when the profile is used, so the file
itself can hold no secret. Every secret value seen is registered with `picpipe.redact`.

    ledger = "~/notes/picpipe-ledger.jsonl"     # optional; or a [ledger] table:

    [ledger]
    path = "~/notes/picpipe-ledger.jsonl"       # optional
    sync = "nutstore"                           # after a run that added lines: pp-backup ledger --to nutstore
    sync_every = 60                             # seconds at least between two automatic syncs

    [link]                                      # pp-link defaults
    format = "md"
    rewrite = ["https://old-cdn.example.com/=https://cdn.example.com/"]

    [compress]                                  # pp-compress defaults (also in pp-typora/pp-server)
    watermark = "© me"                          # or watermark_image = "logo.png" (beside this file)

    [profiles.nutstore]
    type = "webdav"
    url = "https://dav.jianguoyun.com/dav/picpipe/"
    user = "me@example.com"
    password = "env:NUTSTORE_APP_PASSWORD"

Environment: `PICPIPE_<PROFILE>_<KEY>` (`PICPIPE_NUTSTORE_PASSWORD`), `PICPIPE_LINK_<KEY>`, `PICPIPE_COMPRESS_<KEY>`,
`PICPIPE_LEDGER` (the path), `PICPIPE_LEDGER_SYNC` (a profile, or off), `PICPIPE_LEDGER_SYNC_EVERY`,
`PICPIPE_CONFIG` (the file itself).
"""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picpipe import console, redact
from picpipe.errors import UsageError

if TYPE_CHECKING:
    from picpipe.hosts import Host

#: Keys every profile understands.
COMMON_KEYS = ("type", "endpoint", "base_url", "path", "timeout", "retries", "breaker")


@functools.cache
def host_types() -> tuple[str, ...]:
    """The profile types: the host modules in picpipe/hosts/ (listed, not imported; once a process)."""
    import importlib.util
    import pkgutil

    spec = importlib.util.find_spec("picpipe.hosts")
    folders = spec.submodule_search_locations if spec is not None else None
    return tuple(sorted(m.name for m in pkgutil.iter_modules(folders or []) if m.name not in HOST_HELPERS))


#: Modules in picpipe/hosts/ that are shared code, not host types.
HOST_HELPERS = {"signing"}


def host_class(kind: object) -> type[Host] | None:
    """The `Host` subclass of a host type, which declares its profile keys (`keys`) and the types
    of their values (`key_types`); None for no such type. Imports that one module, as opening
    the host does anyway."""
    import importlib

    if not isinstance(kind, str) or kind not in host_types():
        return None
    host: type[Host] = importlib.import_module(f"picpipe.hosts.{kind}").HOST
    return host


#: Top-level tables other than [profiles]; their names cannot be profile names.
SECTIONS = {
    "link": ("format", "template", "rewrite"),
    # What pp-typora and pp-server run on each image: [pp-compress |] pp-upload | pp-mark [| pp-backup].
    "pipeline": ("host", "compress", "backup", "path"),
    "server": ("host", "port", "secret"),
    # pp-compress defaults, so that pp-typora and pp-server mark what they publish.
    "compress": ("watermark", "watermark_image", "watermark_position", "watermark_opacity", "watermark_size",
                 "watermark_min", "watermark_margin", "watermark_font"),
}
#: The [ledger] table; a plain `ledger = "path"` is its path alone.
LEDGER_KEYS = ("path", "sync", "sync_every")
#: Seconds at least between two automatic syncs of the ledger, unless [ledger] sync_every says.
SYNC_EVERY = 60.0
TOP_LEVEL_KEYS = ("ledger", "profiles", *SECTIONS)
RESERVED_NAMES = {"link", "ledger", "config", "debug", "profiles", "pipeline", "server", "compress"}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def truth(value: Any) -> bool | None:
    """A setting's yes or no: a TOML boolean, or the text of an environment variable (true/false,
    1/0, yes/no, on/off); None when it says neither (unset, or a typo the caller decides about)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    return True if text in ("1", "true", "yes", "on") else False if text in ("0", "false", "no", "off") else None


def xdg_home(variable: str, fallback: str, environ: Mapping[str, str] = os.environ) -> Path:
    """picpipe's folder under an XDG base directory (`XDG_DATA_HOME`, else `~/<fallback>`)."""
    return Path(environ.get(variable) or os.path.join(os.path.expanduser("~"), fallback)) / "picpipe"


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get("PICPIPE_CONFIG"):
        return Path(environ["PICPIPE_CONFIG"]).expanduser()
    return xdg_home("XDG_CONFIG_HOME", ".config", environ) / "config.toml"


def env_name(*parts: str) -> str:
    """`PICPIPE_MY_NAS_PASSWORD` for profile `my-nas`, key `password`."""
    return "_".join(["PICPIPE", *(p.upper().replace("-", "_") for p in parts)])


class Config:
    """A loaded configuration file (possibly none) plus the environment it resolves against."""

    def __init__(self, path: Path | None = None, data: dict[str, Any] | None = None,
                 environ: Mapping[str, str] = os.environ) -> None:
        self.path = path
        self.data = data or {}
        self.environ = environ

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        return self.data.get("profiles", {})

    def section_layers(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A settings table such as [link] as (PICPIPE_LINK_<KEY> values, file values).

        Kept apart so that a command can let a whole layer win (PICPIPE_LINK_FORMAT beats a
        `template` in the file); `resolve` follows `env:` only for the values actually used.
        """
        names = {key: env_name(name, key) for key in SECTIONS[name]}
        env = {key: self.environ[var] for key, var in names.items() if self.environ.get(var)}  # empty = unset
        return env, dict(self.data.get(name, {}))

    def ledger_table(self) -> dict[str, Any]:
        """The file's [ledger] settings; `ledger = "path"` is {"path": path}."""
        value = self.data.get("ledger")
        return dict(value) if isinstance(value, dict) else {} if value is None else {"path": value}

    def ledger(self) -> str | None:
        """The ledger path from PICPIPE_LEDGER or the file's `ledger` (or [ledger] path), if either is set."""
        value = self.environ.get("PICPIPE_LEDGER") or self.resolve("[ledger]", "path", self.ledger_table().get("path"))
        return os.path.expanduser(value) if value else None

    def ledger_sync(self) -> tuple[str | None, float]:
        """(the profile the ledger is synced to after a run that added lines to it, or None; the
        least seconds between two such syncs), from PICPIPE_LEDGER_SYNC[_EVERY] or [ledger]."""
        table = self.ledger_table()
        name = self.environ.get("PICPIPE_LEDGER_SYNC") or self.resolve("[ledger]", "sync", table.get("sync"))
        every = self.environ.get("PICPIPE_LEDGER_SYNC_EVERY") or self.resolve("[ledger]", "sync_every",
                                                                               table.get("sync_every"))
        if name is not None and truth(name) is False:  # PICPIPE_LEDGER_SYNC=off for one run
            name = None
        if name is not None and not (isinstance(name, str) and _NAME.match(name)):
            raise UsageError(f"[ledger] sync = {name!r} is no profile name",
                             "give the name of a backup target profile (type local or webdav), e.g. sync = "
                             "\"nutstore\", or PICPIPE_LEDGER_SYNC=off")
        return name, SYNC_EVERY if every in (None, "") else _seconds(every)

    def profile(self, name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The settings of profile `name`: file < PICPIPE_<NAME>_<KEY> < overrides (flags).

        A name that is no profile but a type (`--host local`) gives that type's defaults.
        """
        if not _NAME.match(name):
            raise UsageError(f"bad profile name {name!r}", "profile names are letters, digits, '-' and '_'")
        if name in self.profiles:
            values = dict(self.profiles[name])
        elif name in host_types() or self.environ.get(env_name(name, "type")):
            values = {"type": name}
        else:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise UsageError(
                f"no profile named {name!r} (profiles in {self.path or 'the configuration'}: {known})",
                f"add [profiles.{name}] with a type to {self.path or config_path()}, "
                f"or set {env_name(name, 'type')}; types: {', '.join(host_types())}",
            )
        if self.environ.get(env_name(name, "type")):  # first: the type says which other keys to read
            values["type"] = self.environ[env_name(name, "type")]
        kind = values.get("type")
        host = host_class(kind)
        if host is None:
            raise UsageError(f"profile {name!r} has type {kind!r}", f"use one of: {', '.join(host_types())}")
        if name in self.profiles:  # the file's keys of this type, checked now that the type is known
            _check_type_keys(self.path, name, self.profiles[name], host)
        for key in (*COMMON_KEYS, *host.keys):
            if self.environ.get(env_name(name, key)):  # set and not empty
                values[key] = self.environ[env_name(name, key)]
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        resolved = {k: self.resolve(f"[profiles.{name}]", k, v) for k, v in values.items()}
        resolved["name"] = name
        return resolved

    def resolve(self, where: str, key: str, value: Any) -> Any:
        """Follow `env:NAME`; register secrets so that no sink can print them."""
        if isinstance(value, str) and value.startswith("env:"):
            value = read_env(value[4:], f"{where} {key} = \"{value}\"", self.environ)
        if redact.is_secret_key(key):
            redact.register(value)
        return value


def read_env(variable: str, said: str, environ: Mapping[str, str]) -> str:
    """The environment variable a setting reads (`said`: where, and what is written there); a usage
    error with what to do when it is not set."""
    if variable not in environ:
        raise UsageError(f"{said} but the environment variable {variable} is not set",
                         f"export {variable}=... before running, or write the value in the file")
    return environ[variable]


def _seconds(value: Any) -> float:
    """[ledger] sync_every: a number of seconds, 0 or more."""
    import math

    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0 <= number < math.inf:
        raise UsageError(f"[ledger] sync_every = {value!r} is not a number of seconds (0 or more)",
                         "e.g. sync_every = 60 in [ledger], or PICPIPE_LEDGER_SYNC_EVERY=60")
    return number


def load(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """Read the configuration file if there is one; a missing default file is an empty config."""
    _register_environment_secrets(environ)
    explicit = path is not None or bool(environ.get("PICPIPE_CONFIG"))
    file = Path(path).expanduser() if path is not None else config_path(environ)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"config file {file} does not exist", "check PICPIPE_CONFIG or --config") from None
        return Config(None, {}, environ)
    except OSError as exc:
        raise UsageError(f"cannot read config file {file}: {exc.strerror}") from None
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {file} is not valid TOML: {exc}", "see the example in README.md") from None
    config = Config(file, data, environ)
    _check(config)
    return config


def _register_environment_secrets(environ: Mapping[str, str]) -> None:
    for name, value in environ.items():
        if name.startswith("PICPIPE_") and any(name.lower().endswith("_" + key) for key in redact.SECRET_KEYS):
            redact.register(environ.get(value[4:]) if value.startswith("env:") else value)


#: Expected shapes of the settings outside [profiles]: (python types, how to say it).
SETTING_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "ledger": ((str, dict), "a file path string or a [ledger] table"),
    "ledger.path": ((str,), "a file path string"),
    "ledger.sync": ((str,), "a profile name (a backup target of type local or webdav)"),
    "ledger.sync_every": ((int, float), "a number of seconds"),
    "link.format": ((str,), "a string: md, html, url or bbcode"),
    "link.template": ((str,), "a template string"),
    "link.rewrite": ((str, list), 'a string "OLD=NEW" or a list of them'),
    "pipeline.host": ((str, list), "a profile name or a list of them"),
    "pipeline.compress": ((bool,), "true or false"),
    "pipeline.backup": ((str, list), "a profile name or a list of them"),
    "pipeline.path": ((str,), "a key template"),
    "server.host": ((str,), "an address to listen on, e.g. 127.0.0.1"),
    "server.port": ((int,), "a port number"),
    "server.secret": ((str,), "a string clients send as Authorization: Bearer ..."),
    "compress.watermark": ((str,), "the watermark text"),
    "compress.watermark_image": ((str,), "the path of the watermark image (PNG with transparency)"),
    "compress.watermark_position": ((str,), "a position such as bottom-right"),
    "compress.watermark_opacity": ((int, float), "a number above 0, at most 1"),
    "compress.watermark_size": ((int, float, str), 'a share of the image such as 0.15 or "15%"'),
    "compress.watermark_min": ((int,), "a number of pixels"),
    "compress.watermark_margin": ((int, float, str), 'pixels such as 16, or "2%" of the shorter side'),
    "compress.watermark_font": ((str,), "the path of a font file"),
}


#: Profile keys whose value is no string, and what it may be (a string also does: the
#: environment's PICPIPE_<PROFILE>_<KEY> are text). Every other known profile key is a string.
PROFILE_VALUE_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "timeout": ((int, float, str), "a number of seconds"),
    "retries": ((int, str), "a whole number"),
    "breaker": ((int, str), "a whole number of failed requests"),
}


def _toml_kind(value: Any) -> str:
    """What a TOML value is, said without the value itself (it may be a password)."""
    kinds = {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "a table"}
    return kinds.get(type(value), "a date or time")


def _check_profile_value(where: Path | None, name: str, key: str, value: Any,
                         declared: tuple[tuple[type, ...], str] | None = None) -> None:
    """`password = 5` is a mistake in the file, said as one, not a wrong password at the server."""
    types, expected = declared or PROFILE_VALUE_TYPES.get(key, ((str,), "a string (in quotes)"))
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise UsageError(f"{where}: [profiles.{name}] {key} is {_toml_kind(value)}, it must be {expected}",
                         f'write it as {key} = "..." in quotes' if types == (str,) else "see the example in README.md")


def _check_type(where: Path | None, name: str, value: Any) -> None:
    types, expected = SETTING_TYPES[name]
    if not isinstance(value, types) or (isinstance(value, list) and not all(isinstance(v, str) for v in value)):
        raise UsageError(f"{where}: {name} must be {expected}, not {value!r}", "see the example in README.md")


def _check_type_keys(where: Path | None, name: str, values: Mapping[str, Any], host: type[Host]) -> None:
    """A profile's keys of its type, when it is used: the types of their values (a string unless
    the host's `key_types` says more), and a warning for a key no profile of the type knows."""
    known = (*COMMON_KEYS, *host.keys)
    for key, value in values.items():
        if key in host.keys:
            _check_profile_value(where, name, key, value, host.key_types.get(key))
        elif key not in known:
            console.warn(f"{where}: [profiles.{name}] has unknown key {key!r} (known: {', '.join(known)})")


def _check(config: Config) -> None:
    """Validate names, keys and types, register literal secrets, warn about readable secret files."""
    data, where = config.data, config.path
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            console.warn(f"{where}: unknown top-level key {key!r} (known: {', '.join(TOP_LEVEL_KEYS)})")
    if "ledger" in data:
        _check_type(where, "ledger", data["ledger"])
        for key, value in config.ledger_table().items() if isinstance(data["ledger"], dict) else ():
            if key not in LEDGER_KEYS:
                console.warn(f"{where}: [ledger] has unknown key {key!r} (known: {', '.join(LEDGER_KEYS)})")
            else:
                _check_type(where, f"ledger.{key}", value)
        config.ledger_sync()  # a profile name and a number of seconds, said now rather than after a run
    for section, keys in SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise UsageError(f"{where}: {section} must be a table ([{section}])", "see the example in README.md")
        for key, value in table.items():
            if key not in keys:
                console.warn(f"{where}: [{section}] has unknown key {key!r} (known: {', '.join(keys)})")
            else:
                _check_type(where, f"{section}.{key}", value)
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise UsageError(f"{where}: [profiles] must hold tables such as [profiles.NAME]")
    server_secret = data.get("server", {}).get("secret")
    literal_secret = isinstance(server_secret, str) and not server_secret.startswith("env:")
    if literal_secret:
        redact.register(server_secret)
    for name, values in profiles.items():
        if not _NAME.match(name) or name in RESERVED_NAMES:
            raise UsageError(f"{where}: bad profile name {name!r}",
                             "use letters, digits, '-' and '_', and none of: " + ", ".join(sorted(RESERVED_NAMES)))
        for key, value in values.items():
            if key in COMMON_KEYS:
                _check_profile_value(where, name, key, value)
            if redact.is_secret_key(key) and isinstance(value, str):
                if value.startswith("env:"):
                    redact.register(config.environ.get(value[4:]))
                else:
                    redact.register(value)
                    literal_secret = True
                    if len(value) < redact.MIN_SUBSTRING_LENGTH:
                        console.warn(f"{where}: [profiles.{name}] {key} is shorter than {redact.MIN_SUBSTRING_LENGTH}"
                                     " characters: picpipe can mask it only where it stands alone or in a URL")
    if literal_secret and where is not None and os.name == "posix":
        mode = where.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            console.warn(f"{where} holds secrets and is readable by other users; run: chmod 600 {where}"
                         " (or write secrets as env:NAME)")
