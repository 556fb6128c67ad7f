"""`ployfilter export` against a real Dovecot: the owner's sorting becomes a tree `train` reads."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_daemon import ALL_ARTICLES, ARTICLES, REQUESTS, norm, numbered, ployfilter, sample_mail, write_config

from filter.dovecot import DEFAULT_USER, LocalDovecot, unavailable_reason
from filter.export import LABEL_DIRS

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

    # Everything in the inbox was judged minutes ago: too soon to say the owner chose to leave it there.
    first = ployfilter("export", "-c", str(config), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert f"{len(inbox)} judged too recently" in first.stdout
    assert tree(out)["ham"] == []

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
    assert "1 files of messages no longer there removed" in again.stdout
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


def test_export_when_flagging_reads_the_keywords_the_owner_left(server: LocalDovecot, tmp_path: Path) -> None:
    for n in range(1, 4):
        server.append(DEFAULT_USER, "INBOX", numbered(n), internaldate=OLD)
    config = write_config(tmp_path, server, action="flag", thresholds=ALL_ARTICLES)
    assert ployfilter("once", "-c", str(config)).returncode == 0
    # The owner disagrees with one verdict and takes its keyword off.
    server.doveadm("flags", "remove", "-u", DEFAULT_USER, "$PloyArticle", "mailbox", "INBOX", "uid", "2")

    result = ployfilter("export", "-c", str(config), "--out", str(tmp_path / "out"), "--settled-days", "0")

    assert result.returncode == 0, result.stderr
    got = tree(tmp_path / "out")
    assert got["articles"] == [norm(numbered(1)), norm(numbered(3))]
    assert got["ham"] == [norm(numbered(2))]
