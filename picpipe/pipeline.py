"""The configured pipeline that pp-typora and pp-server run on the images an editor sends.

    [pp-fetch |] [pp-compress |] pp-upload --host H [--host M ...] [--path T] | pp-mark [| pp-backup --to B ...]

as set in the `[pipeline]` section of the configuration (or PICPIPE_PIPELINE_*, or flags):

    [pipeline]
    host = "qiniu"                 # required: the profile pp-upload --host uses (or a list:
                                   # ["qiniu", "github"] uploads to each, the URL is the first's)
    compress = true                # run pp-compress first (default false)
    backup = ["nutstore", "nas"]   # pp-backup --to each of these (a name or a list)
    path = "blog/{sha256:12}{ext}" # key template (default: the host profile's)

The stages are the real commands, connected by pipes, so an editor gets exactly what the same
shell pipeline would give, with the same ledger, dedupe, retries and error records. Remote
images (`https://...` items, Typora's "apply to online images") go through pp-fetch first and
are re-uploaded to the configured host, as PicGo does. `Pipeline.delete` runs
`pp-upload --host H --delete | pp-mark` on ledger records: the object goes, the ledger keeps a
tombstone.

    from picpipe import config, pipeline
    for outcome in pipeline.Pipeline(pipeline.settings(config.load())).run(["/abs/a.png"]):
        print(outcome.url or outcome.problem())
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, NamedTuple

from picpipe import console
from picpipe.config import Config, config_path, truth, xdg_home
from picpipe.errors import PicpipeError, UsageError
from picpipe.stream import Record

#: The stages after pp-upload whose failure leaves the image uploaded.
AFTER_UPLOAD = ("mark", "backup")
#: How many of a stage's last stderr lines explain why it stopped.
TAIL_LINES = 5

EXAMPLE = """add a [pipeline] section to {path}, for example:

    [pipeline]
    host = "myhost"          # a [profiles.myhost] section, or a type such as "local"
    compress = true          # optional: pp-compress first
    backup = "nutstore"      # optional: pp-backup --to this profile (or a list)

or set PICPIPE_PIPELINE_HOST=myhost"""


class Settings(NamedTuple):
    """What the pipeline runs: the [pipeline] section, resolved and checked."""

    #: The first host: the URL the editor gets is this one's.
    host: str
    compress: bool = False
    backup: tuple[str, ...] = ()
    path: str | None = None
    #: --ledger for every stage; None lets each stage find it (PICPIPE_LEDGER, the config).
    ledger: str | None = None
    #: The other hosts of `host = ["a", "b"]`: each image is uploaded there too (the record's `mirrors`).
    mirrors: tuple[str, ...] = ()

    @property
    def hosts(self) -> tuple[str, ...]:
        return (self.host, *self.mirrors)

    def upload_to(self, hosts: Sequence[str]) -> Settings:
        """The same pipeline uploading to `hosts` (the first gives the URL) instead."""
        return self._replace(host=hosts[0], mirrors=tuple(hosts[1:]))


def settings(config: Config, flags: Mapping[str, Any] | None = None, ledger: str | None = None) -> Settings:
    """The pipeline as configured: per key, flags win over PICPIPE_PIPELINE_* over [pipeline].

    Every profile named must exist and the key template must be valid, so that a mistake is
    a usage error now rather than an error on each image later.
    """
    env, file = config.section_layers("pipeline")
    layers = (("flags", dict(flags or {})), ("PICPIPE_PIPELINE_*", env), ("[pipeline]", file))

    def pick(key: str) -> Any:
        for where, layer in layers:
            if layer.get(key) is not None:
                return config.resolve(where, key, layer[key])
        return None

    hosts = _names(pick("host"))
    if not hosts:
        raise UsageError("no image host configured for the editor pipeline",
                         EXAMPLE.format(path=config.path or config_path(config.environ)))
    if len(set(hosts)) < len(hosts):
        raise UsageError(f"[pipeline] host names a profile twice: {', '.join(hosts)}",
                         "name each host once; the first gives the URL the editor gets")
    result = Settings(hosts[0], _boolean(pick("compress")), _names(pick("backup")), pick("path"), ledger,
                      hosts[1:])
    for name in (*result.hosts, *result.backup):
        config.profile(name)
    if result.path:
        from picpipe.keys import check_template

        check_template(result.path)
    return result


def _names(value: Any) -> tuple[str, ...]:
    """Profile names: a list, or a string of them separated by commas (PICPIPE_PIPELINE_HOST=a,b)."""
    if not value:
        return ()
    names = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(n.strip() for n in names if n.strip())


def _boolean(value: Any) -> bool:
    """`compress`: a TOML boolean, or the text of PICPIPE_PIPELINE_COMPRESS."""
    answer = truth(value) if value is not None else False
    if answer is None:
        raise UsageError(f"compress = {value!r} is not true or false", "write PICPIPE_PIPELINE_COMPRESS=true or false")
    return answer


class Outcome(NamedTuple):
    """One input (a path or URL, as given) and the record the last stage wrote for it."""

    item: str
    record: Record

    @property
    def url(self) -> str | None:
        """The hosted URL, only when every stage succeeded."""
        url = self.record.get("url")
        return url if "error" not in self.record and isinstance(url, str) and url else None

    def problem(self) -> tuple[str, str | None] | None:
        """(message naming the input, hint) for a failed image; None when it went through."""
        if self.url is not None:
            return None
        error = self.record.get("error")
        if not isinstance(error, dict):
            return f"{self.item}: the pipeline gave no URL", "see the messages above"
        message = str(error.get("message") or error.get("type") or "failed")
        if self.item not in message:
            message = f"{self.item}: {message}"
        url = self.record.get("url")
        if error.get("stage") in AFTER_UPLOAD and isinstance(url, str) and self.record.get("uploaded_at"):
            message += f" ({error.get('stage')} failed after the upload to {url})"
        hint = error.get("hint")
        return message, str(hint) if hint else None


def input_record(item: str) -> Record:
    """A path or URL from an editor as the first stage's input record."""
    if item.startswith(("http://", "https://")):
        return {"url": item}
    return {"path": item}


def refusal(item: str) -> Record | None:
    """The error record of a local file that may not be published (picpipe.publish: missing, no
    image, truncated, a bomb, an unsafe SVG); None for a publishable file or a URL (pp-upload
    checks the fetched bytes)."""
    from picpipe.cli import fail_record
    from picpipe.publish import check_file

    if "url" in input_record(item):
        return None
    try:
        check_file(item)
    except (PicpipeError, OSError) as exc:  # OSError: a symlink loop, an I/O error...
        return fail_record({"path": item}, "input", exc)
    return None


def stage_command(module: str) -> list[str]:
    """`python -m picpipe.commands.X` with this very interpreter: the same code as the caller."""
    return [sys.executable, "-m", f"picpipe.commands.{module}"]


class Pipeline:
    """Runs the configured stages as one chain of processes per batch of images."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.log = log or _to_stderr
        env = dict(os.environ if environ is None else environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        if console.debug:
            env["PICPIPE_DEBUG"] = "1"
        # The stages' stderr comes here (_relay reads it as UTF-8), not to a console: under cp936 or
        # LANG=C they would write it in the console's encoding and a Chinese file name would be mojibake.
        env["PYTHONIOENCODING"] = "utf-8"
        self.env = env

    def commands(self, remote: bool = False, settings: Settings | None = None) -> list[list[str]]:
        """Each stage's argv; `remote` puts pp-fetch first, for inputs that are URLs."""
        s = settings or self.settings
        ledger = ["--ledger", s.ledger] if s.ledger else []
        # Downloads go to the cache, not to the folder the editor happened to start us in.
        fetched = str(xdg_home("XDG_CACHE_HOME", ".cache", self.env) / "fetched")
        stages = [[*stage_command("fetch"), "--out", fetched]] if remote else []
        if s.compress:
            stages.append(stage_command("compress"))
        hosts = [arg for host in s.hosts for arg in ("--host", host)]
        stages.append([*stage_command("upload"), *hosts, *(["--path", s.path] if s.path else []), *ledger])
        stages.append([*stage_command("mark"), *ledger])
        stages.extend([*stage_command("backup"), "--to", name, *ledger] for name in s.backup)
        return [[*argv, "-q"] for argv in stages]

    def run(self, items: Sequence[str], hosts: Sequence[str] | None = None) -> list[Outcome]:
        """One Outcome per item, in input order, whatever happens to the stages; `hosts` (the
        first gives the URL) instead of the configured ones."""
        if not items:
            return []
        # Only images go in: a request from an editor (or a page that reached pp-server) must not
        # publish any file the user can read. The others come back as errors, in their places.
        refused = {index: record for index, item in enumerate(items) if (record := refusal(item)) is not None}
        if refused:
            kept = [item for index, item in enumerate(items) if index not in refused]
            done = iter(self.run(kept, hosts))
            return [Outcome(item, refused[index]) if index in refused else next(done)
                    for index, item in enumerate(items)]
        records = [input_record(item) for item in items]
        settings = self.settings.upload_to(hosts) if hosts else self.settings
        output = self._through(self.commands(any("url" in r for r in records), settings), records)
        return [Outcome(item, record) for item, record in zip(items, output)]

    def delete(self, records: Sequence[Record]) -> list[Record]:
        """Delete each ledger record's object from its host (`pp-upload --host H --delete`) and
        record the tombstone (`pp-mark`): the records, in order, with `deleted_at` or an error."""
        ledger = ["--ledger", self.settings.ledger] if self.settings.ledger else []
        done: dict[int, Record] = {}
        for host in dict.fromkeys(str(r.get("host")) for r in records):
            indexes = [i for i, r in enumerate(records) if str(r.get("host")) == host]
            argvs = [[*stage_command("upload"), "--host", host, "--delete", *ledger, "-q"],
                     [*stage_command("mark"), *ledger, "-q"]]
            done.update(zip(indexes, self._through(argvs, [records[i] for i in indexes])))
        return [done[i] for i in range(len(records))]

    def _through(self, argvs: list[list[str]], records: list[Record]) -> list[Record]:
        """The records as the last stage wrote them, in order; one it did not write carries the
        error of the stage that stopped. A stage that refused its configuration: UsageError."""
        chain = _Chain(argvs, self.env, self.log)
        try:
            chain.start(records)
            output = chain.collect()
        finally:
            chain.stop()
        failed = [(_name(argv), code, tail) for argv, code, tail in chain.results() if code != 0]
        for name, code, tail in failed:
            if code == 2:
                raise UsageError(f"{name} refused to run: {_last_message(tail)}", "fix the configuration and try again")
        # A record the last stage wrote went through every stage; one it did not write was lost
        # where a stage stopped (the first that ended worse than "some records failed", if any).
        failed.sort(key=lambda stage: stage[1] == 1)
        missing = {"error": _stopped_error(failed[0] if failed else None)}
        return [output[index] if index < len(output) else {**record, **missing} for index, record in enumerate(records)]


class _Chain:
    """The processes of one run, their pipes and the threads that feed and drain them."""

    def __init__(self, argvs: list[list[str]], env: Mapping[str, str], log: Callable[[str], None]) -> None:
        self.argvs, self.env, self.log = argvs, env, log
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tails: list[deque[str]] = []
        self.threads: list[threading.Thread] = []

    def start(self, records: Iterable[Record]) -> None:
        upstream: IO[bytes] | None = None
        for argv in self.argvs:
            proc = subprocess.Popen(argv, stdin=upstream or subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=self.env)
            if upstream is not None:
                upstream.close()  # the next stage holds it now: a stage that dies is seen as EOF
            upstream = proc.stdout
            self.procs.append(proc)
            tail: deque[str] = deque(maxlen=TAIL_LINES)
            self.tails.append(tail)
            self._thread(_relay, proc.stderr, tail, self.log)
        data = b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records)
        self._thread(_feed, self.procs[0].stdin, data)

    def _thread(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def collect(self) -> list[Record]:
        """The last stage's records (lines that are no JSON object are skipped: they cannot be one)."""
        stdout = self.procs[-1].stdout
        assert stdout is not None
        records = []
        for line in stdout:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                records.append(value)
        for proc in self.procs:
            proc.wait()
        for thread in self.threads:
            thread.join()
        return records

    def stop(self) -> None:
        """After an interruption: no stage outlives the run."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def results(self) -> list[tuple[list[str], int, list[str]]]:
        return [(argv, proc.returncode, list(tail)) for argv, proc, tail in zip(self.argvs, self.procs, self.tails)]


def _feed(stream: IO[bytes], data: bytes) -> None:
    try:
        stream.write(data)
        stream.close()
    except (BrokenPipeError, OSError):  # the first stage stopped early: its exit status says why
        pass


def _relay(stream: IO[bytes], tail: deque[str], log: Callable[[str], None]) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        tail.append(line)
        log(line)
    stream.close()


def _to_stderr(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _name(argv: list[str]) -> str:
    return "pp-" + argv[2].rsplit(".", 1)[-1]


def _last_message(tail: list[str]) -> str:
    """A stage's last error line, without its `pp-x: error: ` prefix."""
    for line in reversed(tail):
        if ": error: " in line:
            return line.split(": error: ", 1)[1]
    return tail[-1] if tail else "no message"


def _stopped_error(stage: tuple[str, int, list[str]] | None) -> dict[str, Any]:
    if stage is None:
        return {"stage": "pipeline", "type": "no_result", "message": "a stage wrote no record for this image",
                "hint": "see the messages above; run with --debug for details"}
    name, code, tail = stage
    return {"stage": "pipeline", "type": "stage_stopped",
            "message": f"{name} stopped (exit status {code}): {_last_message(tail)}",
            "hint": "see the messages above; run with --debug for details"}
