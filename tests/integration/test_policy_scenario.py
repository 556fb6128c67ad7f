"""Sender history against a real Dovecot and the shipped model: reciprocity, drip, give-then-ask, lists, SIGHUP.

The owner has written to a friend; a stranger sends three articles on three
days, then asks for coffee, advice and an introduction; an allowed sender
shares an article. One ``ployfilter once`` must leave the friend's and the
allowed sender's articles in the INBOX, move the stranger's articles, put
the ask in the request folder with $PloyPattern, and ``ployfilter senders``
must list the stranger.
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_daemon import (
    ARTICLES,
    REQUESTS,
    ployfilter,
    start_daemon,
    wait_until,
    write_config,
)

from filter.dovecot import DEFAULT_USER, LocalDovecot, unavailable_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or ""),
]

NOW = datetime.now(UTC).replace(microsecond=0)
STRANGER = "Kevin Growth <kevin@growthloop.example>"


def mail(key: str, sender: str, subject: str, body: str, days_ago: float, to: str = "owner@example.org") -> bytes:
    date = (NOW - timedelta(days=days_ago)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    head = f"From: {sender}\nTo: {to}\nSubject: {subject}\nDate: {date}\nMessage-ID: <{key}@scenario.example>\n"
    text = head + f"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n{body}"
    return text.replace("\n", "\r\n").encode()


FRIEND_SHARE = mail(
    "friend",
    "Claire Martin <claire.martin@example.org>",
    "this made me think of you",
    "Hi!\n\nThought you'd enjoy this piece on slow travel in the Alps, it's exactly the trip we talked about:\n"
    "https://www.theguardian.com/travel/2026/mar/02/slow-train-alps\n\nClaire\n",
    4,
)
STRANGER_SHARES = [
    mail(
        "share1",
        STRANGER,
        "Great read on leadership",
        "Hi there,\n\nI came across this article and immediately thought of you. Worth a read:\n"
        "https://hbr.org/2026/03/the-quiet-leader\n\nBest,\nKevin\n",
        3,
    ),
    mail(
        "share2",
        STRANGER,
        "Thought you'd find this interesting",
        "Hello again,\n\nSharing another piece I found insightful on remote teams:\n"
        "https://www.forbes.com/sites/remote-work-2026\n\nCheers,\nKevin\n",
        2,
    ),
    mail(
        "share3",
        STRANGER,
        "FYI - AI and hiring",
        "Hi,\n\nFYI, this one is making the rounds, thought you might like it:\n"
        "https://www.wired.com/story/ai-hiring-2026\n\nKevin\n",
        1,
    ),
]
STRANGER_ASK = mail(
    "ask",
    STRANGER,
    "Quick favour?",
    "Hi,\n\nHope you enjoyed the articles! Would you have 20 minutes for a coffee next week? I'd love to pick "
    "your brain about moving into product management, and an introduction to someone on your team would mean "
    "a lot. I'm also looking for my next role, so any advice on my CV would help.\n\nThanks so much,\nKevin\n",
    0.2,
)
ALLOWED_SHARE = mail(
    "allowed",
    "Boss <boss@work.example>",
    "worth reading",
    "Hi,\n\nThought you might find this article interesting:\n"
    "https://www.economist.com/business/2026/03/01/supply-chains\n\nB.\n",
    0.1,
)
OWNER_TO_FRIEND = mail(
    "sent1",
    "Owner <owner@example.org>",
    "Re: dinner",
    "Saturday works, see you then!\n",
    20,
    to="Claire Martin <claire.martin@example.org>",
)


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with LocalDovecot(tmp_path / "server") as s:
        yield s


def message_ids(server: LocalDovecot, folder: str) -> list[str]:
    if folder not in server.folders(DEFAULT_USER):
        return []
    out = []
    for data in server.messages(DEFAULT_USER, folder):
        for line in data.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                out.append(line.split(b"<")[1].split(b"@")[0].decode())
    return sorted(out)


def flags_of(server: LocalDovecot, folder: str) -> list[tuple[str, ...]]:
    return server.flags(DEFAULT_USER, folder)


def scenario(server: LocalDovecot, tmp_path: Path) -> Path:
    server.create(DEFAULT_USER, "Sent")
    server.append(DEFAULT_USER, "Sent", OWNER_TO_FRIEND, internaldate=None)
    for data in [FRIEND_SHARE, *STRANGER_SHARES, STRANGER_ASK, ALLOWED_SHARE]:
        server.append(DEFAULT_USER, "INBOX", data, internaldate=None)  # delivered when sent, days apart
    config = write_config(tmp_path, server, allow=["boss@work.example"], block=[])
    data = yaml.safe_load(config.read_text())
    data["accounts"][0]["sent"] = "Sent"
    config.write_text(yaml.safe_dump(data))
    return config


def test_friend_stays_stranger_moved_ask_marked_allowed_stays(server: LocalDovecot, tmp_path: Path) -> None:
    config = scenario(server, tmp_path)
    result = ployfilter("once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert message_ids(server, "INBOX") == ["allowed", "friend"]
    assert message_ids(server, ARTICLES) == ["share1", "share2", "share3"]
    assert message_ids(server, REQUESTS) == ["ask"]
    assert "$PloyPattern" in flags_of(server, REQUESTS)[0]
    assert "$PloyFavour" in flags_of(server, REQUESTS)[0]
    assert all("$PloyArticle" in flags for flags in flags_of(server, ARTICLES))

    report = ployfilter("senders", "-c", str(config))
    assert report.returncode == 0, report.stderr
    first = next(line for line in report.stdout.splitlines() if "@" in line)
    assert first.split()[0] == "kevin@growthloop.example"
    listed = json.loads(ployfilter("senders", "-c", str(config), "--json").stdout)
    kevin = next(row for row in listed if row["address"] == "kevin@growthloop.example")
    assert (kevin["shares"], kevin["asks"], kevin["replied"], kevin["pattern"]) == (3, 1, False, True)
    claire = next(row for row in listed if row["address"] == "claire.martin@example.org")
    assert claire["replied"] is True and claire["pattern"] is False


def test_block_list_moves_whatever_the_score(server: LocalDovecot, tmp_path: Path) -> None:
    server.append(
        DEFAULT_USER, "INBOX", mail("plain", "Promo <deals@blocked.example>", "hello", "Lunch on Friday?\n", 0)
    )
    config = write_config(tmp_path, server, block=["blocked.example"], allow=["boss@work.example"])
    server.append(DEFAULT_USER, "INBOX", ALLOWED_SHARE)
    assert ployfilter("once", "-c", str(config)).returncode == 0
    assert message_ids(server, "INBOX") == ["allowed"]
    assert "plain" in message_ids(server, ARTICLES) + message_ids(server, REQUESTS)


def test_sighup_applies_a_new_threshold_and_refuses_a_broken_file(server: LocalDovecot, tmp_path: Path) -> None:
    ordinary = "Hi,\n\nThe meeting moved to 3pm, same room.\n\nThanks\n"
    config = write_config(tmp_path, server)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        server.append(DEFAULT_USER, "INBOX", mail("before", "colleague@example.net", "meeting", ordinary, 0))
        wait_until(lambda: "uid=1 keep" in log.read_text(), 60, "the first message to be judged")

        data = yaml.safe_load(config.read_text())
        data["thresholds"] = {"article_share": 0.0}
        config.write_text(yaml.safe_dump(data))
        daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: "thresholds.article_share" in log.read_text(), 30, "the reload to be logged")
        server.append(DEFAULT_USER, "INBOX", mail("after", "colleague@example.net", "meeting", ordinary, 0))
        wait_until(lambda: message_ids(server, ARTICLES) == ["after"], 60, "the next message to be moved")
        assert message_ids(server, "INBOX") == ["before"]

        config.write_text("accounts: [}\n")
        daemon.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in log.read_text(), 30, "the broken file to be refused")
        server.append(DEFAULT_USER, "INBOX", mail("later", "colleague@example.net", "meeting", ordinary, 0))
        wait_until(lambda: "later" in message_ids(server, ARTICLES), 60, "the old configuration to stay in force")
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
