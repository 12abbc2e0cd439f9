"""pp-davtest: health-check a WebDAV target before trusting it with backups.

The check itself (seven timed steps, TLS probing, the temp file's cleanup) is picpipe.davcheck's;
this module is the command line around it: which profile, the table or the JSON report, the
exit status.
"""

from __future__ import annotations

import argparse
import sys

from picpipe.cli import EXIT_OK, EXIT_RECORD_ERRORS, Command
from picpipe.davcheck import DavCheck, Step
from picpipe.errors import UsageError


class DavTestCommand(Command):
    prog = "pp-davtest"
    description = (
        "Check that a WebDAV target works before backing up to it: connect (DNS, TCP, TLS),\n"
        "OPTIONS, PROPFIND Depth 0 on the profile's url, MKCOL of that folder if it is missing,\n"
        "PUT a small temp file (.pp-davtest-<uuid>.tmp), GET it back and compare, DELETE it.\n"
        "Each step is timed; the check stops at the first failure, with a hint, but the temp file\n"
        "is always deleted once it may exist. One request per step (Nutstore counts them): 5,\n"
        "6 with MKCOL; Digest servers take 2 more for the handshake.\n"
        "Exit status: 0 every step passed, 1 a step failed, 2 usage or configuration error."
    )
    examples = """\
  pp-davtest --target nutstore
  pp-davtest --target nas --json | jq '.steps[] | select(.ok == false)'
  pp-davtest --target nutstore && ls *.png | pp-backup --to nutstore
  PICPIPE_WEBDAV_PASSWORD=app-password pp-davtest --url https://dav.jianguoyun.com/dav/picpipe/ --user me@example.com
  PICPIPE_NAS_TYPE=webdav PICPIPE_NAS_URL=https://nas.local/dav/backup/ PICPIPE_NAS_USER=me \\
    PICPIPE_NAS_PASSWORD=... pp-davtest --target nas
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--target", metavar="PROFILE",
                            help="the webdav profile: a [profiles.NAME] of the config or PICPIPE_NAME_* variables")
        parser.add_argument("--url", help="the WebDAV folder to check (overrides the profile's url); without "
                            "--target the profile is 'webdav' (PICPIPE_WEBDAV_PASSWORD holds the password)")
        parser.add_argument("--user", help="the user name (overrides the profile's user); the password is never "
                            "taken from the command line")
        parser.add_argument("--json", action="store_true", help="print one JSON object (for monitoring) "
                            "instead of the table")

    def run(self, args: argparse.Namespace) -> int:
        from picpipe.net import check_url
        from picpipe.webdav import dav_for

        if not args.target and not args.url:
            raise UsageError("nothing to check: give --target PROFILE (a webdav profile) or --url URL",
                             "for example: pp-davtest --target nutstore; see --help")
        if args.url is not None:
            check_url(args.url, "--url", "give the WebDAV folder's address, e.g. --url "
                      "https://dav.jianguoyun.com/dav/picpipe/ or --url http://192.168.1.5:5005/backup/", spaces=True)
        self.args = args
        profile = self.config.profile(args.target or "webdav", {"url": args.url, "user": args.user})
        check = DavCheck(dav_for(profile, "davtest"), self.show)
        who = f" as {profile['user']}" if profile.get("user") else ""
        self.say(f"checking {check.dav.root}{who} (profile {profile['name']})")
        if not args.json:
            self.say(f"{'step':<9} {'result':<8} {'ms':>7}  detail")
        ok = check.run()
        self.report(profile["name"], check)
        return EXIT_OK if ok else EXIT_RECORD_ERRORS

    # -- the report --------------------------------------------------------------------------
    def say(self, line: str) -> None:
        """A line of the table on stdout; in --json mode, progress on stderr unless -q."""
        from picpipe import console
        from picpipe.redact import redact_text

        if self.args.json:
            if not self.args.quiet:
                console.say(line)
            return
        sys.stdout.write(redact_text(line) + "\n")
        sys.stdout.flush()

    def show(self, step: Step) -> None:
        if self.args.json and step.result != "fail":
            return
        ms = "-" if step.ms is None else f"{step.ms:.0f}"
        detail = step.detail
        if step.error is not None:
            error = step.error
            detail = f"{error.type}: {error.message}" + (f"\n{'':<28}hint: {error.hint}" if error.hint else "")
        result = "FAIL" if step.result == "fail" else step.result
        self.say(f"{step.name:<9} {result:<8} {ms:>7}  {detail}".rstrip())

    def report(self, target: str, check: DavCheck) -> None:
        from picpipe.stream import encode_line

        cleanup, ok, total, paced = check.cleanup(), check.ok, check.ms, check.paced
        if self.args.json:
            sys.stdout.buffer.write(encode_line({
                "target": target, "url": check.dav.root, "ok": ok, "ms": total, "paced_ms": round(paced * 1000, 1),
                "steps": [step.to_dict() for step in check.steps.values()], "cleanup": cleanup}))
            sys.stdout.flush()
        took = f"{total:.0f} ms" + (f", {paced * 1000:.0f} of them waiting for the pace" if paced else "")
        if ok:
            summary = f"OK: every step passed in {took}; {cleanup['detail']}"
        else:
            failed = [s.name for s in check.steps.values() if s.result == "fail"]
            summary = f"FAILED at {', '.join(failed)} ({took}); cleanup: {cleanup['detail']}"
            if cleanup.get("error"):
                summary += f": {cleanup['file']}"
        self.say(summary)


def main() -> int:
    return DavTestCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
