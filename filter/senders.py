"""The networkers report and the weekly digest, from sender-ledger rows. Pure: no I/O, the clock passed in.

The ledger (``state.py``) counts, per address, the mail labelled
article_share or favour_request and whether the owner ever wrote back. The
report ranks those senders and flags the give-then-ask pattern: several
"thought you'd like this" shares the owner never answered, then an ask, by
the same rule as the $PloyPattern keyword. Only addresses, dates and counts
appear here; never a subject or a line of text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP, default
from email.utils import format_datetime

NO_SENDERS = "no article shares or favour requests recorded yet"

_LABEL_NAMES = {"article_share": ("article", "articles"), "favour_request": ("request", "requests")}


@dataclass(frozen=True)
class SenderRow:
    """What the ledger holds for one address, across accounts (times in epoch seconds).

    ``shares``, ``asks`` and ``other``: how many messages from the address
    were labelled article_share, favour_request, or neither; ``first_seen``
    and ``last_seen`` span those messages (None when the owner wrote to the
    address but never received from it); ``sent_count`` and ``last_sent``:
    the owner's messages to the address, as read from the sent folder.
    ``before_ask``: the most shares sent after the owner last wrote to the
    address (all, if never) that came before one of its asks.
    """

    address: str
    shares: int
    asks: int
    other: int
    first_seen: float | None
    last_seen: float | None
    sent_count: int
    last_sent: float | None
    before_ask: int = 0


def is_pattern(row: SenderRow, pattern_shares: int) -> bool:
    """Give-then-ask, as the $PloyPattern keyword has it: an ask after ``pattern_shares`` unanswered shares."""
    return row.before_ask >= pattern_shares


def rank(rows: Sequence[SenderRow], *, pattern_shares: int = 2, limit: int | None = None) -> list[SenderRow]:
    """Senders with at least one share or ask, most active first.

    Ordered by shares plus asks, then asks (an ask costs the owner more than
    a share), then the most recently seen, then the address so the order is
    stable. Rows showing the pattern are not lifted above the rest: the
    ``pattern`` column marks them, and the counts already put them high.
    ``pattern_shares`` therefore does not change the order; it is accepted
    so that callers pass the one setting to every function here.
    """
    active = [row for row in rows if row.shares + row.asks > 0]
    active.sort(
        key=lambda r: (
            -(r.shares + r.asks),
            -r.asks,
            -(r.last_seen if r.last_seen is not None else float("-inf")),
            r.address,
        )
    )
    return active if limit is None else active[:limit]


def format_table(rows: Sequence[SenderRow], now: float, pattern_shares: int) -> str:
    """An aligned plain-text table of ``rows`` in the order given (usually from ``rank``)."""
    if not rows:
        return NO_SENDERS + "\n"
    header = ("sender", "shares", "asks", "replied", "first seen", "last seen", "pattern")
    numeric = (False, True, True, False, False, False, False)
    body = [
        (
            row.address,
            str(row.shares),
            str(row.asks),
            _replied(row.sent_count),
            _day(row.first_seen),
            _day(row.last_seen),
            "yes" if is_pattern(row, pattern_shares) else "",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    legend = f"as of {_day(now)} UTC; pattern: an ask after {pattern_shares}+ shares you never answered"
    return "\n".join([legend, "", line(header), line(["-" * w for w in widths]), *map(line, body)]) + "\n"


def to_json(rows: Sequence[SenderRow], pattern_shares: int) -> list[dict[str, object]]:
    """The table's rows as JSON-ready dicts; times as ISO 8601 in UTC, or None."""
    return [
        {
            "address": row.address,
            "shares": row.shares,
            "asks": row.asks,
            "replied": row.sent_count > 0,
            "sent_count": row.sent_count,
            "last_sent": _iso(row.last_sent),
            "first_seen": _iso(row.first_seen),
            "last_seen": _iso(row.last_seen),
            "pattern": is_pattern(row, pattern_shares),
        }
        for row in rows
    ]


DIGEST_DOMAIN = "ployfilter.invalid"  # a reserved name (RFC 2606): no one else's mail has it


def digest_message_id(account: str, slot: float) -> str:
    """The Message-ID of the digest for ``account`` due at ``slot`` (the local midnight its weekday began).

    One slot gives one id, however late the digest goes out, so a digest
    already appended (say, before a crash) is found instead of appended
    twice, and a late one never takes the next one's id. Account names are
    limited by the config to characters that are valid in a Message-ID
    (RFC 5322 section 3.6.4).
    """
    return f"<digest-{datetime.fromtimestamp(slot).strftime('%Y-%m-%d')}-{account}@{DIGEST_DOMAIN}>"


def is_digest(message_id: str) -> bool:
    """Whether ``message_id`` (the raw header value) names one of the filter's own digests."""
    return message_id.strip().lower().endswith(f"@{DIGEST_DOMAIN}>")


def digest_message(
    *,
    account: str,
    to_address: str,
    now: float,
    moved: Mapping[str, int],
    kept: int,
    reviewed: int,
    top: Sequence[SenderRow],
    pattern_shares: int,
    period_days: int = 7,
    slot: float | None = None,
    flagged: bool = False,
) -> bytes:
    """The weekly digest as a complete RFC 5322 message, ready for IMAP APPEND.

    ``moved`` counts the messages moved per label in the period (marked
    with keywords instead, when ``flagged``: the "flag" action), ``reviewed``
    those marked for review, ``kept`` those left in the inbox; ``top`` is
    the senders table (usually ``rank(..., limit=N)``). ``slot`` names the
    digest (``digest_message_id``; ``now`` when not given). Lines end in
    CRLF, as APPEND requires (RFC 9051 section 6.3.12).
    """
    verb = "flagged" if flagged else "moved"
    period = "week" if period_days == 7 else f"{period_days} days"
    counts = ", ".join(_count(moved.get(label, 0), label) for label in _LABEL_NAMES)
    start = now - period_days * 86400

    lines = [
        f"ployfilter digest for account {account}, {_day(start)} to {_day(now)} (UTC).",
        "",
        "Flagged with keywords, left in the inbox:" if flagged else "Moved to folders:",
        *(f"  {label}: {moved.get(label, 0)}" for label in _LABEL_NAMES),
        f"Flagged for review: {reviewed}",
        f"Kept in the inbox: {kept}",
        "",
        "Top senders of article shares and favour requests:",
        "",
        format_table(top, now, pattern_shares).rstrip("\n"),
    ]

    msg = EmailMessage(policy=default)
    msg["From"] = to_address
    msg["To"] = to_address
    msg["Subject"] = f"ployfilter: {period} to {_day(now)} \u2014 {counts} {verb}"
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = digest_message_id(account, now if slot is None else slot)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834 section 5: no auto-replies to this
    msg.set_content("\n".join(lines) + "\n", charset="utf-8")
    return msg.as_bytes(policy=SMTP)


def _count(n: int, label: str) -> str:
    one, many = _LABEL_NAMES[label]
    return f"{n} {one if n == 1 else many}"


def _replied(sent_count: int) -> str:
    if sent_count == 0:
        return "no"
    return "yes" if sent_count == 1 else f"yes ({sent_count})"


def _day(when: float | None) -> str:
    return "-" if when is None else datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d")


def _iso(when: float | None) -> str | None:
    return None if when is None else datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
