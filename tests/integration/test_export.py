"""`ployfilter export` against a real Dovecot: the owner's sorting becomes a tree `train` reads."""

from __future__ import annotations

import imaplib
import json
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_daemon import ALL_ARTICLES, ARTICLES, REQUESTS, norm, numbered, ployfilter, sample_mail, write_config

from filter.config import load_config
from filter.dovecot import (
    CAPABILITIES_NO_MOVE_NO_UIDPLUS,
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    LocalDovecot,
    unavailable_reason,
)
from filter.export import LABEL_DIRS, export_account
from filter.imap import ImapMailbox
from filter.mailbox import MailboxStatus
from filter.state import State

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or ""),
]

OLD = '"02-Mar-2020 10:00:00 +0000"'


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalDovecot]:
    with LocalDovecot(tmp_path / "server") as s:
        yield s


def tree(out: Path) -> dict[str, list[bytes]]:
    root = out / "home"
    return {d: sorted(norm(p.read_bytes()) for p in (root / d).iterdir()) for d in LABEL_DIRS}


def on_server(server: LocalDovecot, folder: str) -> list[bytes]:
    return sorted(norm(m) for m in server.messages(DEFAULT_USER, folder))


def snapshot(server: LocalDovecot) -> dict[str, tuple[list[bytes], list[set[str]]]]:
    """Each folder's messages and flags, but \\Recent, which only says which session saw a message first."""
    return {
        f: (on_server(server, f), [set(flags) - {"\\Recent"} for flags in server.flags(DEFAULT_USER, f)])
        for f in ("INBOX", ARTICLES, REQUESTS)
    }


def test_export_writes_what_the_owner_sorted_and_follows_later_moves(server: LocalDovecot, tmp_path: Path) -> None:
    for data in sample_mail():
        server.append(DEFAULT_USER, "INBOX", data, internaldate=OLD)
    config = write_config(tmp_path, server)
    assert ployfilter("once", "-c", str(config)).returncode == 0
    # The owner brings one article back (a correction), and a new message comes.
    brought_back = norm(server.messages(DEFAULT_USER, ARTICLES)[0])
    server.doveadm("move", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "uid", "1")
    server.append(DEFAULT_USER, "INBOX", numbered(1, "just in"))
    assert ployfilter("once", "-c", str(config)).returncode == 0
    # A message the daemon found to be both, and one the owner moved from the articles to the requests.
    both = numbered(2, "both")
    server.append(DEFAULT_USER, REQUESTS, both, flags=("$PloyArticle", "$PloyFavour"), internaldate=OLD)
    moved_over = numbered(3, "an ask after all")
    server.append(DEFAULT_USER, REQUESTS, moved_over, flags=("$PloyArticle",), internaldate=OLD)
    before = snapshot(server)
    out = tmp_path / "labelled"
    inbox = on_server(server, "INBOX")

    # What the filter decided minutes ago (left in the inbox, or moved) is not settled: the owner may still
    # undo it. What the owner did (the message brought back, the two put in the request folder) counts at once.
    first = ployfilter("export", "-c", str(config), "--out", str(out))
    assert first.returncode == 0, first.stderr
    moved_by_filter = len(on_server(server, ARTICLES)) + len(on_server(server, REQUESTS)) - 2
    assert f"{len(inbox) - 1 + moved_by_filter} decided by the filter less than 7 days ago" in first.stdout
    assert tree(out) == {"articles": [], "favours": [norm(moved_over)], "both": [norm(both)], "ham": [brought_back]}

    result = ployfilter("export", "-c", str(config), "--out", str(out), "--settled-days", "0")

    assert result.returncode == 0, result.stderr
    got = tree(out)
    assert got["articles"] == on_server(server, ARTICLES) and got["articles"]
    assert norm(both) in got["both"] and norm(moved_over) in got["favours"]
    assert sorted(got["favours"] + got["both"]) == on_server(server, REQUESTS)
    assert got["ham"] == inbox and len(inbox) == 8  # six left by the daemon, one brought back, one new
    # The server is only read: no message moved, no flag (\Seen included) changed.
    assert snapshot(server) == before
    files = [p for p in (out / "home").rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)

    # The owner changes their mind about a request; the next export follows, leaving no stale copy.
    server.doveadm("move", "-u", DEFAULT_USER, "INBOX", "mailbox", REQUESTS, "HEADER", "Subject", "an ask after all")
    assert ployfilter("once", "-c", str(config)).returncode == 0
    again = ployfilter("export", "-c", str(config), "--out", str(out), "--settled-days", "0")
    assert again.returncode == 0, again.stderr
    assert "1 files of earlier runs removed" in again.stdout
    after = tree(out)
    assert norm(moved_over) not in after["favours"]
    assert norm(moved_over) in after["ham"]
    assert sorted(after["favours"] + after["both"]) == on_server(server, REQUESTS)

    # The tree is what `train` and `evaluate` read.
    report = ployfilter("evaluate", str(out), "--json", "--sweep")
    assert report.returncode == 0, report.stderr
    measured = json.loads(report.stdout)
    assert measured["messages"] == sum(len(v) for v in after.values())
    assert [row["current"] for row in measured["sweep"]["favour_request"]].count(True) == 1


def test_export_without_a_ledger_writes_the_folders_only(server: LocalDovecot, tmp_path: Path) -> None:
    server.append(DEFAULT_USER, "INBOX", numbered(1), internaldate=OLD)
    server.create(DEFAULT_USER, ARTICLES)
    server.append(DEFAULT_USER, ARTICLES, numbered(2), internaldate=OLD)
    config = write_config(tmp_path, server)  # never run: no state, and no request folder yet

    result = ployfilter("export", "-c", str(config), "--out", str(tmp_path / "out"))

    assert result.returncode == 0, result.stderr
    assert "ordinary mail is left out" in result.stderr
    assert REQUESTS in result.stderr  # the missing folder is named
    assert tree(tmp_path / "out") == {"articles": [norm(numbered(2))], "favours": [], "both": [], "ham": []}


def test_export_refuses_an_out_that_is_a_file(server: LocalDovecot, tmp_path: Path) -> None:
    config = write_config(tmp_path, server)
    (tmp_path / "file").write_text("x")
    result = ployfilter("export", "-c", str(config), "--out", str(tmp_path / "file"))
    assert result.returncode != 0
    assert "--out" in result.stderr and "not a folder" in result.stderr


def export(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return ployfilter("export", "-c", str(config), "--out", str(out), "--settled-days", "0", *extra)


def test_export_when_flagging_reads_the_keywords_the_owner_left(server: LocalDovecot, tmp_path: Path) -> None:
    for n in range(1, 4):
        server.append(DEFAULT_USER, "INBOX", numbered(n), internaldate=OLD)
    config = write_config(tmp_path, server, action="flag", thresholds=ALL_ARTICLES)
    assert ployfilter("once", "-c", str(config)).returncode == 0
    out = tmp_path / "out"
    assert export(config, out).returncode == 0
    assert tree(out)["articles"] == [norm(numbered(n)) for n in (1, 2, 3)]
    # The owner disagrees with one verdict and takes its keyword off. The label folders were never
    # created (nothing is moved when flagging), which must not keep the old file of that message.
    server.doveadm("flags", "remove", "-u", DEFAULT_USER, "$PloyArticle", "mailbox", "INBOX", "uid", "2")

    result = export(config, out)

    assert result.returncode == 0, result.stderr
    got = tree(out)
    assert got["articles"] == [norm(numbered(1)), norm(numbered(3))]
    assert got["ham"] == [norm(numbered(2))]


def test_originals_marked_deleted_are_not_ordinary_mail(tmp_path: Path) -> None:
    # Without MOVE and UIDPLUS a moved message's original stays behind, \Deleted, until an EXPUNGE.
    with LocalDovecot(tmp_path / "server", capabilities=CAPABILITIES_NO_MOVE_NO_UIDPLUS) as server:
        for n in range(1, 3):
            server.append(DEFAULT_USER, "INBOX", numbered(n), internaldate=OLD)
        config = write_config(tmp_path, server, thresholds=ALL_ARTICLES)
        assert ployfilter("once", "-c", str(config)).returncode == 0

        result = export(config, tmp_path / "out")

        assert result.returncode == 0, result.stderr
        got = tree(tmp_path / "out")
        assert got["articles"] == [norm(numbered(1)), norm(numbered(2))]
        assert got["ham"] == []


def test_one_folder_for_both_labels_is_read_by_keyword(server: LocalDovecot, tmp_path: Path) -> None:
    server.append(DEFAULT_USER, "INBOX", numbered(1), internaldate=OLD)
    config = write_config(tmp_path, server, thresholds=ALL_ARTICLES)
    data = yaml.safe_load(config.read_text())
    data["accounts"][0]["folders"] = {"article_share": "Networking", "favour_request": "Networking"}
    config.write_text(yaml.safe_dump(data))
    assert ployfilter("once", "-c", str(config)).returncode == 0
    server.append(DEFAULT_USER, "Networking", numbered(2), internaldate=OLD)  # put there by the owner

    result = export(config, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "out") == {"articles": [norm(numbered(1))], "favours": [], "both": [], "ham": []}
    assert "1 without the daemon's keywords" in result.stdout


def test_a_share_kept_by_the_owners_rules_is_not_ordinary_mail(server: LocalDovecot, tmp_path: Path) -> None:
    server.append(DEFAULT_USER, "INBOX", numbered(1), internaldate=OLD)
    server.append(DEFAULT_USER, "INBOX", numbered(2), internaldate=OLD)
    config = write_config(tmp_path, server, thresholds=ALL_ARTICLES, allow=["sender1@example.org"])
    assert ployfilter("once", "-c", str(config)).returncode == 0
    # The owner brings the other one back: that is a verdict.
    server.doveadm("move", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "ALL")
    assert ployfilter("once", "-c", str(config)).returncode == 0

    result = export(config, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "out")["ham"] == [norm(numbered(2))]
    assert "1 labelled but kept by your rules" in result.stdout


def test_the_limit_counts_settled_mail_only(server: LocalDovecot, tmp_path: Path) -> None:
    for n in range(1, 4):
        server.append(DEFAULT_USER, "INBOX", numbered(n), internaldate=OLD)
    config = write_config(tmp_path, server, thresholds={"article_share": 1.0, "favour_request": 1.0})
    assert ployfilter("once", "-c", str(config)).returncode == 0
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:  # as if judged ten days ago
        db.execute("UPDATE decisions SET time = ?", (time.time() - 10 * 86400,))
    for n in range(4, 6):
        server.append(DEFAULT_USER, "INBOX", numbered(n), internaldate=OLD)
    assert ployfilter("once", "-c", str(config)).returncode == 0

    result = ployfilter("export", "-c", str(config), "--out", str(tmp_path / "out"), "--limit", "2")

    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "out")["ham"] == [norm(numbered(2)), norm(numbered(3))]
    assert "2 decided by the filter less than 7 days ago" in result.stdout


def test_export_leaves_recent_mail_recent(server: LocalDovecot, tmp_path: Path) -> None:
    server.create(DEFAULT_USER, ARTICLES)
    server.append(DEFAULT_USER, ARTICLES, numbered(1))
    server.append(DEFAULT_USER, "INBOX", numbered(2))
    before = recent(server)
    assert before == {"INBOX": 1, ARTICLES: 1}

    assert export(write_config(tmp_path, server), tmp_path / "out").returncode == 0

    assert recent(server) == before  # EXAMINE, never SELECT: the owner's client still sees them as new


def recent(server: LocalDovecot) -> dict[str, int]:
    """STATUS (RECENT) of the inbox and the article folder: a count STATUS reads without taking it."""
    imap = imaplib.IMAP4(server.host, server.port)
    try:
        imap.login(DEFAULT_USER, DEFAULT_PASSWORD)
        counts = {}
        for folder in ("INBOX", ARTICLES):
            _, data = imap.status(f'"{folder}"', "(RECENT)")
            counts[folder] = int((data[0] or b"").rsplit(b" ", 1)[-1].rstrip(b")"))
        return counts
    finally:
        imap.logout()


def test_a_file_that_cannot_be_written_stops_one_account_not_the_others(server: LocalDovecot, tmp_path: Path) -> None:
    server.create(DEFAULT_USER, ARTICLES)
    server.append(DEFAULT_USER, ARTICLES, numbered(1), internaldate=OLD)
    config = write_config(tmp_path, server)
    data = yaml.safe_load(config.read_text())
    data["accounts"].append(dict(data["accounts"][0], name="work"))
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "new" / "out"  # its parents are made
    (out / "home").mkdir(parents=True)
    (out / "home" / "ham").write_text("a file where a folder should be")

    result = export(config, out)

    assert result.returncode == 10, result.stderr
    assert "Traceback" not in result.stderr
    assert "ham" in result.stderr and "File exists" in result.stderr
    expected = f"networking.articles-{uidvalidity(server, ARTICLES)}-1.eml"
    assert [p.name for p in (out / "work" / "articles").iterdir()] == [expected]


def uidvalidity(server: LocalDovecot, folder: str) -> int:
    imap = imaplib.IMAP4(server.host, server.port)
    try:
        imap.login(DEFAULT_USER, DEFAULT_PASSWORD)
        _, data = imap.status(f'"{folder}"', "(UIDVALIDITY)")
        return int((data[0] or b"").rsplit(b" ", 1)[-1].rstrip(b")"))
    finally:
        imap.logout()


def age_decisions(tmp_path: Path, days: float = 10) -> None:
    """Make every logged decision ``days`` old, as if the owner had had that long to correct them."""
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        db.execute("UPDATE decisions SET time = ?", (time.time() - days * 86400,))


def test_a_uidvalidity_change_keeps_each_message_s_judgement(server: LocalDovecot, tmp_path: Path) -> None:
    server.append(DEFAULT_USER, "INBOX", numbered(1), internaldate=OLD)  # a share, but from an allowed sender
    server.append(DEFAULT_USER, "INBOX", numbered(2, "ordinary"), internaldate=OLD)
    thresholds = {"article_share": 1.0, "favour_request": 1.0}
    config = write_config(tmp_path, server, thresholds=thresholds, allow=["sender1@example.org"])
    assert ployfilter("once", "-c", str(config)).returncode == 0
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:  # as if the model had labelled the first one
        db.execute("UPDATE decisions SET labels = '[\"article_share\"]' WHERE uid = 1")
    age_decisions(tmp_path)
    server.set_uidvalidity(DEFAULT_USER, "INBOX", 4242)
    assert ployfilter("once", "-c", str(config)).returncode == 0  # carried over, logged again now

    result = ployfilter("export", "-c", str(config), "--out", str(tmp_path / "out"))

    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "out")["ham"] == [norm(numbered(2, "ordinary"))]
    assert "1 labelled but kept by your rules" in result.stdout


def test_review_mail_and_digests_in_a_label_folder_are_no_verdict(server: LocalDovecot, tmp_path: Path) -> None:
    server.append(DEFAULT_USER, "INBOX", numbered(1), internaldate=OLD)
    config = write_config(
        tmp_path,
        server,
        thresholds={"article_share": 1.0, "favour_request": 0.5},
        review_band=0.5,
        digest={"folder": ARTICLES},
    )
    data = yaml.safe_load(config.read_text())
    data["accounts"][0]["folders"] = {"review": REQUESTS}
    config.write_text(yaml.safe_dump(data))
    assert ployfilter("once", "-c", str(config)).returncode == 0
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:  # the digest is due
        db.execute("UPDATE digests SET last = ?", (time.time() - 9 * 86400,))
    assert ployfilter("once", "-c", str(config)).returncode == 0
    assert "$PloyReview" in server.flags(DEFAULT_USER, REQUESTS)[0]
    assert len(server.messages(DEFAULT_USER, ARTICLES)) == 1  # the digest

    result = export(config, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "out") == {"articles": [], "favours": [], "both": [], "ham": []}


def test_the_filter_s_own_moves_count_once_settled(server: LocalDovecot, tmp_path: Path) -> None:
    server.append(DEFAULT_USER, "INBOX", numbered(1))
    config = write_config(tmp_path, server, thresholds=ALL_ARTICLES)
    assert ployfilter("once", "-c", str(config)).returncode == 0

    fresh = ployfilter("export", "-c", str(config), "--out", str(tmp_path / "out"))
    assert fresh.returncode == 0, fresh.stderr
    assert tree(tmp_path / "out")["articles"] == []  # moved a moment ago: the owner has not seen it
    assert "1 decided by the filter less than 7 days ago" in fresh.stdout

    age_decisions(tmp_path)
    settled = ployfilter("export", "-c", str(config), "--out", str(tmp_path / "out"))
    assert tree(tmp_path / "out")["articles"] == [norm(numbered(1))]
    assert settled.returncode == 0, settled.stderr


def test_a_message_moved_while_export_runs_is_written_once(server: LocalDovecot, tmp_path: Path) -> None:
    server.create(DEFAULT_USER, ARTICLES)
    server.create(DEFAULT_USER, REQUESTS)
    server.append(DEFAULT_USER, ARTICLES, numbered(1), internaldate=OLD)
    config = load_config(write_config(tmp_path, server))
    account = config.accounts[0]
    mailbox = ImapMailbox(account, DEFAULT_PASSWORD)
    mailbox.connect()
    examine = mailbox.examine

    def owner_drags_it_across(folder: str) -> MailboxStatus:
        if folder == REQUESTS:  # after the article folder was read, before the request folder is
            server.doveadm("move", "-u", DEFAULT_USER, REQUESTS, "mailbox", ARTICLES, "ALL")
        return examine(folder)

    mailbox.examine = owner_drags_it_across  # type: ignore[method-assign]
    try:
        export_account(account, mailbox, State.in_memory(), tmp_path / "out", max_bytes=10**6, now=time.time())
    finally:
        mailbox.close()
    got = tree(tmp_path / "out")
    assert (got["articles"], got["favours"]) == ([], [norm(numbered(1))])


def test_mail_flagged_before_a_switch_to_move_keeps_its_keywords(server: LocalDovecot, tmp_path: Path) -> None:
    server.append(DEFAULT_USER, "INBOX", numbered(1), internaldate=OLD)
    server.append(DEFAULT_USER, "INBOX", numbered(2), internaldate=OLD)
    assert ployfilter("once", "-c", str(write_config(tmp_path, server, action="flag", thresholds=ALL_ARTICLES)))
    server.doveadm("flags", "remove", "-u", DEFAULT_USER, "$PloyArticle", "mailbox", "INBOX", "uid", "2")
    config = write_config(tmp_path, server, action="move", thresholds=ALL_ARTICLES)

    result = export(config, tmp_path / "out")

    assert result.returncode == 0, result.stderr
    got = tree(tmp_path / "out")
    assert (got["articles"], got["ham"]) == ([norm(numbered(1))], [norm(numbered(2))])
    assert "kept by your rules" not in result.stdout


def test_mail_moved_for_the_block_list_alone_is_no_label(server: LocalDovecot, tmp_path: Path) -> None:
    server.append(DEFAULT_USER, "INBOX", numbered(1), internaldate=OLD)
    thresholds = {"article_share": 1.0, "favour_request": 1.0}
    config = write_config(tmp_path, server, thresholds=thresholds, block=["sender1@example.org"])
    assert ployfilter("once", "-c", str(config)).returncode == 0
    assert sum(len(server.messages(DEFAULT_USER, f)) for f in (ARTICLES, REQUESTS)) == 1
    age_decisions(tmp_path)

    result = ployfilter("export", "-c", str(config), "--out", str(tmp_path / "out"))

    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "out") == {"articles": [], "favours": [], "both": [], "ham": []}
    assert "1 moved for your block list alone" in result.stdout
