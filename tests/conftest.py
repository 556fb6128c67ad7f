"""Fixtures shared by the tests: real Dovecot servers on 127.0.0.1 and accounts for them.

Every test gets servers of its own, so no test sees another's mail. Starting
one takes a tenth of a second, but Dovecot's master always takes about a
second to exit; servers are therefore only signalled when their test ends and
waited for (and their directories removed) once, at the end of the session.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from filter.config import AccountConfig, parse_config
from filter.dovecot import DEFAULT_USER, LocalDovecot, unavailable_reason
from filter.imap import ImapMailbox

StartDovecot = Callable[..., LocalDovecot]
MakeAccount = Callable[..., AccountConfig]
OpenMailbox = Callable[..., ImapMailbox]


@pytest.fixture(scope="session")
def _stopping_dovecots() -> Iterator[list[LocalDovecot]]:
    servers: list[LocalDovecot] = []
    yield servers
    for server in servers:
        server.close()


@pytest.fixture
def dovecot_factory(_stopping_dovecots: list[LocalDovecot]) -> Iterator[StartDovecot]:
    """Start a LocalDovecot with the given options (tls=, capabilities=, users=); stopped after the test."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    started: list[LocalDovecot] = []

    def start(**options: Any) -> LocalDovecot:
        server = LocalDovecot(**options)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop(wait=False)
        _stopping_dovecots.append(server)


@pytest.fixture
def dovecot(dovecot_factory: StartDovecot) -> LocalDovecot:
    """A plaintext IMAP server on 127.0.0.1 with the user DEFAULT_USER and an empty INBOX."""
    return dovecot_factory()


@pytest.fixture
def dovecot_tls(dovecot_factory: StartDovecot) -> LocalDovecot:
    """A server with a private CA: implicit TLS on ``tls_port``, STARTTLS on ``port``."""
    return dovecot_factory(tls=True)


@pytest.fixture
def account_for() -> MakeAccount:
    """Build an AccountConfig for a LocalDovecot through ``parse_config``, so validation runs too.

    ``security`` picks the port (``tls_port`` for "tls"); a TLS server's CA is
    trusted through ``ca_file`` unless ``ca_file=None`` is passed. Other
    keywords override account keys.
    """

    def make(server: LocalDovecot, security: str = "plain", user: str = DEFAULT_USER, **keys: Any) -> AccountConfig:
        account: dict[str, Any] = {
            "name": "test",
            "host": server.host,
            "port": server.tls_port if security == "tls" else server.port,
            "security": security,
            "username": user,
            "password": server.users[user],
            "timeout": 10,
        }
        if server.ca_file is not None:
            account["ca_file"] = str(server.ca_file)
        account.update(keys)
        if account.get("ca_file") is None:
            account.pop("ca_file", None)
        return parse_config({"accounts": [account]}).accounts[0]

    return make


@pytest.fixture
def open_mailbox(account_for: MakeAccount) -> Iterator[OpenMailbox]:
    """Connect an ImapMailbox to a LocalDovecot (account keywords as for ``account_for``); closed after the test."""
    opened: list[ImapMailbox] = []

    def open_(server: LocalDovecot, password: str | None = None, **keys: Any) -> ImapMailbox:
        account = account_for(server, **keys)
        mailbox = ImapMailbox(account, password if password is not None else server.users[account.username])
        opened.append(mailbox)
        mailbox.connect()
        return mailbox

    yield open_
    for mailbox in opened:
        mailbox.close()


@pytest.fixture
def imap_commands(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The IMAP command lines the client has sent so far, tags stripped, e.g. 'UID MOVE 3 "Archive"'.

    Read from imapclient's own DEBUG log, which records every line it sends.
    """
    caplog.set_level(logging.DEBUG, logger="imapclient")

    def commands() -> list[str]:
        lines = []
        for record in caplog.records:
            message = record.getMessage()
            if not record.name.startswith("imapclient") or not message.startswith("> b"):
                continue
            try:
                sent = ast.literal_eval(message[2:])
            except (ValueError, SyntaxError):
                continue  # a redacted login or a shortened literal, not a command line
            _, _, command = sent.decode("ascii", "replace").strip().partition(" ")
            lines.append(command)
        return lines

    return commands
