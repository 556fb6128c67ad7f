"""Errors that end a command, each with the exit code the README documents.

Every failure the owner can act on maps to one exception class and one exit
code, so that a service manager or a script can tell a typo in the config
from a server that is down.
"""

from __future__ import annotations


class PloyError(Exception):
    """Base class: a failure that ends the command with ``exit_code``."""

    exit_code = 1


class UsageError(PloyError):
    """The command line itself is wrong (argparse uses 2 as well)."""

    exit_code = 2


class ConfigError(PloyError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = 3


class AuthError(PloyError):
    """The server refused the login, or no password could be obtained."""

    exit_code = 4


class ConnectError(PloyError):
    """The server could not be reached, or its TLS certificate failed verification."""

    exit_code = 5


class ModelError(PloyError):
    """The model bundle is missing, altered (sha256 mismatch) or built for other versions."""

    exit_code = 6


class StateError(PloyError):
    """The state database cannot be opened, or another instance holds its lock."""

    exit_code = 7


class MailboxError(PloyError):
    """The server answered, but refused an operation the filter needs (SELECT, CREATE, MOVE)."""

    exit_code = 8


class FolderError(MailboxError):
    """A folder the filter was told to read does not exist; the message names it.

    A subclass of ``MailboxError``, so it ends a command the same way, but a
    caller that can do without the folder (the sent folder, say) catches
    this one alone, logs it and goes on.
    """


class TargetUnavailable(MailboxError):
    """A folder mail was moved to would not be opened or searched: no fault of the message being looked up."""


class ExportError(PloyError):
    """``export`` could not write its files (a full disk, a folder it may not write)."""

    exit_code = 10


class OutputError(PloyError):
    """Standard output could not be written (a full disk, a closed descriptor): the results would be lost."""

    exit_code = 10
