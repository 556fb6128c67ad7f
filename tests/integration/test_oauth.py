"""Logging in with an OAuth 2.0 access token (SASL XOAUTH2), against a Dovecot that validates the tokens itself.

Gmail and Microsoft 365 take XOAUTH2; Microsoft takes nothing else. The token
comes from password_command, run again at every login, since tokens expire.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from filter.dovecot import DEFAULT_USER, LocalDovecot, unavailable_reason
from filter.errors import AuthError
from filter.imap import ImapMailbox

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or ""),
]


def xoauth2_account(account_for: Callable[..., Any], server: LocalDovecot) -> Any:
    return account_for(server, auth="xoauth2", password=None, password_command="unused")


def test_each_login_takes_a_fresh_token(
    dovecot_factory: Callable[..., LocalDovecot], account_for: Callable[..., Any]
) -> None:
    server = dovecot_factory(oauth2=True)
    tokens: list[str] = []

    def token() -> str:
        tokens.append(server.oauth2_token())
        return tokens[-1]

    mailbox = ImapMailbox(xoauth2_account(account_for, server), token)
    for _ in range(2):
        mailbox.connect()
        assert mailbox.select("INBOX").exists == 0
        mailbox.close()
    assert len(tokens) == 2


@pytest.mark.parametrize("oauth2", [True, False])
def test_an_expired_token_or_a_server_without_xoauth2_is_an_auth_error(
    dovecot_factory: Callable[..., LocalDovecot], account_for: Callable[..., Any], oauth2: bool
) -> None:
    server = dovecot_factory(oauth2=oauth2)
    expired = server.oauth2_token(lifetime=-60)
    mailbox = ImapMailbox(xoauth2_account(account_for, server), expired)
    wanted = "refused the login" if oauth2 else "does not offer AUTH=XOAUTH2"
    with pytest.raises(AuthError, match=wanted):
        mailbox.connect()


def token_config(tmp_path: Path, server: LocalDovecot, token: Path, **settings: Any) -> Path:
    """A config whose account logs in to ``server`` with the token the file ``token`` holds."""
    account = {
        "name": "work",
        "host": server.host,
        "port": server.port,
        "security": "plain",
        "username": DEFAULT_USER,
        "auth": "xoauth2",
        "password_command": f"cat {token}",  # fails while the file is missing
    }
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"accounts": [account], "state_path": str(tmp_path / "state.sqlite3"), **settings})
    )
    return config


def test_once_logs_in_with_the_token_its_command_prints(
    dovecot_factory: Callable[..., LocalDovecot], tmp_path: Path
) -> None:
    server = dovecot_factory(oauth2=True)
    server.append(DEFAULT_USER, "INBOX", b"From: a@example.org\r\nSubject: hello\r\n\r\nLunch on Friday?\r\n")
    token = tmp_path / "token"
    token.write_text(server.oauth2_token() + "\n")
    config = token_config(tmp_path, server, token)
    result = subprocess.run(
        [sys.executable, "-m", "filter", "once", "-c", str(config)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "work: 1 new messages" in result.stdout
    assert token.read_text().strip() not in result.stderr + result.stdout  # a token is a password: never logged


def test_a_token_command_that_fails_is_retried_by_the_daemon_and_final_for_once(
    dovecot_factory: Callable[..., LocalDovecot], tmp_path: Path
) -> None:
    """At boot the network may not be up, and a token's refresh needs it: the daemon waits and tries again."""
    server = dovecot_factory(oauth2=True)
    server.append(DEFAULT_USER, "INBOX", b"From: a@example.org\r\nSubject: hello\r\n\r\nLunch on Friday?\r\n")
    token = tmp_path / "token"
    config = token_config(tmp_path, server, token, reconnect_max=2)
    command = [sys.executable, "-m", "filter"]
    once = subprocess.run([*command, "once", "-c", str(config)], capture_output=True, text=True, check=False)
    assert once.returncode == 4 and "no access token" in once.stderr

    log = tmp_path / "daemon.log"
    with log.open("wb") as err:
        daemon = subprocess.Popen([*command, "run", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while b"no access token" not in log.read_bytes():
            assert daemon.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        token.write_text(server.oauth2_token() + "\n")
        while b"1 new messages" not in log.read_bytes() and b"uid=1 keep" not in log.read_bytes():
            assert daemon.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
