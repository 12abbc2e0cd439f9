"""pp-server: a PicGo-Server-compatible HTTP server (Typora "PicGo (app)", Obsidian, other PicGo
clients) that runs the configured pipeline on what it receives.

This module is the command: its options, where the address and secret come from, its messages.
The API, the security rules and the load limits are picpipe.editor_server's.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from picpipe import console
from picpipe.cli import EXIT_OK, Command, ledger_argument
from picpipe.editor_server import DEFAULT_HOST, DEFAULT_PORT, PicGoServer, is_loopback
from picpipe.errors import UsageError


class ServerCommand(Command):
    prog = "pp-server"
    description = (
        "Answer PicGo-Server requests on http://127.0.0.1:36677 (POST /upload, POST /delete,\n"
        "POST /heartbeat), so that Typora (\"PicGo (app)\"), Obsidian Image Auto Upload, PicList and\n"
        "other PicGo clients upload through the configured pipeline ([pipeline] in the config, as\n"
        "pp-typora). An empty body uploads the clipboard; ?uploader=NAME (?picbed=, ?configName=)\n"
        "uploads to profile NAME, or to the one profile of type NAME; /delete deletes uploads the\n"
        "ledger has. Only this machine can connect unless --host says otherwise. Optional secret:\n"
        "[server] secret, PICPIPE_SERVER_SECRET or --secret-file, sent as Authorization: Bearer S,\n"
        "X-PicGo-Secret, ?secret= or ?key=."
    )
    examples = """\
  pp-server
  pp-server --port 36678 --secret-file ~/.config/picpipe/server-secret
  pp-server --host 0.0.0.0 --secret-file secret.txt     # reachable from the network: think twice
  pp-mark find --since 2024-06-01 | pp-link --md         # what the editors uploaded since June
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", metavar="ADDRESS",
                            help=f"listen on ADDRESS (default [server] host, else {DEFAULT_HOST}; other than "
                            "loopback only when given here)")
        parser.add_argument("--port", type=port_number, metavar="N", help=f"port (default [server] port, else "
                            f"{DEFAULT_PORT})")
        parser.add_argument("--secret-file", metavar="FILE", help="read the secret clients must send from FILE")
        parser.add_argument("--always-200", action="store_true",
                            help="answer /upload failures with HTTP 200 and success false, as PicGo GUI 2.x does "
                            "(Obsidian's requestUrl drops the message of a 4xx/5xx answer)")
        parser.add_argument("--secret", help=argparse.SUPPRESS)  # refused with a reason, never echoed
        ledger_argument(parser)

    def run(self, args: argparse.Namespace) -> int:
        from picpipe.pipeline import Pipeline, settings

        if args.secret is not None:
            raise UsageError("--secret on the command line is visible to every user of this machine (ps)",
                             "use --secret-file FILE, PICPIPE_SERVER_SECRET or [server] secret in the config")
        env, file = self.config.section_layers("server")
        host = args.host or self.config.resolve("[server]", "host", env.get("host") or file.get("host")) \
            or DEFAULT_HOST
        if not is_loopback(host) and args.host is None:
            raise UsageError(f"[server] host = {host!r} would accept connections from other machines",
                             f"to mean it, say so on the command line: pp-server --host {host}")
        port = args.port if args.port is not None else env.get("port") or file.get("port") or DEFAULT_PORT
        try:
            port = port_number(str(port))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"[server] port: {exc}", "PICPIPE_SERVER_PORT and port are whole numbers") from None
        secret = self.secret(args, env, file)
        pipeline = Pipeline(settings(self.config, ledger=args.ledger))
        try:
            server = PicGoServer((host, port), pipeline, secret, args.always_200, self.config, args.ledger)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}",
                             "is PicGo or another pp-server running there? stop it, or use --port N "
                             "and give your editor the same port") from None
        address = f"[{host}]" if ":" in host else host
        console.say(f"listening on http://{address}:{server.server_address[1]} "
                    f"(upload to {', '.join(pipeline.settings.hosts)}; secret {'required' if secret else 'not set'}); "
                    "Ctrl-C stops")
        if not server.loopback:
            console.warn(f"listening on {host}: other machines can reach this server"
                         + ("" if secret else " and no secret is set: anyone who can connect can upload images "
                            "to your host") + "; file paths are only taken from this machine or with the secret")
        signal.signal(signal.SIGTERM, stop)  # a service manager's stop: the same clean end as Ctrl-C
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            console.say("stopped")
        finally:
            server.server_close()
        return EXIT_OK

    def secret(self, args: argparse.Namespace, env: dict[str, Any], file: dict[str, Any]) -> str | None:
        """--secret-file, else PICPIPE_SERVER_SECRET, else [server] secret; None when none is set."""
        from picpipe import redact

        if args.secret_file:
            try:
                with open(os.path.expanduser(args.secret_file), encoding="utf-8") as handle:
                    value = handle.read().strip()
            except OSError as exc:
                raise UsageError(f"cannot read --secret-file {args.secret_file}: {exc.strerror}") from None
            if not value:
                raise UsageError(f"--secret-file {args.secret_file} is empty", "write the secret in it")
            redact.register(value)
            return value
        value = self.config.resolve("[server]", "secret", env.get("secret") or file.get("secret"))
        return str(value) if value else None


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {text}")
    return value


def stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    return ServerCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
