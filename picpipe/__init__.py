"""picpipe: small Unix-style commands for publishing images on the web.

Kept empty on purpose: every command imports this package at start-up, and these commands
are run thousands of times from xargs and Makefiles.
"""

__version__ = "0.1.0"
