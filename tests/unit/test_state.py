"""The SQLite state: checkpoints per UIDVALIDITY, intents, the decision log, the lock."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from filter.errors import StateError
from filter.mailbox import Fingerprint
from filter.state import DecisionRecord, Intent, State, fingerprint_key, message_id_hash

FP = Fingerprint("<a@example.org>", 1200, datetime(2026, 1, 2, tzinfo=UTC))


def record(uid: int, action: str = "keep") -> DecisionRecord:
    return DecisionRecord(uid, "<a@example.org>", {"article_share": 0.1}, action, None, (), ("r",))


def test_fingerprint_key_uses_message_id_and_size() -> None:
    assert fingerprint_key(FP) == fingerprint_key(Fingerprint("<a@example.org>", 1200, None))
    assert fingerprint_key(FP) != fingerprint_key(Fingerprint("<a@example.org>", 1201, None))


def test_fingerprint_key_without_message_id_uses_date() -> None:
    a = Fingerprint("", 10, datetime(2026, 1, 2, tzinfo=UTC))
    b = Fingerprint("", 10, datetime(2026, 1, 3, tzinfo=UTC))
    assert fingerprint_key(a) != fingerprint_key(b)


def test_handled_uids_are_kept_per_uidvalidity(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    state.record("home", "INBOX", 7, "k", record(5), now=1.0)
    assert state.handled_uids("home", "INBOX", 7, [4, 5, 6]) == {5}
    assert state.handled_uids("home", "INBOX", 8, [5]) == set()


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    state = State.open(path)
    state.start_epoch("home", "INBOX", 7, now=1.0)
    state.advance("home", "INBOX", 7, 42)
    state.close()
    again = State.open(path)
    assert again.scanned_to("home", "INBOX", 7) == 42
    assert again.known_uidvalidities("home", "INBOX") == [7]


def test_scan_mark_never_moves_back(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    state.start_epoch("home", "INBOX", 7, now=1.0)
    state.advance("home", "INBOX", 7, 42)
    state.advance("home", "INBOX", 7, 10)
    assert state.scanned_to("home", "INBOX", 7) == 42


def test_second_process_is_refused_by_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    first = State.open(path)
    with pytest.raises(StateError, match="in use by another ployfilter process"):
        State.open(path)
    first.close()
    State.open(path).close()


def test_record_clears_the_intent(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    state.add_intents("home", "INBOX", 7, [Intent(5, FP, "Articles", record(5, "move"))], now=1.0)
    assert [(uv, i.uid, i.target) for uv, i in state.intents("home", "INBOX")] == [(7, 5, "Articles")]
    state.record("home", "INBOX", 7, fingerprint_key(FP), record(5, "move"), now=2.0)
    assert state.intents("home", "INBOX") == []


def test_intent_keeps_its_fingerprint(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    state.add_intents("home", "INBOX", 7, [Intent(5, FP, "Articles", record(5, "move"))], now=1.0)
    ((_, intent),) = state.intents("home", "INBOX")
    assert intent.fingerprint == FP
    assert intent.decision.action == "move"


def test_earlier_action_is_found_across_epochs(tmp_path: Path) -> None:
    state = State.open(tmp_path / "s.sqlite3")
    state.record("home", "INBOX", 7, fingerprint_key(FP), record(5, "move"), now=1.0)
    assert state.earlier_action("home", "INBOX", fingerprint_key(FP)) == "move"
    assert state.earlier_action("home", "INBOX", "other") is None


def test_decision_log_stores_a_hash_not_the_message_id(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    state = State.open(path)
    state.record("home", "INBOX", 7, "k", record(5), now=1.0)
    (row,) = state.decisions()
    assert row["message_id_hash"] == message_id_hash("<a@example.org>")
    assert row["scores"] == {"article_share": 0.1}
    state.close()
    dump = "\n".join(sqlite3.connect(path).iterdump())
    assert "a@example.org" not in dump


def test_state_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    State.open(path)
    assert path.stat().st_mode & 0o077 == 0


def test_in_memory_state_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    state = State.in_memory()
    state.record("home", "INBOX", 7, "k", record(5), now=1.0)
    assert list(tmp_path.iterdir()) == []


def test_not_a_database_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="not a usable SQLite database"):
        State.open(path)
