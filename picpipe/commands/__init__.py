"""One module per command; each exposes `main()` (the console script entry point)."""

#: Command name → module, for the bin/ launcher and pyproject's console scripts.
COMMANDS = {
    "pp-compress": "picpipe.commands.compress",
    "pp-upload": "picpipe.commands.upload",
    "pp-link": "picpipe.commands.link",
    "pp-mark": "picpipe.commands.mark",
    "pp-backup": "picpipe.commands.backup",
    "pp-davtest": "picpipe.commands.davtest",
    "pp-scan": "picpipe.commands.scan",
    "pp-fetch": "picpipe.commands.fetch",
    "pp-rewrite": "picpipe.commands.rewrite",
    "pp-typora": "picpipe.commands.typora",
    "pp-server": "picpipe.commands.server",
    "pp-paste": "picpipe.commands.paste",
}
