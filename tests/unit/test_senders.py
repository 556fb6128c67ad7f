"""The networkers report and the weekly digest: ranking, the pattern flag, the table, JSON, the message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from email.utils import parsedate_to_datetime

from filter.runner import last_weekday_start
from filter.senders import (
    NO_SENDERS,
    SenderRow,
    digest_message,
    digest_message_id,
    format_table,
    is_pattern,
    rank,
    to_json,
)

DAY = 86400.0
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()  # a Monday, ISO week 49


def row(
    address: str,
    shares: int = 0,
    asks: int = 0,
    *,
    other: int = 0,
    last_seen: float | None = NOW - DAY,
    sent_count: int = 0,
    before_ask: int | None = None,
) -> SenderRow:
    first_seen = None if last_seen is None else last_seen - 30 * DAY
    last_sent = NOW - 90 * DAY if sent_count else None
    if before_ask is None:  # by default every share came before the asks, and none was answered
        before_ask = shares if asks and not sent_count else 0
    return SenderRow(address, shares, asks, other, first_seen, last_seen, sent_count, last_sent, before_ask)


def test_rank_leaves_out_senders_with_neither_shares_nor_asks() -> None:
    ranked = rank([row("a@x", other=5), row("b@x", shares=1), row("c@x", sent_count=3)])
    assert [r.address for r in ranked] == ["b@x"]


def test_rank_orders_by_total_then_asks_then_recency_then_address() -> None:
    rows = [
        row("quiet@x", shares=1),
        row("sharer@x", shares=3),
        row("asker@x", shares=1, asks=2),
        row("old@x", shares=2, asks=1, last_seen=NOW - 50 * DAY),
        row("b@x", shares=2),
        row("a@x", shares=2),
    ]
    ranked = rank(rows)
    assert [r.address for r in ranked] == ["asker@x", "old@x", "sharer@x", "a@x", "b@x", "quiet@x"]


def test_rank_puts_senders_never_seen_after_those_seen() -> None:
    ranked = rank([row("unseen@x", shares=1, last_seen=None), row("seen@x", shares=1)])
    assert [r.address for r in ranked] == ["seen@x", "unseen@x"]


def test_rank_limit_keeps_the_top() -> None:
    rows = [row(f"s{n}@x", shares=n) for n in range(1, 6)]
    assert [r.address for r in rank(rows, limit=2)] == ["s5@x", "s4@x"]


def test_pattern_needs_an_ask_after_enough_unanswered_shares() -> None:
    assert is_pattern(row("a@x", shares=2, asks=1), 2)
    assert not is_pattern(row("a@x", shares=1, asks=1), 2)
    assert not is_pattern(row("a@x", shares=2, asks=0), 2)
    assert not is_pattern(row("a@x", shares=2, asks=1, sent_count=1), 2)
    assert is_pattern(row("a@x", shares=1, asks=1), 1)
    assert not is_pattern(row("a@x", shares=3, asks=1, before_ask=0), 2)  # asked first, shared after
    assert is_pattern(row("a@x", shares=3, asks=1, sent_count=1, before_ask=2), 2)  # shares since the reply


def test_table_has_aligned_columns_and_marks_the_pattern() -> None:
    rows = [
        row("ann@example.org", shares=3, asks=1, last_seen=NOW - DAY),
        row("bo@x", shares=12, sent_count=4, last_seen=NOW - 2 * DAY),
        row("cy@x", shares=1, asks=1, sent_count=1),
    ]
    lines = format_table(rows, NOW, 2).splitlines()
    assert lines[0].startswith("as of 2026-11-30 UTC")
    header, rule, ann, bo, cy = lines[2:]
    assert header.split() == ["sender", "shares", "asks", "replied", "first", "seen", "last", "seen", "pattern"]
    assert set(rule) == {"-", " "}
    assert ann.split() == ["ann@example.org", "3", "1", "no", "2026-10-30", "2026-11-29", "yes"]
    assert bo.split() == ["bo@x", "12", "0", "yes", "(4)", "2026-10-29", "2026-11-28"]
    assert cy.split()[3] == "yes" and cy.split()[4] == "2026-10-30"
    assert {ann.index("2026-11-29"), bo.index("2026-11-28"), cy.index("2026-11-29")} == {header.index("last seen")}
    assert ann.index("3 ") + 1 == bo.index("12 ") + 2  # numbers are right-aligned
    assert not any(line != line.rstrip() for line in lines)


def test_table_shows_a_dash_for_a_sender_never_seen() -> None:
    lines = format_table([row("a@x", last_seen=None, sent_count=1)], NOW, 2).splitlines()
    assert lines[-1].split() == ["a@x", "0", "0", "yes", "-", "-"]


def test_table_says_so_when_there_are_no_senders() -> None:
    assert format_table([], NOW, 2).strip() == NO_SENDERS
    assert NO_SENDERS == "no article shares or favour requests recorded yet"


def test_json_carries_the_table_fields_with_iso_dates() -> None:
    rows = [row("ann@example.org", shares=3, asks=1), row("bo@x", shares=1, sent_count=2, last_seen=None)]
    ann, bo = to_json(rows, 2)
    assert ann == {
        "address": "ann@example.org",
        "shares": 3,
        "asks": 1,
        "replied": False,
        "sent_count": 0,
        "last_sent": None,
        "first_seen": "2026-10-30T12:00:00Z",
        "last_seen": "2026-11-29T12:00:00Z",
        "pattern": True,
    }
    assert (bo["replied"], bo["sent_count"], bo["pattern"], bo["first_seen"]) == (True, 2, False, None)
    assert bo["last_sent"] == "2026-09-01T12:00:00Z"
    json.dumps([ann, bo])


def test_digest_message_id_names_the_slot_it_was_due_at() -> None:
    slot = last_weekday_start(NOW, 4)  # the latest Friday, local midnight
    next_slot = last_weekday_start(NOW + 7 * DAY, 4)
    day = datetime.fromtimestamp(slot).strftime("%Y-%m-%d")
    assert digest_message_id("home", slot) == f"<digest-{day}-home@ployfilter.invalid>"
    # Sent three days late, the digest keeps its slot's id: the next one, on time, is another message.
    assert digest_message_id("home", next_slot) != digest_message_id("home", slot)
    assert digest_message_id("work", slot) != digest_message_id("home", slot)


def digest(**changes: object) -> EmailMessage:
    args: dict[str, object] = {
        "account": "home",
        "to_address": "owner@example.org",
        "now": NOW,
        "moved": {"article_share": 12, "favour_request": 3},
        "kept": 40,
        "reviewed": 2,
        "top": [row("ann@example.org", shares=3, asks=1)],
        "pattern_shares": 2,
    }
    args.update(changes)
    raw = digest_message(**args)  # type: ignore[arg-type]
    parsed = message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_digest_parses_back_with_its_headers() -> None:
    msg = digest()
    assert msg["From"] == "owner@example.org"
    assert msg["To"] == "owner@example.org"
    assert msg["Subject"] == "ployfilter: week to 2026-11-30 \u2014 12 articles, 3 requests moved"
    assert msg["Message-ID"] == digest_message_id("home", NOW)
    assert parsedate_to_datetime(msg["Date"]).timestamp() == NOW
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"


def test_digest_is_the_same_message_when_made_twice() -> None:
    slot = last_weekday_start(NOW, 0)
    assert digest(slot=slot)["Message-ID"] == digest(now=NOW + DAY, slot=slot)["Message-ID"]


def test_a_digest_in_flag_mode_says_flagged_not_moved() -> None:
    msg = digest(flagged=True)
    assert msg["Subject"].endswith("12 articles, 3 requests flagged")
    assert "Flagged with keywords, left in the inbox:" in msg.get_content()


def test_digest_subject_counts_in_the_singular_and_for_other_periods() -> None:
    msg = digest(moved={"favour_request": 1}, period_days=14)
    assert msg["Subject"] == "ployfilter: 14 days to 2026-11-30 \u2014 0 articles, 1 request moved"


def test_digest_body_has_the_counts_and_the_senders_table() -> None:
    body = digest().get_content().replace("\r\n", "\n")
    assert "2026-11-23 to 2026-11-30" in body
    assert "article_share: 12" in body
    assert "favour_request: 3" in body
    assert "Flagged for review: 2" in body
    assert "Kept in the inbox: 40" in body
    assert format_table([row("ann@example.org", shares=3, asks=1)], NOW, 2) in body


def test_digest_without_senders_says_so() -> None:
    assert NO_SENDERS in digest(top=[]).get_content()


def test_digest_lines_end_in_crlf() -> None:
    raw = digest_message(
        account="home",
        to_address="owner@example.org",
        now=NOW,
        moved={},
        kept=0,
        reviewed=0,
        top=[],
        pattern_shares=2,
    )
    assert raw.count(b"\r\n") == raw.count(b"\n")
