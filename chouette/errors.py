"""How a command ends: its exit codes and the two exceptions ``chouette.app`` maps to them.

Every command module imports these from here, never from the entry module, so that the
entry module can import every command (its dispatch table) without an import cycle.
"""

from __future__ import annotations

OK, FAILED, BAD_INPUT = 0, 1, 2
# A command interrupted by Ctrl-C (SIGINT), as a shell reports it.
INTERRUPTED = 130


class UsageError(Exception):
    """Bad input: printed as one line naming the field, exit code 2 (nothing published)."""


class CommandFailed(Exception):
    """A command that ran but did not succeed (exit 1, the message on stderr)."""
