"""The pure helpers of the IMAP seam: UID sets and Message-ID extraction."""

from __future__ import annotations

import pytest

from filter.imap import message_id_of, uid_set_of


def test_uid_set_joins_runs_of_consecutive_uids() -> None:
    assert uid_set_of([7, 1, 2, 3]) == "1:3,7"


def test_uid_set_never_covers_a_uid_not_given() -> None:
    assert uid_set_of([1, 3, 5]) == "1,3,5"


def test_uid_set_ignores_duplicates() -> None:
    assert uid_set_of([4, 4, 5]) == "4:5"


def test_empty_uid_set_is_refused() -> None:
    with pytest.raises(ValueError):
        uid_set_of([])


def test_message_id_is_read_from_the_header_only() -> None:
    data = b"Subject: x\r\nMessage-ID: <a@b>\r\n\r\nMessage-ID: <body@b>\r\n"
    assert message_id_of(data) == "<a@b>"


def test_folded_message_id_is_unfolded() -> None:
    assert message_id_of(b"Message-Id:\r\n  <folded@example.org>\r\n\r\n") == "<folded@example.org>"


@pytest.mark.parametrize("data", [b"", b"\x00\xff\xfe junk", b"no headers at all"])
def test_missing_message_id_is_empty(data: bytes) -> None:
    assert message_id_of(data) == ""
